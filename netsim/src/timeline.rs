//! The scenario's timeline (faults and owner actions at fixed times after the publish), the
//! propagation tracker, and the convergence check that follows a heal.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use btd_protocol::kb::Entry;
use btd_protocol::wire::{KbCall, KbRequest, KbResponse};
use futures::future::join_all;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::actors::Ctx;
use crate::records::Convergence;
use crate::roles::Role;
use crate::scenario::Fault;
use crate::world::{NodeIx, Shape};

/// How often the convergence check asks the members again.
const CONVERGE_POLL: Duration = Duration::from_millis(250);

/// Runs the timeline; convergence checks started by heals go into `checks`.
pub(crate) async fn run(ctx: Arc<Ctx>, checks: &mut JoinSet<()>) {
    for ev in ctx.s.timeline.clone() {
        tokio::time::sleep_until(ctx.t0 + Duration::from_millis(ev.at_ms)).await;
        let what = apply(&ctx, &ev.fault, checks).await;
        tracing::info!(at_ms = ctx.ms(), %what, "timeline");
        ctx.rec().timeline.push((ctx.ms(), what));
    }
}

fn select(ctx: &Ctx, sel: &str) -> Vec<NodeIx> {
    // Selectors were validated with the scenario.
    ctx.sim.layout.select(sel).unwrap_or_default()
}

fn pairs(ctx: &Ctx, a: &str, b: &str) -> Vec<(NodeIx, NodeIx)> {
    let (a, b) = (select(ctx, a), select(ctx, b));
    a.iter()
        .flat_map(|&x| b.iter().filter(move |&&y| y != x).map(move |&y| (x, y)))
        .collect()
}

async fn apply(ctx: &Arc<Ctx>, fault: &Fault, checks: &mut JoinSet<()>) -> String {
    let world = &ctx.sim.world;
    match fault {
        Fault::Crash { nodes, silent } => {
            for ix in select(ctx, nodes) {
                ctx.sim.crash(ix, *silent).await;
            }
            format!(
                "crash {nodes} ({})",
                if *silent { "silent" } else { "loud" }
            )
        }
        Fault::Restart { nodes } => {
            let mut failed = Vec::new();
            for ix in select(ctx, nodes) {
                if let Err(e) = ctx.sim.start(ix).await {
                    failed.push(format!("{e:#}"));
                }
            }
            if failed.is_empty() {
                format!("restart {nodes}")
            } else {
                format!("restart {nodes} FAILED: {}", failed.join("; "))
            }
        }
        Fault::Partition { groups } => {
            let g: Vec<Vec<NodeIx>> = groups.iter().map(|s| select(ctx, s)).collect();
            world.partition(&g);
            format!("partition {groups:?}")
        }
        Fault::Heal => {
            world.heal();
            let c = ctx.clone();
            let label = format!("heal@{}ms", ctx.ms());
            checks.spawn(async move {
                let r = converge(&c, label, false).await;
                c.rec().convergence.push(r);
            });
            "heal".into()
        }
        Fault::Blackhole { a, b } | Fault::Unblackhole { a, b } => {
            let on = matches!(fault, Fault::Blackhole { .. });
            for (x, y) in pairs(ctx, a, b) {
                world.blackhole(x, y, on);
            }
            format!(
                "{} {a} <-> {b}",
                if on { "blackhole" } else { "unblackhole" }
            )
        }
        Fault::Shape {
            a,
            b,
            latency_ms,
            jitter_ms,
            bandwidth_kib,
        } => {
            let shape = Shape {
                latency: Duration::from_millis(*latency_ms),
                jitter: Duration::from_millis(*jitter_ms),
                bandwidth: (*bandwidth_kib > 0).then(|| bandwidth_kib * 1024),
            };
            match (a, b) {
                (Some(a), Some(b)) => {
                    for (x, y) in pairs(ctx, a, b) {
                        world.set_shape(x, y, Some(shape));
                    }
                }
                _ => world.set_default_shape(shape),
            }
            format!("shape {latency_ms} ms ± {jitter_ms} ms, {bandwidth_kib} KiB/s")
        }
        Fault::Reset { a, b } => {
            let bs = b.as_deref().map(|b| select(ctx, b)).unwrap_or_default();
            let n = world.reset(&select(ctx, a), &bs);
            format!("reset {n} connections")
        }
        Fault::Revoke { nodes } => {
            let mut done = 0;
            for ix in select(ctx, nodes) {
                if revoke(ctx, ix).await {
                    if let Some(r) = ctx.revoked.get(ix) {
                        r.store(true, Ordering::SeqCst);
                    }
                    done += 1;
                }
            }
            format!("revoke {nodes} ({done} revoked)")
        }
    }
}

