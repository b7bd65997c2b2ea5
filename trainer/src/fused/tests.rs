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
