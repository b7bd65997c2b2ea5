//! Model shapes, optimiser hyperparameters and the named presets.
//!
//! Everything a run depends on is in a [`TrainSpec`]: the model shape ([`ModelConfig`]), the
//! optimiser and schedule ([`Hyper`]), the seed, the budgets and the evaluation token budget. The
//! spec is serde so a checkpoint can record it and a worker can draw a variation of it.

use btd_protocol::program::search::Hypothesis;
use btd_protocol::program::{CandleTask, ModelPreset};
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// The vocabulary: one token per byte value.
pub const VOCAB_SIZE: usize = 256;

/// Largest accepted model dimension, layer count, context and batch: far beyond any preset, small
/// enough that a typo cannot ask for terabytes.
const MAX_DIM: usize = 8192;
const MAX_LAYERS: usize = 128;
const MAX_CONTEXT: usize = 8192;
const MAX_BATCH: usize = 4096;

/// The shape of btd's byte-level GPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; divides `d_model`.
    pub n_head: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Context length in bytes (tokens).
    pub block_size: usize,
}

impl std::fmt::Display for ModelConfig {
    /// `2 layers, d_model 64, 4 heads, context 64` (for messages).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} layers, d_model {}, {} heads, context {}",
            self.n_layer, self.d_model, self.n_head, self.block_size
        )
    }
}

impl ModelConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_head
    }

    /// Number of trainable parameters.
    pub fn param_count(&self) -> usize {
        let d = self.d_model;
        let per_block = 2 * d + 3 * d * d + d * d + 4 * d * d + 4 * d * d;
        VOCAB_SIZE * d + self.block_size * d + self.n_layer * per_block + d + d * VOCAB_SIZE
    }

    /// Checks the shape is buildable.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |what: String| Err(TrainError::Config(what));
        if self.n_layer == 0 || self.n_layer > MAX_LAYERS {
            return bad(format!("n_layer is {}; use 1..={MAX_LAYERS}", self.n_layer));
        }
        if self.d_model == 0 || self.d_model > MAX_DIM {
            return bad(format!("d_model is {}; use 1..={MAX_DIM}", self.d_model));
        }
        if self.n_head == 0 || !self.d_model.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_head {} must be positive and divide d_model {}",
                self.n_head, self.d_model
            ));
        }
        if self.block_size < 2 || self.block_size > MAX_CONTEXT {
            return bad(format!(
                "block_size is {}; use 2..={MAX_CONTEXT}",
                self.block_size
            ));
        }
        Ok(())
    }
}

/// Optimiser, schedule and batch settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// Sequences per step.
    pub batch_size: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Final learning rate as a fraction of `lr` (linear decay after warm-up).
    pub min_lr_frac: f64,
    /// Fraction of the budget spent warming up linearly from 0.
    pub warmup_frac: f64,
    /// AdamW decoupled weight decay, applied to matrices only (not to norm gains).
    pub weight_decay: f64,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
    /// Clip the global gradient L2 norm to this value (`0` disables clipping).
    pub grad_clip: f64,
}

impl Hyper {
    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |what: String| Err(TrainError::Config(what));
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return bad(format!(
                "batch_size is {}; use 1..={MAX_BATCH}",
                self.batch_size
            ));
        }
        let finite_in = |name: &str, v: f64, lo: f64, hi: f64| -> Result<(), TrainError> {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                Err(TrainError::Config(format!(
                    "{name} is {v}; use a number in [{lo}, {hi}]"
                )))
            }
        };
        finite_in("lr", self.lr, 0.0, 10.0)?;
        finite_in("min_lr_frac", self.min_lr_frac, 0.0, 1.0)?;
        finite_in("warmup_frac", self.warmup_frac, 0.0, 1.0)?;
        finite_in("weight_decay", self.weight_decay, 0.0, 10.0)?;
        finite_in("beta1", self.beta1, 0.0, 0.999_999)?;
        finite_in("beta2", self.beta2, 0.0, 0.999_999_9)?;
        finite_in("eps", self.eps, 0.0, 1.0)?;
        finite_in("grad_clip", self.grad_clip, 0.0, 1e6)?;
        Ok(())
    }
}

