//! What the owner measures to check a claim: the checkpoint's `val_bpb` on the program's validation
//! split, on the owner-only holdout, and (for spot checks) the value a re-training reaches.

use std::time::Instant;

use btd_protocol::program::{CandleTask, ModelPreset};
use candle_core::Device;

use crate::checkpoint::Checkpoint;
use crate::config::preset_config;
use crate::data::Corpus;
use crate::eval::val_bpb_of;
use crate::TrainError;

/// The platform a value was measured on, as claims name it: `cpu: <model>` or the GPU location.
/// CPU results are bit-identical across thread counts, so the thread count is not part of it.
pub fn platform(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => {
            let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            format!("cpu: {}", crate::rungs::parse_cpuinfo(&text).model)
        }
        _ => crate::device::describe(device),
    }
}

/// The owner's measurement of one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// `val_bpb` on the program's validation split with the program's token budget.
    pub val_bpb: f64,
    /// Validation targets scored.
    pub tokens: u64,
    /// `val_bpb` on the owner-only holdout, when there is one.
    pub holdout_bpb: Option<f64>,
    /// Seconds spent evaluating (both splits).
    pub eval_secs: f64,
}

/// Checks that `checkpoint` is a model of the program's task (its preset's shape, within its step
/// budget), then measures it on `corpus`'s validation split and on `holdout`.
pub fn measure(
    checkpoint: &Checkpoint,
    task: &CandleTask,
    corpus: &Corpus,
    holdout: Option<&[u8]>,
    device: &Device,
) -> Result<Measured, TrainError> {
    check_shape(checkpoint, task.preset, task.steps)?;
    let started = Instant::now();
    let model = checkpoint.model(device)?;
    corpus.check_fits(model.config().block_size)?;
    let (val_bpb, tokens) = val_bpb_of(&model, corpus.val(), task.eval_tokens, device)?;
    let holdout_bpb = match holdout {
        Some(h) => Some(val_bpb_of(&model, h, task.eval_tokens, device)?.0),
        None => None,
    };
    Ok(Measured {
        val_bpb,
        tokens,
        holdout_bpb,
        eval_secs: started.elapsed().as_secs_f64(),
    })
}

/// Refuses a checkpoint that is not the program's model or took more steps than the budget.
pub fn check_shape(
    checkpoint: &Checkpoint,
    preset: ModelPreset,
    max_steps: Option<u64>,
) -> Result<(), TrainError> {
    let meta = checkpoint.meta();
    let (want, _) = preset_config(preset);
    if meta.spec.model != want {
        return Err(TrainError::Checkpoint(format!(
            "the checkpoint's model ({}) is not the program's {preset} preset ({want})",
            meta.spec.model
        )));
    }
    if let Some(max) = max_steps {
        if meta.steps > max {
            return Err(TrainError::Checkpoint(format!(
                "the checkpoint took {} steps, over the program's budget of {max}",
                meta.steps
            )));
        }
    }
    Ok(())
}
