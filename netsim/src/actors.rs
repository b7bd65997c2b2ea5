//! The simulated people and workloads driving the nodes: members join (with a simulated human
//! approving on the owner's node) and submit results from the declared synthetic metric source;
//! non-members ask to join, are denied, and probe the KB; revoked members keep probing with their
//! revoked credential. Everything goes through the nodes' real command API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use btd::node::types::{JoinEvent, NewResult};
use btd::node::{NodeError, NodeHandle};
use btd_protocol::membership::Credential;
use btd_protocol::program::ProgramId;
use btd_protocol::wire::{KbCall, KbRequest, KbResponse};
use libp2p::PeerId;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::records::{Ack, JoinRecord, Probe, ProbeOutcome, Records};
use crate::roles::Role;
use crate::scenario::Scenario;
use crate::sim::Sim;
use crate::world::NodeIx;

/// How often an actor looks again for a node that is down.
const UP_POLL: Duration = Duration::from_millis(50);

/// State shared by every actor of a run.
pub(crate) struct Ctx {
    pub(crate) sim: Arc<Sim>,
    pub(crate) s: Scenario,
    pub(crate) seed: u64,
    pub(crate) program: ProgramId,
    pub(crate) owner: PeerId,
    /// When the owner's publish returned.
    pub(crate) t0: Instant,
    /// When the run must end.
    pub(crate) deadline: Instant,
    pub(crate) rec: Mutex<Records>,
    /// Set by the propagation tracker when node `i` knows the program.
    pub(crate) known: Vec<watch::Sender<bool>>,
    /// Set when node `i`'s revocation has completed.
    pub(crate) revoked: Vec<AtomicBool>,
    /// Set when the workload and final checks are over: probes stop.
    pub(crate) done: watch::Sender<bool>,
}

impl Ctx {
    pub(crate) fn rec(&self) -> MutexGuard<'_, Records> {
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Milliseconds since the publish.
    pub(crate) fn ms(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The node's handle, waiting while it is down (until the run's deadline).
    pub(crate) async fn up(&self, ix: NodeIx) -> Option<NodeHandle> {
        loop {
            if let Some(h) = self.sim.handle(ix) {
                return Some(h);
            }
            if Instant::now() >= self.deadline || *self.done.borrow() {
                return None;
            }
            tokio::time::sleep(UP_POLL).await;
        }
    }

    fn rng(&self, ix: NodeIx, stream: u64) -> ChaCha8Rng {
        let mut r = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6e65_7473_696d);
        r.set_stream((ix as u64) << 8 | stream);
        r
    }

    /// A member's credential (netsim probes read it like `btd` would from its store).
    pub(crate) async fn credential(&self, ix: NodeIx) -> Option<Credential> {
        let h = self.sim.handle(ix)?;
        let program = self.program;
        h.credential(program).await.ok().flatten().map(|(_, c)| c)
    }
}

/// Runs node `ix`'s part: join, then work or probe, by role.
pub(crate) async fn actor(ctx: Arc<Ctx>, ix: NodeIx) {
    let role = ctx.sim.layout.role(ix);
    let mut rng = ctx.rng(ix, 0);
    let mut known = ctx.known.get(ix).map(watch::Sender::subscribe);
    if let Some(k) = known.as_mut() {
        let wait = k.wait_for(|v| *v);
        if tokio::time::timeout_at(ctx.deadline, wait).await.is_err() {
            return;
        }
    }
    let offset = rng.gen_range(0..=ctx.s.join.spread_ms);
    tokio::time::sleep(Duration::from_millis(offset)).await;
    match role {
        Role::Worker | Role::Revoked => {
            if !join(&ctx, ix, true).await {
                return;
            }
            workload(&ctx, ix, &mut rng).await;
            if role == Role::Revoked {
                probe_loop(&ctx, ix).await;
            }
        }
        Role::NonMember => {
            // In an open program anyone who asks is approved: non-members then simply never ask.
            let ask = async {
                if ctx.s.program.membership != "open" {
                    join(&ctx, ix, false).await;
                }
            };
            tokio::join!(ask, probe_loop(&ctx, ix));
        }
        Role::Hostile => crate::hostile::actor(&ctx, ix).await,
        Role::Owner | Role::Relay | Role::Observer => {}
    }
}

enum Attempt {
    Granted,
    Denied,
    Retry(String),
}

