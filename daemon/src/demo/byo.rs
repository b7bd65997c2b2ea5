//! `btd demo --byo`: bring your own training code, on one machine, for real. The owner publishes
//! the example program of `examples/byo/` (a python3 byte n-gram trainer as the source bundle,
//! `train.py` editable, an owner-only holdout); worker-1 runs rounds whose code a scripted proposer
//! writes; worker-2 then builds on worker-1's champion (other members' code: it runs in the
//! sandbox); the owner re-runs every claim before it counts. Then worker-1 submits a doctored
//! claim (its own code, a better number) that the re-run rejects, worker-2 runs a proposer that
//! edits a file that is not editable and the round is refused, and the ledger shows the lineage.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use btd_protocol::kb::Check;
use btd_protocol::program::ProgramId;
use btd_protocol::wire::{CodeView, LedgerItem, SubmitReceipt};

use super::{await_check, follow, join_all, leaderboard, mesh, Board, DemoArgs};
use crate::control::Request;
use crate::harness::Daemon;
use crate::output::out;
use crate::work::{RunRecord, RunState, WorkOptions};

/// The example, compiled in so the demo runs from the binary alone.
const FILES: [(&str, &[u8]); 6] = [
    (
        "bundle/train.py",
        include_bytes!("../../../examples/byo/bundle/train.py"),
    ),
    (
        "bundle/prepare.py",
        include_bytes!("../../../examples/byo/bundle/prepare.py"),
    ),
    (
        "bundle/data/train.txt",
        include_bytes!("../../../examples/byo/bundle/data/train.txt"),
    ),
    (
        "bundle/data/val.txt",
        include_bytes!("../../../examples/byo/bundle/data/val.txt"),
    ),
    (
        "holdout.txt",
        include_bytes!("../../../examples/byo/holdout.txt"),
    ),
    (
        "propose.py",
        include_bytes!("../../../examples/byo/propose.py"),
    ),
];
const PROPOSE_BAD: &[u8] = include_bytes!("../../../examples/byo/propose_bad.py");
/// The example's manifest (its `sha256` is the packed bundle's; a test keeps them equal).
const PROGRAM: &str = include_str!("../../../examples/byo/program.toml");

