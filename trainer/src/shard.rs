//! Data-parallel steps on the CPU: the batch is split into equal shards, each shard's forward and
//! backward pass runs on its own thread of candle's (rayon's) pool, and the gradients are averaged.
//!
//! Why: candle parallelises a step only inside each matmul (gemm hands every matmul to the whole
//! pool, which on the small matrices of `tiny` and `small` costs about as much as it saves), and
//! btd's fused kernels (`crate::fused`) run on one thread. With two threads a step took about as
//! long as with one (docs/benchmarks.md, "Training"). Two shards on two threads keep both cores
//! busy for the whole step.
//!
//! The result is the same step: the loss is a mean over the batch's tokens, so with equal shards the
//! batch's loss is the mean of the shards' losses and its gradient the mean of their gradients
//! (equal up to the order of float additions).

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};
use rayon::prelude::*;

use crate::model::{cross_entropy, Gpt};

/// Shards per step on the CPU, whatever the thread count: the shards' gradients are summed in a
/// fixed order, so a fixed number keeps CPU training bit-identical across thread counts (the
/// owner's re-training relies on it, `verify.rs`). With more than two threads each shard's matmuls
/// use half of them (`device::set_cpu_threads`).
pub const SHARDS: usize = 2;

/// How many shards a step of `batch` sequences takes on `device`: [`SHARDS`] on the CPU when it
/// divides the batch (equal shards keep the average exact), else 1; 1 on other devices (a GPU runs
/// the whole batch at once).
pub(crate) fn shards_for(device: &Device, batch: usize) -> usize {
    if device.is_cpu() && batch >= SHARDS && batch.is_multiple_of(SHARDS) {
        SHARDS
    } else {
        1
    }
}

/// The loss of one batch (`x`, `y`: `(batch, block)` token ids) and its gradients, computed in
/// `shards` equal parts.
pub(crate) fn loss_and_grads(
    model: &Gpt,
    vars: &[(String, Var)],
    x: &Tensor,
    y: &Tensor,
    shards: usize,
) -> Result<(f32, GradStore)> {
    if shards <= 1 {
        return one(model, x, y);
    }
    let (xs, ys) = (x.chunk(shards, 0)?, y.chunk(shards, 0)?);
    let mut parts: Vec<(f32, GradStore)> = xs
        .par_iter()
        .zip(ys.par_iter())
        .map(|(x, y)| one(model, x, y))
        .collect::<Result<_>>()?;
    let n = parts.len();
    let Some((first_loss, mut grads)) = parts.pop() else {
        return one(model, x, y);
    };
    let loss = parts.iter().map(|(l, _)| *l).sum::<f32>() + first_loss;
    let scale = 1.0 / n as f64;
    for (_, var) in vars {
        let Some(mut sum) = grads.remove(var) else {
            continue;
        };
        for (_, g) in &parts {
            if let Some(g) = g.get(var) {
                sum = (sum + g)?;
            }
        }
        grads.insert(var, sum.affine(scale, 0.0)?);
    }
    Ok((loss / n as f32, grads))
}

/// One forward and backward pass.
fn one(model: &Gpt, x: &Tensor, y: &Tensor) -> Result<(f32, GradStore)> {
    let logits = model.forward_rows(x)?;
    let loss = cross_entropy(&logits, &y.flatten_all()?)?;
    Ok((loss.to_scalar::<f32>()?, loss.backward()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::preset_config;
    use crate::init::SeededVars;
    use btd_protocol::program::ModelPreset;

    #[test]
    fn a_sharded_step_has_the_whole_batchs_loss_and_gradients() {
        let dev = Device::Cpu;
        let (cfg, _) = preset_config(ModelPreset::Tiny);
        let store = SeededVars::new(7);
        let model = Gpt::new(cfg, store.var_builder(&dev)).unwrap();
        let vars = store.vars();
        let (b, t) = (4, cfg.block_size.min(32));
        let ids =
            |k: u32| -> Vec<u32> { (0..(b * t) as u32).map(|i| (i * 37 + k) % 256).collect() };
        let x = Tensor::from_vec(ids(1), (b, t), &dev).unwrap();
        let y = Tensor::from_vec(ids(2), (b, t), &dev).unwrap();
        let (whole, g1) = loss_and_grads(&model, &vars, &x, &y, 1).unwrap();
        for shards in [2, 4] {
            let (split, g2) = loss_and_grads(&model, &vars, &x, &y, shards).unwrap();
            assert!(
                (whole - split).abs() < 1e-5,
                "{shards} shards: {whole} vs {split}"
            );
            for (name, v) in &vars {
                let (a, c) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                let diff = (a - c).unwrap().abs().unwrap().max_all().unwrap();
                let diff = diff.to_scalar::<f32>().unwrap();
                let scale = a
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    diff <= 1e-5 * scale.max(1e-3),
                    "{shards} shards, {name}: off by {diff} (largest {scale})"
                );
            }
        }
    }

    #[test]
    fn shards_divide_the_batch() {
        for (batch, want) in [(1, 1), (2, 2), (3, 1), (16, 2), (32, 2)] {
            assert_eq!(shards_for(&Device::Cpu, batch), want, "batch {batch}");
        }
    }
}
