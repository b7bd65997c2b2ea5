//! The ops on the model's packed row layout `(b·t, d)`: causal attention read straight from the
//! packed q/k/v rows, RMS normalisation with its gain, and the token + position embedding, each one
//! autograd node with a hand-written backward pass.

use super::*;

/// A strided view of a batch of matrices in a CPU storage: start offset, then the batch, row and
/// column strides.
type View = (usize, [usize; 3]);

/// `(batch, m, k) · (batch, k, n)` → contiguous `(batch, m, n)`, on strided views of CPU storages
/// (candle's CPU matrix product takes any row/column strides and one batch stride).
fn bmm(
    lhs: &CpuStorage,
    (lo, ls): View,
    rhs: &CpuStorage,
    (ro, rs): View,
    (batch, m, n, k): (usize, usize, usize, usize),
) -> Result<Vec<f32>> {
    use candle_core::backend::BackendStorage;
    let ll = Layout::new(Shape::from((batch, m, k)), ls.to_vec(), lo);
    let rl = Layout::new(Shape::from((batch, k, n)), rs.to_vec(), ro);
    match lhs.matmul(rhs, (batch, m, n, k), &ll, &rl)? {
        CpuStorage::F32(v) => Ok(v),
        _ => Err(Error::Msg("bmm: expected f32".into())),
    }
}

/// Copies contiguous `(b, t, w)` blocks into column `col` of `(b·t, row)` rows.
fn scatter_cols(src: &[f32], dst: &mut [f32], w: usize, row: usize, col: usize) {
    for (s, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(row)) {
        d[col..col + w].copy_from_slice(s);
    }
}

/// Causal multi-head self-attention from packed projections: `qkv` `(b·t, 3d)` (each row `q | k | v`,
/// heads `h` of width `d/h` side by side) → `(b·t, d)`, heads side by side, i.e.
/// `softmax(q·kᵀ/√hd + causal mask)·v` per sequence and head.
///
/// On the CPU this is one op forward and one back: the per-head matrix products read the packed
/// rows in place (strided views, no transposes or `contiguous` copies), the softmax probabilities
/// are kept from the forward pass for the backward one, and the backward pass writes `d(qkv)` as
/// one packed buffer.
pub fn causal_attention(qkv: &Tensor, b: usize, t: usize, n_head: usize) -> Result<Tensor> {
    let (rows, three_d) = qkv.dims2()?;
    let d = three_d / 3;
    if rows != b * t || three_d != 3 * d || n_head == 0 || d % n_head != 0 {
        return Err(Error::Msg(format!(
            "causal_attention: qkv {:?} does not fit b={b} t={t} heads={n_head}",
            qkv.dims()
        )));
    }
    let hd = d / n_head;
    if fused_ok(qkv) {
        return qkv.contiguous()?.apply_op1(CausalAttention {
            b,
            t,
            h: n_head,
            hd,
            probs: std::sync::Mutex::new(Vec::new()),
        });
    }
    causal_attention_composed(qkv, b, t, n_head)
}

/// [`causal_attention`] from differentiable candle ops (any device).
pub(crate) fn causal_attention_composed(
    qkv: &Tensor,
    b: usize,
    t: usize,
    n_head: usize,
) -> Result<Tensor> {
    let d = qkv.dim(1)? / 3;
    let hd = d / n_head;
    let heads = |i: usize| -> Result<Tensor> {
        qkv.narrow(1, i * d, d)?
            .reshape((b, t, n_head, hd))?
            .transpose(1, 2)?
            .contiguous()
    };
    let q = (heads(0)? * (1.0 / (hd as f64).sqrt()))?;
    let (k, v) = (heads(1)?, heads(2)?);
    let mask = crate::model::causal_mask(t, qkv.device())?;
    let att = crate::model::softmax_last_dim(&q.matmul(&k.t()?)?.broadcast_add(&mask)?)?;
    att.matmul(&v)?.transpose(1, 2)?.reshape((b * t, d))
}

