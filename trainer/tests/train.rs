//! Real candle training on the synthetic corpus: learning, determinism, checkpoint verification.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup aborts the test

use std::ops::ControlFlow;

use btd_protocol::program::ModelPreset;
use btd_trainer::data::unigram_entropy_bits;
use btd_trainer::device::set_cpu_threads;
use btd_trainer::sample::{sample, SampleOptions};
use btd_trainer::{evaluate, train, Checkpoint, Corpus, ModelConfig, TrainSpec, Trained};
use candle_core::Device;

/// A model small enough to train for a few hundred steps in a few seconds.
fn test_spec(seed: u64, steps: u64) -> TrainSpec {
    let mut spec = TrainSpec::preset(ModelPreset::Tiny, seed);
    spec.model = ModelConfig {
        n_layer: 2,
        n_head: 2,
        d_model: 32,
        block_size: 32,
    };
    spec.hyper.batch_size = 16;
    spec.steps = Some(steps);
    spec.eval_tokens = 4096;
    spec
}

fn run(spec: &TrainSpec, corpus: &Corpus) -> Trained {
    set_cpu_threads(1);
    train(spec, corpus, &Device::Cpu, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap()
}

#[test]
fn learns_below_unigram_entropy() {
    let corpus = Corpus::synthetic(0, 200_000).unwrap();
    let unigram = unigram_entropy_bits(corpus.val());
    let trained = run(&test_spec(1, 300), &corpus);
    let r = &trained.report;
    assert_eq!(r.steps, 300);
    assert_eq!(r.eval_tokens, 4096);
    assert!(
        r.val_bpb < unigram - 0.3,
        "val_bpb {} vs unigram {unigram}",
        r.val_bpb
    );
    assert!(r.val_bpb < 8.0);
}

#[test]
fn same_seed_and_steps_are_bit_identical_and_the_checkpoint_verifies() {
    let corpus = Corpus::synthetic(5, 60_000).unwrap();
    let spec = test_spec(7, 25);
    let a = run(&spec, &corpus);
    let b = run(&spec, &corpus);
    assert_eq!(a.report.val_bpb.to_bits(), b.report.val_bpb.to_bits());
    assert_eq!(a.checkpoint.sha256(), b.checkpoint.sha256());
    assert_eq!(a.checkpoint.bytes(), b.checkpoint.bytes());
    let c = run(&test_spec(8, 25), &corpus);
    assert_ne!(a.checkpoint.sha256(), c.checkpoint.sha256());

    // Write, read back, recompute: the same value, to the bit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    a.checkpoint.write(&path).unwrap();
    let ckpt = Checkpoint::read(&path).unwrap();
    assert_eq!(ckpt.sha256(), a.report.checkpoint_sha256);
    assert_eq!(ckpt.meta().val_bpb.to_bits(), a.report.val_bpb.to_bits());
    assert_eq!(ckpt.meta().spec, spec);
    let again = Corpus::for_source(&ckpt.meta().data, None).unwrap();
    let e = evaluate(&ckpt, &again, &Device::Cpu).unwrap();
    assert_eq!(e.val_bpb.to_bits(), a.report.val_bpb.to_bits());
    assert_eq!(e.tokens, a.report.eval_tokens);

    // Not the program's model: the reason names both shapes in words.
    let why = btd_trainer::verify::check_shape(&ckpt, ModelPreset::Tiny, None)
        .unwrap_err()
        .to_string();
    assert!(
        why.contains("model (2 layers, d_model 32, 2 heads, context")
            && why.contains("is not the program's tiny preset (")
            && !why.contains('{'),
        "{why}"
    );

    // Sampling is seeded.
    let opts = SampleOptions {
        prompt: b"The ".to_vec(),
        tokens: 40,
        seed: 3,
        temperature: 0.8,
        top_k: Some(20),
    };
    let s1 = sample(&ckpt, &opts, &Device::Cpu).unwrap();
    assert_eq!(s1.len(), 40);
    assert_eq!(s1, sample(&ckpt, &opts, &Device::Cpu).unwrap());
}

#[test]
fn a_corrupted_checkpoint_is_refused() {
    let corpus = Corpus::synthetic(5, 20_000).unwrap();
    let a = run(&test_spec(1, 2), &corpus);
    let mut bytes = a.checkpoint.bytes().to_vec();
    bytes.truncate(bytes.len() - 4);
    let e = Checkpoint::from_bytes(bytes)
        .and_then(|c| c.model(&Device::Cpu).map(|_| ()))
        .unwrap_err();
    assert!(
        e.to_string().contains("checkpoint") || e.to_string().contains("candle"),
        "{e}"
    );
}

#[test]
fn cancel_stops_early_and_still_checkpoints() {
    let corpus = Corpus::synthetic(5, 20_000).unwrap();
    let spec = test_spec(1, 1000);
    set_cpu_threads(1);
    let t = train(&spec, &corpus, &Device::Cpu, &mut |s| {
        if s.step >= 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(t.report.steps, 3);
    assert_eq!(t.checkpoint.meta().steps, 3);
}

#[test]
fn a_claim_names_its_checkpoint_and_the_owner_check_finds_every_disagreement() {
    use btd_trainer::claim::{check_claim, claim, same_platform, ClaimMismatch};
    let corpus = Corpus::synthetic(5, 20_000).unwrap();
    let spec = test_spec(11, 3);
    let trained = run(&spec, &corpus);
    let ckpt = &trained.checkpoint;
    let c = claim(ckpt, &Device::Cpu, "9.9.9");
    assert_eq!(c.checkpoint, trained.report.checkpoint_sha256);
    assert_eq!(c.checkpoint_bytes, ckpt.bytes().len() as u64);
    assert_eq!((c.seed, c.steps), (11, 3));
    assert!(c.device.starts_with("cpu: "), "{}", c.device);
    assert_eq!(c.btd_version, "9.9.9");
    assert!(same_platform(&c, &Device::Cpu, "9.9.9"));
    assert!(!same_platform(&c, &Device::Cpu, "9.9.10"));

    // The hypothesis it was trained with checks; so does any part of it, and none.
    let trained_with = spec.hypothesis();
    assert!(!trained_with.is_empty());
    assert_eq!(check_claim(ckpt, &c, &trained_with), Ok(()));
    assert_eq!(check_claim(ckpt, &c, &Default::default()), Ok(()));

    let mut other = c.clone();
    other.checkpoint = btd_protocol::Digest::of(b"other bytes");
    assert_eq!(
        check_claim(ckpt, &other, &trained_with),
        Err(ClaimMismatch::Digest)
    );
    let mut other = c.clone();
    other.steps = 4;
    let e = check_claim(ckpt, &other, &trained_with).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the claim says seed 11 and 4 steps, the checkpoint records seed 11 and 3 steps"
    );
    let (name, v) = trained_with.iter().next().unwrap();
    let mut h = trained_with.clone();
    h.insert(name.clone(), v * 2.0);
    assert_eq!(
        check_claim(ckpt, &c, &h).unwrap_err().to_string(),
        format!(
            "the claim's hypothesis says {name}={}, the checkpoint was trained with {name}={v}",
            v * 2.0
        )
    );
    let h = std::collections::BTreeMap::from([("dropout".to_string(), 0.5)]);
    assert_eq!(
        check_claim(ckpt, &c, &h).unwrap_err().to_string(),
        "the claim's hypothesis says dropout=0.5, the checkpoint was trained with no such parameter"
    );
}
