//! Verified results on real in-process nodes: artifacts move over `/btd/blob/1` in checked,
//! resumable chunks only inside their program, and the owner's verifier catches a worker that
//! trained on the validation split (its value reproduces; the owner-only holdout exposes it). The
//! verdicts survive an owner restart. A member that claims checkpoints it did not train (the
//! champion's, or one the owner holds from elsewhere) earns nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use btd::blobs::{fetch, BlobStore, FetchError, FetchSpec};
use btd::node::types::{NewResult, PublishFiles, StatusView};
use btd::node::NodeHandle;
use btd::store::Store;
use btd::testkit::{
    join_approved, owner_and_member, spawn_node, wait_for, wait_known, OwnerAndMember, TestNode,
    TestNodeOptions,
};
use btd::work::{run_rounds, RunRecord, WorkContext, WorkOptions};
use btd_protocol::kb::Check;
use btd_protocol::program::search::Hypothesis;
use btd_protocol::program::ProgramId;
use btd_protocol::wire::SubmitReceipt;
use btd_protocol::Digest;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(60);

fn file_program(sha256: &Digest) -> String {
    format!(
        r#"name = "blob-test"
objective = "move a corpus"
baseline = 8.0
required_outputs = ["checkpoint.safetensors"]
[criteria]
metric = "val_bpb"
direction = "minimize"
accept = "beats-champion"
[reward]
pool = 100
token = "OBOL"
split = "by-impact"
[task]
kind = "candle"
steps = 10
[task.dataset]
kind = "file"
sha256 = "{sha256}"
[[rungs]]
id = "cpu"
spend_class = "local_unmetered"
hardware = "cpu"
[verify]
holdout = false
"#
    )
}

