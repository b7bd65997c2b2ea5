//! One scenario run: boot the nodes, publish, let the actors and the timeline play, check the
//! invariants, and build the report.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use btd::node::types::StatusView;
use btd::store::Store;
use futures::future::join_all;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::actors::{self, Ctx};
use crate::check::{self, Evidence};
use crate::records::Records;
use crate::report::{self, Durations, Memory, Probes, Report, Stats, Submissions, TrafficSummary};
use crate::roles::Role;
use crate::scenario::Scenario;
use crate::sim::Sim;
use crate::timeline;
use crate::world::Shape;

/// How often boot and propagation look at the nodes again. Propagation times are exact to this.
fn poll_interval(nodes: usize) -> Duration {
    Duration::from_millis(if nodes <= 120 { 10 } else { 25 })
}

/// The seed to use: `NETSIM_SEED` if set, else the scenario's.
pub fn effective_seed(s: &Scenario) -> Result<u64> {
    match std::env::var("NETSIM_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("NETSIM_SEED={v:?} is not an unsigned integer")),
        Err(_) => Ok(s.seed),
    }
}

/// Runs `s` with `seed` and returns its report (a failed invariant is a report with
/// `passed == false`; an error means the run itself could not finish, e.g. past its deadline).
pub async fn run(s: &Scenario, seed: u64) -> Result<Report> {
    let limit = Duration::from_secs(s.deadline_s);
    match tokio::time::timeout(limit, run_inner(s, seed)).await {
        Ok(r) => r.with_context(|| format!("scenario {} (seed {seed})", s.name)),
        Err(_) => Err(anyhow!(
            "scenario {} did not finish within {} s (seed {seed}; replay with NETSIM_SEED={seed})",
            s.name,
            s.deadline_s
        )),
    }
}

