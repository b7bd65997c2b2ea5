//! The device flow on the owner: codes, approval, sealing, push with the poll fallback, denial,
//! revocation, open membership, expiry.

use super::*;
use crate::membership::{
    MemberId, DEVICE_CODE_EXPIRES_IN_SECS, EXPIRED_GRACE_SECS, POLL_INTERVAL_SECS,
};
use crate::owner::OwnerError;
use crate::wire::{ErrorCode, PollStatus};

fn poll(
    world: &mut World,
    w: &Worker,
    code: crate::membership::DeviceCode,
    now: Timestamp,
) -> Effects<MembershipResponse> {
    let req = MembershipRequest::Poll {
        program: world.id,
        device_code: code,
    };
    world.membership(w, req, now)
}

#[test]
fn a_join_request_gets_codes_and_stores_no_member_until_approved() {
    let mut world = World::new(&Manifest::default());
    let w = Worker::new();
    let (code, _, fx) = world.authorize(&w, T0);
    // Only the undecided code is stored (so an owner restart keeps it).
    assert!(matches!(fx.persist.as_slice(), [Record::JoinCode { .. }]));
    assert!(fx.push.is_empty());
    let later = T0.plus_secs(POLL_INTERVAL_SECS);
    assert_eq!(
        poll(&mut world, &w, code, later).reply,
        MembershipResponse::Poll(PollStatus::AuthorizationPending)
    );
    // Polling faster than the interval slows the worker down (RFC 8628 slow_down, +5 s).
    assert_eq!(
        poll(&mut world, &w, code, later.plus_secs(1)).reply,
        MembershipResponse::Poll(PollStatus::SlowDown {
            interval: POLL_INTERVAL_SECS + 5
        })
    );
}

#[test]
fn approval_stores_the_member_before_the_sealed_grant_is_pushed_to_the_requester() {
    let mut world = World::new(&Manifest::default());
    let mut w = Worker::new();
    let (code, user_code, _) = world.authorize(&w, T0);
    let fx = world
        .owners
        .decide(&user_code.to_string(), true, T0, &mut world.rng)
        .expect("approves");
    // The member record is in the effects' persist list; the push is delivered only after it.
    assert!(fx.waits_for_store());
    match fx.persist.as_slice() {
        [Record::Member { program, record }, Record::JoinCodeClosed { device_code, .. }]
            if *device_code == code =>
        {
            assert_eq!(*program, world.id);
            assert_eq!(record.member, MemberId::from_peer(&w.peer));
            assert_eq!(record.revoked_at, None);
        }
        other => panic!("expected one member record, got {other:?}"),
    }
    assert!(fx.reply.starts_with("approved "), "{}", fx.reply);
    let push = fx.push.first().expect("a push");
    assert_eq!(push.peer, w.peer);
    assert_eq!(push.delivery.device_code, code);
    // Only the requester's sealing key opens it, and the credential it holds is a member's.
    let credential = w.open(&push.delivery);
    let other = Worker::new();
    let ctx = grant_seal_context(&world.id, &code);
    assert!(crate::seal::open(&other.seal, &ctx, &push.delivery.sealed).is_err());
    let owner = world.owners.get(&world.id).expect("owned");
    assert!(owner.registry().verify(&credential, &w.peer).is_ok());
    // The credential is bound to the requesting peer: from another peer it is not a member's.
    assert!(owner.registry().verify(&credential, &other.peer).is_err());
}

/// Hostile peers item 9 (a grant delivered by poll was lost with a lost reply): a repeat poll of the
/// same peer gets the same sealed grant until the code's grace period ends, never another peer.
#[test]
fn a_lost_push_is_delivered_by_every_poll_of_the_same_peer_once_durable_and_to_no_one_else() {
    let mut world = World::new(&Manifest::default());
    let w = Worker::new();
    let (code, user_code, _) = world.authorize(&w, T0);
    let fx = world
        .owners
        .decide(&user_code.to_string(), true, T0, &mut world.rng)
        .expect("approves");
    let pushed = fx.push[0].delivery.clone();
    // Another peer polling with the code learns nothing.
    let thief = Worker::new();
    assert_eq!(
        poll(&mut world, &thief, code, T0.plus_secs(6)).reply,
        MembershipResponse::Poll(PollStatus::NotFound)
    );
    // The push failed: the requester's poll gets the same grant, after the member write is durable.
    world.owners.on_push_result(&world.id, &code, false);
    let fx = poll(&mut world, &w, code, T0.plus_secs(6));
    assert_eq!(fx.reply, MembershipResponse::Granted(pushed.clone()));
    assert!(fx.after_durable && fx.persist.is_empty());
    // That reply may be lost too: a repeat poll of the same peer gets the same grant again,
    // another peer still nothing, and after the code's grace period nobody.
    let fx = poll(&mut world, &w, code, T0.plus_secs(12));
    assert_eq!(fx.reply, MembershipResponse::Granted(pushed));
    assert!(fx.after_durable);
    assert_eq!(
        poll(&mut world, &thief, code, T0.plus_secs(12)).reply,
        MembershipResponse::Poll(PollStatus::NotFound)
    );
    let gone = T0.plus_secs(DEVICE_CODE_EXPIRES_IN_SECS + EXPIRED_GRACE_SECS + 1);
    world.owners.tick(gone);
    assert_eq!(
        poll(&mut world, &w, code, gone).reply,
        MembershipResponse::Poll(PollStatus::NotFound)
    );
}

