//! The program's hypothesis search space and how a worker draws its next hypothesis.
//!
//! A *hypothesis* is a set of named numbers (a training configuration: learning rate, warm-up, …).
//! The manifest declares which parameters may vary and their ranges (`[task.search]`, see
//! `docs/program.md`). Each round a worker starts from the current champion's hypothesis (or the
//! task's defaults when there is no champion yet) and changes some parameters by a bounded step,
//! occasionally jumping anywhere in the range. The draw is a pure function of the space, the
//! starting point and a 64-bit seed that the worker derives from (program, member, round), so
//! workers explore different ideas, build on the best one, and a draw can be replayed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;

/// A hypothesis: parameter name → value.
pub type Hypothesis = BTreeMap<String, f64>;

/// Most parameters a search space may declare.
pub const MAX_SEARCH_PARAMS: usize = 16;

/// Parameters a candle task may search, with the range each is valid in (the trainer's own bounds).
pub const CANDLE_PARAMS: &[(&str, f64, f64)] = &[
    ("lr", 1e-6, 1.0),
    ("min_lr_frac", 0.0, 1.0),
    ("warmup_frac", 0.0, 0.5),
    ("weight_decay", 0.0, 1.0),
    ("beta1", 0.5, 0.999),
    ("beta2", 0.9, 0.9999),
    ("grad_clip", 0.0, 100.0),
    ("batch_size", 1.0, 1024.0),
];

/// Parameters of a candle task that are whole numbers.
pub const CANDLE_INTEGER_PARAMS: &[&str] = &["batch_size"];

/// How a parameter's range is explored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Steps are uniform in the value.
    Linear,
    /// Steps are uniform in the logarithm of the value (for rates spanning decades); `min > 0`.
    Log,
}

/// One searchable parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SearchParam {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// How steps are taken.
    pub scale: Scale,
    /// Whole numbers only.
    pub integer: bool,
    /// Where the search starts before there is a champion (shell tasks; candle tasks default to
    /// the preset's value).
    pub start: Option<f64>,
}

/// The declared search space (empty: every worker runs the task as written).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SearchSpace {
    /// Parameters by name.
    pub params: BTreeMap<String, SearchParam>,
}

/// Fraction of a parameter's (transformed) range one local step may move.
const STEP: f64 = 0.15;
/// Chance that a changed parameter jumps anywhere in its range instead of stepping.
const JUMP: f64 = 0.15;

impl SearchSpace {
    /// True when nothing may vary.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The starting hypothesis: each parameter's `start`, else `defaults[name]`, clamped into its
    /// range (a parameter with neither starts at its range's midpoint).
    pub fn start(&self, defaults: &Hypothesis) -> Hypothesis {
        self.params
            .iter()
            .map(|(name, p)| {
                let v = p
                    .start
                    .or_else(|| defaults.get(name).copied())
                    .unwrap_or_else(|| p.at_unit(0.5));
                (name.clone(), p.fit(v))
            })
            .collect()
    }

    /// The next hypothesis to try: `base` (usually the champion's hypothesis; missing parameters
    /// come from [`Self::start`]) with at least one parameter changed. Deterministic in `seed`.
    pub fn propose(&self, base: &Hypothesis, defaults: &Hypothesis, seed: u64) -> Hypothesis {
        let mut rng = SplitMix(seed);
        let start = self.start(defaults);
        let mut out: Hypothesis = self
            .params
            .iter()
            .map(|(name, p)| {
                let v = base
                    .get(name)
                    .copied()
                    .filter(|v| v.is_finite())
                    .unwrap_or(start[name]);
                (name.clone(), p.fit(v))
            })
            .collect();
        if self.params.is_empty() {
            return out;
        }
        // Change each parameter with probability 1/2, and at least one.
        let names: Vec<&String> = self.params.keys().collect();
        let forced = names[(rng.next() % names.len() as u64) as usize];
        for (name, p) in &self.params {
            if name != forced && rng.unit() < 0.5 {
                continue;
            }
            let old = out[name];
            let mut new = old;
            // A step can round back to the old value (integers, a value at its bound): retry a few
            // times, then jump.
            for attempt in 0..4 {
                let u = if attempt == 3 || rng.unit() < JUMP {
                    rng.unit()
                } else {
                    p.unit_of(old) + STEP * (2.0 * rng.unit() - 1.0)
                };
                new = p.fit(p.at_unit(u.clamp(0.0, 1.0)));
                if new != old {
                    break;
                }
            }
            out.insert(name.clone(), new);
        }
        out
    }
}

