//! The knowledge base (KB): the KEEP rule, champion, impact and payouts (semantics §2).
//!
//! A [`Kb`] processes submissions one at a time in arrival order, numbers them from 1, keeps every
//! one in its log and tracks the champion. [`Kb::payouts`] splits the reward pool. The daemon stores
//! the log and rebuilds the KB at restart with [`Kb::replay`].

use serde::{Deserialize, Serialize};

mod amount;
mod payout;
#[cfg(test)]
mod tests;

pub use amount::{Amount, AmountError, MICROS_PER_TOKEN};
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
}

impl Rules {
    /// Checks that the rules can be applied: baseline and threshold must be finite. Returns every
    /// problem found, not just the first.
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
}

fn join(errors: &[RulesError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A knowledge base: the rules, the log of every processed submission, and the champion.
#[derive(Debug, Clone, PartialEq)]
pub struct Kb {
    rules: Rules,
    entries: Vec<Entry>,
    /// Index into `entries` of the current champion.
    champion: Option<usize>,
}

impl Kb {
    /// An empty KB applying `rules`, or every problem with them.
    pub fn new(rules: Rules) -> Result<Kb, Vec<RulesError>> {
        rules.validate()?;
        Ok(Kb {
            rules,
            entries: Vec::new(),
            champion: None,
        })
    }

    /// Applies the KEEP rule to one submission in arrival order, logs it and returns its entry.
    /// Invalid input (empty or over-long worker id, non-finite value) is rejected with an error and
    /// consumes no sequence number.
    pub fn submit(&mut self, worker: &str, value: f64) -> Result<&Entry, SubmitError> {
        if worker.is_empty() {
            return Err(SubmitError::EmptyWorker);
        }
        if worker.len() > MAX_WORKER_ID_LEN {
            return Err(SubmitError::WorkerTooLong {
                len: worker.len(),
                max: MAX_WORKER_ID_LEN,
            });
        }
        if !value.is_finite() {
            return Err(SubmitError::NonFiniteValue { value });
        }
        let seq = u64::try_from(self.entries.len())
            .ok()
            .and_then(|n| n.checked_add(1))
            .ok_or(SubmitError::LogFull)?;

        let direction = self.rules.direction;
        let champion_value = self.champion().map(|c| c.value);
        let (accepted, champion, impact) = match self.rules.accept {
            AcceptRule::BeatsChampion => match self.reference() {
                None => (true, true, 0.0),
                Some(r) if better(direction, value, r) => (true, true, gain(direction, r, value)),
                Some(_) => (false, false, 0.0),
            },
            AcceptRule::Threshold { threshold } => {
                let accepted = better(direction, value, threshold) || value == threshold;
                let champion =
                    accepted && champion_value.is_none_or(|c| better(direction, value, c));
                let impact = if accepted {
                    gain(direction, threshold, value)
                } else {
                    0.0
                };
                (accepted, champion, impact)
            }
        };

        let index = self.entries.len();
        self.entries.push(Entry {
            seq,
            worker: worker.to_owned(),
            value,
            accepted,
            champion,
            impact,
        });
        if champion {
            self.champion = Some(index);
        }
        // Just pushed, so `last` is that entry.
        self.entries.last().ok_or(SubmitError::LogFull)
    }

    /// The rules this KB applies.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Every processed submission, accepted or not, in sequence order (entry `i` has seq `i + 1`).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The current champion, if any.
    pub fn champion(&self) -> Option<&Entry> {
        self.champion.and_then(|i| self.entries.get(i))
    }

    /// The value a beats-champion submission must strictly beat: the champion's value, else the
    /// baseline, else none (then the next submission is accepted). Threshold mode does not use it
    /// for acceptance.
    pub fn reference(&self) -> Option<f64> {
        self.champion().map(|c| c.value).or(self.rules.baseline)
    }

    /// The sequence number the next valid submission will get.
    pub fn next_seq(&self) -> u64 {
        u64::try_from(self.entries.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// The current split of the reward pool.
    pub fn payouts(&self) -> Payouts {
        compute_payouts(&self.rules, &self.entries, self.champion())
    }

    /// Rebuilds a KB from a stored log by re-applying `rules` to its `(worker, value)` pairs in
    /// sequence order. The daemon uses this at restart; a stored pair that is invalid means the log
    /// is corrupt and is reported with its position.
    pub fn replay<'a>(
        rules: Rules,
        log: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<Kb, ReplayError> {
        let mut kb = Kb::new(rules).map_err(ReplayError::Rules)?;
        for (worker, value) in log {
            let seq = kb.next_seq();
            kb.submit(worker, value)
                .map_err(|error| ReplayError::Entry { seq, error })?;
        }
        Ok(kb)
    }
}
