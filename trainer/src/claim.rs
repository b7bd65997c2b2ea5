//! What a worker claims about a checkpoint it trained, and the owner's first check that a fetched
//! checkpoint is the one claimed.
//!
//! A [`Claim`] travels in a worker's signed submission: the checkpoint's digest and size, the seed
//! and steps it records, the platform it was measured on and the btd version. The worker builds it
//! with [`claim`] (from the checkpoint itself, so the two cannot disagree); the owner, once it has
//! fetched the checkpoint, runs [`check_claim`] before measuring anything, and asks
//! [`same_platform`] whether the claimed value must reproduce bit for bit.

use btd_protocol::program::search::{Hypothesis, SearchSpace};
use btd_protocol::wire::Claim;
use candle_core::Device;

use crate::checkpoint::Checkpoint;
use crate::verify::platform;

/// The claim for `checkpoint`, trained and evaluated on `device` by btd `btd_version`: its digest
/// and size, the seed and steps its metadata records, and [`platform`]`(device)`.
pub fn claim(checkpoint: &Checkpoint, device: &Device, btd_version: &str) -> Claim {
    let meta = checkpoint.meta();
    Claim {
        checkpoint: checkpoint.sha256(),
        checkpoint_bytes: checkpoint.bytes().len() as u64,
        seed: meta.spec.seed,
        steps: meta.steps,
        device: platform(device),
        btd_version: btd_version.to_string(),
    }
}

/// Whether the owner measures on the platform the claim names (`device`) with the same btd version:
/// then the claimed value must reproduce exactly, not just within the program's tolerance.
pub fn same_platform(claim: &Claim, device: &Device, btd_version: &str) -> bool {
    claim.device == platform(device) && claim.btd_version == btd_version
}

/// How a fetched checkpoint disagrees with the claim made for it. The texts are the verdict's
/// reason the worker sees.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClaimMismatch {
    /// The bytes are not the ones claimed (the fetch itself went wrong, or the worker served other
    /// bytes).
    #[error("the checkpoint fetched does not hash to the claimed digest")]
    Digest,
    /// The checkpoint records another seed or step count.
    #[error(
        "the claim says seed {claimed_seed} and {claimed_steps} steps, the checkpoint records seed \
         {seed} and {steps} steps"
    )]
    SeedOrSteps {
        /// The claim's seed.
        claimed_seed: u64,
        /// The claim's steps.
        claimed_steps: u64,
        /// The checkpoint's seed.
        seed: u64,
        /// The checkpoint's steps.
        steps: u64,
    },
    /// The checkpoint was trained with another value of a parameter the claim's hypothesis names
    /// (or without that parameter).
    /// The claim declares more training steps than the program's step budget allows.
    #[error("the claim declares {steps} steps, over the program's budget of {budget}")]
    OverBudget {
        /// The claim's steps.
        steps: u64,
        /// The program's `[task] steps`.
        budget: u64,
    },
    /// The claim's hypothesis names a parameter the program does not search, or a value outside
    /// its declared range (or a fraction where it must be a whole number).
    #[error("the claim's hypothesis says {name}={value}, {why}")]
    OutsideSearch {
        /// The parameter.
        name: String,
        /// Its value in the claim's hypothesis.
        value: f64,
        /// What the program allows instead.
        why: String,
    },
    #[error(
        "the claim's hypothesis says {name}={claimed}, the checkpoint was trained with {}",
        trained_text(.name, .trained)
    )]
    Hypothesis {
        /// The parameter.
        name: String,
        /// Its value in the claim's hypothesis.
        claimed: f64,
        /// Its value in the checkpoint's training spec, if it has one.
        trained: Option<f64>,
    },
}

/// `name=value` of a parameter the checkpoint was trained with, or that it has none.
fn trained_text(name: &str, trained: &Option<f64>) -> String {
    trained.map_or_else(
        || "no such parameter".to_string(),
        |t| format!("{name}={t}"),
    )
}

/// The pure check of a claim against the program, run before anything is fetched, evaluated or
/// re-trained: the claim's steps are within the program's step budget (`[task] steps`, when it
/// has one), and every parameter of the claim's `hypothesis` is one the program searches
/// (`[task.search]`), with a value in its declared range (a whole number where it must be one).
/// Workers only ever propose such hypotheses, so an honest claim always passes; a claim declaring
/// 10^12 steps or a batch size the program never offered is rejected here, before it can cost the
/// owner a re-training.
pub fn check_bounds(
    claim: &Claim,
    hypothesis: &Hypothesis,
    step_budget: Option<u64>,
    space: &SearchSpace,
) -> Result<(), ClaimMismatch> {
    if let Some(budget) = step_budget {
        if claim.steps > budget {
            return Err(ClaimMismatch::OverBudget {
                steps: claim.steps,
                budget,
            });
        }
    }
    check_hypothesis(hypothesis, space)
}