async fn node_in(home: &Path, bootstrap: Option<&TestNode>, store: Store) -> TestNode {
    spawn_node(
        store,
        TestNodeOptions {
            home: Some(home.to_path_buf()),
            bootstrap: bootstrap
                .map(|b| b.dial_addr().unwrap())
                .into_iter()
                .collect(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn publish(owner: &NodeHandle, manifest: String, files: PublishFiles) -> ProgramId {
    owner.publish_with(manifest, files).await.unwrap()
}

fn spec(owner: &TestNode, program: ProgramId, digest: Digest) -> FetchSpec {
    FetchSpec {
        peer: owner.peer_id(),
        program,
        credential: None,
        digest,
        max_bytes: 256 << 20,
        deadline: tokio::time::Instant::now() + T,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_move_in_resumable_checked_chunks_only_inside_their_program() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // 1.3 MB: three chunks.
    let corpus: Vec<u8> = (0..1_300_000u32)
        .map(|i| b"abcdefghij klmnop\n"[(i as usize * 7 + i as usize / 13) % 18])
        .collect();
    let data = dirs[0].path().join("corpus.txt");
    std::fs::write(&data, &corpus).unwrap();
    let digest = Digest::of(&corpus);

    let owner = node_in(dirs[0].path(), None, Store::open_in_memory().unwrap()).await;
    let worker = node_in(
        dirs[1].path(),
        Some(&owner),
        Store::open_in_memory().unwrap(),
    )
    .await;
    let outsider = node_in(
        dirs[2].path(),
        Some(&owner),
        Store::open_in_memory().unwrap(),
    )
    .await;

    // Publishing checks the file against the manifest's digest.
    let wrong = dirs[0].path().join("wrong.txt");
    std::fs::write(&wrong, b"not the corpus").unwrap();
    let files = PublishFiles {
        data: Some(wrong),
        ..PublishFiles::default()
    };
    let e = owner
        .handle
        .publish_with(file_program(&digest), files)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not the"), "{e}");
    let program = publish(
        &owner.handle,
        file_program(&digest),
        PublishFiles {
            data: Some(data.clone()),
            ..PublishFiles::default()
        },
    )
    .await;
    wait_known(&worker.handle, program, T).await.unwrap();
    join_approved(&owner.handle, &worker.handle, program, T)
        .await
        .unwrap();
    let (_, credential) = worker.handle.credential(program).await.unwrap().unwrap();

    // A non-member is refused, with words.
    let store_out = BlobStore::new(dirs[2].path().join("blobs"));
    let e = fetch(&outsider.handle, &store_out, &spec(&owner, program, digest))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, FetchError::Refused(m) if m.contains("membership required")),
        "{e}"
    );

    // A member fetches it, resuming a partial file already on disk.
    let store_w = BlobStore::new(dirs[1].path().join("blobs"));
    let part = dirs[1]
        .path()
        .join("blobs")
        .join(program.to_string())
        .join(format!("{digest}.part"));
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &corpus[..600_000]).unwrap();
    let mut s = spec(&owner, program, digest);
    s.credential = Some(credential.clone());
    let (path, progress) = fetch(&worker.handle, &store_w, &s).await.unwrap();
    assert_eq!(progress.resumed_from, 600_000);
    assert_eq!(progress.size, corpus.len() as u64);
    assert_eq!(std::fs::read(&path).unwrap(), corpus);
    assert!(!part.exists());

    // A corrupted partial file is caught by the digest, deleted, and the next fetch succeeds.
    std::fs::remove_file(&path).unwrap();
    let mut bad = corpus[..700_000].to_vec();
    bad[5] ^= 0xff;
    std::fs::write(&part, &bad).unwrap();
    let e = fetch(&worker.handle, &store_w, &s).await.unwrap_err();
    assert!(matches!(e, FetchError::DigestMismatch { .. }), "{e}");
    assert!(!part.exists());
    let (path, progress) = fetch(&worker.handle, &store_w, &s).await.unwrap();
    assert_eq!(progress.resumed_from, 0);
    assert_eq!(std::fs::read(&path).unwrap(), corpus);

    // The owner serves only the program's dataset; a program's cap on artifact size holds.
    let mut other = s.clone();
    other.digest = Digest([7; 32]);
    let e = fetch(&worker.handle, &store_w, &other).await.unwrap_err();
    assert!(
        matches!(&e, FetchError::Refused(m) if m.contains("dataset")),
        "{e}"
    );
    std::fs::remove_file(&path).unwrap();
    let mut small = s.clone();
    small.max_bytes = 1 << 20;
    let e = fetch(&worker.handle, &store_w, &small).await.unwrap_err();
    assert!(matches!(e, FetchError::TooLarge { .. }), "{e}");

    // The owner may fetch a member's artifacts of the program; nothing the member lacks.
    let store_o = BlobStore::new(dirs[0].path().join("blobs").join("fetched"));
    let from_worker = FetchSpec {
        peer: worker.peer_id(),
        ..spec(&owner, program, Digest([9; 32]))
    };
    let e = fetch(&owner.handle, &store_o, &from_worker)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, FetchError::Refused(m) if m.contains("does not have")),
        "{e}"
    );
    // ... and a member may not fetch another member's.
    let e = fetch(
        &outsider.handle,
        &store_out,
        &FetchSpec {
            peer: worker.peer_id(),
            ..spec(&owner, program, digest)
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, FetchError::Refused(_)), "{e}");

    for n in [outsider, worker, owner] {
        n.stop().await;
    }
}

fn holdout_program() -> String {
    btd::testkit::candle_manifest(
        "holdout-test",
        "lowest val_bpb of the tiny model in 150 steps on a small corpus",
        &format!(
            "steps = 150\nseed = 3\neval_tokens = 2048\n{}",
            btd::testkit::SYNTHETIC_16K
        ),
        "",
    )
}

/// One round of the worker loop that waits for the owner's verdict.
async fn honest_round(work: &Arc<WorkContext>, program: ProgramId) -> RunRecord {
    let summary = run_rounds(
        Arc::clone(work),
        program,
        WorkOptions {
            rounds: 1,
            rung: None,
            data: None,
            allow_shell: false,
            approval_wait_secs: 10,
            verdict_wait_secs: 120,
            ..WorkOptions::default()
        },
        mpsc::channel(64).0,
    )
    .await
    .unwrap();
    summary.runs.into_iter().next().unwrap()
}