/// Writes the example under `dir`.
fn write_example(dir: &Path) -> Result<()> {
    let all = FILES.iter().copied().chain([
        ("propose_bad.py", PROPOSE_BAD),
        ("program.toml", PROGRAM.as_bytes()),
    ]);
    for (name, bytes) in all {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `btd demo --byo`.
pub(super) async fn run(args: &DemoArgs, dir: &Path, daemons: &mut Vec<Daemon>) -> Result<()> {
    let started = Instant::now();
    out!("btd demo --byo in {}", dir.display());
    if btd_trainer::shell::sandbox_probe().is_err() || which("python3").is_none() {
        bail!(
            "the byo demo needs python3 and a sandbox (unshare --net --map-root-user): {}",
            btd_trainer::shell::sandbox_probe()
                .err()
                .unwrap_or_else(|| "python3 is not on PATH".into())
        );
    }
    let dashboard = mesh(args.workers.max(2), &args.http, dir, daemons).await?;
    let ex = dir.join("byo");
    write_example(&ex)?;

    // Publish: the bundle's digest must be the manifest's.
    let bundle = ex.join("bundle");
    let bytes =
        crate::source::bundle_bytes(&bundle, btd_protocol::program::DEFAULT_MAX_ARTIFACT_BYTES)
            .map_err(|e| anyhow!(e))?;
    let sha = btd_protocol::Digest::of(&bytes);
    let program: ProgramId = daemons[1]
        .call(Request::Publish {
            manifest: PROGRAM.to_string(),
            files: crate::node::types::PublishFiles {
                source: Some(bundle.clone()),
                holdout: Some(ex.join("holdout.txt")),
                data: None,
            },
        })
        .await?;
    out!(
        "owner published {program}: bundle {} ({} bytes; train.py editable), holdout kept by the owner",
        sha.short(),
        bytes.len()
    );
    super::show_dashboard(dashboard.as_deref(), program);

    // Worker-1 first, then worker-2 on worker-1's champion: the lineage crosses members.
    let propose = format!("python3 {}", ex.join("propose.py").display());
    let work = |_| WorkOptions {
        rounds: args.rounds,
        allow_shell: true,
        allow_peer_code: true,
        proposer: Some(propose.clone()),
        proposer_timeout_secs: 60,
        approval_wait_secs: 60,
        verdict_wait_secs: 120,
        ..WorkOptions::default()
    };
    let (w1, w2) = (2usize, 3usize);
    let mut board = Board::default();
    let mut names = BTreeMap::new();
    for w in [w1, w2] {
        out!(
            "{} joins with a proposer ({} rounds; the owner re-runs each claim)...",
            daemons[w].name(),
            args.rounds
        );
        names.extend(join_all(daemons, &[w], program, work).await?);
        let total = u64::from(args.rounds) * (w - 1) as u64;
        follow(
            daemons,
            &[w1, w2][..w - 1],
            program,
            total,
            &mut board,
            &names,
        )
        .await?;
    }

    // A doctored claim: worker-1 submits its first result's code again, claiming a value that
    // would beat the champion. The owner re-runs it, measures the real value, and rejects it.
    let ledger = read_ledger(&daemons[1], program).await?;
    let w1_id = names
        .iter()
        .find(|(_, n)| *n == daemons[w1].name())
        .map(|(id, _)| id.clone())
        .unwrap_or_default();
    let first = ledger
        .iter()
        .find(|i| i.entry.worker == w1_id)
        .ok_or_else(|| anyhow!("worker-1 has no result in the ledger"))?;
    let view: Option<CodeView> = daemons[1]
        .call(Request::Code {
            program,
            seq: first.entry.seq,
        })
        .await?;
    let view = view.ok_or_else(|| anyhow!("result {} carries no code", first.entry.seq))?;
    let status: crate::node::types::StatusView = daemons[1]
        .call(Request::Status {
            program: Some(program),
            query: Default::default(),
        })
        .await?;
    let best = status.champion.map_or(first.entry.value, |c| c.value);
    let fake = best - 0.25;
    out!(
        "{} now submits a doctored claim: the code of its result #{}, claimed at val_bpb {fake:.4}",
        daemons[w1].name(),
        first.entry.seq
    );
    let receipt: SubmitReceipt = daemons[w1]
        .call(Request::Submit {
            program,
            value: Some(fake),
            rung_id: "cpu".into(),
            outputs: Vec::new(),
            checkpoint: None,
            code: Some(view.code),
            // The receipt: wait for the owner (a queued answer would be an error here).
            wait_secs: Some(120),
        })
        .await?;
    let settled = await_check(daemons, program, receipt.seq, &mut board, &names).await?;
    if !matches!(settled.check, Check::Failed(_)) {
        bail!("the owner's re-run did not reject the doctored claim: {settled:?}");
    }

    // A proposer that edits the evaluation (prepare.py, not editable): the round is refused
    // before anything runs or is submitted.
    let bad = format!("python3 {}", ex.join("propose_bad.py").display());
    out!(
        "{} runs a proposer that edits prepare.py (not editable)...",
        daemons[w2].name()
    );
    let bad_round = WorkOptions {
        rounds: 1,
        allow_shell: true,
        allow_peer_code: true,
        proposer: Some(bad),
        proposer_timeout_secs: 60,
        verdict_wait_secs: 0,
        ..WorkOptions::default()
    };
    // The worker's loop may still be winding down after its last verdict: one loop per program
    // runs at a time, so ask again until it has.
    crate::poll::wait_for(
        Duration::from_secs(60),
        &format!("{}'s worker loop to finish", daemons[w2].name()),
        || async {
            daemons[w2]
                .call::<serde_json::Value>(Request::Join {
                    program,
                    wait: true,
                    work: Some(bad_round.clone()),
                })
                .await
                .ok()
        },
    )
    .await?;
    let runs: Vec<RunRecord> = daemons[w2]
        .call(Request::Runs {
            program: Some(program),
        })
        .await?;
    match runs.iter().max_by_key(|r| r.round) {
        Some(r) if r.state == RunState::Failed && r.note.contains("not editable") => {
            out!("  round {} refused: {}", r.round, r.note)
        }
        other => bail!("the edit of a non-editable file was not refused: {other:?}"),
    }

    // The ledger: who built on whom, and why.
    let ledger = read_ledger(&daemons[1], program).await?;
    out!("");
    out!("the hypothesis ledger (btd ledger {program}):");
    let mut crossed = 0;
    for i in &ledger {
        let who = names
            .get(&i.entry.worker)
            .map_or(i.entry.worker.as_str(), String::as_str);
        let parent = i.code.as_ref().and_then(|c| c.parent);
        let on = match parent {
            Some(p) => {
                let by = ledger
                    .iter()
                    .find(|x| x.entry.seq == p)
                    .map(|x| x.entry.worker.as_str());
                if by.is_some_and(|b| b != i.entry.worker) {
                    crossed += 1;
                }
                format!(
                    "on #{p} ({})",
                    by.and_then(|b| names.get(b)).map_or("?", String::as_str)
                )
            }
            None => "on the bundle".into(),
        };
        let rationale = i
            .code
            .as_ref()
            .and_then(|c| c.rationale.lines().next())
            .unwrap_or("");
        out!(
            "  #{:<3} {who:<9} {on:<22} val_bpb {:.4}  {:<9} {rationale}",
            i.entry.seq,
            i.entry.value,
            i.entry.check.label()
        );
    }
    if crossed == 0 {
        bail!("no worker built on another worker's result");
    }
    out!("{crossed} results built on another member's code");
    let s: crate::node::types::StatusView = daemons[1]
        .call(Request::Status {
            program: Some(program),
            query: Default::default(),
        })
        .await?;
    leaderboard(&s, &names, &[w1, w2], daemons, program).await?;
    out!("done in {:.0} s", started.elapsed().as_secs_f64());
    out!(
        "the example is in {}; `btd checkout --home {} {program} DIR` writes the champion's tree",
        ex.display(),
        daemons[1].home().display()
    );
    Ok(())
}

/// The owner's whole ledger (the demo's is small).
async fn read_ledger(owner: &Daemon, program: ProgramId) -> Result<Vec<LedgerItem>> {
    #[derive(serde::Deserialize)]
    struct Page {
        items: Vec<LedgerItem>,
    }
    let p: Page = owner
        .call(Request::Ledger {
            program,
            after_seq: 0,
            limit: btd_protocol::wire::MAX_LEDGER_PAGE,
        })
        .await?;
    Ok(p.items)
}

/// The path of `exe` on `PATH`.
fn which(exe: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(exe))
            .find(|p| p.is_file())
    })
}
