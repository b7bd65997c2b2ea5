//! btd's byte-level GPT, written only with candle ops that record a backward pass.
//!
//! candle's fused fast paths (`softmax_last_dim`, `rms_norm`/`RmsNorm::forward`, `layer_norm`, `rope`,
//! `sdpa`, flash-attn) compute no gradient, so a model built with them trains only its later layers
//! while the loss still falls. This model uses a hand-written causal attention
//! (`q·kᵀ/√d + causal mask → softmax → ·v`), a hand-written RMSNorm, learned position embeddings (an
//! `index_select`) and ReLU². On the CPU the norm, ReLU², causal softmax and loss are btd's own fused
//! kernels with hand-written backward passes ([`crate::fused`]); elsewhere they are composed from
//! differentiable candle ops. `tests::every_parameter_gets_a_gradient` checks that every
//! parameter receives a non-zero gradient.
//!
//! Parameter names (`tok_emb.weight`, `h.0.attn.q.weight`, …) are the checkpoint's tensor names.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Embedding, Init, VarBuilder};

use crate::config::{ModelConfig, VOCAB_SIZE};
use crate::fused;

/// Standard deviation of the initial weights (GPT-2's).
const INIT_STD: f64 = 0.02;
/// RMSNorm's ε.
const NORM_EPS: f32 = 1e-5;

/// RMSNorm with a learned gain, from differentiable ops.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
}

impl RmsNorm {
    fn new(d: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(d, "weight", Init::Const(1.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        fused::rms_norm(x, &self.weight, NORM_EPS)
    }
}

/// A bias-free linear layer on rows: `(n, d_in)` → `(n, d_out)`. (The model keeps its activations
/// as `(b·t, d)` rows throughout: every reshape is a node of the autograd graph whose backward pass
/// copies the whole gradient.)
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.t()?)
    }
}

fn linear(d_in: usize, d_out: usize, std: f64, vb: VarBuilder) -> candle_core::Result<Linear> {
    let weight = vb.get_with_hints(
        (d_out, d_in),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    )?;
    Ok(Linear { weight })
}

/// Multi-head causal self-attention.
#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    proj: Linear,
    n_head: usize,
}

impl Attention {
    fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.d_model;
        let proj_std = INIT_STD / (2.0 * cfg.n_layer as f64).sqrt();
        Ok(Self {
            q: linear(d, d, INIT_STD, vb.pp("q"))?,
            k: linear(d, d, INIT_STD, vb.pp("k"))?,
            v: linear(d, d, INIT_STD, vb.pp("v"))?,
            proj: linear(d, d, proj_std, vb.pp("proj"))?,
            n_head: cfg.n_head,
        })
    }

    /// `x`: `(b·t, d)` rows of `b` sequences of length `t`.
    fn forward(&self, x: &Tensor, b: usize, t: usize) -> candle_core::Result<Tensor> {
        // One matrix product for q, k and v (their weights stacked), and one attention op on the
        // packed rows, which reads the three parts in place (its backward pass writes one packed
        // gradient, so there is no `narrow` whose backward pass would pad each part with zeros).
        let w = Tensor::cat(&[&self.q.weight, &self.k.weight, &self.v.weight], 0)?;
        let qkv = x.matmul(&w.t()?)?;
        let y = fused::causal_attention(&qkv, b, t, self.n_head)?;
        self.proj.forward(&y)
    }
}

/// The position-wise MLP: `d → 4d → ReLU² → d` (ReLU² as in karpathy/nanochat: as good as GELU here
/// and far cheaper on the CPU, where GELU's tanh/powf dominated the step time).
#[derive(Debug, Clone)]
struct Mlp {
    fc: Linear,
    proj: Linear,
}

