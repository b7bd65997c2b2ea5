//! Submissions and claims on the owner: durability before the receipt, nonce idempotency, the
//! claim requirement, the pending cap, stop conditions, verdicts and the claim queue.

use super::*;
use crate::kb::Verdict;
use crate::membership::MemberId;
use crate::owner::MAX_PENDING_PER_MEMBER;
use crate::wire::{ErrorCode, StatusQuery, MAX_RESULTS_PAGE};

fn joined(m: &Manifest) -> (World, Worker) {
    let mut world = World::new(m);
    let mut w = Worker::new();
    world.join(&mut w, T0);
    (world, w)
}

#[test]
fn a_submission_is_stored_before_its_receipt_and_a_claim_wakes_the_verifier() {
    let (mut world, w) = joined(&Manifest::default());
    let fx = world.submit(&w, 3.0, 1, T0);
    let r = receipt(&fx);
    // A claim that would become champion waits for the check and counts for nothing until then.
    assert_eq!(
        (r.seq, r.accepted, r.champion, r.duplicate),
        (1, false, false, false)
    );
    assert!(is_pending(&r));
    assert!(fx.claims_ready);
    match fx.persist.as_slice() {
        [Record::Submission(s)] => {
            assert_eq!(s.entry.seq, 1);
            assert_eq!(s.nonce, [1; 16]);
            assert_eq!(s.received_at, T0);
            // The stored bytes are the signed submission as received.
            let back: Signed<Submission> = crate::wire::decode(&s.signed).expect("decodes");
            assert_eq!(back.verify().expect("valid").value.value, 3.0);
        }
        other => panic!("expected one submission record, got {other:?}"),
    }
}

#[test]
fn a_retried_nonce_gets_the_original_receipt_once_durable_and_counts_once() {
    let (mut world, w) = joined(&Manifest::default());
    let first = receipt(&world.submit(&w, 3.0, 1, T0));
    // The same nonce again (even with another value) is the same submission.
    let fx = world.submit(&w, 2.0, 1, T0.plus_secs(1));
    let again = receipt(&fx);
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    assert!(fx.persist.is_empty() && fx.after_durable && !fx.claims_ready);
    let owner = world.owners.get(&world.id).expect("owned");
    assert_eq!(owner.kb().entries().len(), 1);
}

#[test]
fn a_program_that_checks_claims_refuses_a_bare_value() {
    let (mut world, w) = joined(&Manifest::default());
    let bare = w.submission(world.id, 3.0, 1, false, T0);
    let fx = world.kb(&w, KbCall::Submit(bare), T0);
    let (code, msg) = error(&fx);
    assert_eq!(code, ErrorCode::Invalid);
    assert!(msg.contains("--checkpoint"), "{msg}");
    assert!(fx.persist.is_empty());
    // A program that does not check (a shell task) takes it and counts it at once.
    let (mut world, w) = joined(&Manifest {
        checks: false,
        ..Manifest::default()
    });
    let bare = w.submission(world.id, 3.0, 1, false, T0);
    let fx = world.kb(&w, KbCall::Submit(bare), T0);
    let r = receipt(&fx);
    assert!(r.champion && r.check == Check::NotNeeded && !fx.claims_ready);
}

#[test]
fn a_member_may_have_at_most_eight_claims_waiting() {
    let (mut world, w) = joined(&Manifest::default());
    for i in 0..MAX_PENDING_PER_MEMBER {
        // Each strictly better than the champion so far would become champion: pending.
        let r = receipt(&world.submit(&w, 3.0 - i as f64 * 0.1, i as u8 + 1, T0));
        assert!(is_pending(&r));
    }
    let fx = world.submit(&w, 1.0, 100, T0);
    let (code, msg) = error(&fx);
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(msg.contains("8 claims waiting"), "{msg}");
    // Another member is not held up by the first one's queue.
    let mut other = Worker::new();
    world.join(&mut other, T0);
    assert!(is_pending(&receipt(&world.submit(&other, 1.0, 1, T0))));
    // Once the check settles the first member's claims, it may submit again.
    let jobs = world.owners.next_claims();
    let seq = jobs[0].seq;
    let fx = world
        .owners
        .on_verdict(
            &world.id,
            seq,
            Verdict::Failed("metric did not reproduce".into()),
            T0,
        )
        .expect("resolves");
    let _ = world.apply(fx);
    assert!(matches!(
        world.submit(&w, 1.0, 101, T0).reply,
        KbResponse::Submitted(_)
    ));
}

