//! What checking a claim costs the owner, against the training it checks:
//! `cargo bench -p btd --bench verify`.
//!
//! Two real nodes on loopback TCP (production transport, SQLite with full fsync, homes in a temp
//! dir). For the tiny preset at several step budgets the worker trains, keeps the checkpoint where
//! it serves it, and claims; the bench then times the owner's side piece by piece (fetching the
//! checkpoint over `/btd/blob/1`, re-evaluating it on the validation split and the holdout) and end
//! to end (submit → the running verifier's verdict). It also prints the holdout gap of an honest
//! model and of one trained on the validation split, which is what `verify.max_holdout_gap`
//! separates. No timing assertions: the numbers go to docs/benchmarks.md.
//!
//! Under `cargo test` (no `--bench` argument) it runs its quick mode: one short budget and a short
//! holdout-gap pair, checking that the claim is verified piece by piece and end to end and that
//! every figure is finite, never how long anything took.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use btd::blobs::{fetch, BlobStore, FetchSpec};
use btd::net::{NetParams, TransportKind};
use btd::node::types::{NewResult, PublishFiles};
use btd::node::{self, NodeConfig, NodeHandle};
use btd::store::Store;
use btd::testkit::{join_approved, wait_for, wait_known};
use btd::work::WorkContext;
use btd_protocol::kb::{Check, Verdict};
use btd_protocol::program::{Program, Task};
use btd_trainer::{Corpus, TrainSpec};
use candle_core::Device;
use libp2p::identity::Keypair;
use libp2p::Multiaddr;

const T: Duration = Duration::from_secs(120);

fn manifest(steps: u64) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/program.toml"
    ))
    .unwrap()
    .replace(
        "name = \"tiny-gpt-bpb\"",
        &format!("name = \"verify-{steps}\""),
    )
    .replace("seconds = 20 ", "# no wall-clock budget ")
    .replace("steps = 400 ", &format!("steps = {steps} "))
}

