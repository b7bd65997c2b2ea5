//! Safetensors checkpoints with their SHA-256 and the configuration needed to use them.
//!
//! A checkpoint is a safetensors file of the model's f32 parameters (named as in [`crate::model`])
//! whose header metadata holds one key, `btd`, with a JSON [`CheckpointMeta`]: the full
//! [`TrainSpec`], the steps trained, the data it trained on and the `val_bpb` it claims. Nothing in it
//! depends on timing, so the same run on the same CPU gives the same bytes and the same digest.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use btd_protocol::Digest;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::config::TrainSpec;
use crate::data::DataSource;
use crate::model::Gpt;
use crate::TrainError;

/// The `format` value of checkpoints this build writes and reads.
pub const FORMAT: &str = "btd-checkpoint/1";
/// The safetensors metadata key that holds the [`CheckpointMeta`] JSON.
pub const META_KEY: &str = "btd";
/// Largest checkpoint file btd reads (the `base` preset is ~45 MB).
pub const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;

/// What a checkpoint records besides its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// [`FORMAT`].
    pub format: String,
    /// The run's spec: model shape, hyperparameters, seed, budgets, evaluation budget.
    pub spec: TrainSpec,
    /// Optimiser steps taken.
    pub steps: u64,
    /// The corpus it trained on.
    pub data: DataSource,
    /// `val_bpb` measured at the end of training.
    pub val_bpb: f64,
    /// Validation targets that measurement scored.
    pub eval_tokens: u64,
}

/// A serialised checkpoint: its bytes, their SHA-256 and the parsed metadata.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    bytes: Vec<u8>,
    sha256: Digest,
    meta: CheckpointMeta,
}

impl Checkpoint {
    /// Serialises `vars` (name, value) with `meta`.
    pub fn from_vars(vars: &[(String, Var)], meta: CheckpointMeta) -> Result<Self, TrainError> {
        let json = serde_json::to_string(&meta)
            .map_err(|e| TrainError::Checkpoint(format!("cannot encode metadata: {e}")))?;
        let tensors: Vec<(&str, Tensor)> = vars
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_tensor().to_device(&Device::Cpu)))
            .map(|(n, t)| t.map(|t| (n, t)))
            .collect::<candle_core::Result<_>>()?;
        let metadata = HashMap::from([(META_KEY.to_string(), json)]);
        let bytes = safetensors::serialize(tensors, Some(metadata))
            .map_err(|e| TrainError::Checkpoint(format!("cannot serialise: {e}")))?;
        let sha256 = Digest::of(&bytes);
        Ok(Self {
            bytes,
            sha256,
            meta,
        })
    }

    /// Parses checkpoint bytes (checks the header and the metadata; tensors are read by
    /// [`Checkpoint::model`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, TrainError> {
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| TrainError::Checkpoint(format!("not a safetensors file ({e})")))?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| {
                TrainError::Checkpoint(format!(
                    "no {META_KEY:?} metadata: this safetensors file was not written by btd train"
                ))
            })?;
        let meta: CheckpointMeta = serde_json::from_str(json)
            .map_err(|e| TrainError::Checkpoint(format!("unreadable btd metadata: {e}")))?;
        if meta.format != FORMAT {
            return Err(TrainError::Checkpoint(format!(
                "format {:?}; this btd reads {FORMAT:?}",
                meta.format
            )));
        }
        meta.spec.model.validate()?;
        let sha256 = Digest::of(&bytes);
        Ok(Self {
            bytes,
            sha256,
            meta,
        })
    }

    /// Reads and parses a checkpoint file.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let io = |e: std::io::Error| TrainError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_CHECKPOINT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
            return Err(TrainError::Checkpoint(format!(
                "{} is larger than {MAX_CHECKPOINT_BYTES} bytes",
                path.display()
            )));
        }
        Self::from_bytes(bytes).map_err(|e| match e {
            TrainError::Checkpoint(m) => TrainError::Checkpoint(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Writes the checkpoint to `path` (through a temporary file and a rename).
    pub fn write(&self, path: &Path) -> Result<(), TrainError> {
        let io = |e: std::io::Error| TrainError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, &self.bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The serialised bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of the bytes.
    pub fn sha256(&self) -> Digest {
        self.sha256
    }

    /// The metadata.
    pub fn meta(&self) -> &CheckpointMeta {
        &self.meta
    }

    /// Builds the model from the checkpoint's tensors on `device`.
    pub fn model(&self, device: &Device) -> Result<Gpt, TrainError> {
        let tensors = candle_core::safetensors::load_buffer(&self.bytes, device)?;
        let cfg = self.meta.spec.model;
        let expected = 2 + 8 * cfg.n_layer + 2;
        if tensors.len() != expected {
            return Err(TrainError::Checkpoint(format!(
                "{} tensors, but a model with {} layers has {expected}",
                tensors.len(),
                cfg.n_layer
            )));
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Gpt::new(cfg, vb).map_err(|e| TrainError::Checkpoint(format!("tensors do not fit: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_foreign_files() {
        let e = Checkpoint::from_bytes(b"not a checkpoint".to_vec()).unwrap_err();
        assert!(e.to_string().contains("not a safetensors"), "{e}");
        let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        let plain = safetensors::serialize([("x", t)], None).unwrap();
        let e = Checkpoint::from_bytes(plain).unwrap_err();
        assert!(e.to_string().contains("not written by btd"), "{e}");
    }
}