#[test]
fn submissions_signed_by_another_peer_or_for_another_program_are_refused() {
    let (mut world, w) = joined(&Manifest::default());
    // Signed by someone else, sent with the member's credential.
    let forger = Worker::new();
    let forged = forger.submission(world.id, 1.0, 1, true, T0);
    let (code, msg) = error(&world.kb(&w, KbCall::Submit(forged), T0));
    assert_eq!(code, ErrorCode::Invalid);
    assert!(msg.contains("signed by the submitting peer"), "{msg}");
    // Naming another program.
    let elsewhere = w.submission(ProgramId(Digest::of(b"other")), 1.0, 2, true, T0);
    let (_, msg) = error(&world.kb(&w, KbCall::Submit(elsewhere), T0));
    assert!(msg.contains("another program"), "{msg}");
    // From the future (beyond the allowed clock skew).
    let future = w.submission(world.id, 1.0, 3, true, T0.plus_secs(3600));
    let (code, _) = error(&world.kb(&w, KbCall::Submit(future), T0));
    assert_eq!(code, ErrorCode::Invalid);
    assert!(world
        .log
        .iter()
        .all(|r| !matches!(r, Record::Submission(_))));
}

#[test]
fn the_program_stops_at_its_submission_cap() {
    let (mut world, w) = joined(&Manifest {
        checks: false,
        stop: "max_submissions = 2",
        ..Manifest::default()
    });
    let bare = |world: &World, v: f64, n: u8| w.submission(world.id, v, n, false, T0);
    for n in 1..=2 {
        let s = bare(&world, 3.0, n);
        assert!(matches!(
            world.kb(&w, KbCall::Submit(s), T0).reply,
            KbResponse::Submitted(_)
        ));
    }
    let s = bare(&world, 1.0, 3);
    let (code, msg) = error(&world.kb(&w, KbCall::Submit(s), T0));
    assert_eq!(code, ErrorCode::ProgramStopped);
    assert!(msg.contains("2 submissions"), "{msg}");
}

#[test]
fn the_program_stops_strictly_after_its_deadline() {
    // 2026-01-01T00:00:10Z = T0 + 10 s.
    let (mut world, w) = joined(&Manifest {
        checks: false,
        stop: "deadline = 2026-01-01T00:00:10Z",
        ..Manifest::default()
    });
    let at = T0.plus_secs(10);
    let s = w.submission(world.id, 3.0, 1, false, at);
    assert!(matches!(
        world.kb(&w, KbCall::Submit(s), at).reply,
        KbResponse::Submitted(_)
    ));
    let after = Timestamp(at.0 + 1);
    let s = w.submission(world.id, 2.0, 2, false, after);
    let (code, msg) = error(&world.kb(&w, KbCall::Submit(s), after));
    assert_eq!(code, ErrorCode::ProgramStopped);
    assert!(msg.contains("deadline"), "{msg}");
}

#[test]
fn the_program_stops_once_a_verified_champion_reaches_the_target() {
    let (mut world, w) = joined(&Manifest {
        stop: "target = 2.0",
        ..Manifest::default()
    });
    // A pending claim at the target does not stop the program: only a verified champion does.
    assert!(is_pending(&receipt(&world.submit(&w, 2.0, 1, T0))));
    assert!(world
        .owners
        .get(&world.id)
        .expect("owned")
        .stopped(T0)
        .is_none());
    let fx = world
        .owners
        .on_verdict(&world.id, 1, Verdict::Verified, T0)
        .expect("resolves");
    let _ = world.apply(fx);
    let (code, msg) = error(&world.submit(&w, 1.0, 2, T0));
    assert_eq!(code, ErrorCode::ProgramStopped);
    assert!(msg.contains("target 2"), "{msg}");
}