/// Joins with retries; true once the node holds a credential.
pub(crate) async fn join(ctx: &Ctx, ix: NodeIx, approve: bool) -> bool {
    let mut last = String::from("never started");
    for attempt in 1..=ctx.s.join.attempts.max(1) {
        let Some(h) = ctx.up(ix).await else { break };
        let start = Instant::now();
        match join_once(ctx, ix, &h, approve).await {
            (Attempt::Granted, human) => {
                let latency = start.elapsed().saturating_sub(human);
                ctx.rec().joins.push(JoinRecord {
                    node: ix,
                    latency,
                    human,
                    attempts: attempt,
                });
                return true;
            }
            (Attempt::Denied, _) => {
                ctx.rec().denied.push(ix);
                return false;
            }
            (Attempt::Retry(why), _) => {
                tracing::debug!(node = ix, attempt, reason = %why, "join attempt failed");
                last = why;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    ctx.rec().join_failures.push((ix, last));
    false
}

/// One `btd join`: returns the outcome and the simulated human's delay to exclude.
async fn join_once(ctx: &Ctx, ix: NodeIx, h: &NodeHandle, approve: bool) -> (Attempt, Duration) {
    let Ok(mut rx) = h.join(ctx.program).await else {
        return (Attempt::Retry("the node stopped".into()), Duration::ZERO);
    };
    let limit = Duration::from_millis(
        3 * ctx.s.net.request_timeout_ms + ctx.s.join.approve_delay_ms + 10_000,
    );
    let give_up = (Instant::now() + limit).min(ctx.deadline);
    let mut human = Duration::ZERO;
    loop {
        let ev = match tokio::time::timeout_at(give_up, rx.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return (Attempt::Retry("the node stopped".into()), human),
            Err(_) => return (Attempt::Retry("timed out".into()), human),
        };
        tracing::debug!(node = ix, event = ?ev, "join event");
        match ev {
            JoinEvent::Code { user_code, .. } => {
                if ctx.s.program.membership == "open" && approve {
                    continue;
                }
                let shown = Instant::now();
                tokio::time::sleep(Duration::from_millis(ctx.s.join.approve_delay_ms)).await;
                let decision = decide(ctx, &user_code, approve, give_up).await;
                tracing::debug!(node = ix, ?decision, "decided");
                match decision {
                    Ok(issued) => human += issued.saturating_duration_since(shown),
                    Err(e) => return (Attempt::Retry(e), human),
                }
            }
            JoinEvent::Granted { .. } | JoinEvent::AlreadyMember { .. } => {
                return (Attempt::Granted, human)
            }
            JoinEvent::Failed { reason } if reason.contains("denied") && !approve => {
                return (Attempt::Denied, human)
            }
            JoinEvent::Failed { reason } => return (Attempt::Retry(reason), human),
        }
    }
}

/// The owner's human approves or denies a code, waiting while the owner is down. Returns when the
/// decision was issued (the start of protocol time again).
async fn decide(
    ctx: &Ctx,
    user_code: &str,
    approve: bool,
    give_up: Instant,
) -> Result<Instant, String> {
    loop {
        if let Some(owner) = ctx.sim.handle(0) {
            let issued = Instant::now();
            let code = user_code.to_string();
            let decided = if approve {
                owner.approve(code).await
            } else {
                owner.deny(code).await
            };
            match decided {
                Ok(_) => return Ok(issued),
                Err(NodeError::Stopped) => {}
                Err(e) => return Err(format!("decision refused: {e}")),
            }
        }
        if Instant::now() >= give_up {
            return Err("the owner stayed down".into());
        }
        tokio::time::sleep(UP_POLL).await;
    }
}

/// The declared synthetic metric source: a seeded random walk of `val_bpb` toward lower values.
/// Never repeats a value, so every submission is distinguishable in the owner's log.
fn next_value(ctx: &Ctx, v: f64, rng: &mut ChaCha8Rng) -> f64 {
    let w = &ctx.s.workload;
    let noise = if w.noise > 0.0 {
        rng.gen_range(-w.noise..=w.noise)
    } else {
        0.0
    };
    let mut next = v - w.step + noise;
    if next <= 0.0 {
        next = v / 2.0;
    }
    if next == v {
        next = v * (1.0 - 1e-9);
    }
    next
}

async fn workload(ctx: &Ctx, ix: NodeIx, rng: &mut ChaCha8Rng) {
    if ctx.s.workload.source == "train" {
        return crate::train::workload(ctx, ix, rng).await;
    }
    let member = ctx.sim.peer(ix).map(|p| p.to_string()).unwrap_or_default();
    let mut v = ctx.s.workload.start;
    for _ in 0..ctx.s.workload.submissions {
        v = next_value(ctx, v, rng);
        let Some(h) = ctx.up(ix).await else { break };
        let after_revoke = ctx
            .revoked
            .get(ix)
            .is_some_and(|r| r.load(Ordering::SeqCst));
        ctx.rec().issued.push((ix, v));
        let program = ctx.program;
        let t = Instant::now();
        let result = NewResult {
            value: v,
            rung_id: "cpu".into(),
            outputs: vec![],
            ..Default::default()
        };
        match h.submit(program, result).await {
            Ok(rc) => ctx.rec().acks.push(Ack {
                node: ix,
                member: member.clone(),
                value: v,
                seq: rc.seq,
                accepted: rc.accepted,
                champion: rc.champion,
                impact: rc.impact,
                duplicate: rc.duplicate,
                rtt: t.elapsed(),
                after_revoke,
            }),
            Err(e) => ctx.rec().submit_failures.push((ix, e.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(ctx.s.workload.interval_ms)).await;
    }
}

/// Probes the owner's KB until the run is done: non-members with a random or a stolen credential,
/// revoked members (once revoked) with their own.
async fn probe_loop(ctx: &Ctx, ix: NodeIx) {
    let role = ctx.sim.layout.role(ix);
    let mut done = ctx.done.subscribe();
    let mut rng = ctx.rng(ix, 1);
    let stolen_from = ctx.sim.layout.with_role(Role::Worker).first().copied();
    let mut k: u32 = 0;
    while !*done.borrow() {
        let ready = role != Role::Revoked
            || ctx
                .revoked
                .get(ix)
                .is_some_and(|r| r.load(Ordering::SeqCst));
        if ready {
            probe_once(ctx, ix, k, &mut rng, stolen_from).await;
            k += 1;
        }
        let pause = Duration::from_millis(ctx.s.checks.probe_every_ms);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = done.changed() => {}
        }
    }
}

/// One last probe by every non-member and revoked member, after the workload: the gating check
/// never rests on timing alone.
pub(crate) async fn final_probes(ctx: &Ctx) {
    let stolen_from = ctx.sim.layout.with_role(Role::Worker).first().copied();
    let revoked = |i: NodeIx| ctx.revoked.get(i).is_some_and(|r| r.load(Ordering::SeqCst));
    let probers: Vec<NodeIx> = (0..ctx.sim.layout.len())
        .filter(|&i| match ctx.sim.layout.role(i) {
            Role::NonMember => true,
            Role::Revoked => revoked(i),
            _ => false,
        })
        .collect();
    let rounds = probers.iter().map(|&ix| async move {
        let mut rng = ctx.rng(ix, 2);
        for k in 0..4 {
            probe_once(ctx, ix, k, &mut rng, stolen_from).await;
        }
    });
    futures::future::join_all(rounds).await;
}

async fn probe_once(
    ctx: &Ctx,
    ix: NodeIx,
    k: u32,
    rng: &mut ChaCha8Rng,
    stolen_from: Option<NodeIx>,
) {
    let Some(h) = ctx.sim.handle(ix) else { return };
    let (kind, credential) = if ctx.sim.layout.role(ix) == Role::Revoked {
        match ctx.credential(ix).await {
            Some(c) => ("own-revoked", c),
            None => return,
        }
    } else {
        let stolen = match stolen_from {
            Some(w) if k % 2 == 1 => ctx.credential(w).await,
            _ => None,
        };
        match stolen {
            Some(c) => ("stolen", c),
            None => {
                let mut b = [0u8; 32];
                rng.fill_bytes(&mut b);
                ("random", Credential::from_bytes(b))
            }
        }
    };
    let call = match k % 4 {
        0 => KbCall::Champion,
        1 => KbCall::Results {
            after_seq: 0,
            limit: 100,
        },
        2 => KbCall::Status,
        _ => KbCall::Program,
    };
    let request = KbRequest {
        program: ctx.program,
        credential,
        call,
    };
    let peer = ctx.owner;
    let outcome = match h.raw_kb(peer, request).await {
        Ok(KbResponse::Error(e)) => ProbeOutcome::Refused(e.code),
        Ok(other) => {
            let text = format!("{other:?}");
            ProbeOutcome::Leak(text.chars().take(200).collect())
        }
        Err(_) => ProbeOutcome::NoAnswer,
    };
    ctx.rec().probes.push(Probe {
        node: ix,
        credential: kind,
        outcome,
    });
}
