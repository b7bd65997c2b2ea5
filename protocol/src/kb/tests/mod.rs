//! Tests of the KEEP rule, champion and payouts.

use super::*;

mod amount;
mod prop;
mod verify;

fn rules(accept: AcceptRule, baseline: Option<f64>, split: Split) -> Rules {
    Rules {
        direction: Direction::Minimize,
        accept,
        baseline,
        pool: Amount::from_whole_tokens(100).unwrap(),
        split,
        min_improvement: MinImprovement::NONE,
    }
}

fn run(rules: Rules, subs: &[(&str, f64)]) -> Kb {
    let mut kb = Kb::new(rules).unwrap();
    for (w, v) in subs {
        kb.submit(w, *v).unwrap();
    }
    kb
}

fn shown(p: &Payouts) -> Vec<(String, String)> {
    p.iter()
        .map(|(w, a)| (w.to_owned(), a.to_string()))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const EPS: f64 = 1e-12;

#[test]
fn example_1_beats_champion_by_impact() {
    let r = rules(AcceptRule::BeatsChampion, Some(1.20), Split::ByImpact);
    let kb = run(r, &[("A", 1.10), ("B", 1.05), ("A", 1.30)]);
    let e = kb.entries();
    assert!(e[0].accepted && e[0].champion && (e[0].impact - 0.10).abs() < EPS);
    assert!(e[1].accepted && e[1].champion && (e[1].impact - 0.05).abs() < EPS);
    assert!(!e[2].accepted && !e[2].champion && e[2].impact == 0.0);
    let c = kb.champion().unwrap();
    assert_eq!((c.worker.as_str(), c.value, c.seq), ("B", 1.05, 2));
    let p = kb.payouts();
    assert_eq!(shown(&p), pairs(&[("A", "66.666667"), ("B", "33.333333")]));
    assert_eq!(p.total().to_string(), "100.000000");
    assert_eq!(p.get("A").unwrap().to_string(), "66.666667");
    assert_eq!(p.get("C"), None);
    assert_eq!(p.len(), 2);
}

#[test]
fn example_2_first_submission_without_baseline() {
    let r = rules(AcceptRule::BeatsChampion, None, Split::ByImpact);
    let mut kb = Kb::new(r).unwrap();
    assert_eq!(kb.reference(), None);
    let e = kb.submit("A", 1.10).unwrap().clone();
    assert!(e.accepted && e.champion);
    assert_eq!(e.impact, 0.0);
    assert_eq!(e.seq, 1);
    assert_eq!(kb.reference(), Some(1.10));
    assert!(kb.payouts().is_empty());
    assert_eq!(kb.payouts().total(), Amount::ZERO);
}

#[test]
fn example_3_threshold_by_impact() {
    let r = rules(
        AcceptRule::Threshold { threshold: 1.0 },
        Some(1.0),
        Split::ByImpact,
    );
    let kb = run(r, &[("A", 0.50), ("B", 0.40)]);
    assert!(kb.entries().iter().all(|e| e.accepted && e.champion));
    assert_eq!(kb.champion().unwrap().worker, "B");
    assert_eq!(
        shown(&kb.payouts()),
        pairs(&[("A", "45.454545"), ("B", "54.545455")])
    );
}

#[test]
fn example_4_champion_takes_all() {
    let r = rules(
        AcceptRule::BeatsChampion,
        Some(1.20),
        Split::ChampionTakesAll,
    );
    let kb = run(r, &[("A", 1.10), ("B", 1.05)]);
    assert_eq!(shown(&kb.payouts()), pairs(&[("B", "100.000000")]));
}

#[test]
fn champion_takes_all_without_champion_pays_nothing() {
    let r = rules(
        AcceptRule::BeatsChampion,
        Some(1.0),
        Split::ChampionTakesAll,
    );
    let kb = run(r, &[("A", 1.5)]);
    assert!(kb.champion().is_none());
    assert!(kb.payouts().is_empty());
}

#[test]
fn beats_champion_tie_is_rejected_and_first_keeps_champion() {
    for baseline in [None, Some(2.0)] {
        let r = rules(AcceptRule::BeatsChampion, baseline, Split::ByImpact);
        let kb = run(r, &[("A", 1.0), ("B", 1.0)]);
        let e = kb.entries();
        assert!(e[0].accepted && e[0].champion);
        assert!(!e[1].accepted && !e[1].champion && e[1].impact == 0.0);
        assert_eq!(kb.champion().unwrap().worker, "A");
    }
    // Equal to the baseline is rejected too.
    let r = rules(AcceptRule::BeatsChampion, Some(1.0), Split::ByImpact);
    let kb = run(r, &[("A", 1.0)]);
    assert!(!kb.entries()[0].accepted);
    assert!(kb.champion().is_none());
    assert_eq!(kb.reference(), Some(1.0));
}

#[test]
fn threshold_tie_with_champion_is_accepted_but_first_keeps_champion() {
    let r = rules(
        AcceptRule::Threshold { threshold: 1.0 },
        None,
        Split::ChampionTakesAll,
    );
    let kb = run(r, &[("A", 0.5), ("B", 0.5)]);
    let e = kb.entries();
    assert!(e[0].accepted && e[0].champion);
    assert!(e[1].accepted && !e[1].champion);
    assert_eq!(e[1].impact, 0.5);
    assert_eq!(kb.champion().unwrap().worker, "A");
    assert_eq!(shown(&kb.payouts()), pairs(&[("A", "100.000000")]));
}

#[test]
fn threshold_equal_to_threshold_is_accepted_with_zero_impact() {
    let r = rules(
        AcceptRule::Threshold { threshold: 1.0 },
        Some(0.1),
        Split::ByImpact,
    );
    let kb = run(r, &[("A", 1.0), ("B", 1.0000001)]);
    let e = kb.entries();
    assert!(e[0].accepted && e[0].champion && e[0].impact == 0.0);
    assert!(!e[1].accepted && !e[1].champion);
    // Baseline is not a bar in threshold mode.
    assert_eq!(kb.champion().unwrap().worker, "A");
    assert!(kb.payouts().is_empty());
}

#[test]
fn threshold_champion_must_strictly_improve() {
    let r = rules(
        AcceptRule::Threshold { threshold: 1.0 },
        None,
        Split::ByImpact,
    );
    let kb = run(r, &[("A", 0.4), ("B", 0.6), ("C", 0.3)]);
    let flags: Vec<_> = kb
        .entries()
        .iter()
        .map(|e| (e.accepted, e.champion))
        .collect();
    assert_eq!(flags, [(true, true), (true, false), (true, true)]);
    assert_eq!(kb.champion().unwrap().worker, "C");
    // Impact is measured against the threshold, not the champion.
    assert!((kb.entries()[1].impact - 0.4).abs() < EPS);
}

#[test]
fn threshold_best_per_worker_does_not_inflate() {
    let r = rules(
        AcceptRule::Threshold { threshold: 1.0 },
        None,
        Split::ByImpact,
    );
    let once = run(r.clone(), &[("A", 0.5), ("B", 0.5)]);
    let spam = run(
        r,
        &[("A", 0.5), ("B", 0.5), ("B", 0.5), ("B", 0.5), ("B", 0.7)],
    );
    for kb in [&once, &spam] {
        assert_eq!(
            shown(&kb.payouts()),
            pairs(&[("A", "50.000000"), ("B", "50.000000")])
        );
    }
}

#[test]
fn beats_champion_sums_impacts_per_worker() {
    let r = rules(AcceptRule::BeatsChampion, Some(10.0), Split::ByImpact);
    let kb = run(r, &[("A", 9.0), ("B", 8.0), ("A", 6.0)]);
    // A: 1 + 2 = 3, B: 1.
    assert_eq!(
        shown(&kb.payouts()),
        pairs(&[("A", "75.000000"), ("B", "25.000000")])
    );
}

#[test]
fn maximize_variants() {
    let mut r = rules(AcceptRule::BeatsChampion, Some(0.5), Split::ByImpact);
    r.direction = Direction::Maximize;
    let kb1 = run(
        r.clone(),
        &[("A", 0.6), ("B", 0.65), ("A", 0.55), ("C", 0.65)],
    );
    let e = kb1.entries();
    assert!(e[0].accepted && e[1].accepted && !e[2].accepted && !e[3].accepted);
    assert!((e[0].impact - 0.1).abs() < EPS && (e[1].impact - 0.05).abs() < EPS);
    assert_eq!(kb1.champion().unwrap().worker, "B");
    assert_eq!(
        shown(&kb1.payouts()),
        pairs(&[("A", "66.666667"), ("B", "33.333333")])
    );

    r.accept = AcceptRule::Threshold { threshold: 1.0 };
    let kb2 = run(r, &[("A", 1.5), ("B", 1.6), ("C", 0.9), ("D", 1.0)]);
    let flags: Vec<_> = kb2
        .entries()
        .iter()
        .map(|e| (e.accepted, e.champion))
        .collect();
    assert_eq!(
        flags,
        [(true, true), (true, true), (false, false), (true, false)]
    );
    assert_eq!(kb2.champion().unwrap().worker, "B");
    assert_eq!(
        shown(&kb2.payouts()),
        pairs(&[("A", "45.454545"), ("B", "54.545455")])
    );
    assert!(better(Direction::Maximize, 2.0, 1.0));
    assert!(!better(Direction::Maximize, 1.0, 1.0));
    assert!(better(Direction::Minimize, 1.0, 2.0));
    assert_eq!(gain(Direction::Maximize, 1.0, 3.0), 2.0);
    assert_eq!(gain(Direction::Maximize, 3.0, 1.0), 0.0);
    assert_eq!(gain(Direction::Minimize, 3.0, 1.0), 2.0);
    assert_eq!(gain(Direction::Minimize, 1.0, 3.0), 0.0);
    assert_eq!(gain(Direction::Minimize, f64::MAX, -f64::MAX), f64::MAX);
    assert_eq!(gain(Direction::Minimize, f64::NAN, 1.0), 0.0);
}

#[test]
fn invalid_submissions_consume_no_seq() {
    let r = rules(AcceptRule::BeatsChampion, None, Split::ByImpact);
    let mut kb = Kb::new(r).unwrap();
    assert_eq!(kb.next_seq(), 1);
    assert_eq!(kb.submit("", 1.0).unwrap_err(), SubmitError::EmptyWorker);
    let long = "w".repeat(MAX_WORKER_ID_LEN + 1);
    assert_eq!(
        kb.submit(&long, 1.0).unwrap_err(),
        SubmitError::WorkerTooLong {
            len: MAX_WORKER_ID_LEN + 1,
            max: MAX_WORKER_ID_LEN
        }
    );
    assert!(matches!(
        kb.submit("A", f64::NAN),
        Err(SubmitError::NonFiniteValue { .. })
    ));
    assert!(kb.submit("A", f64::INFINITY).is_err());
    assert!(kb.submit("A", f64::NEG_INFINITY).is_err());
    assert!(kb.entries().is_empty());
    assert_eq!(kb.next_seq(), 1);
    assert_eq!(kb.submit("A", 2.0).unwrap().seq, 1);
    assert!(kb.submit("", 1.0).is_err());
    let max_len = "w".repeat(MAX_WORKER_ID_LEN);
    assert_eq!(kb.submit(&max_len, 1.0).unwrap().seq, 2);
    assert_eq!(kb.next_seq(), 3);
    assert!(SubmitError::EmptyWorker.to_string().contains("empty"));
}

#[test]
fn invalid_rules_are_all_reported() {
    let mut r = rules(
        AcceptRule::Threshold {
            threshold: f64::NAN,
        },
        Some(f64::INFINITY),
        Split::ByImpact,
    );
    let errs = Kb::new(r.clone()).unwrap_err();
    assert_eq!(errs.len(), 2);
    assert!(matches!(errs[0], RulesError::NonFiniteBaseline { .. }));
    assert!(matches!(errs[1], RulesError::NonFiniteThreshold { .. }));
    let err = Kb::replay(r.clone(), []).unwrap_err();
    assert!(err.to_string().contains("baseline"), "{err}");
    r.baseline = None;
    assert_eq!(r.validate().unwrap_err().len(), 1);
    r.accept = AcceptRule::BeatsChampion;
    assert_eq!(r.validate(), Ok(()));
}

#[test]
fn pool_zero_pays_nothing() {
    for split in [Split::ByImpact, Split::ChampionTakesAll] {
        let mut r = rules(AcceptRule::BeatsChampion, Some(1.2), split);
        r.pool = Amount::ZERO;
        let kb = run(r, &[("A", 1.1), ("B", 1.0)]);
        assert!(kb.payouts().is_empty());
    }
}

#[test]
fn remainder_tie_goes_to_earlier_first_accepted() {
    // Three equal scores: 100 / 3 = 33.333333 each plus one micro-unit left, all remainders equal.
    let r = rules(
        AcceptRule::Threshold { threshold: 1.0 },
        None,
        Split::ByImpact,
    );
    // Worker ids sort in the opposite order of arrival, so the tie-break is visibly by arrival.
    // Z's first submission is rejected, so its first *accepted* one comes after C's.
    let kb = run(r, &[("Z", 2.0), ("C", 0.5), ("Z", 0.5), ("A", 0.5)]);
    assert_eq!(
        shown(&kb.payouts()),
        pairs(&[("A", "33.333333"), ("C", "33.333334"), ("Z", "33.333333")])
    );

    // Two units left over among three: the two earliest get them.
    let mut r = rules(AcceptRule::BeatsChampion, Some(4.0), Split::ByImpact);
    r.pool = Amount(5);
    let kb = run(r, &[("Z", 3.0), ("Y", 2.0), ("X", 1.0)]);
    assert_eq!(
        shown(&kb.payouts()),
        pairs(&[("X", "0.000001"), ("Y", "0.000002"), ("Z", "0.000002")])
    );
}

#[test]
fn workers_with_zero_score_get_nothing() {
    let r = rules(
        AcceptRule::Threshold { threshold: 1.0 },
        None,
        Split::ByImpact,
    );
    let kb = run(r, &[("A", 1.0), ("B", 0.5), ("C", 2.0)]);
    assert_eq!(shown(&kb.payouts()), pairs(&[("B", "100.000000")]));
}

#[test]
fn compute_payouts_survives_hostile_entries() {
    let r = rules(AcceptRule::BeatsChampion, None, Split::ByImpact);
    let entry = |seq, worker: &str, impact| Entry {
        seq,
        worker: worker.to_owned(),
        value: 0.0,
        accepted: true,
        champion: false,
        impact,
        check: Check::NotNeeded,
    };
    let entries = [
        entry(1, "A", f64::NAN),
        entry(2, "B", -5.0),
        entry(3, "C", f64::INFINITY),
        entry(4, "D", f64::MAX),
        entry(5, "D", f64::MAX),
    ];
    let p = compute_payouts(&r, &entries, None);
    assert_eq!(p.total(), r.pool);
    assert_eq!(shown(&p), pairs(&[("C", "33.333333"), ("D", "66.666667")]));
    let mut big = r.clone();
    big.pool = Amount(u64::MAX);
    let p = compute_payouts(&big, &entries, None);
    assert_eq!(p.total(), Amount(u64::MAX));
}

#[test]
fn replay_reproduces_the_same_state() {
    let r = rules(AcceptRule::BeatsChampion, Some(1.2), Split::ByImpact);
    let live = run(
        r.clone(),
        &[("A", 1.1), ("B", 1.05), ("A", 1.3), ("C", 1.0), ("B", 1.0)],
    );
    let entries = live.entries();
    let log: Vec<(&str, f64)> = entries
        .iter()
        .map(|e| (e.worker.as_str(), e.value))
        .collect();
    let replayed = Kb::replay(r.clone(), log).unwrap();
    assert_eq!(replayed, live);
    assert_eq!(replayed.payouts(), live.payouts());
    assert_eq!(replayed.champion(), live.champion());
    assert_eq!(replayed.next_seq(), 6);

    let err = Kb::replay(r, [("A", 1.1), ("", 1.0)]).unwrap_err();
    assert_eq!(
        err,
        ReplayError::Entry {
            seq: 2,
            error: SubmitError::EmptyWorker
        }
    );
    assert!(err.to_string().contains("corrupt"));
}

#[test]
fn payouts_serde_is_an_object_of_amount_strings() {
    let r = rules(AcceptRule::BeatsChampion, Some(1.20), Split::ByImpact);
    let p = run(r, &[("A", 1.10), ("B", 1.05)]).payouts();
    let j = serde_json::to_string(&p).unwrap();
    assert_eq!(j, r#"{"A":"66.666667","B":"33.333333"}"#);
    assert_eq!(serde_json::from_str::<Payouts>(&j).unwrap(), p);
    let bytes = crate::wire::codec::encode(&p).unwrap();
    assert_eq!(crate::wire::codec::decode::<Payouts>(&bytes).unwrap(), p);
    let with_zero: Payouts = serde_json::from_str(r#"{"A":"1","B":"0"}"#).unwrap();
    assert_eq!(with_zero.len(), 1);
}

#[test]
fn rules_and_entries_round_trip() {
    let r = rules(
        AcceptRule::Threshold { threshold: 1.5 },
        Some(2.0),
        Split::ByImpact,
    );
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["pool"], "100.000000");
    assert_eq!(j["accept"]["threshold"]["threshold"], 1.5);
    assert_eq!(serde_json::from_value::<Rules>(j).unwrap(), r);
    let bytes = crate::wire::codec::encode(&r).unwrap();
    assert_eq!(crate::wire::codec::decode::<Rules>(&bytes).unwrap(), r);
    let t: Rules = toml::from_str(
        "direction = \"minimize\"\naccept = \"beats-champion\"\npool = 12.5\nsplit = \"by-impact\"\n",
    )
    .unwrap();
    assert_eq!(t.pool, Amount(12_500_000));
    let e = run(r, &[("A", 1.0)]).entries()[0].clone();
    let bytes = crate::wire::codec::encode(&e).unwrap();
    assert_eq!(crate::wire::codec::decode::<Entry>(&bytes).unwrap(), e);
}

fn with_margin(r: Rules, absolute: f64, relative: f64) -> Rules {
    Rules {
        min_improvement: MinImprovement { absolute, relative },
        ..r
    }
}

/// The noise attacker: a value better than the champion by 1e-9 (another seed, a re-run) took the
/// champion and a share of the pool. Under a declared margin it is rejected and earns nothing.
#[test]
fn a_noise_sized_improvement_does_not_take_the_champion() {
    let r = rules(AcceptRule::BeatsChampion, Some(1.20), Split::ByImpact);
    let noisy = [("A", 1.10), ("B", 1.10 - 1e-9)];
    // Without a margin (the seed's rule) it wins.
    let kb = run(r.clone(), &noisy);
    assert_eq!(kb.champion().map(|c| c.worker.as_str()), Some("B"));
    // Under the default candle margin it does not, and A keeps the whole pool.
    let m = crate::program::DEFAULT_MIN_IMPROVEMENT_BPB;
    let kb = run(with_margin(r.clone(), m, 0.0), &noisy);
    let e = kb.entries();
    assert!(!e[1].accepted && !e[1].champion && e[1].impact == 0.0);
    assert_eq!(kb.champion().map(|c| c.worker.as_str()), Some("A"));
    assert_eq!(shown(&kb.payouts()), pairs(&[("A", "100.000000")]));
    // A verified KB holds it for no check: the rule rejects it on the claimed value already.
    let mut kb = Kb::verified(with_margin(r, m, 0.0)).unwrap();
    kb.submit("A", 1.10).unwrap();
    kb.resolve(1, &Verdict::Measured { value: 1.10 }).unwrap();
    assert_eq!(kb.submit("B", 1.10 - 1e-9).unwrap().check, Check::NotNeeded);
}

#[test]
fn absolute_margin_is_measured_from_the_champion_else_the_baseline() {
    let r = with_margin(
        rules(AcceptRule::BeatsChampion, Some(1.20), Split::ByImpact),
        0.05,
        0.0,
    );
    // Against the baseline: 1.16 is not 0.05 better than 1.20, 1.14 is; then against the
    // champion 1.14: 1.10 is not, 1.08 is.
    let kb = run(
        r.clone(),
        &[("A", 1.16), ("A", 1.14), ("B", 1.10), ("B", 1.08)],
    );
    let e = kb.entries();
    let flags: Vec<_> = e.iter().map(|e| (e.accepted, e.champion)).collect();
    assert_eq!(
        flags,
        [(false, false), (true, true), (false, false), (true, true)]
    );
    // The impact is the whole gain over the reference, not the gain beyond the margin.
    assert!((e[3].impact - 0.06).abs() < EPS);
    // Maximising: the bar is above the reference.
    let up = Rules {
        direction: Direction::Maximize,
        ..with_margin(
            rules(AcceptRule::BeatsChampion, Some(0.5), Split::ByImpact),
            0.1,
            0.0,
        )
    };
    let kb = run(up, &[("A", 0.59), ("A", 0.61), ("B", 0.65), ("B", 0.72)]);
    let accepted: Vec<_> = kb.entries().iter().map(|e| e.accepted).collect();
    assert_eq!(accepted, [false, true, false, true]);
    // No reference at all: the first value is accepted, margin or not.
    let first = with_margin(
        rules(AcceptRule::BeatsChampion, None, Split::ByImpact),
        0.05,
        0.0,
    );
    assert!(run(first, &[("A", 9.0)]).entries()[0].champion);
}

#[test]
fn relative_margin_scales_with_the_reference_and_the_larger_margin_applies() {
    // 1 % of 2.0 is 0.02.
    let r = with_margin(
        rules(AcceptRule::BeatsChampion, Some(2.0), Split::ByImpact),
        0.0,
        0.01,
    );
    let kb = run(r, &[("A", 1.985), ("A", 1.975)]);
    let accepted: Vec<_> = kb.entries().iter().map(|e| e.accepted).collect();
    assert_eq!(accepted, [false, true]);
    // Both declared: the larger of 0.005 and 1 % × 1.0 = 0.01 applies...
    let m = MinImprovement {
        absolute: 0.005,
        relative: 0.01,
    };
    assert!((m.margin(1.0) - 0.01).abs() < EPS);
    // ...and of 0.005 and 1 % × 0.1 = 0.001.
    assert!((m.margin(0.1) - 0.005).abs() < EPS);
    assert!((m.margin(-1.0) - 0.01).abs() < EPS);
    assert!(!m.beats(Direction::Minimize, 0.995, 1.0));
    assert!(m.beats(Direction::Minimize, 0.99, 1.0));
    // No margin is the seed's strictly-better rule.
    assert!(MinImprovement::NONE.beats(Direction::Minimize, 1.0 - 1e-12, 1.0));
    assert!(!MinImprovement::NONE.beats(Direction::Minimize, 1.0, 1.0));
}

#[test]
fn threshold_mode_passes_at_the_threshold_but_changes_champion_only_by_the_margin() {
    let r = with_margin(
        rules(
            AcceptRule::Threshold { threshold: 1.0 },
            Some(1.0),
            Split::ByImpact,
        ),
        0.05,
        0.0,
    );
    let kb = run(r, &[("A", 0.9), ("B", 0.87), ("B", 0.84)]);
    let e = kb.entries();
    // All pass the threshold and earn their gain over it; only a 0.05 improvement is champion.
    assert!(e.iter().all(|e| e.accepted));
    let champions: Vec<_> = e.iter().map(|e| e.champion).collect();
    assert_eq!(champions, [true, false, true]);
    assert!((e[1].impact - 0.13).abs() < EPS);
    assert_eq!(kb.champion().map(|c| c.seq), Some(3));
}

#[test]
fn invalid_margins_are_refused_by_the_rules() {
    for (a, rel) in [
        (f64::NAN, 0.0),
        (-0.1, 0.0),
        (f64::INFINITY, 0.0),
        (0.0, 2.0),
        (0.0, -1e-9),
        (MAX_MIN_IMPROVEMENT * 2.0, 0.0),
    ] {
        let r = with_margin(
            rules(AcceptRule::BeatsChampion, None, Split::ByImpact),
            a,
            rel,
        );
        let errs = Kb::new(r).unwrap_err();
        assert!(
            matches!(errs[..], [RulesError::BadMinImprovement { .. }]),
            "{a} {rel}: {errs:?}"
        );
    }
}