async fn start(home: &std::path::Path, bootstrap: Vec<Multiaddr>) -> (NodeHandle, Multiaddr) {
    std::fs::create_dir_all(home).unwrap();
    let store = Store::open(&home.join("btd.sqlite")).unwrap();
    let net = NetParams {
        autonat: false,
        ..NetParams::default()
    };
    let (h, _task) = node::spawn(
        NodeConfig {
            key: Keypair::generate_ed25519(),
            transport: TransportKind::Production,
            net,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap,
            rungs: btd::config::Config::default_rungs(),
            home: Some(home.to_path_buf()),
            clock: btd::clock::Clock::system(),
            rng_seed: None,
            metrics: btd::metrics::Metrics::new(),
        },
        store,
    )
    .await
    .unwrap();
    let addr = wait_for(T, "a listen address", || async {
        let info = h.info().await.ok()?;
        info.listen
            .iter()
            .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
            .and_then(|a| a.parse::<Multiaddr>().ok())
    })
    .await
    .unwrap();
    let addr = addr.with(libp2p::multiaddr::Protocol::P2p(h.peer_id()));
    (h, addr)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// How much training each part of the bench does.
struct Sizes {
    /// Step budgets of the claims checked.
    claims: &'static [u64],
    /// Steps of each model in the holdout-gap pair.
    gap_steps: u64,
}

const FULL: Sizes = Sizes {
    claims: &[100, 400, 1600],
    gap_steps: 150,
};

const QUICK: Sizes = Sizes {
    claims: &[40],
    gap_steps: 20,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test` runs the quick mode.
    let sizes = if std::env::args().any(|a| a == "--bench") {
        &FULL
    } else {
        &QUICK
    };
    // candle sizes its pool from this at the first tensor op (as `btd start` does).
    btd_trainer::device::set_cpu_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let (owner, owner_addr) = start(&dir.path().join("owner"), vec![]).await;
    let (worker, _) = start(&dir.path().join("worker"), vec![owner_addr]).await;
    let dev = Device::Cpu;

    println!(
        "verification cost per claim, tiny preset, 262144-byte synthetic corpus, eval 65536 tokens"
    );
    println!(
        "{:>6} {:>8} {:>9} {:>10} {:>9} {:>9} {:>10} {:>12} {:>8}",
        "steps",
        "val_bpb",
        "train_s",
        "ckpt_KiB",
        "fetch_s",
        "eval_s",
        "check_s",
        "end2end_s",
        "ratio"
    );
    for &steps in sizes.claims {
        let program = owner
            .publish_with(manifest(steps), PublishFiles::default())
            .await
            .unwrap();
        wait_known(&worker, program, T).await.unwrap();
        join_approved(&owner, &worker, program, T).await.unwrap();
        let Task::Candle(task) = Program::from_toml(&manifest(steps)).unwrap().task else {
            unreachable!()
        };
        let corpus = Corpus::for_dataset(&task.dataset, None).unwrap();

        // The worker trains and claims.
        let t0 = Instant::now();
        let spec = TrainSpec::from_task(&task);
        let trained = btd_trainer::train(&spec, &corpus, &dev, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        let train_s = secs(t0.elapsed());
        assert_eq!(trained.report.steps, steps, "steps trained");
        assert!(trained.report.val_bpb.is_finite(), "val_bpb");
        let ckpt = dir.path().join(format!("w-{steps}.safetensors"));
        trained.checkpoint.write(&ckpt).unwrap();
        let work = WorkContext::new(
            worker.clone(),
            Store::open_in_memory().unwrap(),
            &dir.path().join("worker"),
            btd::config::Config::default_rungs(),
            Default::default(),
        );
        let (output, claim) = work.claim_checkpoint(program, ckpt).await.unwrap();

        // The owner's side, piece by piece (into a scratch store, so the verifier fetches again).
        let scratch = BlobStore::new(dir.path().join(format!("scratch-{steps}")));
        let t1 = Instant::now();
        let (path, progress) = fetch(
            &owner,
            &scratch,
            &FetchSpec {
                peer: worker.peer_id(),
                program,
                credential: None,
                digest: claim.checkpoint,
                max_bytes: 1 << 30,
                deadline: tokio::time::Instant::now() + T,
            },
        )
        .await
        .unwrap();
        let fetch_s = secs(t1.elapsed());
        let holdout = std::fs::read(
            dir.path()
                .join("owner")
                .join("holdout")
                .join(format!("{program}.txt")),
        )
        .unwrap();
        let t2 = Instant::now();
        let (v, eval_s, _) = btd::verify::measure_and_judge(
            &path,
            &claim,
            &task,
            &corpus,
            Some(&holdout),
            &Default::default(),
            None,
            true,
            |_| Verdict::Verified,
        )
        .unwrap();
        assert_eq!(v, Verdict::Verified);
        let _ = secs(t2.elapsed());

        // End to end through the running verifier.
        let t3 = Instant::now();
        let result = NewResult {
            value: trained.report.val_bpb,
            rung_id: "cpu".into(),
            outputs: vec![output],
            claim: Some(claim),
            ..Default::default()
        };
        let receipt = worker.submit(program, result).await.unwrap();
        let check = wait_for(T, "the owner's verdict", || async {
            let s = owner.status(Some(program)).await.ok()?;
            s.results
                .iter()
                .find(|e| e.seq == receipt.seq && e.check != Check::Pending)
                .map(|e| e.check.clone())
        })
        .await
        .unwrap();
        assert_eq!(check, Check::Verified);
        let e2e = secs(t3.elapsed());
        let check_s = fetch_s + eval_s;
        assert!(progress.size > 0, "an empty checkpoint was fetched");
        assert!(check_s.is_finite() && train_s > 0.0);
        println!(
            "{steps:>6} {:>8.4} {train_s:>9.2} {:>10.0} {fetch_s:>9.3} {eval_s:>9.3} {check_s:>10.3} {e2e:>12.3} {:>7.1}%",
            trained.report.val_bpb,
            progress.size as f64 / 1024.0,
            100.0 * check_s / train_s
        );
    }

    // The holdout gap that max_holdout_gap separates: honest vs trained on the validation split.
    println!();
    println!(
        "holdout gap (holdout val_bpb - validation val_bpb), tiny preset, {} steps, lr 0.02, \
         16384-byte corpus",
        sizes.gap_steps
    );
    let corpus = Corpus::synthetic(5, 16384).unwrap();
    let holdout = btd_trainer::synth::synthetic_holdout(5, 99, 16384).unwrap();
    let val_only =
        Corpus::from_text_bytes(corpus.val().repeat(10), corpus.source().clone()).unwrap();
    let mut spec = TrainSpec::preset(btd_protocol::program::ModelPreset::Tiny, 3);
    spec.steps = Some(sizes.gap_steps);
    spec.eval_tokens = 2048;
    spec.hyper.lr = 0.02;
    for (name, data) in [("honest", &corpus), ("trained on val", &val_only)] {
        let t = btd_trainer::train(&spec, data, &dev, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        let m = t.checkpoint.model(&dev).unwrap();
        let (v, _) = btd_trainer::eval::val_bpb_of(&m, corpus.val(), 2048, &dev).unwrap();
        let (h, _) = btd_trainer::eval::val_bpb_of(&m, &holdout, 2048, &dev).unwrap();
        assert!(v.is_finite() && h.is_finite(), "{name}: {v} / {h}");
        println!(
            "  {name:<15} validation {v:.4}  holdout {h:.4}  gap {:+.4}",
            h - v
        );
    }
}