async fn run_inner(s: &Scenario, seed: u64) -> Result<Report> {
    let wall = Instant::now();
    let deadline = wall + Duration::from_secs(s.deadline_s);
    let baseline = report::proc_status_mib("VmRSS:");
    let sim = Arc::new(Sim::build(s, seed)?);
    let n = sim.layout.len();
    sim.world.set_default_shape(Shape {
        latency: Duration::from_millis(s.net.latency_ms),
        jitter: Duration::from_millis(s.net.jitter_ms),
        bandwidth: (s.net.bandwidth_kib > 0).then(|| s.net.bandwidth_kib * 1024),
    });
    if s.net.max_connections > 0 {
        let servers: Vec<usize> = (0..n)
            .filter(|&i| matches!(sim.layout.role(i), Role::Owner | Role::Relay))
            .collect();
        sim.world
            .limit_connections(Some(s.net.max_connections), &servers);
    }
    for ix in 0..n {
        sim.start(ix).await?;
    }
    wait_connected(&sim, deadline).await?;
    let boot = wall.elapsed();
    tracing::info!(
        nodes = n,
        boot_ms = boot.as_millis() as u64,
        "all nodes connected"
    );
    // The gossip mesh forms on heartbeats (GRAFT), which no command can observe: give it a fixed
    // number of them, as the scenario says.
    tokio::time::sleep(Duration::from_millis(s.net.warmup_ms)).await;

    let owner = sim
        .handle(0)
        .ok_or_else(|| anyhow!("the owner is not running"))?;
    let manifest = s.program.manifest(&s.name, &s.workload);
    let program = owner
        .publish(manifest)
        .await
        .map_err(|e| anyhow!("publish failed: {e}"))?;
    let t0 = Instant::now();
    let ctx = Arc::new(Ctx {
        sim: sim.clone(),
        s: s.clone(),
        seed,
        program,
        owner: sim.peer(0).ok_or_else(|| anyhow!("no owner"))?,
        t0,
        deadline,
        rec: Mutex::new(Records {
            discovered: vec![None; n],
            ..Records::default()
        }),
        known: (0..n).map(|_| watch::channel(false).0).collect(),
        revoked: (0..n).map(|_| AtomicBool::new(false)).collect(),
        done: watch::channel(false).0,
    });

    let monitor = tokio::spawn(monitor(sim.clone()));
    let sampler = tokio::spawn(sample_connections(ctx.clone()));
    let tracker = tokio::spawn(timeline::track_propagation(ctx.clone(), poll_interval(n)));
    let mut actors = JoinSet::new();
    for ix in 0..n {
        if matches!(
            sim.layout.role(ix),
            Role::Worker | Role::Revoked | Role::NonMember | Role::Hostile
        ) {
            actors.spawn(actors::actor(ctx.clone(), ix));
        }
    }
    let hostile = s.nodes.hostile > 0;
    let probe = hostile.then(|| tokio::spawn(crate::hostile::latency_probe(ctx.clone())));
    let mut checks = JoinSet::new();
    timeline::run(ctx.clone(), &mut checks).await;
    // Members finish their workload; probers run until `done`.
    let workers: Vec<usize> = (0..n).filter(|&i| sim.layout.role(i).is_member()).collect();
    wait_workers_done(&ctx, &workers).await;
    tracing::info!(at_ms = ctx.ms(), "workload done");
    if hostile {
        crate::hostile::late_program(&ctx).await;
        tracing::info!(at_ms = ctx.ms(), "late program joined");
    }
    while checks.join_next().await.is_some() {}
    let last = timeline::converge(&ctx, "end".into(), true).await;
    tracing::info!(at_ms = ctx.ms(), within = ?last.within, "final convergence");
    ctx.rec().convergence.push(last);
    actors::final_probes(&ctx).await;
    ctx.done.send_replace(true);
    let _ = sampler.await;
    sample_now(&ctx);
    while actors.join_next().await.is_some() {}
    let _ = tracker.await;
    monitor.abort();
    if let Some(p) = probe {
        let _ = p.await;
    }
    let served = served_status(&ctx).await;
    let held = if hostile {
        Some(held(&ctx).await)
    } else {
        None
    };
    tracing::info!(at_ms = ctx.ms(), "checks done");
    let run_ms = t0.elapsed();

    // Teardown: crash every node, then read the owner's durable log from its file.
    sim.crash_all().await;
    let (log, verdicts) = owner_log(&sim, program).await?;
    let parsed =
        btd_protocol::program::Program::from_toml(&s.program.manifest(&s.name, &s.workload))
            .map_err(|e| anyhow!("manifest: {e}"))?;

    let mut rec = std::mem::take(&mut *ctx.rec());
    rec.held = held.map(|mut h| {
        h.owner_db_bytes = sim.owner_db().map_or(0, |p| db_bytes(&p));
        h
    });
    let invariants = check::all(&Evidence {
        rec: &rec,
        sim: &sim,
        program: &parsed,
        log: &log,
        verdicts: &verdicts,
        served: served.as_ref(),
        spec: &s.hostile,
        max_connections: s.checks.max_connections_per_node,
    });
    let peak = report::proc_status_mib("VmHWM:");
    let w = &s.workload;
    Ok(Report {
        scenario: s.name.clone(),
        seed,
        nodes: n,
        workload: if w.source == "train" {
            format!(
                "real candle training of the tiny model ({} steps, {} results per member); {} fake-metric and {} val-trainer adversaries; the owner verifies every claim that would count",
                w.steps, w.submissions, s.nodes.fake_metric, s.nodes.val_trainers
            )
        } else {
            format!(
                "declared synthetic metric source: seeded random walk of val_bpb from {} (step −{}, noise ±{}), {} results per member every {} ms; no training runs",
                w.start, w.step, w.noise, w.submissions, w.interval_ms
            )
        },
        durations: Durations {
            boot_ms: boot.as_millis() as u64,
            run_ms: run_ms.as_millis() as u64,
            total_ms: wall.elapsed().as_millis() as u64,
        },
        propagation: Stats::of(rec.discovered.iter().flatten().copied()),
        join: Stats::of(rec.joins.iter().map(|j| j.latency)),
        submit_rtt: Stats::of(rec.acks.iter().map(|a| a.rtt)),
        submissions: Submissions {
            issued: rec.issued.len(),
            acked: rec.acks.len(),
            failed: rec.submit_failures.len(),
            duplicate_receipts: rec.acks.iter().filter(|a| a.duplicate).count(),
            log_entries: log.len(),
        },
        traffic: TrafficSummary::of(&sim.world),
        memory: Memory {
            baseline_mib: baseline,
            peak_mib: peak,
            per_node_mib: (peak - baseline).max(0.0) / n as f64,
        },
        convergence: rec.convergence.clone(),
        connections: rec.connections.clone(),
        probes: Probes::of(&rec),
        timeline: rec.timeline.clone(),
        passed: invariants.iter().all(|i| i.ok),
        invariants,
    })
}

/// Waits until every node has at least one identified peer.
async fn wait_connected(sim: &Sim, deadline: Instant) -> Result<()> {
    let n = sim.layout.len();
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() {
        let asks = pending.iter().map(|&ix| async move {
            let peers = sim.handle(ix)?.peers().await.ok()?;
            peers.iter().any(|p| p.agent.is_some()).then_some(ix)
        });
        let ok: Vec<usize> = join_all(asks).await.into_iter().flatten().collect();
        pending.retain(|ix| !ok.contains(ix));
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = pending.iter().map(|&i| sim.layout.label(i)).collect();
            return Err(anyhow!("nodes never connected: {}", names.join(", ")));
        }
        tokio::time::sleep(poll_interval(n)).await;
    }
    Ok(())
}