#[test]
fn an_acknowledged_push_is_not_handed_out_again() {
    let mut world = World::new(&Manifest::default());
    let w = Worker::new();
    let (code, user_code, _) = world.authorize(&w, T0);
    let _ = world
        .owners
        .decide(&user_code.to_string(), true, T0, &mut world.rng)
        .expect("approves");
    world.owners.on_push_result(&world.id, &code, true);
    assert_eq!(
        poll(&mut world, &w, code, T0.plus_secs(6)).reply,
        MembershipResponse::Poll(PollStatus::NotFound)
    );
}

#[test]
fn a_poll_that_finds_an_approved_code_gets_the_grant_after_the_member_is_stored() {
    // Approval without a push (e.g. the registry approved while the sealing key expired from the
    // push map) is covered by the poll path: the registry hands the grant to the first poll.
    let mut world = World::new(&Manifest {
        open: true,
        ..Manifest::default()
    });
    let mut w = Worker::new();
    let (_, _, fx) = world.authorize(&w, T0);
    // Open membership: approved at once; the member is stored and the grant pushed.
    assert!(matches!(fx.reply, MembershipResponse::Authorization(_)));
    assert!(matches!(fx.persist.as_slice(), [Record::Member { .. }]));
    let push = fx.push.first().expect("pushed at once");
    let c = w.open(&push.delivery);
    assert!(world
        .owners
        .get(&world.id)
        .expect("owned")
        .registry()
        .verify(&c, &w.peer)
        .is_ok());
}

#[test]
fn a_denied_code_answers_access_denied_and_stores_no_member() {
    let mut world = World::new(&Manifest::default());
    let w = Worker::new();
    let (code, user_code, _) = world.authorize(&w, T0);
    let fx = world
        .owners
        .decide(&user_code.to_string(), false, T0, &mut world.rng)
        .expect("denies");
    // Only the stored code is deleted.
    assert!(
        matches!(fx.persist.as_slice(), [Record::JoinCodeClosed { device_code, .. }] if *device_code == code)
    );
    assert!(fx.push.is_empty());
    assert!(fx.reply.starts_with("denied "), "{}", fx.reply);
    assert_eq!(
        poll(&mut world, &w, code, T0.plus_secs(6)).reply,
        MembershipResponse::Poll(PollStatus::AccessDenied)
    );
}

#[test]
fn approving_an_unknown_or_malformed_code_is_refused_in_words() {
    let mut world = World::new(&Manifest::default());
    let e = world
        .owners
        .decide("ABCD-EFGH", true, T0, &mut world.rng)
        .expect_err("no such code");
    assert!(e.to_string().contains("ABCD-EFGH"), "{e}");
    let e = world
        .owners
        .decide("not a code", true, T0, &mut world.rng)
        .expect_err("malformed");
    assert!(matches!(e, OwnerError::Refused(_)));
}

#[test]
fn a_code_is_approved_in_the_program_that_issued_it() {
    let mut world = World::new(&Manifest::default());
    let second = world
        .owners
        .publish(
            Manifest {
                name: "second",
                ..Manifest::default()
            }
            .toml(),
            vec![],
            T0,
        )
        .expect("valid");
    let second_id = second.view.id;
    world.owners.insert(second.owner.expect("new"));
    let w = Worker::new();
    let fx = world.owners.on_membership(
        w.peer,
        MembershipRequest::Authorize {
            program: second_id,
            seal_key: w.seal.public(),
        },
        T0,
        &mut world.rng,
    );
    let MembershipResponse::Authorization(auth) = fx.reply else {
        panic!("expected an authorization")
    };
    let fx = world
        .owners
        .decide(&auth.user_code.to_string(), true, T0, &mut world.rng)
        .expect("approves");
    assert!(fx.reply.ends_with("for second"), "{}", fx.reply);
    assert_eq!(fx.push[0].delivery.program, second_id);
}

