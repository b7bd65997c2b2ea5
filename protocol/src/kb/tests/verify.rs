//! Claims wait for the owner's check: pending, verified, failed, first-verified-wins.

use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest};

use super::*;

fn verified_kb(accept: AcceptRule, baseline: Option<f64>, split: Split) -> Kb {
    Kb::verified(rules(accept, baseline, split)).unwrap()
}

fn failed(why: &str) -> Verdict {
    Verdict::Failed(why.to_owned())
}

#[test]
fn a_winning_claim_is_pending_and_counts_only_once_verified() {
    let mut kb = verified_kb(AcceptRule::BeatsChampion, Some(1.20), Split::ByImpact);
    let e = kb.submit("A", 1.10).unwrap().clone();
    assert_eq!(e.check, Check::Pending);
    assert!(!e.accepted && !e.champion && e.impact == 0.0);
    assert!(kb.champion().is_none());
    assert!(kb.payouts().is_empty());
    // A claim the rule rejects needs no check.
    let e = kb.submit("B", 1.30).unwrap().clone();
    assert_eq!(e.check, Check::NotNeeded);
    assert!(!e.accepted);
    assert_eq!(kb.next_pending().map(|e| e.seq), Some(1));

    let e = kb.resolve(1, &Verdict::Verified).unwrap().clone();
    assert_eq!(e.check, Check::Verified);
    assert!(e.accepted && e.champion);
    assert!((e.impact - 0.10).abs() < EPS);
    assert_eq!(kb.champion().map(|c| c.seq), Some(1));
    assert_eq!(shown(&kb.payouts()), pairs(&[("A", "100.000000")]));
    assert!(kb.next_pending().is_none());
}

#[test]
fn a_failed_claim_never_wins_or_earns() {
    let mut kb = verified_kb(AcceptRule::BeatsChampion, Some(1.20), Split::ByImpact);
    kb.submit("cheat", 0.0).unwrap();
    kb.submit("honest", 1.10).unwrap();
    let why = "metric did not reproduce: claimed 0.0000, measured 3.1000";
    let e = kb.resolve(1, &failed(why)).unwrap().clone();
    assert_eq!(e.check, Check::Failed(why.to_owned()));
    assert!(!e.accepted && !e.champion);
    // The honest claim is still pending (it beats the baseline) and wins once verified.
    assert_eq!(kb.next_pending().map(|e| e.seq), Some(2));
    kb.resolve(2, &Verdict::Verified).unwrap();
    assert_eq!(kb.champion().map(|c| c.worker.as_str()), Some("honest"));
    assert_eq!(shown(&kb.payouts()), pairs(&[("honest", "100.000000")]));
}

#[test]
fn first_verified_wins_and_superseded_claims_need_no_check() {
    let mut kb = verified_kb(AcceptRule::BeatsChampion, Some(3.0), Split::ByImpact);
    kb.submit("A", 2.0).unwrap();
    kb.submit("B", 2.5).unwrap(); // beats the baseline, not A
    kb.submit("C", 1.5).unwrap(); // beats both
    kb.submit("D", 2.0).unwrap(); // equals A
    assert_eq!(kb.pending().count(), 4);
    // Resolving out of order is refused.
    assert_eq!(
        kb.resolve(3, &Verdict::Verified).unwrap_err(),
        ResolveError::NotNext {
            seq: 3,
            oldest: Some(1)
        }
    );
    kb.resolve(1, &Verdict::Verified).unwrap();
    // B no longer beats the champion: settled without a check; C is next.
    assert_eq!(kb.entries()[1].check, Check::NotNeeded);
    assert!(!kb.entries()[1].accepted);
    assert_eq!(kb.next_pending().map(|e| e.seq), Some(3));
    kb.resolve(3, &Verdict::Verified).unwrap();
    // D (2.0) cannot beat C (1.5): settled too.
    assert!(kb.next_pending().is_none());
    assert_eq!(kb.entries()[3].check, Check::NotNeeded);
    assert_eq!(kb.champion().map(|c| c.seq), Some(3));
    assert_eq!(
        shown(&kb.payouts()),
        pairs(&[("A", "66.666667"), ("C", "33.333333")])
    );
}

