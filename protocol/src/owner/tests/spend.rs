//! Paid-compute approvals on the owner.

use super::*;
use crate::owner::spend::{MAX_SPEND_REQUESTS, SPEND_IDLE_SECS};
use crate::wire::{ApprovalRequest, ApprovalResponse, ErrorCode};

fn request(world: &World, w: &Worker, rung: &str) -> ApprovalRequest {
    let owner = world.owners.get(&world.id).expect("owned");
    ApprovalRequest {
        program: world.id,
        credential: w.credential.clone().expect("joined"),
        packet: owner
            .program()
            .packet_for_rung(rung)
            .expect("a rung of the program"),
    }
}

#[test]
fn a_paid_packet_waits_for_a_person_then_gets_a_receipt_signed_by_the_owner() {
    let mut world = World::new(&Manifest::default());
    let mut w = Worker::new();
    world.join(&mut w, T0);
    let req = request(&world, &w, "paid-h100");
    assert_eq!(
        world.owners.on_approval(w.peer, &req, T0),
        ApprovalResponse::Pending
    );
    let listed = world.owners.spend_requests();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].state.as_str(), listed[0].requested_at),
        ("pending", T0)
    );
    let member = listed[0].member.clone();
    let msg = world
        .owners
        .decide_spend(&world.id, &member, &req.packet.id, true, 30, T0)
        .expect("approves");
    assert!(msg.contains("valid 30 min"), "{msg}");
    match world.owners.on_approval(w.peer, &req, T0.plus_secs(1)) {
        ApprovalResponse::Granted(r) => {
            assert_eq!(r.approver, world.owners.me().to_base58());
            assert_eq!(r.expires_at, T0.plus_secs(1800));
            assert!(r.verify().is_ok());
        }
        other => panic!("expected a receipt, got {other:?}"),
    }
    // Deciding a request nobody made is refused in words.
    let e = world
        .owners
        .decide_spend(&world.id, &member, "no-such-packet", true, 30, T0)
        .expect_err("unknown packet");
    assert!(e.to_string().contains("btd approvals"), "{e}");
}

#[test]
fn a_denied_request_tells_the_member_why() {
    let mut world = World::new(&Manifest::default());
    let mut w = Worker::new();
    world.join(&mut w, T0);
    let req = request(&world, &w, "paid-h100");
    let _ = world.owners.on_approval(w.peer, &req, T0);
    let member = world.owners.spend_requests()[0].member.clone();
    let _ = world
        .owners
        .decide_spend(&world.id, &member, &req.packet.id, false, 30, T0)
        .expect("denies");
    assert!(matches!(
        world.owners.on_approval(w.peer, &req, T0),
        ApprovalResponse::Denied { reason } if reason.contains("denied")
    ));
}

#[test]
fn a_pre_approved_rung_gets_a_receipt_at_once() {
    let mut world = World::new(&Manifest {
        approved_paid: "\"paid-h100\"",
        ..Manifest::default()
    });
    let mut w = Worker::new();
    world.join(&mut w, T0);
    let req = request(&world, &w, "paid-h100");
    assert!(matches!(
        world.owners.on_approval(w.peer, &req, T0),
        ApprovalResponse::Granted(_)
    ));
    assert!(
        world.owners.spend_requests().is_empty(),
        "nothing waits for a person"
    );
}

#[test]
fn only_the_programs_own_packets_from_members_are_considered() {
    let mut world = World::new(&Manifest::default());
    let mut w = Worker::new();
    world.join(&mut w, T0);
    // A doctored packet (a bigger budget than the program's) is refused.
    let mut req = request(&world, &w, "paid-h100");
    req.packet.budget.spend_cap = Some(1e6);
    assert!(matches!(
        world.owners.on_approval(w.peer, &req, T0),
        ApprovalResponse::Error(e) if e.code == ErrorCode::Invalid
    ));
    // A local rung needs no approval.
    let req = request(&world, &w, "cpu");
    assert!(matches!(
        world.owners.on_approval(w.peer, &req, T0),
        ApprovalResponse::Denied { reason } if reason.contains("no approval applies")
    ));
    // A stranger is not a member.
    let stranger = Worker::new();
    let req = request(&world, &w, "paid-h100");
    assert!(matches!(
        world.owners.on_approval(stranger.peer, &req, T0),
        ApprovalResponse::Error(e) if e.code == ErrorCode::MembershipRequired
    ));
}