#[test]
fn claims_are_checked_oldest_first_and_the_first_verified_wins() {
    let (mut world, a) = joined(&Manifest::default());
    let mut b = Worker::new();
    world.join(&mut b, T0);
    assert!(is_pending(&receipt(&world.submit(&a, 3.0, 1, T0))));
    assert!(is_pending(&receipt(&world.submit(&b, 2.5, 1, T0))));
    let jobs = world.owners.next_claims();
    assert_eq!(jobs.len(), 1, "one claim per program at a time");
    assert_eq!((jobs[0].seq, jobs[0].worker), (1, a.peer));
    assert_eq!(jobs[0].submission.value, 3.0);
    let fx = world
        .owners
        .on_verdict(&world.id, 1, Verdict::Verified, T0.plus_secs(5))
        .expect("resolves");
    // The verdict is stored before the entry is reported.
    match fx.persist.as_slice() {
        [Record::Verdict(v)] => {
            assert_eq!((v.seq, v.after, v.decided_at), (1, 2, T0.plus_secs(5)));
            assert_eq!(v.verdict, Verdict::Verified);
        }
        other => panic!("expected one verdict record, got {other:?}"),
    }
    assert!(fx.reply.champion);
    let _ = world.apply(fx);
    let owner = world.owners.get(&world.id).expect("owned");
    assert_eq!(owner.kb().champion().map(|c| c.seq), Some(1));
    // The champion's signed submission is what members read (its hypothesis seeds their search).
    let champion = owner.champion_submission().expect("a champion");
    assert_eq!(champion.verify().expect("valid").signer, a.peer);
    // b's claim still beats the new champion: next in line.
    assert_eq!(world.owners.next_claims()[0].seq, 2);
    // A verdict on a claim that is not pending is refused.
    assert!(world
        .owners
        .on_verdict(&world.id, 1, Verdict::Verified, T0)
        .is_err());
}

#[test]
fn a_checkpoint_another_member_claimed_is_refused_and_the_champion_keeps_its_credit() {
    let (mut world, honest) = joined(&Manifest::default());
    let mut thief = Worker::new();
    world.join(&mut thief, T0);
    assert!(is_pending(&receipt(&world.submit(&honest, 3.0, 1, T0))));
    let fx = world
        .owners
        .on_verdict(&world.id, 1, Verdict::Measured { value: 3.0 }, T0)
        .expect("resolves");
    let _ = world.apply(fx);
    // The thief reads the champion's claim and claims its checkpoint with a better value.
    let champion = match &world.kb(&thief, KbCall::Champion, T0).reply {
        KbResponse::Champion(Some(c)) => c.submission.verify().expect("valid").value,
        other => panic!("expected the champion, got {other:?}"),
    };
    let digest = champion.claim.expect("a claim").checkpoint;
    let stolen = thief.claiming(world.id, 2.9, 1, Some(digest), T0);
    let fx = world.kb(&thief, KbCall::Submit(stolen), T0);
    let (code, msg) = error(&fx);
    assert_eq!(code, ErrorCode::Invalid);
    assert!(msg.contains("already claimed by another member"), "{msg}");
    assert!(msg.contains("btd submit --checkpoint"), "{msg}");
    assert!(fx.persist.is_empty() && !fx.claims_ready);
    // Refused before the KB: no sequence number, the champion and its credit are the honest one's.
    let owner = world.owners.get(&world.id).expect("owned");
    assert_eq!(owner.kb().entries().len(), 1);
    assert_eq!(owner.kb().champion().map(|c| c.seq), Some(1));
    let payouts = owner.kb().payouts();
    let honest_id = MemberId::from_peer(&honest.peer).to_string();
    assert_eq!(
        payouts.get(&honest_id).map(|a| a.to_string()),
        Some("100.000000".into())
    );
    // The member that claimed it first may claim it again (a resubmission of its own work).
    let again = honest.claiming(world.id, 2.9, 2, Some(digest), T0);
    assert!(is_pending(&receipt(&world.kb(
        &honest,
        KbCall::Submit(again),
        T0
    ))));
}

