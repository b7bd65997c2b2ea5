//! btd's local compute layer.
//!
//! * [`train`] — train btd's byte-level GPT ([`model::Gpt`]) with candle: AdamW, warm-up + linear
//!   decay, global-norm gradient clipping, a step and/or wall-clock budget, a fixed seed; the result
//!   carries `val_bpb` and a safetensors [`Checkpoint`] with its SHA-256.
//! * [`evaluate`] — recompute `val_bpb` from a checkpoint (how an owner verifies a claim). `val_bpb`
//!   itself is `btd_protocol::metric::val_bpb_bytes` (semantics §5).
//! * [`data`] / [`synth`] — corpora: a UTF-8 file identified by its SHA-256, or the built-in
//!   synthetic corpus; the fixed train/validation split.
//! * [`claim`] — the claim a worker makes for a checkpoint, and the owner's check of a fetched
//!   checkpoint against it.
//! * [`sample`] — generate text from a checkpoint.
//! * [`rungs`] — detect the local CPU and NVIDIA GPUs and map them to rung hardware classes.
//! * [`shell`] — run one bounded shell command after dispatch admitted it, optionally sandboxed,
//!   and parse its metrics.
//! * [`source`] — source bundles: canonical tar archives of a program's source tree, reading them
//!   from peers, and the per-worker cache of unpacked bundles with their setup done.
//!
//! On the CPU, the same spec, seed, data and step budget give a bit-identical checkpoint and
//! `val_bpb` on the same CPU model. The `cuda` feature (off by default) adds NVIDIA GPUs; see
//! `docs/training.md` for what is deterministic there.

pub mod checkpoint;
pub mod claim;
pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod fused;
pub mod init;
pub mod model;
pub mod optim;
pub mod rungs;
pub mod sample;
pub mod shard;
pub mod shell;
pub mod slurm;
pub mod source;
pub mod synth;
pub mod train;
pub mod verify;

pub use checkpoint::{Checkpoint, CheckpointMeta};
pub use config::{Hyper, ModelConfig, TrainSpec};
pub use data::{Corpus, DataSource};
pub use eval::{evaluate, EvalReport};
pub use train::{train, StepReport, TrainReport, Trained};

use btd_protocol::Digest;

/// Why training, evaluation or sampling failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value is out of range or missing.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// The corpus cannot be used.
    #[error("{0}")]
    Data(String),
    /// A data file does not have the SHA-256 the task names.
    #[error(
        "{path} has sha256 {actual}, but the task names {expected}: refusing to train on a \
         different file (check the path, or fetch the file the program names)"
    )]
    DigestMismatch {
        /// The file.
        path: String,
        /// The digest the task names.
        expected: Digest,
        /// The file's digest.
        actual: Digest,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint is malformed or not a btd checkpoint.
    #[error("bad checkpoint: {0}")]
    Checkpoint(String),
    /// The loss became NaN or infinite.
    #[error(
        "training diverged: the loss is {loss} at step {step}; lower the learning rate or enable \
         gradient clipping"
    )]
    Diverged {
        /// The step.
        step: u64,
        /// The loss.
        loss: f32,
    },
    /// The metric could not be computed.
    #[error("val_bpb: {0}")]
    Metric(#[from] btd_protocol::metric::BpbError),
    /// candle failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}