struct CausalAttention {
    b: usize,
    t: usize,
    h: usize,
    hd: usize,
    /// The softmax probabilities of the forward pass, `(h, b, t, t)`, for the backward pass.
    probs: std::sync::Mutex<Vec<f32>>,
}

fn poisoned() -> Error {
    Error::Msg("btd-causal-attention: poisoned lock".into())
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "btd-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, t, h, hd) = (self.b, self.t, self.h, self.hd);
        let (d, o) = (h * hd, l.start_offset());
        let row = 3 * d;
        if !l.is_contiguous() || l.dims() != [b * t, row] {
            return Err(Error::Msg(format!("{}: bad input layout", self.name())));
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let mut y = vec![0f32; b * t * d];
        let mut probs = Vec::with_capacity(h * b * t * t);
        for hi in 0..h {
            // (b, t, hd) views of this head's q, k (as kᵀ: (b, hd, t)) and v.
            let q = (o + hi * hd, [t * row, row, 1]);
            let kt = (o + d + hi * hd, [t * row, 1, row]);
            let v = (o + 2 * d + hi * hd, [t * row, row, 1]);
            let mut p = bmm(s, q, s, kt, (b, t, t, hd))?;
            for (i, pr) in p.chunks_exact_mut(t).enumerate() {
                softmax_prefix(pr, i % t + 1, scale);
            }
            let p = CpuStorage::F32(p);
            let yh = bmm(&p, (0, [t * t, t, 1]), s, v, (b, t, hd, t))?;
            scatter_cols(&yh, &mut y, hd, d, hi * hd);
            if let CpuStorage::F32(p) = p {
                probs.extend_from_slice(&p);
            }
        }
        *self.probs.lock().map_err(|_| poisoned())? = probs;
        Ok((CpuStorage::F32(y), Shape::from((b * t, d))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let probs = std::mem::take(&mut *self.probs.lock().map_err(|_| poisoned())?);
        let op = CausalAttentionBwd {
            b: self.b,
            t: self.t,
            h: self.h,
            hd: self.hd,
            probs: CpuStorage::F32(probs),
        };
        Ok(Some(qkv.apply_op2_no_bwd(&g.contiguous()?, &op)?))
    }
}

/// Softmax of `scale · row[..n]` in place; `row[n..]` (keys after the query) set to 0.
fn softmax_prefix(row: &mut [f32], n: usize, scale: f32) {
    let (vis, masked) = row.split_at_mut(n);
    let mut max = f32::NEG_INFINITY;
    for x in vis.iter_mut() {
        *x *= scale;
        max = max.max(*x);
    }
    let mut sum = 0f32;
    for x in vis.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in vis.iter_mut() {
        *x *= inv;
    }
    masked.fill(0.0);
}

struct CausalAttentionBwd {
    b: usize,
    t: usize,
    h: usize,
    hd: usize,
    probs: CpuStorage,
}

impl CustomOp2 for CausalAttentionBwd {
    fn name(&self) -> &'static str {
        "btd-causal-attention-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, t, h, hd) = (self.b, self.t, self.h, self.hd);
        let d = h * hd;
        let row = 3 * d;
        let (o, go) = (l1.start_offset(), l2.start_offset());
        let CpuStorage::F32(all_p) = &self.probs else {
            return Err(Error::Msg(format!("{}: f32 only", self.name())));
        };
        if all_p.len() != h * b * t * t || !l2.is_contiguous() || l2.dims() != [b * t, d] {
            return Err(Error::Msg(format!(
                "{}: the forward pass's probabilities are missing (backward run twice?)",
                self.name()
            )));
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let mut dqkv = vec![0f32; b * t * row];
        let sq = [t * t, t, 1];
        let sq_t = [t * t, 1, t];
        for hi in 0..h {
            let p_off = hi * b * t * t;
            let p = &all_p[p_off..p_off + b * t * t];
            let q = (o + hi * hd, [t * row, row, 1]);
            let k = (o + d + hi * hd, [t * row, row, 1]);
            let vt = (o + 2 * d + hi * hd, [t * row, 1, row]);
            let gy = (go + hi * hd, [t * d, d, 1]);
            // dp = gy vᵀ, then ds = scale · p ⊙ (dp − Σ p·dp) (0 above the diagonal, where p is 0).
            let mut ds = bmm(s2, gy, s1, vt, (b, t, t, hd))?;
            for (i, (dr, pr)) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)).enumerate() {
                let n = i % t + 1;
                let dot = pr[..n]
                    .iter()
                    .zip(&dr[..n])
                    .map(|(a, b)| a * b)
                    .sum::<f32>();
                for (x, &pv) in dr[..n].iter_mut().zip(&pr[..n]) {
                    *x = scale * pv * (*x - dot);
                }
                dr[n..].fill(0.0);
            }
            let ds = CpuStorage::F32(ds);
            // dv = pᵀ gy, dq = ds k, dk = dsᵀ q
            let dv = bmm(&self.probs, (p_off, sq_t), s2, gy, (b, t, hd, t))?;
            scatter_cols(&dv, &mut dqkv, hd, row, 2 * d + hi * hd);
            let dq = bmm(&ds, (0, sq), s1, k, (b, t, hd, t))?;
            scatter_cols(&dq, &mut dqkv, hd, row, hi * hd);
            let dk = bmm(&ds, (0, sq_t), s1, q, (b, t, hd, t))?;
            scatter_cols(&dk, &mut dqkv, hd, row, d + hi * hd);
        }
        Ok((CpuStorage::F32(dqkv), Shape::from((b * t, row))))
    }
}