#[test]
fn a_claimed_checkpoint_stays_its_first_claimants_after_a_restart() {
    let (mut world, honest) = joined(&Manifest::default());
    let mut thief = Worker::new();
    world.join(&mut thief, T0);
    // A claim the KEEP rule rejects (worse than the baseline) still reserves its checkpoint.
    assert_eq!(
        receipt(&world.submit(&honest, 9.0, 1, T0)).check,
        Check::NotNeeded
    );
    let digest = honest.checkpoint(1);
    let again = world
        .owners
        .restore(&world.view, world.announcement.clone(), world.log.clone())
        .expect("the log restores");
    world.owners.insert(again);
    let stolen = thief.claiming(world.id, 2.0, 1, Some(digest), T0);
    let (code, msg) = error(&world.kb(&thief, KbCall::Submit(stolen), T0));
    assert_eq!(code, ErrorCode::Invalid);
    assert!(msg.contains("already claimed"), "{msg}");
    let own = honest.claiming(world.id, 2.0, 2, Some(digest), T0);
    assert!(is_pending(&receipt(&world.kb(
        &honest,
        KbCall::Submit(own),
        T0
    ))));
}

#[test]
fn a_verified_claim_counts_with_the_owners_measurement() {
    let (mut world, a) = joined(&Manifest::default());
    assert!(is_pending(&receipt(&world.submit(&a, 2.0, 1, T0))));
    let fx = world
        .owners
        .on_verdict(&world.id, 1, Verdict::Measured { value: 2.5 }, T0)
        .expect("resolves");
    assert_eq!(fx.reply.value, 2.5);
    assert!(fx.reply.champion && (fx.reply.impact - 1.5).abs() < 1e-12);
    let _ = world.apply(fx);
    let owner = world.owners.get(&world.id).expect("owned");
    assert_eq!(owner.kb().champion().map(|c| c.value), Some(2.5));
}

#[test]
fn a_verified_champion_settles_the_pending_claims_it_supersedes() {
    let (mut world, a) = joined(&Manifest::default());
    let mut b = Worker::new();
    world.join(&mut b, T0);
    assert!(is_pending(&receipt(&world.submit(&a, 3.0, 1, T0))));
    assert!(is_pending(&receipt(&world.submit(&b, 2.0, 1, T0))));
    // b's better claim is checked after a's fails... here a's claim is rejected, b's verifies, and
    // a later worse claim from a that was pending behind it no longer needs a check.
    assert!(is_pending(&receipt(&world.submit(&a, 2.5, 2, T0))));
    let fx = world
        .owners
        .on_verdict(
            &world.id,
            1,
            Verdict::Failed("did not reproduce".into()),
            T0,
        )
        .expect("resolves");
    let _ = world.apply(fx);
    let fx = world
        .owners
        .on_verdict(&world.id, 2, Verdict::Verified, T0)
        .expect("resolves");
    let _ = world.apply(fx);
    let owner = world.owners.get(&world.id).expect("owned");
    assert_eq!(owner.kb().champion().map(|c| c.seq), Some(2));
    assert_eq!(
        owner.pending_claims().count(),
        0,
        "claim 3 no longer beats the champion"
    );
    assert_eq!(owner.kb().entries()[2].check, Check::NotNeeded);
    assert!(world.owners.next_claims().is_empty());
    let status = owner.kb_status();
    assert_eq!(
        (status.pending, status.verified, status.rejected),
        (0, 1, 1)
    );
}

#[test]
fn the_share_if_verified_is_computed_only_for_programs_that_retrain() {
    let (mut world, a) = joined(&Manifest {
        retrain_share: Some(0.5),
        ..Manifest::default()
    });
    assert!(is_pending(&receipt(&world.submit(&a, 3.0, 1, T0))));
    // The only claim would take the whole pool.
    assert_eq!(world.owners.next_claims()[0].share_if_verified, 1.0);
    let (mut world, a) = joined(&Manifest::default());
    assert!(is_pending(&receipt(&world.submit(&a, 3.0, 1, T0))));
    assert_eq!(world.owners.next_claims()[0].share_if_verified, 0.0);
}