impl Mlp {
    fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.d_model;
        let proj_std = INIT_STD / (2.0 * cfg.n_layer as f64).sqrt();
        Ok(Self {
            fc: linear(d, 4 * d, INIT_STD, vb.pp("fc"))?,
            proj: linear(4 * d, d, proj_std, vb.pp("proj"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.proj
            .forward(&fused::relu_squared(&self.fc.forward(x)?)?)
    }
}

/// A pre-norm transformer block.
#[derive(Debug, Clone)]
struct Block {
    ln1: RmsNorm,
    attn: Attention,
    ln2: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            ln1: RmsNorm::new(cfg.d_model, vb.pp("ln1"))?,
            attn: Attention::new(cfg, vb.pp("attn"))?,
            ln2: RmsNorm::new(cfg.d_model, vb.pp("ln2"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    fn forward(&self, x: &Tensor, b: usize, t: usize) -> candle_core::Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x)?, b, t)?)?;
        &x + self.mlp.forward(&self.ln2.forward(&x)?)?
    }
}

/// The byte-level GPT.
#[derive(Debug, Clone)]
pub struct Gpt {
    cfg: ModelConfig,
    tok_emb: Embedding,
    pos_emb: Embedding,
    blocks: Vec<Block>,
    ln_f: RmsNorm,
    lm_head: Linear,
}

impl Gpt {
    /// Builds the model, taking (or creating) its parameters from `vb`.
    pub fn new(cfg: ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = cfg.d_model;
        let randn = Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        };
        let tok = vb
            .pp("tok_emb")
            .get_with_hints((VOCAB_SIZE, d), "weight", randn)?;
        let pos = vb
            .pp("pos_emb")
            .get_with_hints((cfg.block_size, d), "weight", randn)?;
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::new(&cfg, vb.pp(format!("h.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            cfg,
            tok_emb: Embedding::new(tok, d),
            pos_emb: Embedding::new(pos, d),
            blocks,
            ln_f: RmsNorm::new(d, vb.pp("ln_f"))?,
            lm_head: linear(d, VOCAB_SIZE, INIT_STD, vb.pp("lm_head"))?,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Logits `(b, t, 256)` for byte indices `(b, t)` (`u32`), `t ≤ block_size`.
    pub fn forward(&self, idx: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = idx.dims2()?;
        self.forward_rows(idx)?.reshape((b, t, VOCAB_SIZE))
    }

    /// Logits as rows, `(b·t, 256)`, for byte indices `(b, t)` (`u32`), `t ≤ block_size`.
    pub fn forward_rows(&self, idx: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = idx.dims2()?;
        if t == 0 || t > self.cfg.block_size {
            return Err(candle_core::Error::Msg(format!(
                "sequence length {t} is outside 1..={}",
                self.cfg.block_size
            )));
        }
        let mut x = fused::embed(self.tok_emb.embeddings(), self.pos_emb.embeddings(), idx)?;
        for block in &self.blocks {
            x = block.forward(&x, b, t)?;
        }
        self.lm_head.forward(&self.ln_f.forward(&x)?)
    }
}

/// Softmax over the last dimension from differentiable ops. The row maximum is subtracted for
/// numerical range only and is taken from a detached copy: softmax does not depend on the shift, so
/// the gradient is the same, and the backward pass skips the `max` gradient (a compare and a
/// scatter per element) that `candle_nn::ops::softmax` pays for.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.detach().max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last dimension, with the shift detached as in [`softmax_last_dim`].
pub fn log_softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.detach().max_keepdim(D::Minus1)?;
    let shifted = x.broadcast_sub(&max)?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// Mean cross-entropy (nats) of `logits` `(n, 256)` against byte `targets` `(n,)` (`u32`).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let n = targets.dim(0)?;
    fused::cross_entropy_rows(logits, targets)?
        .sum_all()?
        .affine(1.0 / n as f64, 0.0)
}

/// `(t, t)`: 0 where a query may attend (key ≤ query), −∞ elsewhere.
pub(crate) fn causal_mask(t: usize, device: &Device) -> candle_core::Result<Tensor> {
    let values: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(values, (t, t), device)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::SeededVars;

    fn small() -> ModelConfig {
        ModelConfig {
            n_layer: 2,
            n_head: 2,
            d_model: 16,
            block_size: 8,
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        let dev = Device::Cpu;
        let store = SeededVars::new(3);
        let model = Gpt::new(small(), store.var_builder(&dev)).unwrap();
        let idx: Vec<u32> = (0..16).map(|i| (i * 37 % 256) as u32).collect();
        let x = Tensor::from_vec(idx.clone(), (2, 8), &dev).unwrap();
        let y: Vec<u32> = idx.iter().map(|v| (v + 1) % 256).collect();
        let y = Tensor::from_vec(y, 16, &dev).unwrap();
        let logits = model
            .forward(&x)
            .unwrap()
            .reshape((16, VOCAB_SIZE))
            .unwrap();
        let loss = cross_entropy(&logits, &y).unwrap();
        let grads = loss.backward().unwrap();
        let vars = store.vars();
        assert_eq!(
            vars.len(),
            2 + 2 * 8 + 2,
            "{:?}",
            vars.iter().map(|v| &v.0).collect::<Vec<_>>()
        );
        let count: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
        assert_eq!(count, small().param_count());
        for (name, var) in &vars {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: gradient norm² {norm}"
            );
        }
    }

    /// The detached-shift softmax, log-softmax and cross-entropy give candle-nn's values and
    /// gradients.
    #[test]
    fn softmax_and_loss_match_candle_nn() {
        let dev = Device::Cpu;
        let vals: Vec<f32> = (0..6 * 256)
            .map(|i| ((i * 7919 % 1000) as f32 / 100.0) - 5.0)
            .collect();
        let x = candle_core::Var::from_vec(vals, (6, 256), &dev).unwrap();
        let y = Tensor::from_vec(vec![0u32, 5, 255, 17, 3, 99], 6, &dev).unwrap();
        let close = |a: &Tensor, b: &Tensor, tol: f32| {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            let d = d.to_scalar::<f32>().unwrap();
            assert!(d <= tol, "max difference {d}");
        };
        close(
            &softmax_last_dim(&x).unwrap(),
            &candle_nn::ops::softmax(&x, D::Minus1).unwrap(),
            1e-7,
        );
        let ours = cross_entropy(&x, &y).unwrap();
        let theirs = candle_nn::loss::cross_entropy(&x, &y).unwrap();
        close(&ours, &theirs, 1e-5);
        let g1 = ours.backward().unwrap();
        let g2 = theirs.backward().unwrap();
        close(g1.get(&x).unwrap(), g2.get(&x).unwrap(), 1e-7);
        // Through the softmax too: weight each probability differently.
        let w = Tensor::arange(0f32, 256.0, &dev).unwrap();
        let s1 = softmax_last_dim(&x)
            .unwrap()
            .broadcast_mul(&w)
            .unwrap()
            .sum_all()
            .unwrap();
        let s2 = candle_nn::ops::softmax(&x, D::Minus1)
            .unwrap()
            .broadcast_mul(&w)
            .unwrap()
            .sum_all()
            .unwrap();
        let (g1, g2) = (s1.backward().unwrap(), s2.backward().unwrap());
        close(g1.get(&x).unwrap(), g2.get(&x).unwrap(), 1e-4);
    }

    #[test]
    fn attention_is_causal() {
        let dev = Device::Cpu;
        let model = Gpt::new(small(), SeededVars::new(1).var_builder(&dev)).unwrap();
        let a = Tensor::from_vec(vec![1u32, 2, 3, 4, 5, 6, 7, 8], (1, 8), &dev).unwrap();
        let b = Tensor::from_vec(vec![1u32, 2, 3, 4, 9, 9, 9, 9], (1, 8), &dev).unwrap();
        let la = model.forward(&a).unwrap().narrow(1, 0, 4).unwrap();
        let lb = model.forward(&b).unwrap().narrow(1, 0, 4).unwrap();
        let diff = (la - lb).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        // A shorter prefix gives the same logits as the full sequence at those positions.
        let short = Tensor::from_vec(vec![1u32, 2, 3, 4], (1, 4), &dev).unwrap();
        let ls = model.forward(&short).unwrap();
        let la = model.forward(&a).unwrap().narrow(1, 0, 4).unwrap();
        let diff = (ls - la).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
