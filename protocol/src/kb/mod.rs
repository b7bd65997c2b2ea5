//! The knowledge base (KB): the KEEP rule, champion, impact and payouts (semantics §2).
//!
//! A [`Kb`] processes submissions one at a time in arrival order, numbers them from 1, keeps every
//! one in its log and tracks the champion. [`Kb::payouts`] splits the reward pool. The daemon stores
//! the log and rebuilds the KB at restart with [`Kb::replay`].
//!
//! A KB made with [`Kb::verified`] holds every claim the KEEP rule would accept as
//! [`Check::Pending`] until the owner checks it ([`Kb::resolve`]); only verified claims count for
//! the champion and the payouts. Pending claims are resolved in arrival order, so the first claim
//! that verifies takes the champion ("first-verified-wins").

use serde::{Deserialize, Serialize};

mod amount;
mod judge;
mod log;
mod payout;
#[cfg(test)]
mod tests;

pub use amount::{Amount, AmountError, MICROS_PER_TOKEN};
pub use judge::{judge, Measurement};
pub use payout::{compute_payouts, Payouts};

/// Which way the metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Proportional to each worker's impact.
    ByImpact,
    /// The champion's worker takes the whole pool.
    ChampionTakesAll,
}

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
    /// How much a new champion must improve on the reference (`criteria.min_improvement`; none
    /// when absent from a serialized form, as before margins existed).
    #[serde(default)]
    pub min_improvement: MinImprovement,
}

/// The smallest improvement that takes the champion (`criteria.min_improvement` and
/// `criteria.min_improvement_relative`): a value must beat the reference by at least
/// `max(absolute, relative × |reference|)`. Zero on both: any strictly better value wins, as in the
/// seed. It keeps run-to-run noise from taking the champion: without it, a value better by 1e-9
/// (one lucky seed) wins.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MinImprovement {
    /// In the metric's units (e.g. bits per byte).
    pub absolute: f64,
    /// As a fraction of the reference's magnitude (0.002 = 0.2 %).
    pub relative: f64,
}

/// Largest `criteria.min_improvement` accepted (a larger margin is surely a mistake).
pub const MAX_MIN_IMPROVEMENT: f64 = 1e6;
/// Largest `criteria.min_improvement_relative` accepted (the whole reference).
pub const MAX_MIN_IMPROVEMENT_RELATIVE: f64 = 1.0;

impl MinImprovement {
    /// No margin: any strictly better value wins.
    pub const NONE: MinImprovement = MinImprovement {
        absolute: 0.0,
        relative: 0.0,
    };

    /// The margin a value must beat `reference` by: the larger of the absolute margin and the
    /// relative one times `|reference|`.
    pub fn margin(&self, reference: f64) -> f64 {
        let rel = self.relative * reference.abs();
        if rel.is_finite() {
            self.absolute.max(rel)
        } else {
            self.absolute
        }
    }

    /// Whether `value` beats `reference` in `direction` by the margin: strictly better, and at least
    /// as good as the bar `reference ∓ margin`. With no margin this is [`better`].
    pub fn beats(&self, direction: Direction, value: f64, reference: f64) -> bool {
        let m = self.margin(reference);
        better(direction, value, reference)
            && match direction {
                Direction::Minimize => value <= reference - m,
                Direction::Maximize => value >= reference + m,
            }
    }
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
    /// Where the owner's check of this claim stands.
    pub check: Check,
}

/// Where the owner's check of a claim stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Not checked: the KEEP rule rejects it (so it can neither win nor earn), or the program does
    /// not verify claims.
    NotNeeded,
    /// The KEEP rule would accept it; it counts once the owner has verified it.
    Pending,
    /// The owner reproduced it; the KEEP rule was applied at its place in the log.
    Verified,
    /// The owner's check failed; it is rejected and never counts.
    Failed(String),
}

impl Check {
    /// A short word for displays: `-`, `pending`, `verified` or `rejected`.
    pub fn label(&self) -> &'static str {
        match self {
            Check::NotNeeded => "-",
            Check::Pending => "pending",
            Check::Verified => "verified",
            Check::Failed(_) => "rejected",
        }
    }
}

/// Longest reason a failed verdict keeps (bytes). A reason can quote a worker's words (a fetch
/// error carries the member's error message), and every stored verdict is served again in status
/// and results pages: at this bound a full page of [`crate::wire::MAX_RESULTS_PAGE`] entries with
/// maximal worker ids and reasons still fits the message cap (a test computes the worst case).
pub const MAX_VERDICT_REASON_BYTES: usize = 512;

/// A verdict reason cut to [`MAX_VERDICT_REASON_BYTES`] with control characters replaced.
pub fn bound_reason(reason: &str) -> String {
    crate::wire::sanitize_text(reason, MAX_VERDICT_REASON_BYTES)
}

/// The owner's verdict on a pending claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The claim reproduced and the claimed value counts. Verdicts stored by earlier btd versions
    /// read as this; the verifier now gives [`Verdict::Measured`].
    Verified,
    /// The claim reproduced, and `value` is what the owner measured on the checkpoint fetched from
    /// the claimant: the KEEP rule, the impact and the payouts use it, never the claimed number.
    Measured {
        /// The owner's own measurement.
        value: f64,
    },
    /// It did not, and why (e.g. "metric did not reproduce: claimed 2.84, measured 3.10").
    Failed(String),
}

impl Verdict {
    /// A failed verdict whose reason is bounded and cleaned ([`bound_reason`]).
    pub fn failed(reason: impl AsRef<str>) -> Verdict {
        Verdict::Failed(bound_reason(reason.as_ref()))
    }

