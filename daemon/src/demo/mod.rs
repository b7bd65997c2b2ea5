//! `btd demo`: the whole idea on one machine, for real. A relay, an owner and N workers run as
//! separate `btd start` processes (own homes, loopback addresses); the owner publishes a tiny candle
//! program; the workers join with device codes the demo approves as the owner; they train rounds of
//! hypotheses near the champion and submit; a live leaderboard follows the owner's KB; the payouts
//! end it. Every daemon is stopped on exit or Ctrl-C; the homes stay for a look around.

mod byo;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use btd_protocol::kb::Check;
use btd_protocol::program::ProgramId;
use clap::Args;

use crate::control::{Progress, Request};
use crate::harness::{Daemon, Launch, OnDrop, LOOPBACK_TCP, READY_WITHIN};
use crate::node::types::{JoinEvent, NodeInfo, PeerView, ProgramView, StatusView};
use crate::output::{out, CmdError};
use crate::work::{RunRecord, WorkOptions};

/// `btd demo` flags.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Where the homes go (default: a new directory under the system temp dir). Kept afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Workers (the last one knows only the relay).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
    workers: u8,
    /// Rounds per worker.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// Training steps per round (the tiny preset).
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    steps: u64,
    /// Bring your own training code instead: the example of examples/byo (a python3 trainer as
    /// the program's source bundle), proposers editing train.py, claims checked by the owner
    /// re-running them (needs python3 and unprivileged user namespaces for the sandbox).
    #[arg(long)]
    byo: bool,
    /// Where the owner serves the dashboard (its URL is printed; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http: String,
    /// After the demo, keep the daemons (and the dashboard) running until Ctrl-C.
    #[arg(long)]
    stay: bool,
}

/// The demo's program: the tiny preset on the built-in synthetic corpus, searching the learning
/// rate, warm-up and batch size; beats-champion, pool split by impact.
fn manifest(steps: u64) -> String {
    format!(
        r#"name = "demo-tiny-gpt"
objective = "Lowest validation bits-per-byte of btd's tiny byte-level GPT on the synthetic corpus in {steps} steps."
membership = "approval"
baseline = 4.5
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
steps = {steps}
seed = 7
eval_tokens = 16384

[task.dataset]
kind = "synthetic"
seed = 1
bytes = 262144

[task.search]
lr = {{ min = 5e-4, max = 1e-2, scale = "log" }}
warmup_frac = {{ min = 0.0, max = 0.2 }}
batch_size = {{ min = 8, max = 32, scale = "log" }}

[[rungs]]
id = "cpu"
label = "Any CPU"
spend_class = "local_unmetered"
hardware = "cpu"

# Every claim that would count is checked first: the owner fetches the checkpoint over the mesh and
# re-evaluates it on the validation split and on a holdout only the owner has.
[verify]
mode = "reevaluate"
max_holdout_gap = 0.25
"#
    )
}

/// Starts `btd start` (this executable) with home `dir/name`, listening on `listen` (default: TCP on
/// loopback); asked to stop when dropped.
fn start(name: &str, dir: &Path, listen: Option<&str>, extra: &[String]) -> Result<Daemon> {
    let exe = std::env::current_exe().context("cannot find the btd executable")?;
    Daemon::spawn(
        &dir.join(name),
        Launch {
            listen: listen.unwrap_or(LOOPBACK_TCP).to_string(),
            extra: extra.to_vec(),
            fresh_log: true,
            on_drop: OnDrop::Stop,
            ..Launch::new(exe)
        },
    )
}

