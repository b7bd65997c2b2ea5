//! Bring your own training code on real in-process nodes: the bundle moves to members by digest,
//! a proposer's change becomes the round's code, the owner re-runs it before it counts, a member
//! that has not opted in to other members' code builds on the bundle instead, and any result's
//! tree can be checked out again. Uses the example of `examples/byo/` (python3, standard library).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use btd::node::types::PublishFiles;
use btd::store::Store;
use btd::testkit::{join_approved, spawn_node, wait_known, TestNode, TestNodeOptions};
use btd::work::{run_rounds, RunState, WorkContext, WorkEvent, WorkOptions, WorkSummary};
use btd_protocol::kb::Check;
use btd_protocol::program::ProgramId;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(60);

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/byo")
}

async fn node(home: &Path, bootstrap: Option<&TestNode>) -> (TestNode, Store) {
    let store = Store::open_in_memory().unwrap();
    let n = spawn_node(
        store.clone(),
        TestNodeOptions {
            home: Some(home.to_path_buf()),
            bootstrap: bootstrap
                .and_then(TestNode::dial_addr)
                .into_iter()
                .collect(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (n, store)
}

/// A member of `program` with its worker loop's context.
async fn member(owner: &TestNode, program: ProgramId, home: &Path) -> (TestNode, Arc<WorkContext>) {
    let (m, store) = node(home, Some(owner)).await;
    wait_known(&m.handle, program, T).await.unwrap();
    join_approved(&owner.handle, &m.handle, program, T)
        .await
        .unwrap();
    let work = WorkContext::new(
        m.handle.clone(),
        store,
        home,
        btd::config::Config::default_rungs(),
        Default::default(),
    );
    (m, work)
}

async fn rounds(
    work: &Arc<WorkContext>,
    program: ProgramId,
    opts: WorkOptions,
) -> (WorkSummary, Vec<WorkEvent>) {
    let (tx, mut rx) = mpsc::channel(256);
    let task = tokio::spawn(run_rounds(work.clone(), program, opts, tx));
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    (task.await.unwrap().unwrap(), events)
}

fn with_proposer(rounds: u32, allow_peer_code: bool) -> WorkOptions {
    WorkOptions {
        rounds,
        allow_shell: true,
        allow_peer_code,
        proposer: Some(format!(
            "python3 {}",
            example().join("propose.py").display()
        )),
        proposer_timeout_secs: 60,
        approval_wait_secs: 10,
        verdict_wait_secs: 120,
        ..WorkOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_rounds_are_rerun_by_the_owner_peer_code_is_opt_in_and_any_tree_checks_out() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (owner, _) = node(dirs[0].path(), None).await;
    let manifest = std::fs::read_to_string(example().join("program.toml")).unwrap();

    // The source must be the bundle the manifest names.
    let wrong = dirs[0].path().join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::write(wrong.join("train.py"), "print('val_bpb: 0.1')\n").unwrap();
    let e = owner
        .handle
        .publish_with(
            manifest.clone(),
            PublishFiles {
                source: Some(wrong),
                ..PublishFiles::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("packs to sha256"), "{e}");
    let program = owner
        .handle
        .publish_with(
            manifest,
            PublishFiles {
                source: Some(example().join("bundle")),
                holdout: Some(example().join("holdout.txt")),
                ..PublishFiles::default()
            },
        )
        .await
        .unwrap();

    // Member A: two rounds written by the proposer; it fetches the bundle from the owner, and
    // the owner re-runs each claim before it counts.
    let (a, work_a) = member(&owner, program, dirs[1].path()).await;
    let (summary, events) = rounds(&work_a, program, with_proposer(2, false)).await;
    assert_eq!(summary.submitted, 2, "{summary:?}");
    let checks: Vec<Check> = events
        .iter()
        .filter_map(|e| match e {
            WorkEvent::Checked { check, .. } => Some(check.clone()),
            _ => None,
        })
        .collect();
    assert!(
        checks.iter().all(|c| *c == Check::Verified) && !checks.is_empty(),
        "{checks:?}"
    );
    let champion = owner
        .handle
        .status(Some(program))
        .await
        .unwrap()
        .champion
        .unwrap();
    let view = a.handle.code(program, champion.seq).await.unwrap().unwrap();
    assert_eq!(view.entry.worker, a.peer_id().to_string());
    assert!(!view.code.patch.is_empty());
    // The round that made it kept its code beside its outputs, and its bundle (what the
    // traceability record links) names the code by digest.
    let run = summary
        .runs
        .iter()
        .find(|r| r.verdict.as_ref().is_some_and(|v| v.seq == champion.seq))
        .unwrap();
    let kept: btd_protocol::wire::CodeHypothesis =
        serde_json::from_slice(&std::fs::read(run.dir.join("code.json")).unwrap()).unwrap();
    assert_eq!(kept, view.code);
    assert!(run
        .bundle
        .as_ref()
        .unwrap()
        .outputs
        .iter()
        .any(|o| { o.name == btd_protocol::wire::CODE_OUTPUT && o.sha256 == view.code.digest() }));
    assert!(run.trace.is_some());

    // With the opt-in, B builds on A's champion, in the sandbox. (First: while A's result is the
    // only champion there is; whatever B's round scores, every later champion holds A's code.)
    let (b, work_b) = member(&owner, program, dirs[2].path()).await;
    let (_, events) = rounds(&work_b, program, with_proposer(1, true)).await;
    let code = events
        .iter()
        .find_map(|e| match e {
            WorkEvent::Code {
                parent, sandbox, ..
            } => Some((*parent, *sandbox)),
            _ => None,
        })
        .unwrap();
    assert_eq!(code, (Some(champion.seq), true));

    // Without the opt-in, B does not run other members' code: it builds on the bundle, and says
    // why.
    let (summary, events) = rounds(&work_b, program, with_proposer(1, false)).await;
    let note = events.iter().find_map(|e| match e {
        WorkEvent::Code { parent, note, .. } => Some((*parent, note.clone())),
        _ => None,
    });
    let (parent, note) = note.unwrap();
    assert_eq!(parent, None);
    assert!(note.unwrap().contains("--allow-peer-code"));
    assert_eq!(summary.runs[0].state, RunState::Submitted, "{summary:?}");

    // B checks out A's champion: the bundle plus the chain, digest-checked.
    let out = dirs[3].path().join("tree");
    let v = work_b
        .checkout(program, Some(champion.seq), out.clone())
        .await
        .unwrap();
    assert_eq!(v.tree, view.code.tree);
    let train = std::fs::read_to_string(out.join("train.py")).unwrap();
    let shipped = std::fs::read_to_string(example().join("bundle/train.py")).unwrap();
    assert_ne!(train, shipped);
    assert_eq!(
        std::fs::read(out.join("prepare.py")).unwrap(),
        std::fs::read(example().join("bundle/prepare.py")).unwrap()
    );
    drop((a, b));
}
