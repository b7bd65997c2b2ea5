//! Each fused op against the composed candle ops it replaces: values and gradients.

use candle_core::{Device, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::*;

fn random(shape: &[usize], seed: u64) -> Var {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
    Var::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Checks `fused(x)` against `composed(x)` in value, and the gradient of `Σ w ⊙ f(x)` for a fixed
/// random `w`.
fn check(
    x: &Var,
    fused: impl Fn(&Tensor) -> Tensor,
    composed: impl Fn(&Tensor) -> Tensor,
    tol: f32,
) {
    let (a, b) = (fused(x.as_tensor()), composed(x.as_tensor()));
    assert_eq!(a.dims(), b.dims());
    assert!(
        max_diff(&a, &b) <= tol,
        "values differ by {}",
        max_diff(&a, &b)
    );
    let w = random(a.dims(), 99);
    let ga = (a * w.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gb = (b * w.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let (ga, gb) = (ga.get(x).unwrap(), gb.get(x).unwrap());
    assert!(
        max_diff(ga, gb) <= tol,
        "gradients differ by {}",
        max_diff(ga, gb)
    );
}

#[test]
fn rms_norm() {
    let x = random(&[3, 5, 16], 1);
    let composed = |x: &Tensor| {
        let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        x.broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
    };
    check(&x, |x| rms_normalize(x, 1e-5).unwrap(), composed, 1e-5);
}

#[test]
fn relu2() {
    let x = random(&[4, 33], 2);
    check(
        &x,
        |x| relu_squared(x).unwrap(),
        |x| x.relu().unwrap().sqr().unwrap(),
        1e-5,
    );
}

#[test]
fn causal_softmax_matches_masked_softmax() {
    let t = 7;
    let x = random(&[2, 3, t, t], 3);
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
    let composed =
        |x: &Tensor| crate::model::softmax_last_dim(&x.broadcast_add(&mask).unwrap()).unwrap();
    check(&x, |x| causal_softmax(x, &mask).unwrap(), composed, 1e-6);
    // Masked entries are exactly 0 and rows sum to 1.
    let y = causal_softmax(x.as_tensor(), &mask).unwrap();
    let rows = y.flatten_to(2).unwrap().to_vec2::<f32>().unwrap();
    for (r, row) in rows.iter().enumerate() {
        assert!(row[r % t + 1..].iter().all(|&v| v == 0.0));
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}

#[test]
fn cross_entropy() {
    let x = random(&[9, 256], 4);
    let targets =
        Tensor::from_vec(vec![0u32, 1, 255, 7, 7, 100, 3, 200, 42], 9, &Device::Cpu).unwrap();
    let composed = |x: &Tensor| {
        let logp = crate::model::log_softmax_last_dim(x).unwrap();
        logp.gather(&targets.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap()
    };
    check(
        &x,
        |x| cross_entropy_rows(x, &targets).unwrap(),
        composed,
        1e-5,
    );
    let bad = Tensor::from_vec(vec![256u32; 9], 9, &Device::Cpu).unwrap();
    assert!(cross_entropy_rows(x.as_tensor(), &bad).is_err());
}

/// The gradients of `Σ w ⊙ f(inputs)` for a fixed random `w`, one per input.
fn grads_of(out: &Tensor, inputs: &[&Var]) -> Vec<Tensor> {
    let w = random(out.dims(), 98);
    let g = (out * w.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    inputs.iter().map(|v| g.get(v).unwrap().clone()).collect()
}

fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}");
    let d = max_diff(a, b);
    assert!(d <= tol, "{what} differs by {d}");
}

#[test]
fn causal_attention_matches_composed() {
    for (b, t, h, hd) in [(2, 5, 2, 3), (3, 8, 4, 4), (1, 1, 1, 2)] {
        let d = h * hd;
        let qkv = random(&[b * t, 3 * d], 5);
        let fused = causal_attention(qkv.as_tensor(), b, t, h).unwrap();
        let composed = causal_attention_composed(qkv.as_tensor(), b, t, h).unwrap();
        assert_close(&fused, &composed, 1e-5, "attention");
        let gf = grads_of(&fused, &[&qkv]);
        let gc = grads_of(&composed, &[&qkv]);
        assert_close(&gf[0], &gc[0], 1e-4, "attention gradient");
    }
}

#[test]
fn causal_attention_is_causal() {
    let (b, t, h, hd) = (1, 6, 2, 4);
    let qkv = random(&[b * t, 3 * h * hd], 6);
    let y = causal_attention(qkv.as_tensor(), b, t, h).unwrap();
    // Changing the last position changes no earlier output.
    let mut v = qkv.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let row = 3 * h * hd;
    for x in &mut v[(t - 1) * row..] {
        *x += 1.0;
    }
    let qkv2 = Tensor::from_vec(v, (b * t, row), &Device::Cpu).unwrap();
    let y2 = causal_attention(&qkv2, b, t, h).unwrap();
    let d = max_diff(
        &y.narrow(0, 0, t - 1).unwrap(),
        &y2.narrow(0, 0, t - 1).unwrap(),
    );
    assert_eq!(d, 0.0);
}

#[test]
fn rms_norm_with_gain_matches_composed() {
    let x = random(&[12, 16], 7);
    let w = random(&[16], 8);
    let fused = super::rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
    let ms = x
        .as_tensor()
        .sqr()
        .unwrap()
        .mean_keepdim(D::Minus1)
        .unwrap();
    let composed = x
        .as_tensor()
        .broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(w.as_tensor())
        .unwrap();
    assert_close(&fused, &composed, 1e-5, "rms_norm");
    let gf = grads_of(&fused, &[&x, &w]);
    let gc = grads_of(&composed, &[&x, &w]);
    assert_close(&gf[0], &gc[0], 1e-4, "dx");
    assert_close(&gf[1], &gc[1], 1e-4, "dw");
}

#[test]
fn embed_matches_composed() {
    let (b, t, d) = (3, 4, 5);
    let tok = random(&[11, d], 9);
    let pos = random(&[6, d], 10);
    let idx: Vec<u32> = (0..b * t).map(|i| (i * 7 % 11) as u32).collect();
    let idx = Tensor::from_vec(idx, (b, t), &Device::Cpu).unwrap();
    let fused = embed(tok.as_tensor(), pos.as_tensor(), &idx).unwrap();
    let composed = embed_composed(tok.as_tensor(), pos.as_tensor(), &idx).unwrap();
    assert_close(&fused, &composed, 0.0, "embed");
    let gf = grads_of(&fused, &[&tok, &pos]);
    let gc = grads_of(&composed, &[&tok, &pos]);
    assert_close(&gf[0], &gc[0], 1e-5, "dtok");
    assert_close(&gf[1], &gc[1], 1e-5, "dpos");
    let bad = Tensor::from_vec(vec![11u32; b * t], (b, t), &Device::Cpu).unwrap();
    assert!(embed(tok.as_tensor(), pos.as_tensor(), &bad).is_err());
}