#[test]
fn the_owners_measurement_counts_never_the_claimed_value() {
    let mut kb = verified_kb(AcceptRule::BeatsChampion, Some(3.0), Split::ByImpact);
    kb.submit("honest", 2.0).unwrap();
    kb.resolve(1, &Verdict::Measured { value: 2.0 }).unwrap();
    // Claimed a hair better than the champion; the owner measured the champion's own value.
    kb.submit("thief", 1.99995).unwrap();
    let e = kb
        .resolve(2, &Verdict::Measured { value: 2.0 })
        .unwrap()
        .clone();
    assert_eq!(e.check, Check::Verified);
    assert_eq!(e.value, 2.0, "the entry records the measurement");
    assert!(!e.accepted && !e.champion && e.impact == 0.0);
    assert_eq!(kb.champion().map(|c| c.worker.as_str()), Some("honest"));
    assert_eq!(shown(&kb.payouts()), pairs(&[("honest", "100.000000")]));
    // A measurement better than the claim counts as measured too, impact included.
    kb.submit("modest", 1.9).unwrap();
    let e = kb
        .resolve(3, &Verdict::Measured { value: 1.5 })
        .unwrap()
        .clone();
    assert!(e.champion && e.value == 1.5 && (e.impact - 0.5).abs() < EPS);
    // A non-finite measurement cannot count: the verdict is refused, the claim stays pending.
    kb.submit("x", 1.0).unwrap();
    assert!(matches!(
        kb.resolve(4, &Verdict::Measured { value: f64::NAN }),
        Err(ResolveError::NonFiniteMeasurement { seq: 4, .. })
    ));
    assert_eq!(kb.next_pending().map(|e| e.seq), Some(4));
}

#[test]
fn threshold_claims_that_would_earn_are_checked_too() {
    let mut kb = verified_kb(
        AcceptRule::Threshold { threshold: 1.0 },
        Some(1.0),
        Split::ByImpact,
    );
    kb.submit("A", 0.5).unwrap();
    kb.resolve(1, &Verdict::Verified).unwrap();
    // 0.7 passes the threshold without beating the champion: it would earn, so it is checked.
    assert_eq!(kb.submit("B", 0.7).unwrap().check, Check::Pending);
    kb.resolve(2, &failed("holdout gap")).unwrap();
    assert_eq!(shown(&kb.payouts()), pairs(&[("A", "100.000000")]));
    assert_eq!(kb.submit("C", 1.5).unwrap().check, Check::NotNeeded);
}

#[test]
fn replaying_events_rebuilds_the_same_kb() {
    let r = rules(AcceptRule::BeatsChampion, Some(3.0), Split::ByImpact);
    let v = Verdict::Measured { value: 2.1 };
    let f = failed("no");
    let events = [
        LogEvent::Submit {
            worker: "A",
            value: 2.0,
        },
        LogEvent::Submit {
            worker: "B",
            value: 1.0,
        },
        LogEvent::Resolve {
            seq: 1,
            verdict: &v,
        },
        LogEvent::Submit {
            worker: "C",
            value: 2.5,
        },
        LogEvent::Resolve {
            seq: 2,
            verdict: &f,
        },
    ];
    let mut live = Kb::verified(r.clone()).unwrap();
    live.submit("A", 2.0).unwrap();
    live.submit("B", 1.0).unwrap();
    live.resolve(1, &v).unwrap();
    live.submit("C", 2.5).unwrap();
    live.resolve(2, &f).unwrap();
    let replayed = Kb::verified(r.clone())
        .unwrap()
        .replay_events(events)
        .unwrap();
    assert_eq!(replayed, live);
    assert_eq!(replayed.entries()[0].value, 2.1);
    assert_eq!(replayed.entries()[2].check, Check::NotNeeded);
    // A verdict out of order in a stored log is corruption, reported as such.
    let bad = [
        LogEvent::Submit {
            worker: "A",
            value: 2.0,
        },
        LogEvent::Resolve {
            seq: 2,
            verdict: &v,
        },
    ];
    let e = Kb::verified(r).unwrap().replay_events(bad).unwrap_err();
    assert!(matches!(e, ReplayError::Verdict(_)), "{e}");
    assert!(e.to_string().contains("corrupt"), "{e}");
}

#[test]
fn verdicts_stored_by_earlier_versions_still_read() {
    // The owner stores verdicts as JSON: the old unit variant keeps its spelling, the new one
    // carries the measurement.
    let old: Verdict = serde_json::from_str("\"verified\"").unwrap();
    assert_eq!(old, Verdict::Verified);
    let m = Verdict::Measured { value: 2.5 };
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(json, r#"{"measured":{"value":2.5}}"#);
    assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), m);
}