#[test]
fn members_read_the_champion_results_in_pages_and_status() {
    let (mut world, a) = joined(&Manifest {
        checks: false,
        ..Manifest::default()
    });
    for (n, v) in [(1u8, 3.0), (2, 2.5), (3, 2.7)] {
        let s = a.submission(world.id, v, n, false, T0);
        let _ = world.kb(&a, KbCall::Submit(s), T0);
    }
    match world.kb(&a, KbCall::Champion, T0).reply {
        KbResponse::Champion(Some(c)) => {
            assert_eq!(c.entry.seq, 2);
            assert_eq!(c.submission.verify().expect("valid").value.value, 2.5);
        }
        other => panic!("expected the champion, got {other:?}"),
    }
    match world
        .kb(
            &a,
            KbCall::Results {
                after_seq: 1,
                limit: 1,
            },
            T0,
        )
        .reply
    {
        KbResponse::Results { entries, more } => {
            assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
            assert!(more);
        }
        other => panic!("expected a page, got {other:?}"),
    }
    // A page size out of bounds is refused.
    let (code, _) = error(&world.kb(
        &a,
        KbCall::Results {
            after_seq: 0,
            limit: 0,
        },
        T0,
    ));
    assert_eq!(code, ErrorCode::Invalid);
    match world.kb(&a, KbCall::Status, T0).reply {
        KbResponse::Status(s) => {
            assert_eq!((s.members, s.submissions, s.accepted), (1, 3, 2));
            assert_eq!(s.payouts.total().micros(), 100_000_000);
        }
        other => panic!("expected the status, got {other:?}"),
    }
    match world.kb(&a, KbCall::Program, T0).reply {
        KbResponse::Program(p) => assert_eq!(p, world.announcement),
        other => panic!("expected the announcement, got {other:?}"),
    }
}

#[test]
fn members_read_the_status_with_one_page_of_results_newest_first() {
    let (mut world, a) = joined(&Manifest {
        checks: false,
        ..Manifest::default()
    });
    for n in 1..=5u8 {
        let s = a.submission(world.id, 4.0 - f64::from(n) * 0.1, n, false, T0);
        let _ = world.kb(&a, KbCall::Submit(s), T0);
    }
    let page = |world: &mut World, page: u32, limit: u32, oldest_first: bool| {
        let q = StatusQuery {
            page,
            limit,
            oldest_first,
        };
        match world.kb(&a, KbCall::StatusPage(q), T0).reply {
            KbResponse::StatusPage {
                status,
                results,
                more,
            } => {
                assert_eq!((status.submissions, status.accepted), (5, 5));
                (results.iter().map(|e| e.seq).collect::<Vec<_>>(), more)
            }
            other => panic!("expected a status page, got {other:?}"),
        }
    };
    assert_eq!(page(&mut world, 1, 2, false), (vec![5, 4], true));
    assert_eq!(page(&mut world, 3, 2, false), (vec![1], false));
    assert_eq!(page(&mut world, 2, 2, true), (vec![3, 4], true));
    assert_eq!(page(&mut world, 9, 2, true), (vec![], false));
    // The summary alone.
    assert_eq!(page(&mut world, 1, 0, false), (vec![], false));
    // The owner's own read answers the same.
    let own = world
        .owners
        .get(&world.id)
        .expect("owned")
        .read_own(&KbCall::StatusPage(StatusQuery::newest(2)))
        .expect("a status read")
        .reply;
    assert!(matches!(own, KbResponse::StatusPage { results, .. } if results[0].seq == 5));
    // Out of bounds: refused with the reason.
    for bad in [(0, 2), (1, MAX_RESULTS_PAGE + 1)] {
        let q = StatusQuery {
            page: bad.0,
            limit: bad.1,
            oldest_first: false,
        };
        let (code, why) = error(&world.kb(&a, KbCall::StatusPage(q), T0));
        assert_eq!(code, ErrorCode::Invalid, "{why}");
    }
}