#[test]
fn an_expired_code_cannot_be_approved_and_its_sealing_key_is_dropped() {
    let mut world = World::new(&Manifest::default());
    let w = Worker::new();
    let (code, user_code, _) = world.authorize(&w, T0);
    let late = T0.plus_secs(DEVICE_CODE_EXPIRES_IN_SECS + 1);
    world.owners.tick(late);
    let e = world
        .owners
        .decide(&user_code.to_string(), true, late, &mut world.rng)
        .expect_err("expired");
    assert!(e.to_string().contains("expired"), "{e}");
    assert_eq!(
        poll(&mut world, &w, code, late).reply,
        MembershipResponse::Poll(PollStatus::ExpiredToken)
    );
}

#[test]
fn requests_for_a_program_this_node_does_not_own_are_refused() {
    let mut world = World::new(&Manifest::default());
    let w = Worker::new();
    let other = ProgramId(Digest::of(b"someone else's"));
    let fx = world.owners.on_membership(
        w.peer,
        MembershipRequest::Authorize {
            program: other,
            seal_key: w.seal.public(),
        },
        T0,
        &mut world.rng,
    );
    assert!(
        matches!(&fx.reply, MembershipResponse::Error(e) if e.code == ErrorCode::UnknownProgram)
    );
    let fx = world.owners.on_kb(w.peer, w.kb(other, KbCall::Status), T0);
    assert_eq!(error(&fx).0, ErrorCode::UnknownProgram);
}

#[test]
fn a_grant_pushed_to_the_owner_is_refused() {
    let mut world = World::new(&Manifest::default());
    let w = Worker::new();
    let (code, user_code, _) = world.authorize(&w, T0);
    let fx = world
        .owners
        .decide(&user_code.to_string(), true, T0, &mut world.rng)
        .expect("approves");
    let delivery = fx.push[0].delivery.clone();
    assert_eq!(delivery.device_code, code);
    let fx = world.membership(&w, MembershipRequest::PushGrant(delivery), T0);
    assert!(matches!(&fx.reply, MembershipResponse::Error(e) if e.code == ErrorCode::Invalid));
}

#[test]
fn revocation_is_stored_and_locks_the_member_out_of_the_kb() {
    let mut world = World::new(&Manifest::default());
    let mut w = Worker::new();
    world.join(&mut w, T0);
    assert!(matches!(
        world.kb(&w, KbCall::Status, T0).reply,
        KbResponse::Status(_)
    ));
    let member = MemberId::from_peer(&w.peer).to_string();
    let fx = world
        .owners
        .revoke(&world.id, &member, T0.plus_secs(10))
        .expect("revokes");
    match fx.persist.as_slice() {
        [Record::Member { record, .. }] => assert_eq!(record.revoked_at, Some(T0.plus_secs(10))),
        other => panic!("expected the revoked record, got {other:?}"),
    }
    let (code, msg) = error(&world.kb(&w, KbCall::Status, T0.plus_secs(11)));
    assert_eq!(code, ErrorCode::Revoked);
    assert!(msg.contains("revoked"), "{msg}");
    // A revoked peer cannot join again.
    let fx = world.membership(
        &w,
        MembershipRequest::Authorize {
            program: world.id,
            seal_key: w.seal.public(),
        },
        T0.plus_secs(12),
    );
    assert!(matches!(&fx.reply, MembershipResponse::Error(_)));
    // Revoking a non-member id or garbage is refused in words.
    assert!(world.owners.revoke(&world.id, "garbage", T0).is_err());
    let other = ProgramId(Digest::of(b"x"));
    assert_eq!(
        world.owners.revoke(&other, &member, T0).err(),
        Some(OwnerError::NotOwned(other))
    );
}

#[test]
fn a_stranger_reads_nothing_from_the_kb() {
    let mut world = World::new(&Manifest::default());
    let mut w = Worker::new();
    world.join(&mut w, T0);
    // A stranger presenting the member's stolen credential from its own peer id is refused.
    let mut thief = Worker::new();
    thief.credential = w.credential.clone();
    for call in [KbCall::Status, KbCall::Champion, KbCall::Program] {
        let (code, _) = error(&world.kb(&thief, call, T0));
        assert_eq!(code, ErrorCode::MembershipRequired);
    }
}
