//! The worker loop on real in-process nodes: candle rounds that search near the champion and leave
//! verifiable traceability records, paid compute that waits for the owner's receipt, and holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use btd::store::Store;
use btd::testkit::{owner_and_member, wait_for, TestNode};
use btd::work::{run_rounds, RunState, WorkContext, WorkEvent, WorkOptions, WorkSummary};
use btd_protocol::dispatch::Action;
use btd_protocol::kb::Check;
use btd_protocol::program::ProgramId;
use btd_protocol::trace::BundleStatus;
use btd_protocol::wire::{KbCall, KbRequest, KbResponse};
use btd_protocol::Digest;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(30);

const CANDLE: &str = r#"name = "work-candle"
objective = "lowest val_bpb of the tiny model in 30 steps"
baseline = 8.0
required_outputs = ["checkpoint.safetensors", "metrics.json"]
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
preset = "tiny"
steps = 30
seed = 3
eval_tokens = 2048
[task.dataset]
kind = "synthetic"
seed = 5
bytes = 65536
[task.search]
lr = { min = 1e-3, max = 1e-2, scale = "log" }
warmup_frac = { min = 0.0, max = 0.2 }
[[rungs]]
id = "cpu"
spend_class = "local_unmetered"
hardware = "cpu"
"#;

fn shell_program(policy: &str) -> String {
    btd::testkit::score_manifest(
        "work-shell",
        r#""echo \"score: $BTD_PARAM_X\"""#,
        20,
        &format!(
            "[[rungs]]\nid = \"rented-cpu\"\nspend_class = \"paid_metered\"\nhardware = \"cpu\"\n{policy}"
        ),
    )
}

struct Pair {
    owner: TestNode,
    worker: TestNode,
    work: Arc<WorkContext>,
    program: ProgramId,
    _dirs: [tempfile::TempDir; 2],
}

async fn pair(manifest: &str) -> Pair {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let p = owner_and_member(
        dirs[0].path(),
        Store::open_in_memory().unwrap(),
        dirs[1].path(),
        manifest,
        T,
    )
    .await
    .unwrap();
    Pair {
        owner: p.owner,
        worker: p.worker,
        work: p.work,
        program: p.program,
        _dirs: dirs,
    }
}

fn opts(rounds: u32) -> WorkOptions {
    WorkOptions {
        rounds,
        rung: None,
        data: None,
        allow_shell: true,
        approval_wait_secs: 60,
        verdict_wait_secs: 60,
        ..WorkOptions::default()
    }
}

