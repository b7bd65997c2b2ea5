//! AdamW with global-norm gradient clipping, fused on the CPU.
//!
//! `candle_nn::AdamW` runs about a dozen tensor ops per parameter per step (each a fresh buffer and a
//! pass over it), and clipping scales every gradient with another op. On the CPU this optimiser
//! instead updates each parameter in place in one pass over its raw `f32` slices ([`InplaceOp2`]),
//! with the clipping scale folded in. It performs the same `f32` operations in the same order as
//! `candle_nn::AdamW` applied to the clipped gradient, so the result is bit-identical to it
//! (`tests::fused_matches_candle_nn`). On other devices it falls back to `candle_nn::AdamW` and a
//! scaling op.

use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Error, InplaceOp2, Layout, Result, Var};
use candle_nn::{AdamW as CandleAdamW, Optimizer as _, ParamsAdamW};

/// The AdamW hyperparameters btd uses (decoupled weight decay per parameter group).
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
}

struct Param {
    var: Var,
    weight_decay: f64,
    /// First and second moments (fused path only).
    moments: Mutex<(Vec<f32>, Vec<f32>)>,
}

enum Backend {
    Fused { params: Vec<Param>, step_t: i32 },
    Candle(Vec<(CandleAdamW, Vec<Var>)>),
}

/// AdamW over parameter groups, each with its own weight decay.
#[allow(missing_debug_implementations)]
pub struct AdamW {
    cfg: AdamWConfig,
    backend: Backend,
}

impl AdamW {
    /// One group per `(vars, weight_decay)`. The fused path is taken when every parameter is an
    /// `f32` CPU tensor.
    pub fn new(groups: Vec<(Vec<Var>, f64)>, cfg: AdamWConfig) -> Result<Self> {
        let fused = groups.iter().flat_map(|(v, _)| v).all(|v| {
            v.device().is_cpu() && v.dtype() == candle_core::DType::F32 && v.is_contiguous()
        });
        let backend = if fused {
            let params = groups
                .into_iter()
                .flat_map(|(vars, weight_decay)| {
                    vars.into_iter().map(move |var| {
                        let n = var.elem_count();
                        Param {
                            var,
                            weight_decay,
                            moments: Mutex::new((vec![0.0; n], vec![0.0; n])),
                        }
                    })
                })
                .collect();
            Backend::Fused { params, step_t: 0 }
        } else {
            let groups = groups
                .into_iter()
                .map(|(vars, weight_decay)| {
                    let p = ParamsAdamW {
                        lr: 0.0,
                        beta1: cfg.beta1,
                        beta2: cfg.beta2,
                        eps: cfg.eps,
                        weight_decay,
                    };
                    Ok((CandleAdamW::new(vars.clone(), p)?, vars))
                })
                .collect::<Result<Vec<_>>>()?;
            Backend::Candle(groups)
        };
        Ok(Self { cfg, backend })
    }

    /// Clips the gradients to global L2 norm `max_norm` (`0` = no clipping) and takes one AdamW
    /// step at learning rate `lr`. Returns the norm before clipping. `vars` fixes the order in
    /// which the squared norms are summed.
    pub fn clip_and_step(
        &mut self,
        vars: &[(String, Var)],
        grads: &mut GradStore,
        max_norm: f64,
        lr: f64,
    ) -> Result<f64> {
        match &mut self.backend {
            Backend::Candle(groups) => {
                let norm = crate::train::clip_grad_norm(vars, grads, max_norm)?;
                for (opt, _) in groups.iter_mut() {
                    opt.set_learning_rate(lr);
                    opt.step(grads)?;
                }
                Ok(norm)
            }
            Backend::Fused { params, step_t } => {
                let norm = global_norm(vars, grads)?;
                // As `clip_grad_norm`: `g * scale` in f32.
                let scale = (max_norm > 0.0 && norm > max_norm).then(|| (max_norm / norm) as f32);
                *step_t += 1;
                let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
                for p in params.iter() {
                    let Some(g) = grads.get(&p.var) else { continue };
                    let g = g.contiguous()?;
                    let op = AdamWUpdate {
                        moments: &p.moments,
                        scale,
                        beta1: b1 as f32,
                        one_minus_beta1: (1.0 - b1) as f32,
                        beta2: b2 as f32,
                        one_minus_beta2: (1.0 - b2) as f32,
                        scale_m: (1.0 / (1.0 - b1.powi(*step_t))) as f32,
                        scale_v: (1.0 / (1.0 - b2.powi(*step_t))) as f32,
                        decay: (1.0 - lr * p.weight_decay) as f32,
                        eps: self.cfg.eps as f32,
                        lr: lr as f32,
                    };
                    p.var.as_tensor().inplace_op2(&g, &op)?;
                }
                Ok(norm)
            }
        }
    }
}

