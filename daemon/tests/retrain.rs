//! The owner's re-training check, driven directly through [`btd::verify::measure_and_judge`] (no
//! nodes, the tiny preset, a few steps): it re-trains once per seed of `verify.retrain_seeds` and
//! judges their mean; a re-training that cannot reach the claimed steps within its deadline rejects
//! the claim; `btd stop` (the stop flag) interrupts it and leaves the claim pending.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btd::verify::{measure_and_judge, CheckError, RetrainLimits, VERSION};
use btd_protocol::kb::{judge, Direction, Measurement, Verdict};
use btd_protocol::program::search::Hypothesis;
use btd_protocol::program::{CandleTask, Dataset, ModelPreset, Task, Verify};
use btd_protocol::wire::Claim;
use btd_trainer::{Corpus, TrainSpec};
use candle_core::Device;

const STEPS: u64 = 6;

fn task() -> CandleTask {
    CandleTask {
        preset: ModelPreset::Tiny,
        dataset: Dataset::Synthetic {
            seed: 5,
            bytes: 16384,
        },
        seconds: Some(1),
        steps: Some(STEPS),
        seed: 3,
        eval_tokens: 512,
    }
}

/// An honest worker's checkpoint of the task (seed 3, [`STEPS`] steps), its claim and its value.
fn honest(dir: &Path, corpus: &Corpus) -> (PathBuf, Claim, f64) {
    let mut spec = TrainSpec::from_task(&task());
    spec.seconds = None;
    let dev = Device::Cpu;
    let trained = btd_trainer::train(&spec, corpus, &dev, &mut |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let path = dir.join("ckpt.safetensors");
    trained.checkpoint.write(&path).unwrap();
    let claim = btd_trainer::claim::claim(&trained.checkpoint, &dev, VERSION);
    (path, claim, trained.report.val_bpb)
}

fn corpus() -> Corpus {
    Corpus::synthetic(5, 16384).unwrap()
}

/// The program's `[verify]` with re-training on every claim and `k` seeds.
fn verify(k: u32) -> Verify {
    Verify {
        retrain_share: Some(0.0),
        retrain_seeds: k,
        max_holdout_gap: None,
        ..Verify::default_for(&Task::Candle(task()))
    }
}

#[test]
fn a_retraining_check_trains_every_seed_and_the_mean_counts() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus();
    let (path, claim, value) = honest(dir.path(), &corpus);
    let v = verify(3);
    let limits = RetrainLimits {
        seeds: v.retrain_seed_list(claim.seed),
        seconds: None,
        stop: Arc::new(AtomicBool::new(false)),
    };
    assert_eq!(limits.seeds.len(), 3);
    let seen: Mutex<Vec<Measurement>> = Mutex::default();
    let (verdict, _, retrain_secs) = measure_and_judge(
        &path,
        &claim,
        &task(),
        &corpus,
        None,
        &Hypothesis::new(),
        Some(&limits),
        true,
        |m| {
            seen.lock().unwrap().push(m.clone());
            // A tolerance wide enough for a few steps' seed-to-seed spread.
            let wide = Verify {
                retrain_tolerance: 1.0,
                ..v.clone()
            };
            judge(&wide, Direction::Minimize, value, m)
        },
    )
    .unwrap();
    assert!(retrain_secs > 0.0);
    let seen = seen.into_inner().unwrap();
    let last = seen.last().unwrap();
    // Three runs, with three seeds: three different values; the claim's own seed reproduces it.
    assert_eq!(last.retrained.len(), 3, "{last:?}");
    assert!(
        (last.retrained[0] - value).abs() < 1e-6,
        "{last:?} vs {value}"
    );
    assert!(
        last.retrained[0] != last.retrained[1]
            && last.retrained[1] != last.retrained[2]
            && last.retrained[0] != last.retrained[2],
        "the runs did not use distinct seeds: {last:?}"
    );
    // What counts is their mean, not the claimed (the claim's seed's) value.
    let mean = last.retrained.iter().sum::<f64>() / 3.0;
    assert_eq!(verdict, Verdict::Measured { value: mean });
}

#[test]
fn a_retraining_that_misses_its_deadline_rejects_the_claim() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus();
    let (path, claim, value) = honest(dir.path(), &corpus);
    let limits = RetrainLimits {
        seeds: vec![claim.seed],
        seconds: Some(Duration::ZERO),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let (verdict, _, _) = measure_and_judge(
        &path,
        &claim,
        &task(),
        &corpus,
        None,
        &Hypothesis::new(),
        Some(&limits),
        true,
        |m| judge(&verify(1), Direction::Minimize, value, m),
    )
    .unwrap();
    let Verdict::Failed(why) = verdict else {
        panic!("a re-training past its deadline verified: {verdict:?}");
    };
    assert!(
        why.contains(&format!("of the claimed {STEPS} steps")) && why.contains("reached 1 "),
        "{why}"
    );
}

#[test]
fn stopping_the_node_interrupts_a_retraining_and_leaves_the_claim_pending() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus();
    let (path, claim, value) = honest(dir.path(), &corpus);
    let limits = RetrainLimits {
        seeds: vec![claim.seed],
        seconds: None,
        stop: Arc::new(AtomicBool::new(true)),
    };
    let out = measure_and_judge(
        &path,
        &claim,
        &task(),
        &corpus,
        None,
        &Hypothesis::new(),
        Some(&limits),
        true,
        |m| judge(&verify(1), Direction::Minimize, value, m),
    );
    assert_eq!(out.err(), Some(CheckError::Stopped));
}