    /// The same verdict with its reason bounded; the owner core applies it to every verdict.
    pub fn bounded(self) -> Verdict {
        match self {
            Verdict::Failed(why) => Verdict::failed(why),
            v => v,
        }
    }
}

/// One event of a KB's history, as stored: a submission or the verdict on a pending one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogEvent<'a> {
    /// A submission, in arrival order.
    Submit {
        /// The worker's member id.
        worker: &'a str,
        /// The claimed value.
        value: f64,
    },
    /// The verdict on the pending claim `seq`.
    Resolve {
        /// The claim.
        seq: u64,
        /// The verdict.
        verdict: &'a Verdict,
    },
}

/// Whether `a` is strictly better than `b` in `direction`.
pub fn better(direction: Direction, a: f64, b: f64) -> bool {
    match direction {
        Direction::Minimize => a < b,
        Direction::Maximize => a > b,
    }
}

/// How much `v` improves on `reference` in `direction`, clamped at 0.
///
/// Always finite and ≥ 0: a NaN difference counts as 0 and an overflowing one saturates at the
/// largest float, so impacts can always be stored and summed.
pub fn gain(direction: Direction, reference: f64, v: f64) -> f64 {
    let d = match direction {
        Direction::Minimize => reference - v,
        Direction::Maximize => v - reference,
    };
    if d.is_nan() || d <= 0.0 {
        0.0
    } else {
        d.min(f64::MAX)
    }
}

/// A problem with [`Rules`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RulesError {
    /// The baseline is NaN or infinite.
    #[error("the baseline {value} is not a finite number; give a finite baseline or none")]
    NonFiniteBaseline {
        /// The rejected baseline.
        value: f64,
    },
    /// The threshold is NaN or infinite.
    #[error("the threshold {value} is not a finite number; give a finite threshold")]
    NonFiniteThreshold {
        /// The rejected threshold.
        value: f64,
    },
    /// A minimum improvement is NaN, negative or over its bound.
    #[error(
        "the minimum improvement {value} ({which}) must be a finite number between 0 and {max}"
    )]
    BadMinImprovement {
        /// `absolute` or `relative`.
        which: &'static str,
        /// The rejected margin.
        value: f64,
        /// Its bound.
        max: f64,
    },
}

impl Rules {
    /// Checks that the rules can be applied: baseline and threshold must be finite, the minimum
    /// improvement finite, ≥ 0 and bounded. Returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), Vec<RulesError>> {
        let mut errors = Vec::new();
        if let Some(b) = self.baseline {
            if !b.is_finite() {
                errors.push(RulesError::NonFiniteBaseline { value: b });
            }
        }
        if let AcceptRule::Threshold { threshold } = self.accept {
            if !threshold.is_finite() {
                errors.push(RulesError::NonFiniteThreshold { value: threshold });
            }
        }
        let m = self.min_improvement;
        for (which, value, max) in [
            ("absolute", m.absolute, MAX_MIN_IMPROVEMENT),
            ("relative", m.relative, MAX_MIN_IMPROVEMENT_RELATIVE),
        ] {
            if !(0.0..=max).contains(&value) {
                errors.push(RulesError::BadMinImprovement { which, value, max });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The longest worker id a submission may carry, in bytes. Worker ids are member ids (a peer id in
/// text is about 52 characters); the cap keeps one hostile submission from bloating the log that
/// every member reads and the daemon stores.
pub const MAX_WORKER_ID_LEN: usize = 256;

/// Why a submission was refused before the KEEP rule saw it. Such a submission consumes no sequence
/// number and leaves no trace in the log.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// The worker id is empty.
    #[error("the worker id is empty; a submission must name the member that made it")]
    EmptyWorker,
    /// The worker id is longer than [`MAX_WORKER_ID_LEN`].
    #[error("the worker id is {len} bytes long, over the {max}-byte limit; use the member id")]
    WorkerTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The metric value is NaN or infinite.
    #[error("the metric value {value} is not a finite number; submit the finite value measured")]
    NonFiniteValue {
        /// The rejected value.
        value: f64,
    },
    /// The log already holds the largest possible number of entries.
    #[error("the KB log is full (no sequence numbers left); start a new program")]
    LogFull,
}

/// Why a verdict could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    /// The claim is not the oldest pending one (claims are resolved in arrival order).
    #[error("claim {seq} is not the oldest pending claim ({oldest:?}); verdicts are applied in arrival order")]
    NotNext {
        /// The claim named.
        seq: u64,
        /// The oldest pending claim, if any.
        oldest: Option<u64>,
    },
    /// The owner's measurement is NaN or infinite, so it cannot count.
    #[error(
        "the measurement {value} of claim {seq} is not a finite number; reject the claim instead"
    )]
    NonFiniteMeasurement {
        /// The claim named.
        seq: u64,
        /// The measurement.
        value: f64,
    },
}

/// Why a stored log could not be replayed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayError {
    /// The rules themselves are invalid.
    #[error("the KB rules are invalid: {}", join(.0))]
    Rules(Vec<RulesError>),
    /// A stored submission is invalid, so the log is corrupt.
    #[error("stored submission {seq} is invalid ({error}); the KB log is corrupt")]
    Entry {
        /// Its position in the log, from 1 (the sequence number it would have had).
        seq: u64,
        /// What is wrong with it.
        error: SubmitError,
    },
    /// A stored verdict does not apply, so the log is corrupt.
    #[error("stored verdict does not apply ({0}); the KB log is corrupt")]
    Verdict(ResolveError),
}

fn join(errors: &[RulesError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub use log::Kb;