#[test]
fn the_spend_book_is_bounded() {
    let mut world = World::new(&Manifest::default());
    let mut w = Worker::new();
    world.join(&mut w, T0);
    let base = request(&world, &w, "paid-h100");
    // Packet ids are the program's, so only distinct members can fill the book.
    let mut members = Vec::new();
    for _ in 0..MAX_SPEND_REQUESTS {
        let mut m = Worker::new();
        world.join(&mut m, T0);
        let req = ApprovalRequest {
            credential: m.credential.clone().expect("joined"),
            ..base.clone()
        };
        assert_eq!(
            world.owners.on_approval(m.peer, &req, T0),
            ApprovalResponse::Pending
        );
        members.push(m);
    }
    let mut late = Worker::new();
    world.join(&mut late, T0);
    let req = ApprovalRequest {
        credential: late.credential.clone().expect("joined"),
        ..base.clone()
    };
    assert!(matches!(
        world.owners.on_approval(late.peer, &req, T0),
        ApprovalResponse::Error(e) if e.code == ErrorCode::RateLimited
    ));
    // A member already in the book still gets its answer.
    let req = ApprovalRequest {
        credential: members[0].credential.clone().expect("joined"),
        ..base
    };
    assert_eq!(
        world.owners.on_approval(members[0].peer, &req, T0),
        ApprovalResponse::Pending
    );
}

/// Hostile peers item 9: the book used to be kept forever, so members that asked once (or
/// throwaway members in open mode) filled it for good. A request nobody asked about or decided for
/// `SPEND_IDLE_SECS` is dropped, and a newcomer is served again.
#[test]
fn idle_spend_requests_are_dropped_so_a_full_book_frees_up() {
    let mut world = World::new(&Manifest::default());
    let mut w = Worker::new();
    world.join(&mut w, T0);
    let base = request(&world, &w, "paid-h100");
    for _ in 0..MAX_SPEND_REQUESTS {
        let mut m = Worker::new();
        world.join(&mut m, T0);
        let req = ApprovalRequest {
            credential: m.credential.clone().expect("joined"),
            ..base.clone()
        };
        let _ = world.owners.on_approval(m.peer, &req, T0);
    }
    // The honest member keeps asking (its worker polls while it waits) and is asked in before the
    // book fills; then the flooders go quiet.
    let honest = ApprovalRequest {
        credential: w.credential.clone().expect("joined"),
        ..base.clone()
    };
    let mut late = Worker::new();
    world.join(&mut late, T0);
    let late_req = ApprovalRequest {
        credential: late.credential.clone().expect("joined"),
        ..base.clone()
    };
    assert!(matches!(
        world.owners.on_approval(late.peer, &late_req, T0),
        ApprovalResponse::Error(e) if e.code == ErrorCode::RateLimited
    ));
    let after = T0.plus_secs(SPEND_IDLE_SECS);
    world.owners.tick(after);
    assert!(
        world.owners.spend_requests().is_empty(),
        "idle requests are dropped"
    );
    assert_eq!(
        world.owners.on_approval(late.peer, &late_req, after),
        ApprovalResponse::Pending
    );
    assert_eq!(
        world.owners.on_approval(w.peer, &honest, after),
        ApprovalResponse::Pending
    );
    // A request its member keeps asking about stays, however long the owner takes.
    for k in 1..=3 {
        let t = after.plus_secs(k * SPEND_IDLE_SECS / 2);
        world.owners.tick(t);
        assert_eq!(
            world.owners.on_approval(w.peer, &honest, t),
            ApprovalResponse::Pending
        );
    }
    assert_eq!(world.owners.spend_requests().len(), 1);
}
