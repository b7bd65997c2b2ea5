//! Splitting the reward pool (semantics §2, "Payouts").

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::{AcceptRule, Amount, Entry, Rules, Split};

/// Scale of the integer weights the pool is split by. Scores are floats; each is turned into an
/// integer weight relative to the best score (at most 2^62, so `pool × weight` fits in a `u128`),
/// and the split is then done in exact integer arithmetic. The weights keep every bit an `f64`
/// score carries, so the result is `pool × score / total` to far below a micro-unit.
const WEIGHT_SCALE: f64 = 4_611_686_018_427_387_904.0; // 2^62

/// The amounts owed to workers, ordered by worker id. Only workers with a non-zero amount appear.
///
/// Serialises as an object (map) from worker id to amount; deserialising drops zero amounts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Payouts(BTreeMap<String, Amount>);

impl Payouts {
    /// Every `(worker, amount)` pair, ordered by worker id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Amount)> + '_ {
        self.0.iter().map(|(w, a)| (w.as_str(), *a))
    }

    /// The amount owed to `worker`, if any.
    pub fn get(&self, worker: &str) -> Option<Amount> {
        self.0.get(worker).copied()
    }

    /// The sum of all amounts (equal to the pool whenever there are payouts).
    pub fn total(&self) -> Amount {
        self.0
            .values()
            .fold(Amount::ZERO, |t, a| t.saturating_add(*a))
    }

    /// Whether nobody is owed anything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many workers are owed something.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The amounts as a map from worker id.
    pub fn as_map(&self) -> &BTreeMap<String, Amount> {
        &self.0
    }
}

impl Payouts {
    /// The same amounts under worker ids rewritten by `f` (a reader cleaning a remote reply's ids);
    /// of two ids that `f` makes equal, the first keeps its amount.
    pub fn map_workers(self, f: impl Fn(&str) -> String) -> Payouts {
        let mut map = BTreeMap::new();
        for (w, a) in self.0 {
            map.entry(f(&w)).or_insert(a);
        }
        Payouts(map)
    }
}

impl<'de> Deserialize<'de> for Payouts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = BTreeMap::<String, Amount>::deserialize(d)?;
        map.retain(|_, a| *a != Amount::ZERO);
        Ok(Payouts(map))
    }
}

/// Splits `rules.pool` among the workers of `entries` (a KB log in sequence order) as semantics §2
/// says: nothing for an empty pool; the whole pool to `champion`'s worker under champion-takes-all;
/// otherwise by impact, with the largest-remainder method so the amounts sum to the pool exactly
/// (remainder ties go to the worker whose first accepted submission came earlier).
///
/// Only the entries' `worker`, `seq`, `accepted` and `impact` are read. Non-finite or negative
/// impacts in a hand-made log count as 0 (NaN, negative) or as the largest float (+∞).
pub fn compute_payouts(rules: &Rules, entries: &[Entry], champion: Option<&Entry>) -> Payouts {
    payouts_of(
        rules,
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.accepted)
            .map(|(pos, e)| Accepted {
                first: (e.seq, pos),
                worker: e.worker.as_str(),
                impact: e.impact,
            }),
        champion.map(|c| c.worker.as_str()),
    )
}

/// One accepted result as the split reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepted<'a> {
    /// Its seq and position in the log (remainder ties go to the earlier first result).
    pub(crate) first: (u64, usize),
    /// Its worker.
    pub(crate) worker: &'a str,
    /// Its impact.
    pub(crate) impact: f64,
}

/// [`compute_payouts`] over the accepted results alone (in log order) and the champion's worker.
pub(crate) fn payouts_of<'a, I>(rules: &Rules, accepted: I, champion: Option<&str>) -> Payouts
where
    I: Iterator<Item = Accepted<'a>> + Clone,
{
    let pool = rules.pool.micros();
    if pool == 0 {
        return Payouts::default();
    }
    match rules.split {
        Split::ChampionTakesAll => match champion {
            Some(c) => Payouts(BTreeMap::from([(c.to_owned(), rules.pool)])),
            None => Payouts::default(),
        },
        Split::ByImpact => by_impact(rules, accepted, pool),
    }
}

fn sanitize(impact: f64) -> f64 {
    if impact.is_nan() || impact <= 0.0 {
        0.0
    } else {
        impact.min(f64::MAX)
    }
}

/// A worker's standing for the split.
struct Share<'a> {
    worker: &'a str,
    /// `(seq, position)` of its first accepted submission: the remainder tie-break.
    first: (u64, usize),
    score: f64,
}

fn by_impact<'a, I>(rules: &Rules, accepted: I, pool: u64) -> Payouts
where
    I: Iterator<Item = Accepted<'a>> + Clone,
{
    let max_impact = accepted
        .clone()
        .fold(0.0f64, |m, e| m.max(sanitize(e.impact)));
    if max_impact <= 0.0 {
        return Payouts::default();
    }
    let sum_impacts = matches!(rules.accept, AcceptRule::BeatsChampion);

    // Impacts are scaled by the largest one, so each term is in [0, 1] and no sum can overflow.
    let mut by_worker: BTreeMap<&str, Share<'_>> = BTreeMap::new();
    for e in accepted {
        let x = sanitize(e.impact) / max_impact;
        let s = by_worker.entry(e.worker).or_insert(Share {
            worker: e.worker,
            first: e.first,
            score: 0.0,
        });
        s.first = s.first.min(e.first);
        s.score = if sum_impacts {
            s.score + x
        } else {
            s.score.max(x)
        };
    }
    let best = by_worker.values().fold(0.0f64, |m, s| m.max(s.score));
    if !(best > 0.0 && best.is_finite()) {
        return Payouts::default();
    }

    // (share, weight); weight ≤ 2^62 so `pool × weight` < 2^126.
    let weighted: Vec<(Share<'_>, u128)> = by_worker
        .into_values()
        .filter_map(|s| {
            let w = ((s.score / best).clamp(0.0, 1.0) * WEIGHT_SCALE).round() as u128;
            (w > 0).then_some((s, w))
        })
        .collect();
    let total: u128 = weighted.iter().map(|(_, w)| *w).sum();
    if total == 0 {
        return Payouts::default();
    }
    let pool = u128::from(pool);

    // (share, floor, remainder): floor = ⌊pool·w/total⌋ ≤ pool, and Σ floor > pool − n, so fewer
    // than n units are left and each worker gets at most one of them.
    let mut parts: Vec<(Share<'_>, u128, u128)> = weighted
        .into_iter()
        .map(|(s, w)| {
            let num = pool * w;
            (s, num / total, num % total)
        })
        .collect();
    let given: u128 = parts.iter().map(|(_, f, _)| *f).sum();
    let mut left = pool.saturating_sub(given);
    parts.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.first.cmp(&b.0.first)));
    for part in parts.iter_mut() {
        if left == 0 {
            break;
        }
        part.1 += 1;
        left -= 1;
    }

    Payouts(
        parts
            .into_iter()
            .filter_map(|(s, amount, _)| {
                let amount = u64::try_from(amount).ok()?;
                (amount > 0).then(|| (s.worker.to_owned(), Amount(amount)))
            })
            .collect(),
    )
}
