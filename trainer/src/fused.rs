//! Fused CPU kernels with hand-written backward passes, for the four element-wise chains that
//! dominate a small model's step on the CPU: RMS normalisation, ReLU², the causal softmax of
//! attention, and the cross-entropy of the byte logits.
//!
//! candle runs each composed op as a separate pass with a fresh buffer, and its backward pass adds
//! every gradient contribution into a zero-initialised buffer, so a softmax written from `exp`,
//! `sum` and `div` costs about a dozen passes forward and back. Each op here is one pass forward
//! and one pass back (a [`CustomOp1`]/[`CustomOp2`] whose `bwd` applies a second, non-differentiable
//! custom op). Loops run row by row on one thread in a fixed order, so results are deterministic.
//!
//! Only contiguous f32 tensors on the CPU take these paths; anything else (a GPU, another dtype)
//! uses the equivalent composed candle ops, which `tests` check agree in value and gradient.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Error, Layout, Result, Shape, Tensor, D,
};

fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        (CpuStorage::F32(_), None) => Err(Error::Msg(format!("{op}: input is not contiguous"))),
        _ => Err(Error::Msg(format!("{op}: only f32 is supported"))),
    }
}

fn u32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [u32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::U32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => Err(Error::Msg(format!("{op}: targets must be contiguous u32"))),
    }
}

fn last_dim(l: &Layout, op: &str) -> Result<usize> {
    match l.dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => Err(Error::Msg(format!("{op}: empty last dimension"))),
    }
}

fn fused_ok(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// `x / sqrt(mean(x², last dim) + eps)` (no gain).
pub fn rms_normalize(x: &Tensor, eps: f32) -> Result<Tensor> {
    if fused_ok(x) {
        return x.contiguous()?.apply_op1(RmsNorm { eps });
    }
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + f64::from(eps))?.sqrt()?)
}

/// `max(x, 0)²`.
pub fn relu_squared(x: &Tensor) -> Result<Tensor> {
    if fused_ok(x) {
        return x.contiguous()?.apply_op1(Relu2);
    }
    x.relu()?.sqr()
}

/// Softmax over the last dimension of attention scores `(.., t, t)` with key `j > query i` masked
/// out. `mask` (`(t, t)`, 0 or −∞) is used only by the composed path.
pub fn causal_softmax(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if fused_ok(scores) {
        return scores.contiguous()?.apply_op1(CausalSoftmax);
    }
    crate::model::softmax_last_dim(&scores.broadcast_add(mask)?)
}

/// Per-row cross-entropy (nats) of `logits` `(n, v)` against `targets` `(n,)` (`u32`).
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if fused_ok(logits) {
        return logits
            .contiguous()?
            .apply_op2(&targets.contiguous()?, CrossEntropyRows::default());
    }
    let logp = crate::model::log_softmax_last_dim(logits)?;
    logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "btd-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, self.name())?;
        let d = last_dim(l, self.name())?;
        let mut out = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let r = inv_rms(xr, self.eps);
            for (y, &v) in yr.iter_mut().zip(xr) {
                *y = v * r;
            }
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &g.contiguous()?,
            &RmsNormBwd { eps: self.eps },
        )?))
    }
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (ms + eps).sqrt()
}

/// `dx = r · (g − x̂ · mean(g · x̂))` with `r = 1/rms(x)`, `x̂ = x · r`.
struct RmsNormBwd {
    eps: f32,
}

impl CustomOp2 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "btd-rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let d = last_dim(l1, self.name())?;
        let mut out = vec![0f32; x.len()];
        for ((xr, gr), dr) in x
            .chunks_exact(d)
            .zip(g.chunks_exact(d))
            .zip(out.chunks_exact_mut(d))
        {
            let r = inv_rms(xr, self.eps);
            let dot = xr.iter().zip(gr).map(|(&a, &b)| a * r * b).sum::<f32>() / d as f32;
            for ((o, &xv), &gv) in dr.iter_mut().zip(xr).zip(gr) {
                *o = r * (gv - xv * r * dot);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

struct Relu2;

impl CustomOp1 for Relu2 {
    fn name(&self) -> &'static str {
        "btd-relu2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, self.name())?;
        let out = x
            .iter()
            .map(|&v| if v > 0.0 { v * v } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &Relu2Bwd)?))
    }
}

/// `dx = 2 · max(x, 0) · g`.
struct Relu2Bwd;

