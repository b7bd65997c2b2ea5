use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::Digest;

fn id(n: u64) -> ProgramId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_be_bytes());
    ProgramId(Digest(b))
}

/// Owner `n` (the 256 keys are made once: key generation would dominate the proptest).
fn owner(n: u8) -> PeerId {
    static OWNERS: std::sync::OnceLock<Vec<PeerId>> = std::sync::OnceLock::new();
    OWNERS.get_or_init(|| {
        (0..=255u8)
            .map(|i| {
                libp2p_identity::Keypair::ed25519_from_bytes([i; 32])
                    .unwrap_or_else(|_| libp2p_identity::Keypair::generate_ed25519())
                    .public()
                    .to_peer_id()
            })
            .collect()
    })[usize::from(n)]
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

const SMALL: Limits = Limits {
    per_owner: 3,
    unpinned: 8,
};

#[test]
fn one_key_flooding_only_churns_its_own_programs() {
    let mut t = Discovery::new(SMALL);
    let (honest, flooder) = (owner(1), owner(2));
    assert_eq!(
        t.offer(id(1), honest, at(1), ()),
        Offer::New { evicted: None }
    );
    for n in 100..10_100 {
        let offered = t.offer(id(n), flooder, at(n), ());
        assert!(matches!(offered, Offer::New { .. }));
        if let Offer::New { evicted: Some(e) } = offered {
            assert_eq!(
                e.owner, flooder,
                "the flooder pushed out someone else's program"
            );
        }
        t.check_bounds().unwrap();
    }
    assert_eq!(t.owner_len(&flooder), SMALL.per_owner);
    assert!(t.contains(&id(1)));
    // The flooder keeps its newest programs.
    assert!(t.contains(&id(10_099)) && !t.contains(&id(100)));
    // A fresh honest program still gets in.
    assert!(matches!(
        t.offer(id(2), owner(3), at(2), ()),
        Offer::New { .. }
    ));
    assert!(t.contains(&id(2)));
}

#[test]
fn throwaway_keys_cannot_keep_a_fresh_program_out() {
    let mut t = Discovery::new(SMALL);
    // 200 keys with one program each fill the table and churn it.
    for n in 0..200u8 {
        t.offer(id(u64::from(n) + 1000), owner(n), at(u64::from(n)), ());
        t.check_bounds().unwrap();
    }
    assert_eq!(t.unpinned_len(), SMALL.unpinned);
    let fresh = id(1);
    assert!(matches!(
        t.offer(fresh, owner(250), at(500), ()),
        Offer::New { evicted: Some(_) }
    ));
    assert!(t.contains(&fresh));
    // It survives until the attacker mints as many fresh programs as the table holds, minus one.
    for n in 0..(SMALL.unpinned as u64 - 1) {
        t.offer(id(5000 + n), owner(200 + n as u8), at(600 + n), ());
    }
    assert!(t.contains(&fresh));
    // A newer announcement refreshes it: the next eviction takes another.
    assert_eq!(t.offer(fresh, owner(250), at(700), ()), Offer::Newer);
    t.offer(id(6000), owner(240), at(800), ());
    assert!(t.contains(&fresh));
}

#[test]
fn the_heaviest_owner_loses_its_oldest_program_when_the_table_is_full() {
    let mut t = Discovery::new(SMALL);
    // a: 3 programs, b: 3, c: 2 → full (8).
    let (a, b, c) = (owner(1), owner(2), owner(3));
    let mut n = 0;
    for (o, k) in [(a, 3), (b, 3), (c, 2)] {
        for _ in 0..k {
            n += 1;
            t.offer(id(n), o, at(n), ());
        }
    }
    assert_eq!(t.unpinned_len(), 8);
    // A newcomer: a and b tie at 3; a's oldest (id 1) is the older.
    assert_eq!(
        t.offer(id(100), owner(4), at(100), ()),
        Offer::New {
            evicted: Some(Evicted {
                id: id(1),
                owner: a
            })
        }
    );
    // Now b is the heaviest.
    assert_eq!(
        t.offer(id(101), owner(5), at(101), ()),
        Offer::New {
            evicted: Some(Evicted {
                id: id(4),
                owner: b
            })
        }
    );
}

#[test]
fn stale_and_newer_announcements_of_a_known_program() {
    let mut t = Discovery::new(SMALL);
    assert_eq!(
        t.offer(id(1), owner(1), at(10), "a"),
        Offer::New { evicted: None }
    );
    assert_eq!(t.offer(id(1), owner(1), at(10), "b"), Offer::Stale);
    assert_eq!(t.offer(id(1), owner(1), at(5), "b"), Offer::Stale);
    assert_eq!(t.get(&id(1)), Some(&"a"));
    assert_eq!(t.offer(id(1), owner(1), at(11), "c"), Offer::Newer);
    assert_eq!(t.get(&id(1)), Some(&"c"));
    assert_eq!(t.published_at(&id(1)), Some(at(11)));
    assert_eq!(t.len(), 1);
}

#[test]
fn pinned_programs_are_never_evicted_and_count_against_no_cap() {
    let mut t = Discovery::new(SMALL);
    let me = owner(1);
    for n in 0..10 {
        t.pin(id(n));
        t.offer(id(n), me, at(n), ());
    }
    for n in 100..200 {
        t.offer(id(n), owner((n % 50) as u8 + 2), at(n), ());
        t.check_bounds().unwrap();
    }
    assert!((0..10).all(|n| t.contains(&id(n))));
    assert_eq!(t.len(), 10 + SMALL.unpinned);
    // A program pinned after it arrived (a join) leaves the caps too.
    t.pin(id(199));
    assert_eq!(t.unpinned_len(), SMALL.unpinned - 1);
    t.check_bounds().unwrap();
    // Unpinning (a failed join) puts it back under the caps: the table is full again, not over.
    t.offer(id(300), owner(99), at(300), ());
    let evicted = t.unpin(id(199));
    assert!(evicted.is_some());
    t.check_bounds().unwrap();
    assert_eq!(t.unpinned_len(), SMALL.unpinned);
}

#[test]
fn restore_keeps_every_pinned_row_and_the_newest_others_within_the_caps() {
    let me = owner(1);
    let flooder = owner(2);
    let mut rows = vec![(id(1), me, at(1), ()), (id(2), owner(3), at(2), ())];
    for n in 100..10_100 {
        rows.push((id(n), flooder, at(n), ()));
    }
    for n in 0..20u8 {
        rows.push((
            id(20_000 + u64::from(n)),
            owner(10 + n),
            at(5 + u64::from(n)),
            (),
        ));
    }
    let total = rows.len();
    let (t, dropped) = Discovery::restore(SMALL, [id(1)], rows);
    t.check_bounds().unwrap();
    assert!(t.contains(&id(1)));
    assert_eq!(t.len(), 1 + SMALL.unpinned);
    assert_eq!(t.len() + dropped.len(), total);
    assert!(dropped.iter().all(|d| !t.contains(d)));
    // The flooder keeps its newest, and no more than the lightest owner still held plus one.
    assert!(t.owner_len(&flooder) <= SMALL.per_owner);
    assert!(t.contains(&id(10_099)));
    assert!(t.contains(&id(2)) || t.owner_len(&flooder) == 1);
}

#[derive(Debug, Clone)]
enum Op {
    /// Offer program `n` of owner `o` published at `t`.
    Offer(u8, u8, u8),
    /// A fresh program of a fresh owner.
    Fresh,
    Pin(u8),
    Unpin(u8),
    Remove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), 0..12u8, any::<u8>()).prop_map(|(n, o, t)| Op::Offer(n, o, t)),
        2 => Just(Op::Fresh),
        1 => any::<u8>().prop_map(Op::Pin),
        1 => any::<u8>().prop_map(Op::Unpin),
        1 => any::<u8>().prop_map(Op::Remove),
    ]
}

