//! What a worker claims about a checkpoint it trained, and the owner's first check that a fetched
//! checkpoint is the one claimed.
//!
//! A [`Claim`] travels in a worker's signed submission: the checkpoint's digest and size, the seed
//! and steps it records, the platform it was measured on and the btd version. The worker builds it
//! with [`claim`] (from the checkpoint itself, so the two cannot disagree); the owner, once it has
//! fetched the checkpoint, runs [`check_claim`] before measuring anything, and asks
//! [`same_platform`] whether the claimed value must reproduce bit for bit.

use btd_protocol::program::search::Hypothesis;
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