/// `sqrt(Σ g²)` over every gradient, summed in `f64` in `vars` order.
fn global_norm(vars: &[(String, Var)], grads: &GradStore) -> Result<f64> {
    let mut total = 0f64;
    for (_, var) in vars {
        if let Some(g) = grads.get(var) {
            let g = g.contiguous()?;
            let (s, l) = g.storage_and_layout();
            let part = match (&*s, l.contiguous_offsets()) {
                (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => {
                    v[a..b].iter().map(|&x| f64::from(x) * f64::from(x)).sum()
                }
                _ => {
                    drop(s);
                    f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?)
                }
            };
            total += part;
        }
    }
    Ok(total.sqrt())
}

/// One parameter's AdamW update in place, element by element exactly as `candle_nn::AdamW` does it
/// with tensor ops (each scalar multiply is candle's `affine`, `v * mul + 0`).
struct AdamWUpdate<'a> {
    moments: &'a Mutex<(Vec<f32>, Vec<f32>)>,
    scale: Option<f32>,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    scale_m: f32,
    scale_v: f32,
    decay: f32,
    eps: f32,
    lr: f32,
}

impl InplaceOp2 for AdamWUpdate<'_> {
    fn name(&self) -> &'static str {
        "btd-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(theta), CpuStorage::F32(grad)) = (s1, s2) else {
            return Err(Error::Msg("btd-adamw: only f32 is supported".into()));
        };
        let (Some((ta, tb)), Some((ga, gb))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            return Err(Error::Msg("btd-adamw: tensors must be contiguous".into()));
        };
        let (theta, grad) = (&mut theta[ta..tb], &grad[ga..gb]);
        let mut guard = self
            .moments
            .lock()
            .map_err(|_| Error::Msg("btd-adamw: poisoned moments".into()))?;
        let (m, v) = &mut *guard;
        if theta.len() != grad.len() || m.len() != theta.len() {
            return Err(Error::Msg("btd-adamw: size mismatch".into()));
        }
        for (((t, &g), m), v) in theta
            .iter_mut()
            .zip(grad)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            let g = match self.scale {
                Some(s) => g * s + 0.0,
                None => g,
            };
            let next_m = (*m * self.beta1 + 0.0) + (g * self.one_minus_beta1 + 0.0);
            let next_v = (*v * self.beta2 + 0.0) + ((g * g) * self.one_minus_beta2 + 0.0);
            let m_hat = next_m * self.scale_m + 0.0;
            let v_hat = next_v * self.scale_v + 0.0;
            let next_t = *t * self.decay + 0.0;
            let adjusted = m_hat / (v_hat.sqrt() * 1.0 + self.eps);
            *t = next_t - (adjusted * self.lr + 0.0);
            *m = next_m;
            *v = next_v;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The fused update gives bit-identical parameters to `candle_nn::AdamW` after clipping.
    #[test]
    fn fused_matches_candle_nn() {
        let dev = Device::Cpu;
        let init: Vec<f32> = (0..40)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 10.0)
            .collect();
        let make = || {
            let a = Var::from_vec(init[..30].to_vec(), (5, 6), &dev).unwrap();
            let b = Var::from_vec(init[30..].to_vec(), 10, &dev).unwrap();
            (a, b)
        };
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
        };
        let (a1, b1) = make();
        let (a2, b2) = make();
        let mut fused =
            AdamW::new(vec![(vec![a1.clone()], 0.1), (vec![b1.clone()], 0.0)], cfg).unwrap();
        let params = |wd| ParamsAdamW {
            lr: 0.0,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: wd,
        };
        let mut ca = CandleAdamW::new(vec![a2.clone()], params(0.1)).unwrap();
        let mut cb = CandleAdamW::new(vec![b2.clone()], params(0.0)).unwrap();
        let loss = |a: &Var, b: &Var| {
            let w = Tensor::arange(0f32, 30.0, &dev)
                .unwrap()
                .reshape((5, 6))
                .unwrap();
            (a.as_tensor()
                .mul(&w)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                + b.as_tensor().sqr().unwrap().sum_all().unwrap())
            .unwrap()
        };
        for step in 0..5 {
            let lr = 1e-2 * (step + 1) as f64;
            // A large max norm on odd steps: no clipping.
            let max_norm = if step % 2 == 0 { 1.0 } else { 1e9 };
            let vars1 = vec![("a".to_string(), a1.clone()), ("b".to_string(), b1.clone())];
            let mut g1 = loss(&a1, &b1).backward().unwrap();
            let n1 = fused.clip_and_step(&vars1, &mut g1, max_norm, lr).unwrap();
            let vars2 = vec![("a".to_string(), a2.clone()), ("b".to_string(), b2.clone())];
            let mut g2 = loss(&a2, &b2).backward().unwrap();
            let n2 = crate::train::clip_grad_norm(&vars2, &mut g2, max_norm).unwrap();
            ca.set_learning_rate(lr);
            cb.set_learning_rate(lr);
            ca.step(&g2).unwrap();
            cb.step(&g2).unwrap();
            assert!((n1 - n2).abs() <= 1e-6 * n2, "{n1} vs {n2}");
            for (x, y) in [(&a1, &a2), (&b1, &b2)] {
                let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(x, y, "step {step}");
            }
        }
    }
}