proptest! {
    // 64 cases of up to 400 operations each: every path (per-owner and global eviction, pins,
    // removals) is hit many times, and the suite stays fast on CI's two cores.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever arrives, the table stays within its caps, a fresh program is always admitted, and
    /// an eviction only ever takes from an owner holding the most unpinned programs.
    #[test]
    fn the_table_never_exceeds_its_caps_and_always_admits_a_fresh_program(
        ops in proptest::collection::vec(op(), 1..400),
        per_owner in 1usize..5,
        unpinned in 1usize..20,
    ) {
        let limits = Limits { per_owner, unpinned: unpinned.max(per_owner) };
        let mut t = Discovery::new(limits);
        let owners: Vec<PeerId> = (0..12u8).map(owner).collect();
        let mut seen: Vec<PeerId> = owners.clone();
        // Which owner each program id was offered under (a program id fixes its owner).
        let mut owner_of: HashMap<ProgramId, PeerId> = HashMap::new();
        let mut fresh = 10_000u64;
        for op in ops {
            match op {
                Op::Offer(n, o, ts) => {
                    let pid = id(u64::from(n));
                    let o = *owner_of.entry(pid).or_insert(owners[usize::from(o)]);
                    let new = !t.contains(&pid);
                    let res = t.offer(pid, o, at(u64::from(ts)), ());
                    prop_assert!(t.contains(&pid));
                    if let Offer::New { evicted: Some(e) } = res {
                        prop_assert!(new);
                        prop_assert!(e.id != pid);
                        // The loser held the most unpinned programs (counting the newcomer): after
                        // losing one, nobody holds more than one above it.
                        let loser = t.owner_len(&e.owner);
                        prop_assert!(seen.iter().all(|w| t.owner_len(w) <= loser + 1));
                    }
                }
                Op::Fresh => {
                    fresh += 1;
                    let o = owner((fresh % 200) as u8 + 20);
                    if !seen.contains(&o) {
                        seen.push(o);
                    }
                    let res = t.offer(id(fresh), o, at(1000), ());
                    prop_assert!(matches!(res, Offer::New { .. }), "fresh program refused: {:?}", res);
                    prop_assert!(t.contains(&id(fresh)));
                }
                Op::Pin(n) => t.pin(id(u64::from(n))),
                Op::Unpin(n) => {
                    t.unpin(id(u64::from(n)));
                }
                Op::Remove(n) => {
                    t.remove(&id(u64::from(n)));
                }
            }
            prop_assert_eq!(t.check_bounds(), Ok(()));
            prop_assert!(t.unpinned_len() <= limits.unpinned);
        }
    }
}