/// Waits until every member has issued its workload (or given up) and, in training workloads, the
/// owner has settled its claims; or the deadline.
async fn wait_workers_done(ctx: &Ctx, members: &[usize]) {
    let expected = ctx.s.workload.submissions;
    loop {
        let finished = {
            let rec = ctx.rec();
            members.iter().all(|&ix| {
                let failed_join = rec.join_failures.iter().any(|(i, _)| *i == ix);
                let issued = rec.issued.iter().filter(|(i, _)| *i == ix).count();
                let answered = rec.acks.iter().filter(|a| a.node == ix).count()
                    + rec.submit_failures.iter().filter(|(i, _)| *i == ix).count();
                // Training workloads: also every claim settled by the owner's check.
                let settled = rec.claims.iter().filter(|c| c.node == ix).all(|c| {
                    c.check
                        .as_ref()
                        .is_some_and(|k| *k != btd_protocol::kb::Check::Pending)
                });
                failed_join || (issued >= expected && answered >= expected && settled)
            })
        };
        if finished || Instant::now() >= ctx.deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the owner and the nodes hold at the end of a hostile run (the database size is read after
/// the crash, from the file).
async fn held(ctx: &Ctx) -> crate::records::Held {
    let mut held = crate::records::Held::default();
    if let Some(owner) = ctx.up(0).await {
        if let Ok(m) = owner.members(ctx.program).await {
            held.pending_codes = m.pending.len();
        }
    }
    for ix in 0..ctx.sim.layout.len() {
        let Some(h) = ctx.sim.handle(ix) else {
            continue;
        };
        let Ok(list) = h.programs().await else {
            continue;
        };
        if list.len() > held.max_known.0 {
            held.max_known = (list.len(), ctx.sim.layout.label(ix));
        }
        if ctx.sim.layout.role(ix) != Role::Hostile {
            let flood = list.iter().filter(|p| p.name.starts_with("flood-")).count();
            held.flood_known = held.flood_known.max(flood);
        }
    }
    held
}

/// Bytes of a SQLite database with its WAL and shared-memory files.
fn db_bytes(path: &std::path::Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(std::path::PathBuf::from(p)).ok()
        })
        .map(|m| m.len())
        .sum()
}

async fn served_status(ctx: &Ctx) -> Option<StatusView> {
    let h = ctx.up(0).await?;
    let program = ctx.program;
    h.status_page(Some(program), btd_protocol::wire::StatusQuery::summary())
        .await
        .ok()
}

async fn owner_log(
    sim: &Sim,
    program: btd_protocol::program::ProgramId,
) -> Result<(Vec<btd::store::SubmissionRow>, Vec<btd::store::VerdictRow>)> {
    let path = sim
        .owner_db()
        .ok_or_else(|| anyhow!("the owner has no database file"))?;
    let store = Store::open(&path).map_err(|e| anyhow!("reopen {}: {e}", path.display()))?;
    let snap = store
        .read(btd::store::load_snapshot)
        .await
        .map_err(|e| anyhow!("read the owner's log: {e}"))?;
    let rows = store
        .read(move |conn| btd::store::load_submissions(conn, program))
        .await
        .map_err(|e| anyhow!("read the owner's log: {e}"))?;
    let verdicts = snap
        .verdicts
        .into_iter()
        .filter(|v| v.program == program)
        .collect();
    Ok((rows, verdicts))
}

/// Samples open connections per node until the run is done.
async fn sample_connections(ctx: Arc<Ctx>) {
    let mut done = ctx.done.subscribe();
    loop {
        sample_now(&ctx);
        tokio::select! {
            _ = tokio::time::sleep(crate::records::Connections::EVERY) => {}
            _ = done.wait_for(|d| *d) => return,
        }
    }
}

fn sample_now(ctx: &Ctx) {
    let per = ctx.sim.world.open_connections_per_node();
    let at = ctx.ms();
    let server = |ix| matches!(ctx.sim.layout.role(ix), Role::Owner | Role::Relay);
    ctx.rec()
        .connections
        .sample(&per, at, server, |ix| ctx.sim.layout.label(ix));
}

/// Logs the state of the simulated network every second (at debug level).
async fn monitor(sim: Arc<Sim>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (mut out, mut inn, mut opened) = (0u64, 0u64, 0u64);
        for i in 0..sim.world.len() {
            let t = sim.world.traffic(i);
            out += t.bytes_out;
            inn += t.bytes_in;
            opened += t.connections;
        }
        let per = sim.world.open_connections_per_node();
        let head: Vec<usize> = per.iter().take(8).copied().collect();
        let max = per.iter().max().copied().unwrap_or(0);
        let mean = per.iter().sum::<usize>() / per.len().max(1);
        tracing::debug!(
            ?head,
            max,
            mean,
            connections = sim.world.open_connections(),
            pairs = sim.world.connected_pairs(),
            opened = opened / 2,
            sent_mib = out >> 20,
            undelivered_kib = out.saturating_sub(inn) >> 10,
            rss_mib = report::proc_status_mib("VmRSS:") as u64,
            "network"
        );
    }
}
