//! Restart: an owner rebuilt from the records it asked to persist is the owner it was.

use proptest::prelude::*;

use super::*;
use crate::kb::Verdict;
use crate::membership::MemberId;
use crate::owner::{OwnerRestoreError, ProgramOwner};

fn restored(world: &World) -> ProgramOwner {
    world
        .owners
        .restore(&world.view, world.announcement.clone(), world.log.clone())
        .expect("the log restores")
}

/// What restart must preserve, read through the owner's public face.
fn state(o: &ProgramOwner) -> impl PartialEq + std::fmt::Debug {
    let members: Vec<_> = o.registry().members().cloned().collect();
    let mut claimed: Vec<_> = o.claimed.iter().map(|(k, member)| (*k, *member)).collect();
    claimed.sort();
    let mut nonces: Vec<_> = o.nonces.iter().map(|(k, seq)| (*k, *seq)).collect();
    nonces.sort();
    (
        claimed,
        nonces,
        o.kb().entries(),
        o.kb().champion().cloned(),
        o.champion_submission().cloned(),
        o.pending_claims().collect::<Vec<_>>(),
        o.next_claim(),
        o.kb_status(),
        members,
        o.registry().pending(T0).collect::<Vec<_>>(),
    )
}

/// Hostile peers item 9: join requests waiting for the owner's decision used to be lost on an owner
/// restart (the worker's code stopped working and it had to start over). An undecided code is
/// stored before the worker sees it and comes back with its sealing key, so the owner approves it
/// after the restart and the grant reaches the worker; a decided code is deleted and stays decided.
#[test]
fn an_undecided_join_request_survives_a_restart_and_a_decided_one_does_not() {
    let mut world = World::new(&Manifest::default());
    let mut w = Worker::new();
    let (code, user_code, fx) = world.authorize(&w, T0);
    assert!(
        matches!(fx.persist.as_slice(), [Record::JoinCode { code: c, .. }] if c.device_code == code),
        "the code is stored before the worker sees it: {:?}",
        fx.persist
    );
    let other = Worker::new();
    let (_, denied, _) = world.authorize(&other, T0);
    let fx = world
        .owners
        .decide(&denied.to_string(), false, T0, &mut world.rng)
        .expect("denies");
    assert!(matches!(
        world.apply(fx).persist.as_slice(),
        [Record::JoinCodeClosed { .. }]
    ));
    let again = restored(&world);
    let waiting: Vec<_> = again.registry().pending(T0).map(|p| p.user_code).collect();
    assert_eq!(waiting, vec![user_code]);
    world.owners.insert(again);
    // The worker keeps polling its code after the restart.
    let req = MembershipRequest::Poll {
        program: world.id,
        device_code: code,
    };
    assert_eq!(
        world.membership(&w, req, T0.plus_secs(30)).reply,
        MembershipResponse::Poll(crate::wire::PollStatus::AuthorizationPending)
    );
    let fx = world
        .owners
        .decide(
            &user_code.to_string(),
            true,
            T0.plus_secs(60),
            &mut world.rng,
        )
        .expect("approves after the restart");
    let fx = world.apply(fx);
    let push = fx.push.first().expect("the grant is pushed");
    assert_eq!(push.peer, w.peer);
    let credential = w.open(&push.delivery);
    assert!(world
        .owners
        .get(&world.id)
        .expect("owned")
        .registry()
        .verify(&credential, &w.peer)
        .is_ok());
    // The denied code stays denied, and nothing undecided is left for the next restart.
    assert!(world
        .owners
        .decide(&denied.to_string(), true, T0.plus_secs(60), &mut world.rng)
        .is_err());
    assert!(restored(&world).registry().pending(T0).next().is_none());
}

#[test]
fn an_owner_rebuilt_from_its_records_has_the_same_state_and_remembers_nonces() {
    let mut world = World::new(&Manifest::default());
    let (mut a, mut b) = (Worker::new(), Worker::new());
    world.join(&mut a, T0);
    world.join(&mut b, T0);
    let _ = world.submit(&a, 3.0, 1, T0);
    let _ = world.submit(&b, 2.0, 1, T0);
    let fx = world
        .owners
        .on_verdict(&world.id, 1, Verdict::Verified, T0)
        .expect("resolves");
    let _ = world.apply(fx);
    let _ = world.submit(&a, 2.5, 2, T0);
    let fx = world
        .owners
        .revoke(&world.id, &MemberId::from_peer(&b.peer).to_string(), T0)
        .expect("revokes");
    let _ = world.apply(fx);
    let before = state(world.owners.get(&world.id).expect("owned"));
    let again = restored(&world);
    assert_eq!(state(&again), before);
    // The nonce index came back: a retry after the restart is a duplicate, not a new entry.
    world.owners.insert(again);
    let r = receipt(&world.submit(&a, 2.5, 2, T0));
    assert!(r.duplicate);
    assert_eq!(r.seq, 3);
    // The revoked member stays locked out.
    assert_eq!(
        error(&world.kb(&b, KbCall::Status, T0)).0,
        crate::wire::ErrorCode::Revoked
    );
}

