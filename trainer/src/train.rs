//! The training loop: AdamW, warm-up then linear decay, global-norm gradient clipping, step and
//! wall-clock budgets, then `val_bpb` and a checkpoint.

use std::ops::ControlFlow;
use std::time::Instant;

use btd_protocol::Digest;
use candle_core::{backprop::GradStore, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointMeta, FORMAT};
use crate::config::{Hyper, TrainSpec};
use crate::data::{Batcher, Corpus, DataSource};
use crate::eval::val_bpb_of;
use crate::init::SeededVars;
use crate::model::Gpt;
use crate::optim::{AdamW, AdamWConfig};
use crate::shard;
use crate::TrainError;

/// Progress after one optimiser step, for progress bars and logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// Steps done (1-based).
    pub step: u64,
    /// The step budget, if any.
    pub steps: Option<u64>,
    /// Training loss of this step's batch (nats per byte).
    pub loss: f32,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training tokens per second so far.
    pub tokens_per_sec: f64,
    /// Seconds of training so far.
    pub elapsed_secs: f64,
    /// Fraction of the budget used, in `[0, 1]`.
    pub progress: f64,
}

/// What ended the training loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The step budget was reached.
    Steps,
    /// The wall-clock budget was reached.
    Seconds,
    /// The caller asked to stop.
    Cancelled,
}

/// The outcome of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// The spec that ran.
    pub spec: TrainSpec,
    /// Trainable parameters.
    pub params: usize,
    /// Optimiser steps taken.
    pub steps: u64,
    /// Training tokens processed (`steps × batch × block`).
    pub tokens: u64,
    /// Seconds in the training loop (evaluation excluded).
    pub train_secs: f64,
    /// Training throughput.
    pub tokens_per_sec: f64,
    /// Mean training loss over the last 10% of steps (at least one), nats per byte.
    pub final_train_loss: f64,
    /// What ended the loop.
    pub stopped_by: StopReason,
    /// `val_bpb` on the validation split.
    pub val_bpb: f64,
    /// Validation targets scored.
    pub eval_tokens: u64,
    /// Seconds spent evaluating.
    pub eval_secs: f64,
    /// The corpus.
    pub data: DataSource,
    /// SHA-256 of the corpus.
    pub data_sha256: Digest,
    /// SHA-256 of the checkpoint.
    pub checkpoint_sha256: Digest,
    /// The device, e.g. `cpu` or `cuda:0`.
    pub device: String,
}

/// A finished run: the report and the checkpoint (not yet written anywhere).
#[derive(Debug, Clone)]
pub struct Trained {
    /// Numbers.
    pub report: TrainReport,
    /// The checkpoint; [`Checkpoint::write`] saves it.
    pub checkpoint: Checkpoint,
}

/// Learning rate at `progress` ∈ [0, 1]: linear warm-up to `lr` over `warmup_frac`, then linear
/// decay to `lr × min_lr_frac` at 1.
pub fn lr_at(h: &Hyper, progress: f64) -> f64 {
    let p = progress.clamp(0.0, 1.0);
    if h.warmup_frac > 0.0 && p < h.warmup_frac {
        return h.lr * (p / h.warmup_frac);
    }
    let span = (1.0 - h.warmup_frac).max(f64::EPSILON);
    let decay = ((p - h.warmup_frac) / span).clamp(0.0, 1.0);
    h.lr * (1.0 - decay * (1.0 - h.min_lr_frac))
}