#[test]
fn a_signature_checked_off_the_core_counts_only_for_its_own_envelope_and_sender() {
    use crate::owner::{submissions_of, CheckedSubmission};
    let (mut world, a) = joined(&Manifest {
        checks: false,
        ..Manifest::default()
    });
    let mut b = Worker::new();
    world.join(&mut b, T0);
    let first = a.submission(world.id, 3.0, 1, false, T0);
    let checked = CheckedSubmission::check(&a.peer, &first).expect("a's own signature");
    // Checked from the wrong sender: refused before anything is made of it.
    assert!(CheckedSubmission::check(&b.peer, &first).is_err());
    // Used for the envelope it was made on: recorded as that envelope says.
    let call = KbCall::Submit(first.clone());
    assert_eq!(submissions_of(&call), vec![&first]);
    let r = receipt(&world.kb_checked(&a, call, Some(checked.clone()), T0));
    assert_eq!(r.seq, 1);
    // Handed along with another envelope, the proof is ignored and that envelope is checked:
    // a's second result counts with its own value, not the first one's.
    let second = a.submission(world.id, 2.0, 2, false, T0);
    let r = receipt(&world.kb_checked(&a, KbCall::Submit(second), Some(checked.clone()), T0));
    assert_eq!(r.seq, 2);
    let entry = world.owners.get(&world.id).expect("owned").kb().entry(2);
    assert_eq!(entry.map(|e| e.value), Some(2.0));
    // And from another sender (b presenting a's proof with b's envelope signed by a): refused.
    let stolen = a.submission(world.id, 1.0, 3, false, T0);
    let fx = world.kb_checked(&b, KbCall::Submit(stolen), Some(checked), T0);
    let (code, why) = error(&fx);
    assert_eq!(code, ErrorCode::Invalid, "{why}");
    assert!(why.contains("signed by the submitting peer"), "{why}");
}

#[test]
fn a_member_may_fetch_the_programs_dataset_and_nothing_else() {
    let digest = Digest::of(b"corpus");
    let m = Manifest::default();
    let toml = m.toml().replace(
        "kind = \"synthetic\"\nseed = 1\nbytes = 65536",
        &format!("kind = \"file\"\nsha256 = \"{digest}\""),
    );
    let mut owners = Owners::new(Keypair::generate_ed25519());
    let p = owners.publish(toml, vec![], T0).expect("valid");
    let id = p.view.id;
    owners.insert(p.owner.expect("new"));
    let mut world = World {
        owners,
        id,
        rng: ChaCha20Rng::seed_from_u64(1),
        log: vec![],
        announcement: p.signed,
        view: p.view,
    };
    let mut w = Worker::new();
    world.join(&mut w, T0);
    let owner = world.owners.get(&id).expect("owned");
    assert!(owner
        .may_fetch(&w.peer, w.credential.as_ref(), &digest)
        .is_ok());
    let (code, _) = owner
        .may_fetch(&w.peer, w.credential.as_ref(), &Digest::of(b"holdout"))
        .expect_err("only the dataset");
    assert_eq!(code, ErrorCode::NotFound);
    let (code, _) = owner
        .may_fetch(&w.peer, None, &digest)
        .expect_err("no credential");
    assert_eq!(code, ErrorCode::MembershipRequired);
    let stranger = Worker::new();
    let (code, _) = owner
        .may_fetch(&stranger.peer, w.credential.as_ref(), &digest)
        .expect_err("stolen credential");
    assert_eq!(code, ErrorCode::MembershipRequired);
}

#[test]
fn a_failed_verdict_is_stored_and_served_with_a_bounded_clean_reason() {
    use crate::kb::MAX_VERDICT_REASON_BYTES;
    use crate::owner::Record;
    let (mut world, w) = joined(&Manifest::default());
    assert!(is_pending(&receipt(&world.submit(&w, 3.0, 1, T0))));
    // What the verifier makes of a hostile member's (nearly 1 MiB) fetch error, escapes and all.
    let poisoned = format!("cannot fetch: \x1b[2J{}", "A".repeat(1_000_000));
    let fx = world
        .owners
        .on_verdict(&world.id, 1, Verdict::Failed(poisoned), T0)
        .expect("resolves");
    let clean = |why: &str| why.len() <= MAX_VERDICT_REASON_BYTES && !why.contains('\x1b');
    let Check::Failed(served) = &fx.reply.check else {
        panic!("{:?}", fx.reply.check)
    };
    assert!(clean(served), "served {} bytes", served.len());
    let stored = fx.persist.iter().find_map(|r| match r {
        Record::Verdict(v) => Some(v.verdict.clone()),
        _ => None,
    });
    let Some(Verdict::Failed(stored)) = stored else {
        panic!("no failed verdict stored: {:?}", fx.persist)
    };
    assert!(clean(&stored), "stored {} bytes", stored.len());
    assert!(stored.starts_with("cannot fetch:"));
}