/// Runs the rounds, collecting every event.
async fn rounds(p: &Pair, o: WorkOptions) -> (WorkSummary, Vec<WorkEvent>) {
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn(run_rounds(p.work.clone(), p.program, o, tx));
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    (task.await.unwrap().unwrap(), events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candle_rounds_search_near_the_champion_and_leave_verifiable_records() {
    let p = pair(CANDLE).await;
    let (summary, events) = rounds(&p, opts(3)).await;
    assert_eq!(summary.stopped, None, "{summary:?}");
    assert_eq!((summary.asked, summary.submitted), (3, 3));

    let corpus = btd_trainer::Corpus::synthetic(5, 65536).unwrap();
    let mut champion: Option<(u64, f64)> = None;
    for r in &summary.runs {
        assert_eq!(r.state, RunState::Submitted, "{r:?}");
        assert_eq!(r.dispatch.action, Action::RunLocal);
        // Each round starts from the champion at the time (the defaults before there is one).
        assert_eq!(r.parent_seq, champion.map(|c| c.0), "round {}", r.round);
        assert_eq!(
            r.hypothesis.keys().collect::<Vec<_>>(),
            ["lr", "warmup_frac"]
        );
        let bundle = r.bundle.as_ref().unwrap();
        assert_eq!(bundle.status, BundleStatus::Completed);
        assert_eq!(bundle.id, bundle.compute_id());
        // The checkpoint on disk is the one the bundle names, and re-evaluating it gives the
        // submitted value exactly: the owner can check the claim.
        let ckpt_bytes = std::fs::read(r.dir.join("checkpoint.safetensors")).unwrap();
        let named = bundle
            .outputs
            .iter()
            .find(|o| o.name == "checkpoint.safetensors")
            .unwrap();
        assert_eq!(named.sha256, Digest::of(&ckpt_bytes));
        let ckpt = btd_trainer::Checkpoint::from_bytes(ckpt_bytes).unwrap();
        assert_eq!(ckpt.meta().spec.hyper.lr, r.hypothesis["lr"]);
        let eval = btd_trainer::evaluate(&ckpt, &corpus, &candle_core::Device::Cpu).unwrap();
        assert_eq!(Some(eval.val_bpb), r.value, "round {}", r.round);
        // The traceability record links this packet, bundle and impact.
        let trace = r.trace.as_ref().unwrap();
        assert!(trace.validate().is_empty(), "{:?}", trace.validate());
        assert_eq!(trace.bundle, bundle.id);
        assert_eq!(trace.impact_read, r.impact.as_ref().unwrap().id);
        assert_eq!(trace.packet, r.packet.content_digest());
        assert_eq!(trace.approval_receipt, None);
        let v = r.verdict.as_ref().unwrap();
        if v.champion {
            champion = Some((v.seq, r.value.unwrap()));
        }
    }
    // Different rounds test different hypotheses.
    assert_ne!(summary.runs[0].hypothesis, summary.runs[1].hypothesis);
    assert!(
        champion.is_some(),
        "the first result beats the 8.0 baseline"
    );

    // The owner's champion carries the hypothesis of the round that made it.
    let (owner_peer, credential) = p
        .worker
        .handle
        .credential(p.program)
        .await
        .unwrap()
        .unwrap();
    let champion = KbRequest {
        program: p.program,
        credential,
        call: KbCall::Champion,
    };
    let KbResponse::Champion(Some(c)) = p.worker.handle.raw_kb(owner_peer, champion).await.unwrap()
    else {
        panic!("no champion")
    };
    let best = summary
        .runs
        .iter()
        .find(|r| r.verdict.as_ref().unwrap().seq == c.entry.seq)
        .unwrap();
    let sub = c.submission.verify_from(&p.worker.peer_id()).unwrap();
    assert_eq!(sub.hypothesis, best.hypothesis);
    assert_eq!(Some(c.entry.value), best.value);

    // Events tell the story in order for each round.
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            WorkEvent::Dispatch { .. } => "dispatch",
            WorkEvent::AwaitingApproval { .. } => "awaiting",
            WorkEvent::Round { .. } => "round",
            WorkEvent::Ran { .. } => "ran",
            WorkEvent::Verdict { .. } => "verdict",
            WorkEvent::Queued { .. } => "queued",
            WorkEvent::Recorded { .. } => "recorded",
            WorkEvent::Dataset { .. } => "dataset",
            WorkEvent::Checked { .. } => "checked",
            WorkEvent::Code { .. } => "code",
        })
        .filter(|k| *k != "checked")
        .collect();
    assert_eq!(
        kinds,
        ["dispatch", "round", "ran", "verdict", "recorded"].repeat(3)
    );
    // Every claim the owner had to check was checked, and verified (the worker is honest).
    let pending = events
        .iter()
        .filter(
            |e| matches!(e, WorkEvent::Verdict { receipt, .. } if receipt.check == Check::Pending),
        )
        .count();
    let verified = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                WorkEvent::Checked {
                    check: Check::Verified,
                    ..
                }
            )
        })
        .count();
    assert!(pending >= 1);
    assert_eq!(pending, verified);

    // The records are durable, and a later call numbers its rounds after them.
    let stored = p.work.runs(Some(p.program)).await.unwrap();
    assert_eq!(stored, summary.runs);
    let (more, _) = rounds(&p, opts(1)).await;
    assert_eq!(more.runs[0].round, 4);
    p.worker.stop().await;
    p.owner.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_rounds_wait_for_the_owners_receipt_and_link_it() {
    let p = pair(&shell_program(
        "[policy.paid]\ndefault_action = \"require_explicit_approval\"\nmax_spend_per_packet = 2.0\nmax_total_spend = 3.0",
    ))
    .await;
    let owner = p.owner.handle.clone();
    let approver = tokio::spawn(async move {
        let req = wait_for(T, "a spend request", || async {
            let list = owner.spend_requests().await.ok()?;
            list.into_iter().find(|r| r.state == "pending")
        })
        .await
        .unwrap();
        owner
            .decide_spend(req.program, req.member, req.packet.id, true, 10)
            .await
            .unwrap();
    });
    let (summary, events) = rounds(&p, opts(2)).await;
    approver.await.unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, WorkEvent::AwaitingApproval { .. })));
    // Two packets of cap 2.0 exceed max_total_spend 3.0: the second round is held.
    assert_eq!(summary.submitted, 1, "{summary:?}");
    let first = &summary.runs[0];
    assert_eq!(first.dispatch.action, Action::RunPaid);
    let receipt = first.approval.as_ref().unwrap();
    assert_eq!(receipt.approver, p.owner.peer_id().to_base58());
    assert_eq!(
        first.trace.as_ref().unwrap().approval_receipt,
        Some(receipt.id())
    );
    // The command saw the hypothesis: its metric is the parameter it was given.
    assert_eq!(first.value, Some(first.hypothesis["x"]));
    let second = &summary.runs[1];
    assert_eq!(second.state, RunState::Held);
    assert_eq!(second.dispatch.action, Action::HoldPacket);
    let why = summary.stopped.unwrap();
    assert!(why.contains("max_total_spend"), "{why}");
    p.worker.stop().await;
    p.owner.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_packets_and_unconsented_shell_commands_stop_with_a_reason() {
    let p = pair(&shell_program(
        "[policy.paid]\ndefault_action = \"deny\"\nmax_spend_per_packet = 2.0",
    ))
    .await;
    let refused = run_rounds(
        p.work.clone(),
        p.program,
        WorkOptions {
            allow_shell: false,
            ..opts(1)
        },
        mpsc::channel(4).0,
    )
    .await
    .unwrap_err();
    assert!(refused.contains("--allow-shell"), "{refused}");
    let (summary, _) = rounds(&p, opts(3)).await;
    assert_eq!(summary.submitted, 0);
    assert_eq!(summary.runs.len(), 1);
    assert_eq!(summary.runs[0].state, RunState::Held);
    let why = summary.stopped.unwrap();
    assert!(why.contains("held"), "{why}");
    let none = run_rounds(p.work.clone(), p.program, opts(0), mpsc::channel(4).0)
        .await
        .unwrap_err();
    assert!(none.contains("rounds must be"), "{none}");
    p.worker.stop().await;
    p.owner.stop().await;
}