/// Checks that every parameter of `hypothesis` is one the program searches, inside its range (a
/// whole number where it must be): what a worker may claim to have run with.
pub fn check_hypothesis(hypothesis: &Hypothesis, space: &SearchSpace) -> Result<(), ClaimMismatch> {
    for (name, &value) in hypothesis {
        let outside = |why: String| ClaimMismatch::OutsideSearch {
            name: name.clone(),
            value,
            why,
        };
        let Some(p) = space.params.get(name) else {
            return Err(outside(
                "a parameter the program does not search".to_string(),
            ));
        };
        if !(value.is_finite() && value >= p.min && value <= p.max) {
            return Err(outside(format!(
                "outside the program's range [{}, {}]",
                p.min, p.max
            )));
        }
        if p.integer && value.fract() != 0.0 {
            return Err(outside("which must be a whole number".to_string()));
        }
    }
    Ok(())
}

/// Checks, in this order, that `checkpoint` hashes to the claimed digest, records the claimed seed
/// and steps, and was trained with every value of `hypothesis` (the one the submission names),
/// bit for bit. The first disagreement is returned.
pub fn check_claim(
    checkpoint: &Checkpoint,
    claim: &Claim,
    hypothesis: &Hypothesis,
) -> Result<(), ClaimMismatch> {
    if checkpoint.sha256() != claim.checkpoint {
        return Err(ClaimMismatch::Digest);
    }
    let meta = checkpoint.meta();
    if meta.spec.seed != claim.seed || meta.steps != claim.steps {
        return Err(ClaimMismatch::SeedOrSteps {
            claimed_seed: claim.seed,
            claimed_steps: claim.steps,
            seed: meta.spec.seed,
            steps: meta.steps,
        });
    }
    let trained_with = meta.spec.hypothesis();
    for (name, v) in hypothesis {
        match trained_with.get(name) {
            Some(t) if t.to_bits() == v.to_bits() => {}
            got => {
                return Err(ClaimMismatch::Hypothesis {
                    name: name.clone(),
                    claimed: *v,
                    trained: got.copied(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use btd_protocol::program::search::{Scale, SearchParam};

    use super::*;

    fn claim(steps: u64) -> Claim {
        Claim {
            checkpoint: btd_protocol::Digest([7; 32]),
            checkpoint_bytes: 1,
            seed: 1,
            steps,
            device: "cpu: x".into(),
            btd_version: "0".into(),
        }
    }

    fn space() -> SearchSpace {
        let mut s = SearchSpace::default();
        s.params.insert(
            "batch_size".into(),
            SearchParam {
                min: 4.0,
                max: 32.0,
                scale: Scale::Linear,
                integer: true,
                start: None,
            },
        );
        s.params.insert(
            "lr".into(),
            SearchParam {
                min: 1e-4,
                max: 1e-2,
                scale: Scale::Log,
                integer: false,
                start: None,
            },
        );
        s
    }

    fn hyp(pairs: &[(&str, f64)]) -> Hypothesis {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn an_honest_claim_is_within_bounds() {
        let h = hyp(&[("batch_size", 8.0), ("lr", 1e-3)]);
        assert_eq!(check_bounds(&claim(200), &h, Some(200), &space()), Ok(()));
        // No step budget (a seconds-only program): steps are bounded by the check's deadline.
        assert_eq!(check_bounds(&claim(5_000), &h, None, &space()), Ok(()));
        assert_eq!(
            check_bounds(
                &claim(1),
                &Hypothesis::new(),
                Some(1),
                &SearchSpace::default()
            ),
            Ok(())
        );
    }

    /// The attacker declares 10^12 steps: rejected by the pure check, before any fetch or
    /// re-training (on the old main the claim reached the verifier's re-training with
    /// `spec.steps = claim.steps`).
    #[test]
    fn a_claim_over_the_step_budget_is_rejected() {
        let h = hyp(&[("batch_size", 8.0)]);
        assert_eq!(
            check_bounds(&claim(1_000_000_000_000), &h, Some(200), &space()),
            Err(ClaimMismatch::OverBudget {
                steps: 1_000_000_000_000,
                budget: 200
            })
        );
    }

    /// The attacker's hypothesis asks for a batch the program never offered (or a parameter it does
    /// not search, or a fractional batch, or a NaN rate): rejected before any re-training.
    #[test]
    fn a_hypothesis_outside_the_search_space_is_rejected() {
        for (h, what) in [
            (hyp(&[("batch_size", 4096.0)]), "range"),
            (hyp(&[("batch_size", 1e12)]), "range"),
            (hyp(&[("batch_size", 8.5)]), "whole"),
            (hyp(&[("lr", f64::NAN)]), "range"),
            (hyp(&[("lr", 0.5)]), "range"),
            (hyp(&[("grad_clip", 1.0)]), "does not search"),
        ] {
            let e = check_bounds(&claim(10), &h, Some(200), &space()).unwrap_err();
            assert!(
                matches!(e, ClaimMismatch::OutsideSearch { .. }) && e.to_string().contains(what),
                "{h:?}: {e}"
            );
        }
        // An empty search space admits only the empty hypothesis.
        assert!(check_bounds(
            &claim(10),
            &hyp(&[("batch_size", 8.0)]),
            None,
            &SearchSpace::default()
        )
        .is_err());
    }
}