/// Hostile peers item 8: a member whose claims the owner's check rejects cannot use them up to
/// stop a program at `max_submissions`, and revoking a member who flooded the log with values that
/// never needed a check gives the program its submissions back; a restart counts the same.
#[test]
fn rejected_claims_and_revoked_members_do_not_count_toward_the_submission_cap() {
    let (mut world, attacker) = joined(&Manifest {
        stop: "max_submissions = 3",
        ..Manifest::default()
    });
    let mut honest = Worker::new();
    world.join(&mut honest, T0);
    // Three claims of an impossible value, each rejected by the check.
    for n in 1..=3 {
        assert!(is_pending(&receipt(&world.submit(&attacker, 0.001, n, T0))));
        let seq = world.owners.next_claims()[0].seq;
        let fx = world
            .owners
            .on_verdict(&world.id, seq, Verdict::failed("did not reproduce"), T0)
            .expect("resolves");
        let _ = world.apply(fx);
    }
    let owner = world.owners.get(&world.id).expect("owned");
    assert_eq!(owner.counted_submissions(), 0);
    assert!(owner.stopped(T0).is_none());
    // The honest member's claim is still taken, and counts while pending.
    assert!(is_pending(&receipt(&world.submit(&honest, 3.0, 1, T0))));
    assert_eq!(
        world
            .owners
            .get(&world.id)
            .expect("owned")
            .counted_submissions(),
        1
    );
    // Values worse than the baseline need no check, so they count; two of them reach the cap.
    for n in 10..=11 {
        assert!(!is_pending(&receipt(&world.submit(&attacker, 9.0, n, T0))));
    }
    let (code, _) = error(&world.submit(&honest, 2.0, 2, T0));
    assert_eq!(code, ErrorCode::ProgramStopped);
    // The owner revokes the flooder: its submissions stop counting and the program reopens.
    let fx = world
        .owners
        .revoke(
            &world.id,
            &MemberId::from_peer(&attacker.peer).to_string(),
            T0,
        )
        .expect("revokes");
    let _ = world.apply(fx);
    let restored = world
        .owners
        .restore(&world.view, world.announcement.clone(), world.log.clone())
        .expect("restores");
    assert_eq!(
        restored.counted_submissions(),
        1,
        "a restart counts the same"
    );
    assert!(is_pending(&receipt(&world.submit(&honest, 2.0, 2, T0))));
}

/// Hostile peers item 8: one member stores at most `MAX_SUBMISSIONS_PER_MEMBER_PER_WINDOW`
/// submissions per hour (the log cannot be grown without bound), is told when to come back, other
/// members are not affected, and a restart does not reset the quota.
#[test]
fn a_member_stores_at_most_its_quota_of_submissions_per_hour_even_across_a_restart() {
    use crate::owner::{MAX_SUBMISSIONS_PER_MEMBER_PER_WINDOW, SUBMISSION_WINDOW_SECS};
    let (mut world, w) = joined(&Manifest {
        checks: false,
        ..Manifest::default()
    });
    let bare = |world: &World, w: &Worker, n: u64, now: Timestamp| {
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&n.to_le_bytes());
        let sub = Submission {
            program: world.id,
            nonce,
            value: 5.0 + n as f64,
            rung_id: "cpu".into(),
            outputs: vec![],
            metrics: BTreeMap::new(),
            hypothesis: BTreeMap::new(),
            created_at: now,
            claim: None,
        };
        KbCall::Submit(Signed::sign(&w.key, &sub).expect("signs"))
    };
    let quota = MAX_SUBMISSIONS_PER_MEMBER_PER_WINDOW as u64;
    // Spread over the first minute of the window.
    let at = |n: u64| T0.plus_millis(n * 60_000 / quota);
    for n in 0..quota {
        let call = bare(&world, &w, n, at(n));
        assert!(matches!(
            world.kb(&w, call, at(n)).reply,
            KbResponse::Submitted(_)
        ));
    }
    let late = T0.plus_secs(120);
    let (code, msg) = error(&world.kb(&w, bare(&world, &w, quota, late), late));
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(msg.contains("submit again in 3480 s"), "{msg}");
    // Another member is not affected.
    let mut other = Worker::new();
    world.join(&mut other, T0);
    let call = bare(&world, &other, 0, late);
    assert!(matches!(
        world.kb(&other, call, late).reply,
        KbResponse::Submitted(_)
    ));
    // A restart remembers the quota.
    let restored = world
        .owners
        .restore(&world.view, world.announcement.clone(), world.log.clone())
        .expect("restores");
    world.owners.insert(restored);
    let (code, _) = error(&world.kb(&w, bare(&world, &w, quota, late), late));
    assert_eq!(code, ErrorCode::RateLimited);
    // Once the first submission leaves the window, one more is taken, then the quota is full again.
    let next = T0.plus_secs(SUBMISSION_WINDOW_SECS).plus_millis(1);
    let call = bare(&world, &w, quota, next);
    assert!(matches!(
        world.kb(&w, call, next).reply,
        KbResponse::Submitted(_)
    ));
    let (code, _) = error(&world.kb(&w, bare(&world, &w, quota + 1, next), next));
    assert_eq!(code, ErrorCode::RateLimited);
}