/// Everything one training run depends on besides the data and the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    /// The preset the shapes came from (informational once `model`/`hyper` are overridden).
    pub preset: ModelPreset,
    /// Model shape.
    pub model: ModelConfig,
    /// Optimiser and schedule.
    pub hyper: Hyper,
    /// Seed for initialisation and batch order.
    pub seed: u64,
    /// Step budget.
    pub steps: Option<u64>,
    /// Wall-clock training budget in seconds (evaluation is not counted).
    pub seconds: Option<f64>,
    /// Validation targets scored for `val_bpb` (capped by the validation split).
    pub eval_tokens: u64,
}

impl TrainSpec {
    /// The values of the searchable hyperparameters (`btd_protocol::program::search::CANDLE_PARAMS`).
    pub fn hypothesis(&self) -> Hypothesis {
        let h = &self.hyper;
        [
            ("lr", h.lr),
            ("min_lr_frac", h.min_lr_frac),
            ("warmup_frac", h.warmup_frac),
            ("weight_decay", h.weight_decay),
            ("beta1", h.beta1),
            ("beta2", h.beta2),
            ("grad_clip", h.grad_clip),
            ("batch_size", h.batch_size as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Sets the hyperparameters a hypothesis names, then validates the spec. An unknown name or an
    /// unusable value is an error that names it.
    pub fn apply_hypothesis(&mut self, hypothesis: &Hypothesis) -> Result<(), TrainError> {
        for (name, &v) in hypothesis {
            let h = &mut self.hyper;
            match name.as_str() {
                "lr" => h.lr = v,
                "min_lr_frac" => h.min_lr_frac = v,
                "warmup_frac" => h.warmup_frac = v,
                "weight_decay" => h.weight_decay = v,
                "beta1" => h.beta1 = v,
                "beta2" => h.beta2 = v,
                "grad_clip" => h.grad_clip = v,
                "batch_size" => {
                    if !(v.is_finite() && v >= 1.0 && v.fract() == 0.0) {
                        return Err(TrainError::Config(format!(
                            "batch_size must be a positive whole number, got {v}"
                        )));
                    }
                    h.batch_size = v as usize;
                }
                other => {
                    return Err(TrainError::Config(format!(
                        "the hypothesis names {other:?}, which is not a trainer hyperparameter"
                    )))
                }
            }
        }
        self.validate()
    }
}

/// Default validation budget: enough targets for a stable estimate (±0.01 bpb) in a second or two
/// of CPU time with `tiny`.
pub const DEFAULT_EVAL_TOKENS: u64 = 32_768;

/// Upper bound on `eval_tokens` (the losses are held in memory, 8 bytes each). The manifest parser
/// refuses the same bound: it is one constant.
pub use btd_protocol::program::MAX_EVAL_TOKENS;

impl TrainSpec {
    /// The preset's model and hyperparameters with `seed`, no budget yet and the default evaluation
    /// budget.
    pub fn preset(preset: ModelPreset, seed: u64) -> Self {
        let (model, hyper) = preset_config(preset);
        Self {
            preset,
            model,
            hyper,
            seed,
            steps: None,
            seconds: None,
            eval_tokens: DEFAULT_EVAL_TOKENS,
        }
    }

    /// The spec a program's candle task asks for.
    pub fn from_task(task: &CandleTask) -> Self {
        let mut spec = Self::preset(task.preset, task.seed);
        spec.steps = task.steps;
        spec.seconds = task.seconds.map(|s| s as f64);
        spec.eval_tokens = task.eval_tokens;
        spec
    }

    /// Checks shapes, hyperparameters and budgets.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.model.validate()?;
        self.hyper.validate()?;
        if self.steps.is_none() && self.seconds.is_none() {
            return Err(TrainError::Config(
                "no budget: give a step budget, a wall-clock budget in seconds, or both".into(),
            ));
        }
        if self.steps == Some(0) {
            return Err(TrainError::Config(
                "the step budget must be at least 1".into(),
            ));
        }
        if let Some(s) = self.seconds {
            if !(s.is_finite() && s > 0.0) {
                return Err(TrainError::Config(format!(
                    "the wall-clock budget is {s} s; give a positive number of seconds"
                )));
            }
        }
        if self.eval_tokens == 0 || self.eval_tokens > MAX_EVAL_TOKENS {
            return Err(TrainError::Config(format!(
                "eval_tokens is {}; use 1..={MAX_EVAL_TOKENS}",
                self.eval_tokens
            )));
        }
        Ok(())
    }
}

/// The wall-clock budget `btd train` uses for a preset when given no budget: `tiny` is designed to
/// learn within 30 s on 2 CPU cores; the others are sized for a GPU and get five minutes.
pub fn default_seconds(preset: ModelPreset) -> f64 {
    match preset {
        ModelPreset::Tiny => 30.0,
        ModelPreset::Small | ModelPreset::Base => 300.0,
    }
}

/// The model shape and hyperparameters of a preset.
///
/// * `tiny` — 2 CPU cores: learns clearly within 30 s (see docs/benchmarks.md).
/// * `small` — a few minutes on a CPU, seconds on a GPU.
/// * `base` — GPU-sized (nanoGPT's Shakespeare-char shape, no dropout).
pub fn preset_config(preset: ModelPreset) -> (ModelConfig, Hyper) {
    let hyper = Hyper {
        batch_size: 32,
        lr: 3e-3,
        min_lr_frac: 0.1,
        warmup_frac: 0.05,
        weight_decay: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        grad_clip: 1.0,
    };
    match preset {
        ModelPreset::Tiny => (
            ModelConfig {
                n_layer: 2,
                n_head: 4,
                d_model: 64,
                block_size: 64,
            },
            Hyper {
                batch_size: 16,
                ..hyper
            },
        ),
        ModelPreset::Small => (
            ModelConfig {
                n_layer: 4,
                n_head: 4,
                d_model: 128,
                block_size: 128,
            },
            Hyper { lr: 2e-3, ..hyper },
        ),
        ModelPreset::Base => (
            ModelConfig {
                n_layer: 6,
                n_head: 6,
                d_model: 384,
                block_size: 256,
            },
            Hyper {
                batch_size: 64,
                lr: 1e-3,
                ..hyper
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for p in [ModelPreset::Tiny, ModelPreset::Small, ModelPreset::Base] {
            let mut spec = TrainSpec::preset(p, 1);
            assert!(spec.validate().is_err(), "no budget must be rejected");
            spec.steps = Some(10);
            spec.validate().unwrap();
        }
    }

    #[test]
    fn hypotheses_cover_exactly_the_searchable_parameters() {
        let mut spec = TrainSpec::preset(ModelPreset::Tiny, 1);
        spec.steps = Some(5);
        let h = spec.hypothesis();
        let names: Vec<&str> = btd_protocol::program::search::CANDLE_PARAMS
            .iter()
            .map(|(n, _, _)| *n)
            .collect();
        assert_eq!(
            h.keys().map(String::as_str).collect::<Vec<_>>().len(),
            names.len()
        );
        for n in &names {
            assert!(h.contains_key(*n), "{n}");
        }
        let mut changed = h.clone();
        changed.insert("lr".into(), 1e-3);
        changed.insert("batch_size".into(), 8.0);
        spec.apply_hypothesis(&changed).unwrap();
        assert_eq!((spec.hyper.lr, spec.hyper.batch_size), (1e-3, 8));
        assert_eq!(spec.hypothesis(), changed);
        let mut bad = Hypothesis::new();
        bad.insert("dropout".into(), 0.1);
        assert!(spec
            .apply_hypothesis(&bad)
            .unwrap_err()
            .to_string()
            .contains("dropout"));
        bad.clear();
        bad.insert("batch_size".into(), 2.5);
        assert!(spec.apply_hypothesis(&bad).is_err());
    }

    #[test]
    fn rejects_bad_shapes() {
        let mut spec = TrainSpec::preset(ModelPreset::Tiny, 1);
        spec.steps = Some(1);
        spec.model.n_head = 3;
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.contains("divide d_model"), "{e}");
        spec.model.n_head = 4;
        spec.hyper.lr = f64::NAN;
        assert!(spec.validate().unwrap_err().to_string().contains("lr"));
    }
}