/// Trains a model on `corpus` per `spec` on `device`. `on_step` sees every step and may stop the
/// run early with `ControlFlow::Break(())` (the model is still evaluated and checkpointed).
pub fn train(
    spec: &TrainSpec,
    corpus: &Corpus,
    device: &Device,
    on_step: &mut dyn FnMut(&StepReport) -> ControlFlow<()>,
) -> Result<Trained, TrainError> {
    spec.validate()?;
    corpus.check_fits(spec.model.block_size)?;
    let (h, cfg) = (spec.hyper, spec.model);
    let store = SeededVars::new(spec.seed);
    let model = Gpt::new(cfg, store.var_builder(device))?;
    let vars = store.vars();
    let (decay, no_decay): (Vec<Var>, Vec<Var>) = {
        let (d, n): (Vec<_>, Vec<_>) = vars.iter().partition(|(_, v)| v.rank() >= 2);
        (
            d.into_iter().map(|(_, v)| v.clone()).collect(),
            n.into_iter().map(|(_, v)| v.clone()).collect(),
        )
    };
    let mut opt = AdamW::new(
        vec![(decay, h.weight_decay), (no_decay, 0.0)],
        AdamWConfig {
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
        },
    )?;
    let mut batcher = Batcher::new(spec.seed, h.batch_size, cfg.block_size);
    let tokens_per_step = (h.batch_size * cfg.block_size) as u64;
    // One shard of the batch per CPU thread (`shard.rs`).
    let shards = shard::shards_for(device, h.batch_size);

    let start = Instant::now();
    let mut losses: Vec<f32> = Vec::new();
    let mut step = 0u64;
    let stopped_by = loop {
        let elapsed = start.elapsed().as_secs_f64();
        let progress = budget_progress(spec, step + 1, elapsed);
        let lr = lr_at(&h, progress);

        let (x, y) = batcher.next_batch(corpus.train(), device)?;
        let (loss_value, mut grads) = shard::loss_and_grads(&model, &vars, &x, &y, shards)?;
        step += 1;
        if !loss_value.is_finite() {
            return Err(TrainError::Diverged {
                step,
                loss: loss_value,
            });
        }
        let grad_norm = opt.clip_and_step(&vars, &mut grads, h.grad_clip, lr)?;
        losses.push(loss_value);

        let elapsed = start.elapsed().as_secs_f64();
        let report = StepReport {
            step,
            steps: spec.steps,
            loss: loss_value,
            lr,
            grad_norm,
            tokens_per_sec: (step * tokens_per_step) as f64 / elapsed.max(1e-9),
            elapsed_secs: elapsed,
            progress: budget_progress(spec, step, elapsed),
        };
        let flow = on_step(&report);
        if spec.steps.is_some_and(|s| step >= s) {
            break StopReason::Steps;
        }
        if spec.seconds.is_some_and(|s| elapsed >= s) {
            break StopReason::Seconds;
        }
        if flow.is_break() {
            break StopReason::Cancelled;
        }
    };
    let train_secs = start.elapsed().as_secs_f64();

    let eval_start = Instant::now();
    let (val_bpb, eval_tokens) = val_bpb_of(&model, corpus.val(), spec.eval_tokens, device)?;
    let eval_secs = eval_start.elapsed().as_secs_f64();

    let meta = CheckpointMeta {
        format: FORMAT.to_string(),
        spec: spec.clone(),
        steps: step,
        data: corpus.source().clone(),
        val_bpb,
        eval_tokens,
    };
    let checkpoint = Checkpoint::from_vars(&vars, meta)?;
    let tail = (losses.len() / 10).max(1);
    let final_train_loss = losses[losses.len() - tail..]
        .iter()
        .map(|&l| f64::from(l))
        .sum::<f64>()
        / tail as f64;
    let report = TrainReport {
        spec: spec.clone(),
        params: cfg.param_count(),
        steps: step,
        tokens: step * tokens_per_step,
        train_secs,
        tokens_per_sec: (step * tokens_per_step) as f64 / train_secs.max(1e-9),
        final_train_loss,
        stopped_by,
        val_bpb,
        eval_tokens,
        eval_secs,
        data: corpus.source().clone(),
        data_sha256: corpus.sha256(),
        checkpoint_sha256: checkpoint.sha256(),
        device: crate::device::describe(device),
    };
    Ok(Trained { report, checkpoint })
}

/// Fraction of the budget used after `steps_done` steps and `elapsed` seconds: the larger of the
/// step and time fractions (only the step fraction with a step budget alone, so such runs are
/// deterministic).
fn budget_progress(spec: &TrainSpec, steps_done: u64, elapsed: f64) -> f64 {
    let by_steps = spec.steps.map_or(0.0, |s| steps_done as f64 / s as f64);
    let by_time = spec.seconds.map_or(0.0, |s| elapsed / s);
    by_steps.max(by_time).clamp(0.0, 1.0)
}

/// Scales all gradients so their global L2 norm is at most `max_norm` (`0` = no clipping); returns
/// the norm before clipping. The squares are summed on the device in name order (one host
/// synchronisation per step, which matters on a GPU), then scaled there.
pub(crate) fn clip_grad_norm(
    vars: &[(String, Var)],
    grads: &mut GradStore,
    max_norm: f64,
) -> candle_core::Result<f64> {
    let norm = grad_norm(vars, grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / norm;
        for (_, var) in vars {
            if let Some(g) = grads.remove(var) {
                grads.insert(var, (g * scale)?);
            }
        }
    }
    Ok(norm)
}

/// The global L2 norm of the gradients, summed on the device in `vars` order.
pub(crate) fn grad_norm(vars: &[(String, Var)], grads: &GradStore) -> candle_core::Result<f64> {
    let mut total: Option<Tensor> = None;
    for (_, var) in vars {
        if let Some(g) = grads.get(var) {
            let sq = g.sqr()?.sum_all()?;
            total = Some(match total {
                Some(t) => (t + sq)?,
                None => sq,
            });
        }
    }
    let Some(total) = total else { return Ok(0.0) };
    Ok(f64::from(total.to_scalar::<f32>()?).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::preset_config;
    use btd_protocol::program::ModelPreset;

    #[test]
    fn schedule() {
        let (_, h) = preset_config(ModelPreset::Tiny);
        assert_eq!(lr_at(&h, 0.0), 0.0);
        assert!((lr_at(&h, h.warmup_frac / 2.0) - h.lr / 2.0).abs() < 1e-12);
        assert!((lr_at(&h, h.warmup_frac) - h.lr).abs() < 1e-12);
        assert!((lr_at(&h, 1.0) - h.lr * h.min_lr_frac).abs() < 1e-12);
        assert!(lr_at(&h, 0.5) < h.lr && lr_at(&h, 0.5) > h.lr * h.min_lr_frac);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let dev = Device::Cpu;
        let a = Var::from_vec(vec![1.0f32, 2.0], 2, &dev).unwrap();
        let b = Var::from_vec(vec![3.0f32], 1, &dev).unwrap();
        let loss = ((a.as_tensor().sqr().unwrap().sum_all().unwrap()
            + b.as_tensor().sqr().unwrap().sum_all().unwrap())
        .unwrap()
            * 0.5)
            .unwrap();
        let mut grads = loss.backward().unwrap();
        let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let norm = clip_grad_norm(&vars, &mut grads, 1.0).unwrap();
        assert!((norm - 14f64.sqrt()).abs() < 1e-6);
        let after = clip_grad_norm(&vars, &mut grads, 0.0).unwrap();
        assert!((after - 1.0).abs() < 1e-6, "{after}");
    }
}
