//! `val_bpb` on the fixed validation split (semantics §5).
//!
//! The validation split is cut into consecutive, non-overlapping windows of `block_size + 1` bytes
//! (stride `block_size`); each window scores its `block_size` targets, each with the context before
//! it inside the window. The first `eval_tokens` targets in that order are scored (fewer if the split
//! is shorter; the report says how many). Per-token losses are computed in f32 and summed in f64 by
//! `btd_protocol::metric::val_bpb_bytes`: with byte tokens every target is exactly one byte.
//!
//! Windows are batched [`EVAL_BATCH`] at a time, always the same way, so the value measured at the end
//! of training and the value [`evaluate`] recomputes from the checkpoint are bit-identical on the
//! same machine.

use btd_protocol::metric::val_bpb_bytes;
use btd_protocol::Digest;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::data::{Corpus, DataSource};
use crate::fused::cross_entropy_rows;
use crate::model::Gpt;
use crate::TrainError;

/// Windows per forward pass during evaluation. Part of the definition of the computation: changing
/// it may change the last bits of `val_bpb`.
pub const EVAL_BATCH: usize = 16;

/// The outcome of evaluating a model on a corpus's validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Bits per byte.
    pub val_bpb: f64,
    /// Targets scored.
    pub tokens: u64,
    /// The corpus evaluated on.
    pub data: DataSource,
    /// SHA-256 of the corpus.
    pub data_sha256: Digest,
}

/// Per-token losses (nats) of `model` on the first `eval_tokens` validation targets of `val`.
pub fn token_losses(
    model: &Gpt,
    val: &[u8],
    eval_tokens: u64,
    device: &Device,
) -> Result<Vec<f64>, TrainError> {
    let t = model.config().block_size;
    let windows = val.len().saturating_sub(1) / t;
    let budget = usize::try_from(eval_tokens).unwrap_or(usize::MAX);
    let tokens = budget.min(windows * t);
    if tokens == 0 {
        return Err(TrainError::Data(format!(
            "the validation split has {} bytes: too few for one window of {} targets",
            val.len(),
            t
        )));
    }
    let needed = tokens.div_ceil(t);
    let mut losses = Vec::with_capacity(needed * t);
    for first in (0..needed).step_by(EVAL_BATCH) {
        let n = EVAL_BATCH.min(needed - first);
        let mut x = Vec::with_capacity(n * t);
        let mut y = Vec::with_capacity(n * t);
        for w in first..first + n {
            let s = w * t;
            x.extend(val[s..s + t].iter().map(|&c| u32::from(c)));
            y.extend(val[s + 1..s + t + 1].iter().map(|&c| u32::from(c)));
        }
        let x = Tensor::from_vec(x, (n, t), device)?;
        let y = Tensor::from_vec(y, n * t, device)?;
        let logits = model.forward_rows(&x)?.detach();
        let nll = cross_entropy_rows(&logits, &y)?;
        losses.extend(nll.to_vec1::<f32>()?.into_iter().map(f64::from));
    }
    losses.truncate(tokens);
    Ok(losses)
}

/// `val_bpb` of `model` on `val` with a budget of `eval_tokens` targets; returns it with the number
/// of targets scored.
pub fn val_bpb_of(
    model: &Gpt,
    val: &[u8],
    eval_tokens: u64,
    device: &Device,
) -> Result<(f64, u64), TrainError> {
    let losses = token_losses(model, val, eval_tokens, device)?;
    Ok((val_bpb_bytes(&losses)?, losses.len() as u64))
}

/// Recomputes `val_bpb` from a checkpoint on `corpus`'s validation split, with the checkpoint's
/// evaluation budget.
pub fn evaluate(
    checkpoint: &Checkpoint,
    corpus: &Corpus,
    device: &Device,
) -> Result<EvalReport, TrainError> {
    let meta = checkpoint.meta();
    corpus.check_fits(meta.spec.model.block_size)?;
    let model = checkpoint.model(device)?;
    let (val_bpb, tokens) = val_bpb_of(&model, corpus.val(), meta.spec.eval_tokens, device)?;
    Ok(EvalReport {
        val_bpb,
        tokens,
        data: corpus.source().clone(),
        data_sha256: corpus.sha256(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::init::SeededVars;

    #[test]
    fn untrained_model_is_near_8_bits_and_budget_is_exact() {
        let dev = Device::Cpu;
        let cfg = ModelConfig {
            n_layer: 1,
            n_head: 2,
            d_model: 16,
            block_size: 8,
        };
        let model = Gpt::new(cfg, SeededVars::new(0).var_builder(&dev)).unwrap();
        let val: Vec<u8> = (0..200u32).map(|i| (i * 7 % 251) as u8).collect();
        let losses = token_losses(&model, &val, 37, &dev).unwrap();
        assert_eq!(losses.len(), 37);
        let (bpb, n) = val_bpb_of(&model, &val, 1_000_000, &dev).unwrap();
        assert_eq!(n, (199 / 8) * 8);
        assert!((bpb - 8.0).abs() < 0.1, "{bpb}");
        // The metric is the protocol's: mean nats / ln 2.
        let mean = losses.iter().sum::<f64>() / losses.len() as f64;
        let (bpb37, _) = val_bpb_of(&model, &val, 37, &dev).unwrap();
        assert!((bpb37 - mean / std::f64::consts::LN_2).abs() < 1e-12);
        assert!(token_losses(&model, &val[..8], 10, &dev).is_err());
    }
}