impl SearchParam {
    /// Clamps into the range (and rounds integer parameters).
    pub fn fit(&self, v: f64) -> f64 {
        let v = if v.is_finite() { v } else { self.min };
        let v = v.clamp(self.min, self.max);
        if self.integer {
            v.round().clamp(self.min.ceil(), self.max.floor())
        } else {
            v
        }
    }

    /// Position of `v` in the range, 0..=1, in the parameter's scale.
    fn unit_of(&self, v: f64) -> f64 {
        let (lo, hi, x) = match self.scale {
            Scale::Linear => (self.min, self.max, v),
            Scale::Log => (self.min.ln(), self.max.ln(), v.max(self.min).ln()),
        };
        if hi > lo {
            ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// The value at position `u` (0..=1) of the range, in the parameter's scale.
    fn at_unit(&self, u: f64) -> f64 {
        match self.scale {
            Scale::Linear => self.min + u * (self.max - self.min),
            Scale::Log => (self.min.ln() + u * (self.max.ln() - self.min.ln())).exp(),
        }
    }
}

/// The seed a worker uses for its hypothesis in `round` of a program: distinct per member and
/// round, reproducible by anyone who knows the three.
pub fn hypothesis_seed(program: &Digest, member: &str, round: u64) -> u64 {
    let d = Digest::content_id("btd/hypothesis-seed/v1", &(program, member, round));
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.0[..8]);
    u64::from_le_bytes(b)
}

/// SplitMix64: a tiny, well-mixed deterministic generator (no platform or crate-version drift).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> SearchSpace {
        let mut params = BTreeMap::new();
        params.insert(
            "lr".to_string(),
            SearchParam {
                min: 1e-4,
                max: 1e-2,
                scale: Scale::Log,
                integer: false,
                start: None,
            },
        );
        params.insert(
            "batch_size".to_string(),
            SearchParam {
                min: 8.0,
                max: 32.0,
                scale: Scale::Linear,
                integer: true,
                start: None,
            },
        );
        SearchSpace { params }
    }

    fn defaults() -> Hypothesis {
        [("lr".to_string(), 3e-3), ("batch_size".to_string(), 16.0)]
            .into_iter()
            .collect()
    }

    #[test]
    fn proposals_stay_in_range_change_something_and_replay() {
        let s = space();
        let base = s.start(&defaults());
        assert_eq!(base["lr"], 3e-3);
        for seed in 0..2000u64 {
            let h = s.propose(&base, &defaults(), seed);
            assert_eq!(h, s.propose(&base, &defaults(), seed), "replays");
            assert_ne!(h, base, "seed {seed} changed nothing");
            assert!((1e-4..=1e-2).contains(&h["lr"]), "{h:?}");
            let b = h["batch_size"];
            assert!((8.0..=32.0).contains(&b) && b.fract() == 0.0, "{h:?}");
        }
    }

    #[test]
    fn different_seeds_explore_different_points_near_the_base() {
        let s = space();
        let base = s.start(&defaults());
        let hs: Vec<Hypothesis> = (0..200)
            .map(|i| {
                s.propose(
                    &base,
                    &defaults(),
                    hypothesis_seed(&Digest([1; 32]), "m", i),
                )
            })
            .collect();
        let distinct: std::collections::BTreeSet<u64> =
            hs.iter().map(|h| h["lr"].to_bits()).collect();
        assert!(distinct.len() > 50, "{} distinct lr values", distinct.len());
        // Most steps are local: within STEP of the range (in log space) from the base.
        let near = hs
            .iter()
            .filter(|h| (h["lr"].ln() - 3e-3f64.ln()).abs() <= STEP * (100f64).ln() + 1e-9)
            .count();
        assert!(near > 140, "{near} of 200 near the base");
    }

    #[test]
    fn a_base_outside_the_range_is_clamped() {
        let s = space();
        let mut base = defaults();
        base.insert("lr".into(), 5.0);
        base.insert("batch_size".into(), f64::NAN);
        let h = s.propose(&base, &defaults(), 7);
        assert!(h["lr"] <= 1e-2 && h["batch_size"] >= 8.0, "{h:?}");
    }

    #[test]
    fn seeds_differ_by_member_and_round() {
        let p = Digest([3; 32]);
        assert_ne!(hypothesis_seed(&p, "a", 1), hypothesis_seed(&p, "b", 1));
        assert_ne!(hypothesis_seed(&p, "a", 1), hypothesis_seed(&p, "a", 2));
        assert_eq!(hypothesis_seed(&p, "a", 1), hypothesis_seed(&p, "a", 1));
    }
}