/// Revokes member `ix` once it has joined (a revocation of a half-joined member would only test
/// the join path).
async fn revoke(ctx: &Ctx, ix: NodeIx) -> bool {
    let Some(member) = ctx.sim.peer(ix).map(|p| p.to_string()) else {
        return false;
    };
    while !ctx.rec().joins.iter().any(|j| j.node == ix) {
        if Instant::now() >= ctx.deadline || ctx.rec().join_failures.iter().any(|(i, _)| *i == ix) {
            return false;
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    }
    let Some(owner) = ctx.up(0).await else {
        return false;
    };
    let program = ctx.program;
    owner.revoke(program, member).await.is_ok()
}

/// Polls every node's program list until each knows the program; records the times.
pub(crate) async fn track_propagation(ctx: Arc<Ctx>, poll: Duration) {
    let n = ctx.sim.layout.len();
    let limit = ctx.t0 + Duration::from_secs(ctx.s.checks.propagation_within_s);
    let mut pending: Vec<NodeIx> = (0..n).collect();
    let (program, t0) = (ctx.program, ctx.t0);
    while !pending.is_empty() && Instant::now() < limit.min(ctx.deadline) {
        let asks = pending.iter().map(|&ix| {
            let h = ctx.sim.handle(ix);
            async move {
                let list = h?.programs().await.ok()?;
                // The node answered now: it learned the program at most this long after t0.
                let at = t0.elapsed();
                list.iter().any(|p| p.id == program).then_some((ix, at))
            }
        });
        let seen: Vec<(NodeIx, Duration)> = join_all(asks).await.into_iter().flatten().collect();
        for &(ix, at) in &seen {
            if let Some(slot) = ctx.rec().discovered.get_mut(ix) {
                *slot = Some(at);
            }
            if let Some(k) = ctx.known.get(ix) {
                let _ = k.send(true);
            }
        }
        pending.retain(|ix| !seen.iter().any(|(s, _)| s == ix));
        tokio::time::sleep(poll).await;
    }
}

async fn owner_champion(ctx: &Ctx) -> Option<Option<Entry>> {
    let h = ctx.sim.handle(0)?;
    let program = ctx.program;
    let summary = btd_protocol::wire::StatusQuery::summary();
    let v = h.status_page(Some(program), summary).await.ok()?;
    Some(v.champion)
}

async fn member_champion(ctx: &Ctx, ix: NodeIx) -> Option<Option<Entry>> {
    let h = ctx.sim.handle(ix)?;
    let credential = ctx.credential(ix).await?;
    let request = KbRequest {
        program: ctx.program,
        credential,
        call: KbCall::Champion,
    };
    let peer = ctx.owner;
    match h.raw_kb(peer, request).await {
        Ok(KbResponse::Champion(c)) => Some(c.map(|c| c.entry)),
        other => {
            tracing::debug!(node = ix, answer = ?other.map(|_| ()), "no champion view");
            None
        }
    }
}

/// Waits until every live worker that has joined sees the owner's champion over the mesh, each
/// member polled on its own. `exact`: the same entry as the owner's (used at the end, when nothing
/// changes any more); otherwise at least as recent as the owner's champion when the check started
/// (used after a heal, while work goes on).
pub(crate) async fn converge(ctx: &Ctx, label: String, exact: bool) -> Convergence {
    let start = Instant::now();
    let limit = (start + Duration::from_secs(ctx.s.checks.converge_within_s)).min(ctx.deadline);
    let members: Vec<NodeIx> = ctx
        .sim
        .layout
        .with_role(Role::Worker)
        .into_iter()
        .filter(|&ix| ctx.sim.handle(ix).is_some() && ctx.rec().joins.iter().any(|j| j.node == ix))
        .collect();
    let target = loop {
        if let Some(t) = owner_champion(ctx).await {
            break Some(t);
        }
        if Instant::now() >= limit {
            break None;
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    };
    let sees = |seen: &Option<Entry>| match (seen, &target) {
        (_, None) => false,
        (seen, Some(t)) if exact => seen == t,
        (_, Some(None)) => true,
        (Some(seen), Some(Some(t))) => seen.seq >= t.seq,
        (None, Some(Some(_))) => false,
    };
    let one = |ix: NodeIx| {
        let sees = &sees;
        async move {
            let mut last = "no answer".to_string();
            while Instant::now() < limit {
                match member_champion(ctx, ix).await {
                    Some(seen) if sees(&seen) => return Ok(start.elapsed()),
                    Some(Some(e)) => last = format!("saw seq {}", e.seq),
                    Some(None) => last = "saw no champion".into(),
                    None => last = "no answer".into(),
                }
                if ctx.sim.handle(ix).is_none() {
                    // Crashed during the check: not a live member any more.
                    return Ok(Duration::ZERO);
                }
                tokio::time::sleep(CONVERGE_POLL).await;
            }
            Err(format!("{} ({last})", ctx.sim.layout.label(ix)))
        }
    };
    let results = join_all(members.iter().map(|&ix| one(ix))).await;
    let lagging: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    let within = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .max()
        .unwrap_or(Duration::ZERO);
    tracing::debug!(%label, members = members.len(), ?within, ?lagging, "convergence");
    Convergence {
        label,
        within: lagging.is_empty().then_some(within),
        lagging,
        members: members.len(),
    }
}