/// `btd demo`.
pub(crate) fn run(args: &DemoArgs) -> Result<(), CmdError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CmdError::Rejected(anyhow!("cannot start the async runtime: {e}")))?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "btd-demo-{}-{}",
            std::process::id(),
            crate::clock::system_now().as_millis()
        )),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .map_err(CmdError::Rejected)?;
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let mut daemons = Vec::new();
    let outcome = rt.block_on(async {
        tokio::select! {
            r = async {
                if args.byo {
                    byo::run(args, &dir, &mut daemons).await
                } else {
                    demo(args, &dir, &mut daemons).await
                }
            } => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    if outcome.is_ok() && args.stay {
        out!("the daemons keep running (dashboard included); Ctrl-C stops them");
        let _ = rt.block_on(tokio::signal::ctrl_c());
    }
    out!("stopping the daemons...");
    drop(daemons);
    out!("homes and logs are in {}", dir.display());
    outcome.map_err(CmdError::Rejected)
}

async fn demo(args: &DemoArgs, dir: &Path, daemons: &mut Vec<Daemon>) -> Result<()> {
    let started = Instant::now();
    out!("btd demo in {}", dir.display());

    let dashboard = mesh(args.workers, &args.http, dir, daemons).await?;

    // Publish.
    let text = manifest(args.steps);
    let path = dir.join("program.toml");
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    let program: ProgramId = daemons[1]
        .call(Request::Publish {
            manifest: text,
            files: Default::default(),
        })
        .await?;
    out!("owner published {} ({})", program, path.display());
    show_dashboard(dashboard.as_deref(), program);

    // Join: each worker shows a user code; the demo approves it as the owner would.
    let workers: Vec<usize> = (2..daemons.len()).collect();
    let names = join_all(daemons, &workers, program, |_| WorkOptions {
        rounds: args.rounds,
        approval_wait_secs: 60,
        // Wait for the owner's check, so each round searches near the verified champion and the
        // records carry the final verdicts.
        verdict_wait_secs: 120,
        ..WorkOptions::default()
    })
    .await?;

    // Work, with a live leaderboard from the owner's KB.
    out!(
        "workers train {} rounds each ({} steps of the tiny model per round) and submit...",
        args.rounds,
        args.steps
    );
    let total = u64::from(args.rounds) * workers.len() as u64;
    let mut board = Board::default();
    follow(daemons, &workers, program, total, &mut board, &names).await?;

    // A doctored claim: worker-1 re-submits its first checkpoint claiming a far better value. The
    // owner fetches the checkpoint, measures it, and rejects the claim; it never counts.
    if let Some(&w) = workers.first() {
        let d = &daemons[w];
        let runs: Vec<RunRecord> = d
            .call(Request::Runs {
                program: Some(program),
            })
            .await?;
        if let Some(r) = runs.iter().find(|r| r.value.is_some()) {
            // Better than the champion by a wide margin, so the owner must check it (a claim no
            // better than the champion is settled without a check).
            let status: StatusView = daemons[1]
                .call(Request::Status {
                    program: Some(program),
                    query: Default::default(),
                })
                .await?;
            let best = status
                .champion
                .map_or(f64::INFINITY, |c| c.value)
                .min(r.value.unwrap_or(1.0));
            let fake = (best - 1.0).max(0.01);
            out!(
                "{} now submits a doctored claim: its round-{} checkpoint, claimed at val_bpb {fake:.4}",
                d.name(),
                r.round
            );
            let receipt: btd_protocol::wire::SubmitReceipt = d
                .call(Request::Submit {
                    program,
                    value: Some(fake),
                    rung_id: "cpu".into(),
                    outputs: Vec::new(),
                    checkpoint: Some(r.dir.join("checkpoint.safetensors")),
                    code: None,
                    // The receipt: wait for the owner (a queued answer would be an error here).
                    wait_secs: Some(120),
                })
                .await?;
            await_check(daemons, program, receipt.seq, &mut board, &names).await?;
        }
    }
    let s = board.refresh(&daemons[1], program, &names).await?;
    leaderboard(&s, &names, &workers, daemons, program).await?;
    out!("done in {:.0} s", started.elapsed().as_secs_f64());
    out!("to look around, start a daemon again on a home and ask it, e.g.:");
    let owner_home = daemons[1].home();
    out!("  btd start --home {} &", owner_home.display());
    out!("  btd status --home {} {program}", owner_home.display());
    if let Some(&w) = workers.first() {
        let h = daemons[w].home();
        out!(
            "  btd runs --home {} {program}   (with its daemon started)",
            h.display()
        );
        out!(
            "  btd eval {}/runs/{}/round-00001/checkpoint.safetensors",
            h.display(),
            program.short()
        );
    }
    Ok(())
}

/// Prints the program page's URL on the owner's dashboard.
fn show_dashboard(base: Option<&str>, program: ProgramId) {
    if let Some(base) = base {
        out!("dashboard {base}programs/{program}  (live while the demo runs)");
    }
}

/// Starts the mesh: a relay; the owner behind "NAT" (it listens only through a circuit on the
/// relay, as an owner at home would), serving its dashboard on `http`; `workers` workers that
/// know only the relay's address (the last one behind "NAT" too). Returns the dashboard's URL.
async fn mesh(
    workers: u8,
    http: &str,
    dir: &Path,
    daemons: &mut Vec<Daemon>,
) -> Result<Option<String>> {
    daemons.push(start("relay", dir, None, &["--relay-server".to_string()])?);
    daemons[0].ready(READY_WITHIN).await?;
    let relay_addr = daemons[0].tcp_addr().await?;
    out!("relay     {relay_addr}");
    let circuit = format!("{relay_addr}/p2p-circuit");
    daemons.push(start(
        "owner",
        dir,
        Some(&circuit),
        &[
            "--bootstrap".to_string(),
            relay_addr.clone(),
            "--http".to_string(),
            http.to_string(),
        ],
    )?);
    let owner_info = daemons[1].ready(READY_WITHIN).await?;
    // The owner announces its dashboard in its log right after its control socket answers.
    let mut dashboard = None;
    for _ in 0..50 {
        let log = daemons[1].log();
        if let Some(url) = log.split("dashboard at ").nth(1) {
            dashboard = url.split_whitespace().next().map(str::to_string);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out!(
        "owner     {} (no direct address: reachable through the relay)",
        owner_info.peer_id
    );
    for i in 1..=workers {
        let name = format!("worker-{i}");
        let natted = i == workers;
        daemons.push(start(
            &name,
            dir,
            natted.then_some(circuit.as_str()),
            &["--bootstrap".to_string(), relay_addr.clone()],
        )?);
        let d = daemons.len() - 1;
        let info = daemons[d].ready(READY_WITHIN).await?;
        out!(
            "{name:<9} {} (knows only the relay{})",
            info.peer_id,
            if natted {
                "; no direct address either"
            } else {
                ""
            }
        );
    }
    Ok(dashboard)
}

/// Each worker learns the program, joins it with the rounds `work` gives it, shows its user code,
/// and the demo approves it as the owner would (an open program needs no approval). Returns the
/// workers' names by peer id.
async fn join_all(
    daemons: &[Daemon],
    workers: &[usize],
    program: ProgramId,
    work: impl Fn(usize) -> WorkOptions,
) -> Result<BTreeMap<String, String>> {
    let mut names = BTreeMap::new();
    for &w in workers {
        let d = &daemons[w];
        crate::poll::wait_for(
            Duration::from_secs(30),
            &format!("{} to learn the program", d.name()),
            || async {
                let list: Vec<ProgramView> = d.call(Request::Programs).await.ok()?;
                list.iter().any(|p| p.id == program).then_some(())
            },
        )
        .await?;
        let mut code = None;
        crate::client::call(
            &d.socket(),
            &Request::Join {
                program,
                wait: false,
                work: Some(work(w)),
            },
            |p| {
                if let Progress::Join(JoinEvent::Code { user_code, .. }) = p {
                    code = Some(user_code.clone());
                }
            },
        )
        .await?;
        let code = code.ok_or_else(|| anyhow!("{} got no user code", d.name()))?;
        out!(
            "{} shows user code {code}; the owner runs `btd approve {code}`",
            d.name()
        );
        let said: String = daemons[1].call(Request::Approve { code }).await?;
        out!("  {said}");
        let info: NodeInfo = d.call(Request::Id).await?;
        names.insert(info.peer_id, d.name().to_string());
    }
    Ok(names)
}

/// Shows the owner's KB until its check settles result `seq` (at most 2 minutes); returns its
/// entry.
async fn await_check(
    daemons: &[Daemon],
    program: ProgramId,
    seq: u64,
    board: &mut Board,
    names: &BTreeMap<String, String>,
) -> Result<btd_protocol::kb::Entry> {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let s = board.refresh(&daemons[1], program, names).await?;
        if let Some(e) = s
            .results
            .iter()
            .find(|e| e.seq == seq && e.check != Check::Pending)
        {
            return Ok(e.clone());
        }
        if Instant::now() >= until {
            bail!("the owner did not check claim #{seq} within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Shows the owner's KB as results arrive until every worker finished its `total` rounds, the
/// owner checked every claim and the workers read the verdicts back; fails when a worker stops
/// early or after 10 minutes.
async fn follow(
    daemons: &[Daemon],
    workers: &[usize],
    program: ProgramId,
    total: u64,
    board: &mut Board,
    names: &BTreeMap<String, String>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = board.refresh(&daemons[1], program, names).await?;
        let mut finished = 0u64;
        // Claims whose verdict the worker has not read back into its run record yet (it polls
        // every second): until then its record has no traceability record of the final verdict.
        let mut unread = 0u64;
        let mut stopped = Vec::new();
        for &w in workers {
            let runs: Vec<RunRecord> = daemons[w]
                .call(Request::Runs {
                    program: Some(program),
                })
                .await?;
            finished += runs.iter().filter(|r| r.finished_at.is_some()).count() as u64;
            unread += runs
                .iter()
                .filter(|r| {
                    r.verdict
                        .as_ref()
                        .is_some_and(|v| v.check == Check::Pending)
                })
                .count() as u64;
            if let Some(r) = runs
                .iter()
                .find(|r| r.finished_at.is_some() && r.state != crate::work::RunState::Submitted)
            {
                stopped.push(format!("{}: {}", daemons[w].name(), r.note));
            }
        }
        if !stopped.is_empty() {
            bail!("a worker stopped: {}", stopped.join("; "));
        }
        if finished >= total && s.submissions >= total && s.pending == 0 && unread == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the workers did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn leaderboard(
    s: &StatusView,
    names: &BTreeMap<String, String>,
    workers: &[usize],
    daemons: &[Daemon],
    program: ProgramId,
) -> Result<()> {
    out!("");
    out!(
        "{}: {} submissions, {} accepted; the owner verified {} claims and rejected {}",
        s.name,
        s.submissions,
        s.accepted,
        s.verified,
        s.rejected
    );
    if let Some(c) = &s.champion {
        let who = names
            .get(&c.worker)
            .map_or(c.worker.as_str(), String::as_str);
        out!("champion: #{} by {who}: val_bpb {:.4}", c.seq, c.value);
    }
    out!("per worker (rung cpu):");
    for &w in workers {
        let d = &daemons[w];
        let runs: Vec<RunRecord> = d
            .call(Request::Runs {
                program: Some(program),
            })
            .await?;
        let accepted = runs
            .iter()
            .filter(|r| r.verdict.as_ref().is_some_and(|v| v.accepted))
            .count();
        let best = runs
            .iter()
            .filter_map(|r| r.value)
            .fold(f64::INFINITY, f64::min);
        let traced = runs.iter().filter(|r| r.trace.is_some()).count();
        out!(
            "  {:<9} {} rounds, {accepted} accepted (verified), {} not, best val_bpb {best:.4}, {traced} traceability records",
            d.name(),
            runs.len(),
            runs.len() - accepted
        );
    }
    // How each worker reached the owner.
    for &w in workers {
        let peers: Vec<PeerView> = daemons[w].call(Request::Peers).await?;
        if let Some(p) = peers.iter().find(|p| p.peer_id == s.owner) {
            let relayed = p
                .addresses
                .iter()
                .filter(|a| a.contains("p2p-circuit"))
                .count();
            let via = if relayed == p.addresses.len() {
                "through the relay"
            } else if relayed > 0 {
                "through the relay and over a direct connection"
            } else {
                "over a direct connection (opened after the relayed one)"
            };
            out!("{} reaches the owner {via}", daemons[w].name());
        }
    }
    out!("payouts (pool {} {}, split by impact):", s.pool, s.token);
    for (w, a) in s.payouts.iter() {
        let who = names.get(w).map_or(w, String::as_str);
        out!("  {who:<9} {a} {}", s.token);
    }
    Ok(())
}

/// The live leaderboard: each result once when it arrives, and again when the owner's check
/// settles it.
#[derive(Default)]
struct Board {
    printed: BTreeMap<u64, Check>,
}

impl Board {
    /// Reads the owner's status of `program` and shows what changed.
    async fn refresh(
        &mut self,
        owner: &Daemon,
        program: ProgramId,
        names: &BTreeMap<String, String>,
    ) -> Result<StatusView> {
        let s: StatusView = owner
            .call(Request::Status {
                program: Some(program),
                query: Default::default(),
            })
            .await?;
        self.show(&s, names);
        Ok(s)
    }

    fn show(&mut self, s: &StatusView, names: &BTreeMap<String, String>) {
        // Newest first on the page: printed in the order they happened.
        for e in s.results.iter().rev() {
            let known = self.printed.get(&e.seq);
            if known == Some(&e.check) {
                continue;
            }
            let who = names
                .get(&e.worker)
                .map_or(e.worker.as_str(), String::as_str);
            let verdict = match &e.check {
                Check::Pending => "pending: the owner is checking it".to_string(),
                Check::Failed(why) => format!("REJECTED by the owner's check: {why}"),
                Check::Verified if e.champion => {
                    format!("verified, new champion (impact {:.4})", e.impact)
                }
                Check::Verified => format!("verified, accepted (impact {:.4})", e.impact),
                Check::NotNeeded if e.accepted => "accepted".to_string(),
                Check::NotNeeded => "not better than the champion".to_string(),
            };
            if known.is_some() {
                out!("  #{:<3} {who:<9} -> {verdict}", e.seq);
            } else {
                out!("  #{:<3} {who:<9} val_bpb {:.4}  {verdict}", e.seq, e.value);
            }
            self.printed.insert(e.seq, e.check.clone());
        }
    }
}