proptest! {
    /// When every claim verifies as soon as it arrives, a verified KB ends exactly where the plain
    /// KEEP rule does.
    #[test]
    fn verifying_everything_at_once_matches_the_plain_rule(
        subs in prop::collection::vec((0usize..4, 0.0f64..5.0), 0..40),
        threshold_mode in any::<bool>(),
    ) {
        let accept = if threshold_mode {
            AcceptRule::Threshold { threshold: 2.5 }
        } else {
            AcceptRule::BeatsChampion
        };
        let r = rules(accept, Some(3.0), Split::ByImpact);
        let mut plain = Kb::new(r.clone()).unwrap();
        let mut checked = Kb::verified(r).unwrap();
        for (w, v) in &subs {
            let w = format!("w{w}");
            plain.submit(&w, *v).unwrap();
            let seq = checked.submit(&w, *v).unwrap().seq;
            if checked.next_pending().is_some() {
                checked.resolve(seq, &Verdict::Verified).unwrap();
            }
        }
        prop_assert_eq!(plain.champion().map(|c| c.seq), checked.champion().map(|c| c.seq));
        prop_assert_eq!(plain.payouts(), checked.payouts());
        for (a, b) in plain.entries().iter().zip(checked.entries()) {
            prop_assert_eq!((a.accepted, a.champion, a.impact), (b.accepted, b.champion, b.impact));
        }
    }

    /// Whatever the verdicts, a failed claim never becomes champion or earns, every pending claim
    /// is resolvable in order, and the champion is always a verified claim.
    #[test]
    fn failed_claims_never_count(
        subs in prop::collection::vec((0usize..4, 0.0f64..5.0, any::<bool>()), 0..40),
    ) {
        let mut kb = verified_kb(AcceptRule::BeatsChampion, Some(3.0), Split::ByImpact);
        let mut verdicts = Vec::new();
        for (w, v, ok) in &subs {
            kb.submit(&format!("w{w}"), *v).unwrap();
            verdicts.push(*ok);
        }
        while let Some(seq) = kb.next_pending().map(|e| e.seq) {
            let ok = verdicts[usize::try_from(seq - 1).unwrap()];
            let verdict = if ok { Verdict::Verified } else { failed("x") };
            kb.resolve(seq, &verdict).unwrap();
        }
        for e in kb.entries() {
            if let Check::Failed(_) = e.check {
                prop_assert!(!e.accepted && !e.champion && e.impact == 0.0);
            }
            if e.accepted {
                prop_assert_eq!(&e.check, &Check::Verified);
            }
        }
        if let Some(c) = kb.champion() {
            prop_assert_eq!(&c.check, &Check::Verified);
        }
    }

    /// The compact log's reads (counts, pages, tail, one entry, the pending set, per-worker
    /// tallies, the cached split) agree with the whole log read entry by entry, whatever the
    /// submissions and verdicts (measured values, failures) and whenever they are read.
    #[test]
    fn the_compact_log_reads_agree_with_the_whole_log(
        subs in prop::collection::vec((0usize..4, 0.0f64..5.0, 0u8..3, any::<bool>()), 0..40),
        threshold_mode in any::<bool>(),
        after in 0u64..45,
        limit in 0usize..12,
    ) {
        let accept = if threshold_mode {
            AcceptRule::Threshold { threshold: 2.5 }
        } else {
            AcceptRule::BeatsChampion
        };
        let mut kb = verified_kb(accept, Some(3.0), Split::ByImpact);
        for (w, v, verdict, now) in &subs {
            kb.submit(&format!("w{w}"), *v).unwrap();
            // The split is read (and cached) between changes: the cache must follow them.
            let _ = kb.payouts();
            if *now {
                if let Some(seq) = kb.next_pending().map(|e| e.seq) {
                    let verdict = match verdict {
                        0 => Verdict::Measured { value: v * 0.9 },
                        1 => Verdict::Verified,
                        _ => failed("did not reproduce"),
                    };
                    kb.resolve(seq, &verdict).unwrap();
                }
            }
        }
        let all = kb.entries();
        let c = kb.counts();
        prop_assert_eq!(c.submissions, all.len() as u64);
        prop_assert_eq!(c.accepted, all.iter().filter(|e| e.accepted).count() as u64);
        prop_assert_eq!(c.pending, all.iter().filter(|e| e.check == Check::Pending).count() as u64);
        prop_assert_eq!(c.verified, all.iter().filter(|e| e.check == Check::Verified).count() as u64);
        prop_assert_eq!(
            c.rejected,
            all.iter().filter(|e| matches!(e.check, Check::Failed(_))).count() as u64
        );
        let start = (after as usize).min(all.len());
        let end = (start + limit).min(all.len());
        prop_assert_eq!(kb.page(after, limit), (all[start..end].to_vec(), end < all.len()));
        prop_assert_eq!(kb.tail(limit), all[all.len().saturating_sub(limit)..].to_vec());
        for e in &all {
            prop_assert_eq!(kb.entry(e.seq), Some(e.clone()));
        }
        prop_assert_eq!(kb.entry(all.len() as u64 + 1), None);
        let pending: Vec<Entry> = all.iter().filter(|e| e.check == Check::Pending).cloned().collect();
        prop_assert_eq!(kb.pending().collect::<Vec<_>>(), pending.clone());
        prop_assert_eq!(
            kb.pending_workers().collect::<Vec<_>>(),
            pending.iter().map(|e| e.worker.as_str()).collect::<Vec<_>>()
        );
        for w in 0..4 {
            let w = format!("w{w}");
            let mine = all.iter().filter(|e| e.worker == w);
            let failed = mine.clone().filter(|e| matches!(e.check, Check::Failed(_))).count();
            prop_assert_eq!(kb.tally(&w), (mine.count() as u64, failed as u64));
        }
        prop_assert_eq!(kb.payouts(), compute_payouts(kb.rules(), &all, kb.champion()));
        prop_assert_eq!(
            kb.champion().cloned(),
            all.iter().rev().find(|e| e.champion).cloned()
        );
    }
}
