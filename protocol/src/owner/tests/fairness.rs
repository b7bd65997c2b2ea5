//! The verifier's order under a flood (issue #13, "Verifier stall"): one member cannot monopolise
//! the owner's single verifier. Within a program claims are checked oldest first and a member has at
//! most [`MAX_PENDING_PER_MEMBER`] waiting, so an honest claim is handed to the verifier after at
//! most that many of a flooder's, however fast the flooder refills; across programs the verifier
//! takes one claim per program per pass, so programs alternate.

use super::*;
use crate::kb::Verdict;
use crate::owner::ClaimToCheck;
use crate::owner::MAX_PENDING_PER_MEMBER;

/// Fills `w`'s queue in the world's current program back up to the cap, with claims the KEEP rule
/// would accept (so each one waits for a check); `nonce` numbers its submissions.
fn flood(world: &mut World, w: &Worker, nonce: &mut u8, now: Timestamp) {
    loop {
        *nonce += 1;
        let fx = world.submit(w, 3.0 - f64::from(*nonce) * 1e-3, *nonce, now);
        match &fx.reply {
            KbResponse::Submitted(r) => assert!(is_pending(r), "{r:?}"),
            KbResponse::Error(e) if e.code == crate::wire::ErrorCode::RateLimited => return,
            other => panic!("unexpected reply {other:?}"),
        }
    }
}

/// One pass of the verifier: the claims [`Owners::next_claims`] hands out, each rejected (the
/// flooder's claims are junk; the verdict does not change the order). Returns them in order.
fn verifier_pass(world: &mut World, now: Timestamp) -> Vec<ClaimToCheck> {
    let jobs = world.owners.next_claims();
    for job in &jobs {
        let fx = world
            .owners
            .on_verdict(
                &job.program,
                job.seq,
                Verdict::Failed("metric did not reproduce".into()),
                now,
            )
            .expect("the handed claim is the oldest pending one");
        let _ = world.apply(fx);
    }
    jobs
}

#[test]
fn an_honest_claim_is_checked_after_at_most_eight_of_a_flooders() {
    let mut world = World::new(&Manifest::default());
    let mut flooder = Worker::new();
    let mut honest = Worker::new();
    world.join(&mut flooder, T0);
    world.join(&mut honest, T0);
    let mut nonce = 0u8;
    // The flooder fills its queue before the honest member submits.
    flood(&mut world, &flooder, &mut nonce, T0);
    assert!(is_pending(&receipt(&world.submit(&honest, 2.5, 1, T0))));
    // The verifier works; after every verdict the flooder refills its queue at once.
    let mut before = 0;
    let honest_id = honest.peer;
    'checks: for _ in 0..100 {
        let jobs = verifier_pass(&mut world, T0);
        assert_eq!(jobs.len(), 1, "one program: one claim per pass");
        for job in jobs {
            if job.worker == honest_id {
                break 'checks;
            }
            assert_eq!(job.worker, flooder.peer);
            before += 1;
            flood(&mut world, &flooder, &mut nonce, T0);
        }
    }
    assert!(
        (1..=MAX_PENDING_PER_MEMBER).contains(&before),
        "the honest claim waited behind {before} of the flooder's"
    );
    assert_eq!(before, MAX_PENDING_PER_MEMBER);
}

/// A world whose owner has two programs; returns them in the order the verifier visits them.
fn two_programs() -> (World, ProgramId, ProgramId) {
    let mut world = World::new(&Manifest::default());
    let first = world.id;
    let published = world
        .owners
        .publish(
            Manifest {
                name: "owner-core-2",
                ..Manifest::default()
            }
            .toml(),
            vec![],
            T0,
        )
        .expect("valid");
    world.owners.insert(published.owner.expect("a new program"));
    let second = published.view.id;
    let (lo, hi) = if first < second {
        (first, second)
    } else {
        (second, first)
    };
    (world, lo, hi)
}

#[test]
fn the_verifier_alternates_between_programs() {
    let (mut world, lo, hi) = two_programs();
    // A flooder in each program (a credential is per program, so one worker per program).
    let mut nonces = [0u8; 2];
    let mut flooders = Vec::new();
    for (i, id) in [lo, hi].into_iter().enumerate() {
        world.id = id;
        let mut w = Worker::new();
        world.join(&mut w, T0);
        flood(&mut world, &w, &mut nonces[i], T0);
        flooders.push((id, w));
    }
    // Passes of the verifier, the flooders refilling after each: every pass checks one claim of
    // each program, so neither program's queue starves the other.
    let mut order = Vec::new();
    for _ in 0..6 {
        for job in verifier_pass(&mut world, T0) {
            order.push(job.program);
        }
        for (i, (id, w)) in flooders.iter().enumerate() {
            world.id = *id;
            flood(&mut world, w, &mut nonces[i], T0);
        }
    }
    assert_eq!(order, [lo, hi].repeat(6));
}

#[test]
fn a_quiet_programs_claim_is_not_held_up_by_a_flooded_one() {
    // The flooded program is the one the verifier visits first.
    let (mut world, flooded, quiet) = two_programs();
    world.id = flooded;
    let mut flooder = Worker::new();
    world.join(&mut flooder, T0);
    let mut nonce = 0u8;
    flood(&mut world, &flooder, &mut nonce, T0);
    world.id = quiet;
    let mut honest = Worker::new();
    world.join(&mut honest, T0);
    assert!(is_pending(&receipt(&world.submit(&honest, 2.5, 1, T0))));
    // The next pass hands it out, behind one of the flooder's.
    let jobs = verifier_pass(&mut world, T0);
    let workers: Vec<_> = jobs.iter().map(|j| j.worker).collect();
    assert_eq!(workers, [flooder.peer, honest.peer]);
}
