//! Property tests: invariants over random rules and submission sequences.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::super::*;

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Minimize), Just(Direction::Maximize)]
}

/// Values on a coarse grid so that ties and duplicates are frequent.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => (0i32..12).prop_map(|v| f64::from(v) * 0.25),
        1 => -1.0e6f64..1.0e6,
    ]
}

fn pool() -> impl Strategy<Value = Amount> {
    prop_oneof![
        Just(Amount::ZERO),
        (1u64..1_000).prop_map(Amount),
        (1u64..1_000_000).prop_map(|t| Amount(t * 1_000_000)),
        any::<u64>().prop_map(Amount),
        Just(Amount(u64::MAX)),
    ]
}

fn rules() -> impl Strategy<Value = Rules> {
    let accept = prop_oneof![
        Just(AcceptRule::BeatsChampion),
        value().prop_map(|threshold| AcceptRule::Threshold { threshold }),
    ];
    let split = prop_oneof![Just(Split::ByImpact), Just(Split::ChampionTakesAll)];
    (
        direction(),
        accept,
        proptest::option::of(value()),
        pool(),
        split,
    )
        .prop_map(|(direction, accept, baseline, pool, split)| Rules {
            direction,
            accept,
            baseline,
            pool,
            split,
            min_improvement: MinImprovement::NONE,
        })
}

/// A submission; worker 0 is the invalid empty id and value NaN appears now and then.
fn submission() -> impl Strategy<Value = (usize, f64)> {
    (
        prop_oneof![1 => Just(0usize), 12 => 1usize..6],
        prop_oneof![1 => Just(f64::NAN), 15 => value()],
    )
}

const WORKERS: [&str; 6] = ["", "w1", "w2", "w3", "w4", "w5"];

fn check_payouts(rules: &Rules, entries: &[Entry], payouts: &Payouts) {
    if payouts.is_empty() {
        return;
    }
    assert_eq!(payouts.total(), rules.pool, "payouts must sum to the pool");
    assert!(payouts.iter().all(|(_, a)| a > Amount::ZERO));
    if rules.split == Split::ChampionTakesAll {
        assert_eq!(payouts.len(), 1);
        return;
    }
    // Each amount is within one micro-unit of pool × score / total.
    let mut scores: BTreeMap<&str, f64> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.accepted) {
        let s = scores.entry(e.worker.as_str()).or_default();
        *s = match rules.accept {
            AcceptRule::BeatsChampion => *s + e.impact,
            AcceptRule::Threshold { .. } => s.max(e.impact),
        };
    }
    let total: f64 = scores.values().sum();
    let pool = rules.pool.micros() as f64;
    for (w, s) in &scores {
        let ideal = pool * (s / total);
        let got = payouts.get(w).map_or(0.0, |a| a.micros() as f64);
        assert!(
            (got - ideal).abs() <= 1.0 + ideal * 1e-9,
            "{w}: got {got}, ideal {ideal}"
        );
    }
}

proptest! {
    #[test]
    fn kb_invariants(rules in rules(), subs in prop::collection::vec(submission(), 0..40)) {
        let mut kb = Kb::new(rules.clone()).unwrap();
        let mut log = Vec::new();
        for (w, v) in subs {
            let before = kb.next_seq();
            let worker = WORKERS[w];
            match kb.submit(worker, v) {
                Ok(e) => {
                    prop_assert_eq!(e.seq, before);
                    log.push((worker, v));
                }
                Err(_) => {
                    prop_assert!(worker.is_empty() || !v.is_finite());
                    prop_assert_eq!(kb.next_seq(), before);
                }
            }
        }
        let entries = kb.entries();
        for (i, e) in entries.iter().enumerate() {
            prop_assert_eq!(e.seq, i as u64 + 1);
            prop_assert!(e.impact >= 0.0 && e.impact.is_finite());
            prop_assert!(e.accepted || (!e.champion && e.impact == 0.0));
        }
        prop_assert_eq!(kb.next_seq(), entries.len() as u64 + 1);

        // The champion is the best accepted value, the earliest among equals.
        let d = rules.direction;
        let best = entries.iter().filter(|e| e.accepted).fold(None::<&Entry>, |b, e| match b {
            Some(b) if !better(d, e.value, b.value) => Some(b),
            _ => Some(e),
        });
        prop_assert_eq!(kb.champion().map(|c| c.seq), best.map(|b| b.seq));
        if let Some(c) = kb.champion() {
            prop_assert!(c.champion);
            prop_assert_eq!(kb.reference(), Some(c.value));
        }
        if rules.accept == AcceptRule::BeatsChampion {
            prop_assert!(entries.iter().all(|e| e.accepted == e.champion));
        }

        let payouts = kb.payouts();
        if rules.pool == Amount::ZERO {
            prop_assert!(payouts.is_empty());
        }
        check_payouts(&rules, &entries, &payouts);

        let replayed = Kb::replay(rules, log).unwrap();
        prop_assert_eq!(&replayed, &kb);
    }

    #[test]
    fn payouts_sum_exactly_for_arbitrary_entries(
        rules in rules(),
        raw in prop::collection::vec(
            (0usize..8, any::<bool>(), prop_oneof![
                4 => 0.0f64..10.0,
                1 => any::<f64>(),
                1 => Just(0.0),
                1 => Just(1.0),
            ]),
            0..30,
        ),
    ) {
        let entries: Vec<Entry> = raw
            .iter()
            .enumerate()
            .map(|(i, (w, accepted, impact))| Entry {
                seq: i as u64 + 1,
                worker: format!("w{w}"),
                value: 0.0,
                accepted: *accepted,
                champion: false,
                impact: *impact,
                check: Check::NotNeeded,
            })
            .collect();
        let p = compute_payouts(&rules, &entries, entries.last());
        if !p.is_empty() {
            prop_assert_eq!(p.total(), rules.pool);
            prop_assert!(p.iter().all(|(_, a)| a > Amount::ZERO));
        }
        let json = serde_json::to_string(&p).unwrap();
        prop_assert_eq!(serde_json::from_str::<Payouts>(&json).unwrap(), p);
    }

    #[test]
    fn amount_round_trips(micros in any::<u64>()) {
        let a = Amount(micros);
        prop_assert_eq!(a.to_string().parse::<Amount>().unwrap(), a);
        let json = serde_json::to_string(&a).unwrap();
        prop_assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), a);
        let bytes = crate::wire::codec::encode(&a).unwrap();
        prop_assert_eq!(crate::wire::codec::decode::<Amount>(&bytes).unwrap(), a);
    }

    #[test]
    fn amount_parse_never_panics(s in "\\PC{0,30}") {
        let _ = Amount::from_decimal_str(&s);
    }
}
