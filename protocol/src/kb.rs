//! The knowledge base (KB): the KEEP rule, champion, impact and payouts (semantics §2).
//!
//! (Data types fixed; engine in progress.)

use serde::{Deserialize, Serialize};

/// Which way the metric improves.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smaller is better (e.g. `val_bpb`).
    Minimize,
    /// Larger is better (e.g. accuracy).
    Maximize,
}

/// The acceptance rule of a program.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AcceptRule {
    /// Accepted iff strictly better than the current champion (or the baseline when there is none).
    BeatsChampion,
    /// Accepted iff better than or equal to the threshold.
    Threshold {
        /// The bar a value must reach.
        threshold: f64,
    },
}

/// How the reward pool is split.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Proportional to each worker's impact.
    ByImpact,
    /// The champion's worker takes the whole pool.
    ChampionTakesAll,
}

/// An amount of the reward token in integer micro-units (10^-6). Displayed with exactly six
/// decimals, e.g. `66.666667`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Amount(pub u64);

/// The rules a KB applies, taken from a validated program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rules {
    /// Which way the metric improves.
    pub direction: Direction,
    /// The acceptance rule.
    pub accept: AcceptRule,
    /// The reference value before any champion exists.
    pub baseline: Option<f64>,
    /// The reward pool.
    pub pool: Amount,
    /// How the pool is split.
    pub split: Split,
}

/// One processed submission, accepted or not. Every submission stays in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Entry {
    /// Sequence number, from 1, in arrival order.
    pub seq: u64,
    /// The submitting worker's member id.
    pub worker: String,
    /// The metric value.
    pub value: f64,
    /// Whether the KEEP rule accepted it.
    pub accepted: bool,
    /// Whether it became the champion when it was processed.
    pub champion: bool,
    /// Its impact (gain over the reference), 0 when rejected.
    pub impact: f64,
}