/// RMSNorm with a learned gain: `x / sqrt(mean(x², last dim) + eps) · w`, one op forward and one
/// back (the gain's gradient is summed row by row in the same pass as the input's).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    if fused_ok(x) && fused_ok(w) {
        return x
            .contiguous()?
            .apply_op2(&w.contiguous()?, RmsNormGain { eps });
    }
    rms_normalize(x, eps)?.broadcast_mul(w)
}

struct RmsNormGain {
    eps: f32,
}

impl CustomOp2 for RmsNormGain {
    fn name(&self) -> &'static str {
        "btd-rms-norm-gain"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (f32s(s1, l1, self.name())?, f32s(s2, l2, self.name())?);
        let d = last_dim(l1, self.name())?;
        if w.len() != d {
            return Err(Error::Msg(format!("{}: gain is not ({d},)", self.name())));
        }
        let mut out = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let r = inv_rms(xr, self.eps);
            for ((y, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
                *y = v * r * g;
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let rows = x.elem_count() / d;
        let both = x.apply_op3_no_bwd(w, &g.contiguous()?, &RmsNormGainBwd { eps: self.eps })?;
        let dx = both.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = both.narrow(0, rows, 1)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `(rows + 1, d)`: `dx` (rows) then `dw` (last row). With `x̂ = x · r`, `gx = g · w`:
/// `dx = r · (gx − x̂ · mean(gx · x̂))`, `dw = Σ_rows g · x̂`.
struct RmsNormGainBwd {
    eps: f32,
}

impl CustomOp3 for RmsNormGainBwd {
    fn name(&self) -> &'static str {
        "btd-rms-norm-gain-bwd"
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
        let x = f32s(s1, l1, self.name())?;
        let w = f32s(s2, l2, self.name())?;
        let g = f32s(s3, l3, self.name())?;
        let d = w.len();
        let rows = x.len() / d;
        let mut out = vec![0f32; x.len() + d];
        let (dx, dw) = out.split_at_mut(x.len());
        let mut gx = vec![0f32; d];
        for ((xr, gr), dr) in x
            .chunks_exact(d)
            .zip(g.chunks_exact(d))
            .zip(dx.chunks_exact_mut(d))
        {
            let r = inv_rms(xr, self.eps);
            let mut dot = 0f32;
            for ((((gxv, &gv), &wv), &xv), dwv) in
                gx.iter_mut().zip(gr).zip(w).zip(xr).zip(dw.iter_mut())
            {
                *gxv = gv * wv;
                let xh = xv * r;
                dot += *gxv * xh;
                *dwv += gv * xh;
            }
            let dot = dot / d as f32;
            for ((o, &xv), &gxv) in dr.iter_mut().zip(xr).zip(&gx) {
                *o = r * (gxv - xv * r * dot);
            }
        }
        debug_assert_eq!(rows * d, x.len());
        Ok((CpuStorage::F32(out), Shape::from((rows + 1, d))))
    }
}

/// Token plus position embeddings: `tok[idx[i, j]] + pos[j]` for byte indices `idx` `(b, t)`
/// (`u32`) → `(b·t, d)`. One op forward and one back (the gradients are scattered row by row).
pub fn embed(tok: &Tensor, pos: &Tensor, idx: &Tensor) -> Result<Tensor> {
    if fused_ok(tok) && fused_ok(pos) {
        return tok
            .contiguous()?
            .apply_op3(&pos.contiguous()?, &idx.contiguous()?, Embed);
    }
    embed_composed(tok, pos, idx)
}

/// [`embed`] from differentiable candle ops (any device).
pub(crate) fn embed_composed(tok: &Tensor, pos: &Tensor, idx: &Tensor) -> Result<Tensor> {
    let (b, t) = idx.dims2()?;
    let d = tok.dim(1)?;
    let x = tok
        .index_select(&idx.flatten_all()?, 0)?
        .reshape((b, t, d))?;
    x.broadcast_add(&pos.narrow(0, 0, t)?)?.reshape((b * t, d))
}

struct Embed;

impl CustomOp3 for Embed {
    fn name(&self) -> &'static str {
        "btd-embed"
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
        let tok = f32s(s1, l1, self.name())?;
        let pos = f32s(s2, l2, self.name())?;
        let idx = u32s(s3, l3, self.name())?;
        let d = last_dim(l1, self.name())?;
        let t = l3.dims().last().copied().unwrap_or(0);
        let (vocab, block) = (tok.len() / d, pos.len() / d);
        if t == 0 || t > block || idx.iter().any(|&i| i as usize >= vocab) {
            return Err(Error::Msg(format!("{}: index out of range", self.name())));
        }
        let mut out = vec![0f32; idx.len() * d];
        for (r, (o, &i)) in out.chunks_exact_mut(d).zip(idx).enumerate() {
            let (tr, pr) = (&tok[i as usize * d..][..d], &pos[(r % t) * d..][..d]);
            for ((o, &a), &p) in o.iter_mut().zip(tr).zip(pr) {
                *o = a + p;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((idx.len(), d))))
    }

    fn bwd(
        &self,
        tok: &Tensor,
        pos: &Tensor,
        idx: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (vocab, block) = (tok.dim(0)?, pos.dim(0)?);
        let both = g.contiguous()?.apply_op2_no_bwd(
            &idx.contiguous()?,
            &EmbedBwd {
                vocab,
                block,
                t: idx.dim(1)?,
            },
        )?;
        let dtok = both.narrow(0, 0, vocab)?;
        let dpos = both.narrow(0, vocab, block)?;
        Ok((Some(dtok), Some(dpos), None))
    }
}

/// `(vocab + block, d)`: the token rows' gradient sums, then the positions'.
struct EmbedBwd {
    vocab: usize,
    block: usize,
    t: usize,
}

impl CustomOp2 for EmbedBwd {
    fn name(&self) -> &'static str {
        "btd-embed-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = f32s(s1, l1, self.name())?;
        let idx = u32s(s2, l2, self.name())?;
        let d = last_dim(l1, self.name())?;
        let mut out = vec![0f32; (self.vocab + self.block) * d];
        let (dtok, dpos) = out.split_at_mut(self.vocab * d);
        for (r, (gr, &i)) in g.chunks_exact(d).zip(idx).enumerate() {
            for (o, &v) in dtok[i as usize * d..][..d].iter_mut().zip(gr) {
                *o += v;
            }
            for (o, &v) in dpos[(r % self.t) * d..][..d].iter_mut().zip(gr) {
                *o += v;
            }
        }
        Ok((
            CpuStorage::F32(out),
            Shape::from((self.vocab + self.block, d)),
        ))
    }
}