impl CustomOp2 for Relu2Bwd {
    fn name(&self) -> &'static str {
        "btd-relu2-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let out = x
            .iter()
            .zip(g)
            .map(|(&v, &gv)| if v > 0.0 { 2.0 * v * gv } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

struct CausalSoftmax;

/// Row `r` of a `(.., t, t)` tensor is query `r % t`; it attends to keys `0..=r % t`.
fn square_last_two(l: &Layout, op: &str) -> Result<usize> {
    match l.dims() {
        [.., a, b] if a == b && *a > 0 => Ok(*a),
        dims => Err(Error::Msg(format!(
            "{op}: expected (.., t, t), got {dims:?}"
        ))),
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "btd-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, self.name())?;
        let t = square_last_two(l, self.name())?;
        let mut out = vec![0f32; x.len()];
        for (r, (xr, yr)) in x.chunks_exact(t).zip(out.chunks_exact_mut(t)).enumerate() {
            let n = r % t + 1;
            let max = xr[..n].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (y, &v) in yr[..n].iter_mut().zip(&xr[..n]) {
                *y = (v - max).exp();
                sum += *y;
            }
            let inv = 1.0 / sum;
            for y in &mut yr[..n] {
                *y *= inv;
            }
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            y.apply_op2_no_bwd(&g.contiguous()?, &CausalSoftmaxBwd)?,
        ))
    }
}

/// `dx_j = y_j · (g_j − Σ_k y_k g_k)` over the visible keys, 0 elsewhere.
struct CausalSoftmaxBwd;

impl CustomOp2 for CausalSoftmaxBwd {
    fn name(&self) -> &'static str {
        "btd-causal-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let t = square_last_two(l1, self.name())?;
        let mut out = vec![0f32; y.len()];
        for (r, ((yr, gr), dr)) in y
            .chunks_exact(t)
            .zip(g.chunks_exact(t))
            .zip(out.chunks_exact_mut(t))
            .enumerate()
        {
            let n = r % t + 1;
            let dot = yr[..n]
                .iter()
                .zip(&gr[..n])
                .map(|(a, b)| a * b)
                .sum::<f32>();
            for ((d, &yv), &gv) in dr[..n].iter_mut().zip(&yr[..n]).zip(&gr[..n]) {
                *d = yv * (gv - dot);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Keeps the softmax of the forward pass for the backward pass (saving two `exp` per logit).
#[derive(Default)]
struct CrossEntropyRows {
    probs: std::sync::Mutex<Vec<f32>>,
}

/// `logsumexp(row)` computed stably.
fn logsumexp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum = row.iter().map(|&v| (v - max).exp()).sum::<f32>();
    max + sum.ln()
}

fn check_targets(n: usize, v: usize, targets: &[u32], op: &str) -> Result<()> {
    if targets.len() != n {
        return Err(Error::Msg(format!(
            "{op}: {n} rows but {} targets",
            targets.len()
        )));
    }
    if let Some(&bad) = targets.iter().find(|&&t| t as usize >= v) {
        return Err(Error::Msg(format!(
            "{op}: target {bad} out of range 0..{v}"
        )));
    }
    Ok(())
}

impl CustomOp2 for CrossEntropyRows {
    fn name(&self) -> &'static str {
        "btd-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let logits = f32s(s1, l1, self.name())?;
        let targets = u32s(s2, l2, self.name())?;
        let v = last_dim(l1, self.name())?;
        let n = logits.len() / v;
        check_targets(n, v, targets, self.name())?;
        let mut probs = vec![0f32; logits.len()];
        let out = logits
            .chunks_exact(v)
            .zip(probs.chunks_exact_mut(v))
            .zip(targets)
            .map(|((row, p), &t)| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (p, &x) in p.iter_mut().zip(row) {
                    *p = (x - max).exp();
                    sum += *p;
                }
                let inv = 1.0 / sum;
                for p in p.iter_mut() {
                    *p *= inv;
                }
                max + sum.ln() - row[t as usize]
            })
            .collect();
        if let Ok(mut slot) = self.probs.lock() {
            *slot = probs;
        }
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let probs = self
            .probs
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        let g = g.contiguous()?;
        let d = if probs.len() == logits.elem_count() {
            let op = CrossEntropyBwdCached {
                probs,
                v: logits.dim(D::Minus1)?,
            };
            targets.contiguous()?.apply_op2_no_bwd(&g, &op)?
        } else {
            logits.apply_op3_no_bwd(targets, &g, &CrossEntropyBwd)?
        };
        Ok((Some(d), None))
    }
}

/// `dlogits_ij = g_i · (softmax_ij − [j = target_i])`.
struct CrossEntropyBwd;

impl CustomOp3 for CrossEntropyBwd {
    fn name(&self) -> &'static str {
        "btd-cross-entropy-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let logits = f32s(s1, l1, self.name())?;
        let targets = u32s(s2, l2, self.name())?;
        let g = f32s(s3, l3, self.name())?;
        let v = last_dim(l1, self.name())?;
        let n = logits.len() / v;
        check_targets(n, v, targets, self.name())?;
        let mut out = vec![0f32; logits.len()];
        for (((row, d), &t), &gi) in logits
            .chunks_exact(v)
            .zip(out.chunks_exact_mut(v))
            .zip(targets)
            .zip(g)
        {
            let lse = logsumexp(row);
            for (o, &x) in d.iter_mut().zip(row) {
                *o = gi * (x - lse).exp();
            }
            d[t as usize] -= gi;
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests;

/// [`CrossEntropyBwd`] from the forward pass's softmax: `g_i · (p_ij − [j = target_i])`.
struct CrossEntropyBwdCached {
    probs: Vec<f32>,
    v: usize,
}

impl CustomOp2 for CrossEntropyBwdCached {
    fn name(&self) -> &'static str {
        "btd-cross-entropy-bwd-cached"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let targets = u32s(s1, l1, self.name())?;
        let g = f32s(s2, l2, self.name())?;
        let v = self.v;
        let n = self.probs.len() / v;
        check_targets(n, v, targets, self.name())?;
        let mut out = vec![0f32; self.probs.len()];
        for (((p, d), &t), &gi) in self
            .probs
            .chunks_exact(v)
            .zip(out.chunks_exact_mut(v))
            .zip(targets)
            .zip(g)
        {
            for (o, &pv) in d.iter_mut().zip(p) {
                *o = gi * pv;
            }
            d[t as usize] -= gi;
        }
        Ok((CpuStorage::F32(out), Shape::from((n, v))))
    }
}

mod rows;
pub use rows::*;