#[test]
fn records_in_any_order_restore_the_same_owner() {
    let mut world = World::new(&Manifest::default());
    let mut a = Worker::new();
    world.join(&mut a, T0);
    for (n, v) in [(1u8, 3.0), (2, 2.9), (3, 2.8)] {
        let _ = world.submit(&a, v, n, T0);
    }
    let fx = world
        .owners
        .on_verdict(&world.id, 1, Verdict::Failed("no".into()), T0)
        .expect("resolves");
    let _ = world.apply(fx);
    let before = state(&restored(&world));
    // The store returns tables, not one interleaved log: members, then submissions, then verdicts.
    world.log.reverse();
    world.log.sort_by_key(|r| match r {
        Record::Member { .. } => 0,
        Record::Submission(_) => 1,
        Record::Verdict(_) => 2,
        // The store deletes a closed code's row: a closure never precedes its code.
        Record::JoinCode { .. } => 3,
        Record::JoinCodeClosed { .. } => 4,
    });
    assert_eq!(state(&restored(&world)), before);
}

#[test]
fn a_gap_in_the_stored_submissions_is_reported() {
    let mut world = World::new(&Manifest::default());
    let mut a = Worker::new();
    world.join(&mut a, T0);
    for (n, v) in [(1u8, 3.0), (2, 2.9)] {
        let _ = world.submit(&a, v, n, T0);
    }
    world
        .log
        .retain(|r| !matches!(r, Record::Submission(s) if s.entry.seq == 1));
    let err = world
        .owners
        .restore(&world.view, world.announcement.clone(), world.log.clone())
        .expect_err("a gap");
    assert!(
        matches!(err, OwnerRestoreError::OutOfSequence { seq: 2, .. }),
        "{err}"
    );
}

/// One step of a random owner session.
#[derive(Debug, Clone)]
enum Step {
    Submit {
        worker: usize,
        value: f64,
        nonce: u8,
    },
    /// `worker` claims the checkpoint `from` trained for `nonce` (refused unless it was unclaimed
    /// or `worker` claimed it first).
    Steal {
        worker: usize,
        from: usize,
        value: f64,
        nonce: u8,
    },
    /// The verdict on the oldest claim: measured `off` from the claimed value, or failed.
    Verdict { ok: bool, off: f64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..3, 1.0f64..4.0, 0u8..6).prop_map(|(worker, value, nonce)| Step::Submit {
            worker,
            value,
            nonce
        }),
        (0usize..3, 0usize..3, 1.0f64..4.0, 0u8..6).prop_map(|(worker, from, value, nonce)| {
            Step::Steal {
                worker,
                from,
                value,
                nonce,
            }
        }),
        (any::<bool>(), -0.5f64..0.5).prop_map(|(ok, off)| Step::Verdict { ok, off }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever members submit and however the checks go, the owner rebuilt from its records
    /// equals the live one.
    #[test]
    fn restart_from_the_log_gives_the_same_state(steps in proptest::collection::vec(step(), 1..40)) {
        let mut world = World::new(&Manifest::default());
        let mut workers: Vec<Worker> = (0..3).map(|_| Worker::new()).collect();
        for w in &mut workers {
            world.join(w, T0);
        }
        for s in steps {
            match s {
                Step::Submit { worker, value, nonce } => {
                    let _ = world.submit(&workers[worker], value, nonce, T0);
                }
                Step::Steal { worker, from, value, nonce } => {
                    let digest = workers[from].checkpoint(nonce);
                    let s = workers[worker].claiming(world.id, value, nonce.wrapping_add(100), Some(digest), T0);
                    let _ = world.kb(&workers[worker], KbCall::Submit(s), T0);
                }
                Step::Verdict { ok, off } => {
                    if let Some(job) = world.owners.next_claims().first() {
                        let v = if ok {
                            Verdict::Measured { value: job.submission.value + off }
                        } else {
                            Verdict::Failed("no".into())
                        };
                        let fx = world.owners.on_verdict(&world.id, job.seq, v, T0).expect("pending");
                        let _ = world.apply(fx);
                    }
                }
            }
        }
        let live = state(world.owners.get(&world.id).expect("owned"));
        prop_assert_eq!(state(&restored(&world)), live);
    }
}