#[test]
fn a_batch_is_judged_result_by_result_as_if_each_came_alone() {
    use crate::owner::CheckedSubmission;
    use crate::wire::{SubmitOutcome, MAX_SUBMIT_BATCH};
    let (mut world, a) = joined(&Manifest {
        checks: false,
        ..Manifest::default()
    });
    let first = a.submission(world.id, 3.0, 1, false, T0);
    assert_eq!(
        receipt(&world.kb(&a, KbCall::Submit(first.clone()), T0)).seq,
        1
    );
    let other = ProgramId(crate::Digest::of(b"another program"));
    let list = vec![
        a.submission(world.id, 2.5, 2, false, T0),
        // A retry of a counted result: its original receipt, not a second entry.
        first,
        // Names another program: refused, and the rest still counts.
        a.submission(other, 1.0, 3, false, T0),
        a.submission(world.id, 2.0, 4, false, T0),
    ];
    // The daemon's checks, for the first two only: the others are checked by the core.
    let checked: Vec<CheckedSubmission> = list[..2]
        .iter()
        .map(|s| CheckedSubmission::check(&a.peer, s).expect("a's own signature"))
        .collect();
    let req = a.kb(world.id, KbCall::SubmitBatch(list));
    let fx = world.owners.on_kb_checked(a.peer, req, checked, T0);
    assert!(
        fx.after_durable,
        "the retry's receipt waits for its entry to be durable"
    );
    let KbResponse::SubmittedBatch(out) = &fx.reply else {
        panic!("expected the batch's answers, got {:?}", fx.reply);
    };
    let seqs: Vec<Option<(u64, bool)>> = out
        .iter()
        .map(|o| match o {
            SubmitOutcome::Submitted(r) => Some((r.seq, r.duplicate)),
            SubmitOutcome::Refused(_) => None,
        })
        .collect();
    assert_eq!(
        seqs,
        vec![Some((2, false)), Some((1, true)), None, Some((3, false))]
    );
    let SubmitOutcome::Refused(e) = &out[2] else {
        unreachable!()
    };
    assert_eq!(e.code, ErrorCode::Invalid);
    assert!(e.message.contains("another program"), "{}", e.message);
    // One set of records for the two new entries.
    let world_fx = world.apply(fx);
    let kb = world.owners.get(&world.id).expect("owned").kb();
    assert_eq!(kb.entry(3).map(|e| e.value), Some(2.0));
    assert!(world_fx.persist.len() >= 2);
    // Bounds: empty and oversized batches are refused whole.
    for n in [0, MAX_SUBMIT_BATCH + 1] {
        let list = (0..n)
            .map(|i| a.submission(world.id, 1.0, 100 + i as u8, false, T0))
            .collect();
        let (code, why) = error(&world.kb(&a, KbCall::SubmitBatch(list), T0));
        assert_eq!(code, ErrorCode::Invalid, "{why}");
        assert!(why.contains("1 to 32"), "{why}");
    }
}
