//! Seeded, order-independent parameter initialisation.
//!
//! candle's CPU RNG cannot be seeded and `VarMap` iterates in no fixed order, so btd builds its model
//! through a [`VarBuilder`] backed by [`SeededVars`]: every parameter is drawn from its own ChaCha20
//! stream, keyed by the run seed and the parameter's name. A parameter's initial value therefore
//! depends only on `(seed, name, shape, init hint)`, never on construction order, and
//! [`SeededVars::vars`] lists the parameters sorted by name — the one order used by the optimiser,
//! gradient clipping and checkpoints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest as _, Sha256};

/// A 32-byte ChaCha seed derived from a run seed and a purpose (e.g. a parameter name).
pub fn derive_seed(seed: u64, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"btd/trainer/seed/v1\0");
    h.update(seed.to_le_bytes());
    h.update(purpose.as_bytes());
    h.finalize().into()
}

/// The parameters of one model, created on demand by a [`VarBuilder`] and kept by name.
#[derive(Debug, Clone)]
pub struct SeededVars {
    seed: u64,
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
}

impl SeededVars {
    /// An empty store for run seed `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            vars: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// A [`VarBuilder`] that creates parameters in this store.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, device.clone())
    }

    /// Every parameter, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        match self.vars.lock() {
            Ok(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(poisoned) => poisoned
                .into_inner()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn init_values(&self, shape: &Shape, name: &str, init: Init) -> candle_core::Result<Vec<f32>> {
        let n = shape.elem_count();
        let mut rng = ChaCha20Rng::from_seed(derive_seed(self.seed, name));
        let normal = |rng: &mut ChaCha20Rng, mean: f64, std: f64| -> Vec<f32> {
            (0..n)
                .map(|_| (mean + std * standard_normal(rng)) as f32)
                .collect()
        };
        let uniform = |rng: &mut ChaCha20Rng, lo: f64, up: f64| -> Vec<f32> {
            (0..n).map(|_| rng.gen_range(lo..up) as f32).collect()
        };
        Ok(match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
            Init::Uniform { lo, up } if lo < up => uniform(&mut rng, lo, up),
            Init::Uniform { lo, .. } => vec![lo as f32; n],
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape).max(1) as f64).sqrt();
                match dist {
                    candle_nn::init::NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                    candle_nn::init::NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        uniform(&mut rng, -bound, bound)
                    }
                }
            }
        })
    }
}

/// One draw from N(0, 1) by the Box–Muller transform (exact, portable, no extra crate).
fn standard_normal(rng: &mut ChaCha20Rng) -> f64 {
    // u1 in (0, 1] so ln(u1) is finite.
    let u1 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl SimpleBackend for SeededVars {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut map = self
            .vars
            .lock()
            .map_err(|_| candle_core::Error::Msg("parameter store lock poisoned".into()))?;
        if let Some(v) = map.get(name) {
            if v.shape() != &s {
                return Err(candle_core::Error::Msg(format!(
                    "parameter {name} exists with shape {:?}, asked for {s:?}",
                    v.shape()
                )));
            }
            return Ok(v.as_tensor().clone());
        }
        let values = self.init_values(&s, name, h)?;
        let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        map.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let map = self
            .vars
            .lock()
            .map_err(|_| candle_core::Error::Msg("parameter store lock poisoned".into()))?;
        map.get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::Msg(format!("no parameter named {name}")))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars
            .lock()
            .map(|m| m.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_depend_on_seed_and_name_not_order() {
        let dev = Device::Cpu;
        let hint = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let a = SeededVars::new(1);
        let vb = a.var_builder(&dev);
        let x1 = vb.get_with_hints((4, 3), "x", hint).unwrap();
        let y1 = vb.get_with_hints((4, 3), "y", hint).unwrap();
        let b = SeededVars::new(1);
        let vb = b.var_builder(&dev);
        let y2 = vb.get_with_hints((4, 3), "y", hint).unwrap();
        let x2 = vb.get_with_hints((4, 3), "x", hint).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&x1), v(&x2));
        assert_eq!(v(&y1), v(&y2));
        assert_ne!(v(&x1), v(&y1));
        let c = SeededVars::new(2);
        let x3 = c
            .var_builder(&dev)
            .get_with_hints((4, 3), "x", hint)
            .unwrap();
        assert_ne!(v(&x1), v(&x3));
        let names: Vec<String> = b.vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x", "y"]);
    }

    #[test]
    fn normal_has_the_right_moments() {
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let xs: Vec<f64> = (0..20_000).map(|_| standard_normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