/// The cheat: trains the tiny model on the validation split itself (ten copies of it as training
/// data) with a hot learning rate; returns the checkpoint's path and the value it really reaches on
/// the split.
fn train_on_the_validation_split(steps: u64, dir: &Path) -> (std::path::PathBuf, f64) {
    let corpus = btd_trainer::Corpus::synthetic(5, 16384).unwrap();
    let val_only =
        btd_trainer::Corpus::from_text_bytes(corpus.val().repeat(10), corpus.source().clone())
            .unwrap();
    let mut spec = btd_trainer::TrainSpec::preset(btd_protocol::program::ModelPreset::Tiny, 3);
    spec.steps = Some(steps);
    spec.eval_tokens = 2048;
    spec.hyper.lr = 0.02;
    let dev = candle_core::Device::Cpu;
    let trained = btd_trainer::train(&spec, &val_only, &dev, &mut |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let path = dir.join("cheat.safetensors");
    trained.checkpoint.write(&path).unwrap();
    let on_val = btd_trainer::evaluate(&trained.checkpoint, &corpus, &dev)
        .unwrap()
        .val_bpb;
    (path, on_val)
}

/// Claims `value` for the checkpoint at `path` (with `hypothesis`); returns the receipt.
async fn claim(
    p: &OwnerAndMember,
    path: &Path,
    value: f64,
    hypothesis: Hypothesis,
) -> SubmitReceipt {
    let (output, claim) = p
        .work
        .claim_checkpoint(p.program, path.to_path_buf())
        .await
        .unwrap();
    let result = NewResult {
        value,
        rung_id: "cpu".into(),
        outputs: vec![output],
        claim: Some(claim),
        hypothesis,
        ..Default::default()
    };
    p.worker.handle.submit(p.program, result).await.unwrap()
}

async fn status(h: &NodeHandle, program: ProgramId) -> Option<StatusView> {
    h.status(Some(program)).await.ok()
}

/// Waits for the owner's verdict on claim `seq`; returns the owner's status at that moment and the
/// rejection's reason (`None`: not rejected).
async fn settled(owner: &NodeHandle, program: ProgramId, seq: u64) -> (StatusView, Option<String>) {
    let s = wait_for(T, "the owner's check", || async {
        let s = status(owner, program).await?;
        s.results
            .iter()
            .any(|e| e.seq == seq && e.check != Check::Pending)
            .then_some(s)
    })
    .await
    .unwrap();
    let why = match &s.results.iter().find(|e| e.seq == seq).unwrap().check {
        Check::Failed(why) => Some(why.clone()),
        _ => None,
    };
    (s, why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_on_the_validation_split_is_caught_by_the_owners_holdout() {
    let owner_home = tempfile::tempdir().unwrap();
    let worker_home = tempfile::tempdir().unwrap();
    let db = owner_home.path().join("owner.sqlite");
    let p = owner_and_member(
        owner_home.path(),
        Store::open(&db).unwrap(),
        worker_home.path(),
        &holdout_program(),
        T,
    )
    .await
    .unwrap();
    let program = p.program;

    // An honest round: verified, champion.
    let round = honest_round(&p.work, program).await;
    let honest = round.verdict.clone().unwrap();
    assert_eq!(honest.check, Check::Verified, "{round:?}");
    assert!(honest.champion);

    // The cheat claims the value its checkpoint really reaches on the split.
    let (path, on_val) = train_on_the_validation_split(150, worker_home.path());
    assert!(
        on_val < round.value.unwrap(),
        "training on the split must look better ({on_val})"
    );
    let receipt = claim(&p, &path, on_val, Hypothesis::new()).await;
    assert_eq!(receipt.check, Check::Pending);
    let (s, why) = settled(&p.owner.handle, program, receipt.seq).await;
    let why = why.expect("the val-trained claim was not rejected");
    assert!(why.contains("holdout"), "{why}");
    assert_eq!(s.champion.as_ref().unwrap().seq, honest.seq);
    assert_eq!(s.payouts.len(), 1);

    // The owner restarts on its database: the verdicts and the champion are as they were.
    let key = p.owner.key.clone();
    p.owner.stop().await;
    let again = spawn_node(
        Store::open(&db).unwrap(),
        TestNodeOptions {
            key: Some(key),
            home: Some(owner_home.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let s2 = status(&again.handle, program).await.unwrap();
    assert_eq!(s2.results, s.results);
    assert_eq!(s2.champion, s.champion);
    assert_eq!(s2.payouts, s.payouts);
    assert_eq!((s2.verified, s2.rejected, s2.pending), (1, 1, 0));
    p.worker.stop().await;
    again.stop().await;
}

/// The tiny candle program, re-trained by the owner with one seed, the claim's: the honest claim
/// then reproduces exactly, whatever the seed-to-seed spread at this short budget
/// (daemon/tests/retrain.rs covers several seeds and their mean).
fn retrain_program() -> String {
    btd::testkit::candle_manifest(
        "retrain-test",
        "lowest val_bpb of the tiny model in 100 steps, re-trained by the owner",
        &format!(
            "steps = 100\nseed = 3\neval_tokens = 2048\n{}",
            btd::testkit::SYNTHETIC_16K
        ),
        // The honest re-training lands on the same value bit for bit (same config, seed and
        // steps), so a tight tolerance costs honest claims nothing; the cheat below beats the
        // honest value by about 0.05, the default tolerance's size, which leaves the outcome to
        // float rounding.
        "[verify]\nholdout = false\nretrain_share = 0.0\nretrain_seeds = 1\nretrain_tolerance = 0.02\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retraining_spot_checks_reproduce_honest_claims_and_catch_the_rest() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let p = owner_and_member(
        dirs[0].path(),
        Store::open_in_memory().unwrap(),
        dirs[1].path(),
        &retrain_program(),
        T,
    )
    .await
    .unwrap();
    let program = p.program;
    // An honest round: the owner re-trains it (same config, seed, steps) and lands on the same
    // value, so it verifies.
    let round = honest_round(&p.work, program).await;
    let honest = round.verdict.clone().unwrap();
    assert_eq!(honest.check, Check::Verified, "{round:?}");

    // Dishonest claims, all with the value their checkpoint really reaches on the validation
    // split: one trained on the split itself and naming no hypothesis (no holdout here: only
    // re-training can tell), then two that play the attacker of the verifier with hypotheses the
    // program never offered (it searches nothing): a plausible rate and an absurd one. On the old
    // main those reached the fetch, the checkpoint checks and (for a matching hypothesis) the
    // re-training; now the pure bounds check rejects them before anything is fetched.
    let (path, on_val) = train_on_the_validation_split(100, dirs[1].path());
    assert!(
        on_val < round.value.unwrap(),
        "{on_val} vs {:?}",
        round.value
    );
    let mut reasons = Vec::new();
    for lr in [None, Some(0.02), Some(0.5)] {
        let hypothesis = lr.map(|lr| ("lr".to_string(), lr)).into_iter().collect();
        let receipt = claim(&p, &path, on_val, hypothesis).await;
        assert_eq!(receipt.check, Check::Pending);
        let (_, why) = settled(&p.owner.handle, program, receipt.seq).await;
        reasons.push(why.expect("a dishonest claim verified"));
    }
    assert!(
        reasons[0].contains("re-training did not reproduce"),
        "{}",
        reasons[0]
    );
    for (r, lr) in reasons[1..].iter().zip(["0.02", "0.5"]) {
        assert!(
            r.contains(&format!("lr={lr}, a parameter the program does not search")),
            "{r}"
        );
    }
    let s = status(&p.owner.handle, program).await.unwrap();
    assert_eq!(s.champion.unwrap().seq, honest.seq);
    p.worker.stop().await;
    p.owner.stop().await;
}

/// Trains the program's tiny model for `steps` on the training split (honestly); returns the
/// checkpoint's path and the value it reaches on the validation split.
fn train_honestly(steps: u64, dir: &Path) -> (std::path::PathBuf, f64) {
    let corpus = btd_trainer::Corpus::synthetic(5, 16384).unwrap();
    let mut spec = btd_trainer::TrainSpec::preset(btd_protocol::program::ModelPreset::Tiny, 3);
    spec.steps = Some(steps);
    spec.eval_tokens = 2048;
    let dev = candle_core::Device::Cpu;
    let trained = btd_trainer::train(&spec, &corpus, &dev, &mut |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let path = dir.join("planted.safetensors");
    trained.checkpoint.write(&path).unwrap();
    let on_val = btd_trainer::evaluate(&trained.checkpoint, &corpus, &dev)
        .unwrap()
        .val_bpb;
    (path, on_val)
}

/// The "hostile peers" attacker: a second member that claims checkpoints it never trained. It
/// claims the champion's checkpoint (every member reads its digest, seed and steps) with a slightly
/// better value and another platform, so that a tolerance instead of bit-exactness would apply; and
/// it claims a checkpoint the owner already holds from elsewhere without having the bytes itself.
/// Neither earns it anything; the honest champion keeps its credit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_claiming_checkpoints_it_did_not_train_gets_no_credit() {
    let dirs = [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ];
    let p = owner_and_member(
        dirs[0].path(),
        Store::open_in_memory().unwrap(),
        dirs[1].path(),
        &holdout_program(),
        T,
    )
    .await
    .unwrap();
    let program = p.program;
    let thief = node_in(
        dirs[2].path(),
        Some(&p.owner),
        Store::open_in_memory().unwrap(),
    )
    .await;
    wait_known(&thief.handle, program, T).await.unwrap();
    join_approved(&p.owner.handle, &thief.handle, program, T)
        .await
        .unwrap();
    let submit = |result: NewResult| {
        let h = thief.handle.clone();
        async move { h.submit(program, result).await }
    };

    // 1. A checkpoint the owner holds under its digest (here planted in its artifact store), that
    //    the thief claims without serving: the owner checks only bytes fetched from the claimant.
    let (planted, on_val) = train_honestly(20, dirs[0].path());
    let (output, claim) = btd::work::claim_checkpoint(
        BlobStore::new(dirs[0].path().join("blobs")),
        program,
        planted,
    )
    .await
    .unwrap();
    let receipt = submit(NewResult {
        value: on_val,
        rung_id: "cpu".into(),
        outputs: vec![output],
        claim: Some(claim),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(receipt.check, Check::Pending);
    let (_, why) = settled(&p.owner.handle, program, receipt.seq).await;
    let why = why.expect("a claim checked on the owner's own copy verified");
    assert!(why.contains("could not be fetched"), "{why}");

    // 2. An honest round: verified, champion.
    let round = honest_round(&p.work, program).await;
    let honest = round.verdict.clone().unwrap();
    assert_eq!(honest.check, Check::Verified, "{round:?}");
    assert!(honest.champion);

    // 3. The thief claims the champion's checkpoint, a little better, from "another platform".
    let view = thief.handle.champion(program).await.unwrap().unwrap();
    let champion = view.submission.verify().unwrap().value;
    let mut claim = champion.claim.clone().unwrap();
    claim.device = "cuda: a faster card".into();
    let refused = submit(NewResult {
        value: champion.value - 5e-5,
        rung_id: "cpu".into(),
        outputs: champion.outputs.clone(),
        hypothesis: champion.hypothesis.clone(),
        claim: Some(claim),
        ..Default::default()
    })
    .await;
    match refused {
        Err(e) => assert!(
            e.to_string().contains("already claimed by another member"),
            "{e}"
        ),
        Ok(r) => panic!("the stolen claim was taken: {r:?}"),
    }

    // The honest champion keeps the champion and the whole pool.
    let s = status(&p.owner.handle, program).await.unwrap();
    assert_eq!(s.champion.as_ref().unwrap().seq, honest.seq);
    assert_eq!(
        s.champion.as_ref().unwrap().worker,
        p.worker.peer_id().to_string()
    );
    assert_eq!(s.payouts.len(), 1);
    assert_eq!(
        s.payouts
            .get(&p.worker.peer_id().to_string())
            .map(|a| a.to_string()),
        Some("100.000000".to_string())
    );
    assert_eq!((s.verified, s.rejected, s.pending), (1, 1, 0));
    thief.stop().await;
    p.worker.stop().await;
    p.owner.stop().await;
}
