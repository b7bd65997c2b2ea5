//! The `hostile` scenario's attackers, the owner-latency probe and the late program. Each hostile
//! node is a real btd node plus the test kit's attacker client (`btd::testkit::hostile`): it runs
//! one attack from `hostile.attacks` while honest members train and claim.

use std::time::Duration;

use btd::node::types::NewResult;
use btd::node::NodeHandle;
use btd::testkit::hostile::{flood_announcements, malformed_frames, Proto, RawPeer};
use btd_protocol::membership::{Credential, MAX_PENDING_PER_PEER};
use btd_protocol::trace::Output;
use btd_protocol::wire::{
    BlobResponse, Claim, ErrorCode, ErrorReply, KbCall, KbRequest, MembershipResponse,
    MAX_MESSAGE_BYTES,
};
use btd_protocol::Digest;
use futures::future::join_all;
use libp2p::identity::Keypair;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::actors::{self, Ctx};
use crate::records::AttackRecord;
use crate::roles::Role;
use crate::world::NodeIx;

/// How often the digest thief looks for a verified champion to copy.
const THIEF_POLL: Duration = Duration::from_millis(300);

impl Ctx {
    /// The attack node `ix` runs.
    pub(crate) fn attack_of(&self, ix: NodeIx) -> String {
        let attacks = &self.s.hostile.attacks;
        let k = self
            .sim
            .layout
            .with_role(Role::Hostile)
            .iter()
            .position(|&h| h == ix)
            .unwrap_or(0);
        attacks
            .get(k % attacks.len().max(1))
            .cloned()
            .unwrap_or_default()
    }
}

/// Runs node `ix`'s attack and records what it did.
pub(crate) async fn actor(ctx: &Ctx, ix: NodeIx) {
    let attack = ctx.attack_of(ix);
    tracing::debug!(at_ms = ctx.ms(), %attack, "attack starts");
    let mut rec = AttackRecord {
        node: ix,
        attack: attack.clone(),
        ..AttackRecord::default()
    };
    match attack.as_str() {
        "digest_thief" => digest_thief(ctx, ix, &mut rec).await,
        "verdict_poisoner" => verdict_poisoner(ctx, ix, &mut rec).await,
        "join_flood" => join_flood(ctx, ix, &mut rec).await,
        "malformed" => malformed(ctx, ix, &mut rec).await,
        "announce_flood" => announce_flood(ctx, ix, &mut rec).await,
        "submission_spam" => submission_spam(ctx, ix, &mut rec).await,
        _ => rec.detail = "unknown attack".into(),
    }
    tracing::info!(at_ms = ctx.ms(), attack = %rec.attack, sent = rec.sent, "attack done");
    ctx.rec().attacks.push(rec);
}

/// Submits `result` as member `ix`, recording it as issued (so the log checks know it was sent).
async fn submit(ctx: &Ctx, ix: NodeIx, h: &NodeHandle, result: NewResult, rec: &mut AttackRecord) {
    ctx.rec().issued.push((ix, result.value));
    rec.sent += 1;
    match h.submit(ctx.program, result).await {
        Ok(rc) => {
            rec.answered += 1;
            rec.seqs.push(rc.seq);
        }
        Err(e) => {
            if rec.detail.is_empty() {
                rec.detail = format!("refused: {e}");
            }
        }
    }
}

/// A claim on a checkpoint the member never trained, held to the program's step budget and seed
/// (so it reaches the fetch).
fn made_up_claim(ctx: &Ctx, checkpoint: Digest) -> (Vec<Output>, Claim) {
    let output = Output {
        name: "checkpoint.safetensors".into(),
        sha256: checkpoint,
    };
    let claim = Claim {
        checkpoint,
        checkpoint_bytes: 4096,
        seed: 3,
        steps: ctx.s.workload.steps,
        device: "cpu".into(),
        btd_version: env!("CARGO_PKG_VERSION").into(),
    };
    (vec![output], claim)
}

/// Copies the verified champion's checkpoint digest (seed, steps) into its own claim with a better
/// value and another device, hoping the owner re-evaluates the champion's file and credits it.
async fn digest_thief(ctx: &Ctx, ix: NodeIx, rec: &mut AttackRecord) {
    if !actors::join(ctx, ix, true).await {
        rec.detail = "could not join".into();
        return;
    }
    let mut done = ctx.done.subscribe();
    let mut stolen = Vec::new();
    while !*done.borrow() && Instant::now() < ctx.deadline && rec.sent < 3 {
        let Some(h) = ctx.up(ix).await else { return };
        if let Ok(Some(view)) = h.champion(ctx.program).await {
            let verified = view.entry.check == btd_protocol::kb::Check::Verified;
            let sub = view.submission.verify().ok();
            let me = ctx.sim.peer(ix).map(|p| p.to_string()).unwrap_or_default();
            let wanted = verified && view.entry.worker != me;
            if let (true, Some(sub)) = (wanted, sub) {
                let Some(claim) = sub.value.claim.clone() else {
                    continue;
                };
                if !stolen.contains(&claim.checkpoint) {
                    stolen.push(claim.checkpoint);
                    let result = NewResult {
                        value: view.entry.value * 0.999,
                        rung_id: "cpu".into(),
                        outputs: sub.value.outputs.clone(),
                        claim: Some(Claim {
                            device: "gpu: NVIDIA H100 (tolerance, please)".into(),
                            ..claim
                        }),
                        ..Default::default()
                    };
                    submit(ctx, ix, &h, result, rec).await;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(THIEF_POLL) => {}
            _ = done.changed() => {}
        }
    }
    if rec.sent == 0 {
        rec.detail = "no verified champion to copy".into();
    }
}

/// Serves every artifact request with an error of nearly a whole message, full of terminal
/// escapes, and claims a great value on a checkpoint: the owner's fetch fails with that error,
/// which must not become an unbounded verdict reason.
async fn verdict_poisoner(ctx: &Ctx, ix: NodeIx, rec: &mut AttackRecord) {
    if !actors::join(ctx, ix, true).await {
        rec.detail = "could not join".into();
        return;
    }
    let Some(h) = ctx.up(ix).await else { return };
    let mut message = "\u{1b}[2J\u{1b}[31mowned\n".to_string();
    message.push_str(&"A".repeat(MAX_MESSAGE_BYTES - 4096));
    let poison = BlobResponse::Error(ErrorReply {
        code: ErrorCode::NotFound,
        message,
    });
    if let Err(e) = h.poison_blobs(Some(poison)).await {
        rec.detail = format!("cannot poison: {e}");
        return;
    }
    for k in 0..2u8 {
        let (outputs, claim) = made_up_claim(ctx, Digest::of(&[b'p', k]));
        let result = NewResult {
            value: 0.5 + f64::from(k) * 0.01,
            rung_id: "cpu".into(),
            outputs,
            claim: Some(claim),
            ..Default::default()
        };
        submit(ctx, ix, &h, result, rec).await;
    }
}

/// Many throwaway identities, each asking the owner for more join codes than it may hold.
async fn join_flood(ctx: &Ctx, ix: NodeIx, rec: &mut AttackRecord) {
    let owner = ctx.owner;
    let addr = ctx.sim.nodes.first().and_then(|n| n.dial_addr());
    let program = ctx.program;
    let timeout = Duration::from_millis(ctx.s.net.request_timeout_ms);
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ ix as u64);
    let keys: Vec<Keypair> = (0..ctx.s.hostile.join_identities)
        .map(|_| {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            Keypair::ed25519_from_bytes(b).unwrap_or_else(|_| Keypair::generate_ed25519())
        })
        .collect();
    let asks = keys.into_iter().map(|key| {
        let addr = addr.clone();
        let transport = ctx.sim.transport(ix);
        async move {
            let Ok(raw) = RawPeer::spawn(key.clone(), &transport, timeout) else {
                return (0, 0);
            };
            let (mut sent, mut codes) = (0, 0);
            for _ in 0..MAX_PENDING_PER_PEER + 2 {
                sent += 1;
                if let Ok(MembershipResponse::Authorization(_)) =
                    raw.ask_to_join(&key, owner, addr.clone(), program).await
                {
                    codes += 1;
                }
            }
            (sent, codes)
        }
    });
    for (sent, codes) in join_all(asks).await {
        rec.sent += sent;
        rec.answered += codes;
    }
    rec.detail = format!(
        "{} identities asked {} times, got {} codes",
        ctx.s.hostile.join_identities, rec.sent, rec.answered
    );
}

/// Malformed frames of every kind on every protocol, from a stranger.
async fn malformed(ctx: &Ctx, ix: NodeIx, rec: &mut AttackRecord) {
    let timeout = Duration::from_millis(ctx.s.net.request_timeout_ms);
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ 0x6d61_6c66 ^ ix as u64);
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    let Ok(key) = Keypair::ed25519_from_bytes(b) else {
        return;
    };
    let Ok(raw) = RawPeer::spawn(key, &ctx.sim.transport(ix), timeout) else {
        rec.detail = "cannot start the raw peer".into();
        return;
    };
    let valid = btd_protocol::wire::encode(&KbRequest {
        program: ctx.program,
        credential: Credential::from_bytes([7; 32]),
        call: KbCall::Status,
    })
    .unwrap_or_default();
    let frames = malformed_frames(&valid);
    let addr = ctx.sim.nodes.first().and_then(|n| n.dial_addr());
    for i in 0..ctx.s.hostile.malformed {
        let (_, bytes) = &frames[i % frames.len()];
        let proto = Proto::ALL[(i / frames.len()) % Proto::ALL.len()];
        let mut bytes = bytes.clone();
        if i % 5 == 4 && !bytes.is_empty() {
            let at = rng.gen_range(0..bytes.len());
            bytes[at] ^= 0x55;
        }
        rec.sent += 1;
        if raw
            .send_frame(ctx.owner, addr.clone(), proto, bytes)
            .await
            .is_ok()
        {
            rec.answered += 1;
        }
    }
    rec.detail = format!("{} malformed frames, {} answered", rec.sent, rec.answered);
}

/// Many validly signed programs from the attacker's key, on gossip.
async fn announce_flood(ctx: &Ctx, ix: NodeIx, rec: &mut AttackRecord) {
    let Some(h) = ctx.up(ix).await else { return };
    let Some(node) = ctx.sim.nodes.get(ix) else {
        return;
    };
    let base = ctx
        .s
        .program
        .manifest("flood", &crate::scenario::Workload::default());
    let n = ctx.s.hostile.announcements;
    rec.sent = n;
    rec.answered = flood_announcements(&h, &node.key, n, |i| {
        base.replace("netsim-flood", &format!("flood-{ix}-{i}"))
    })
    .await;
    rec.detail = format!("{} of {n} announcements published", rec.answered);
}

/// A member submitting as fast as it can: results that claim made-up checkpoints, none better than
/// the baseline (nothing for the owner to check, only its log to grow).
async fn submission_spam(ctx: &Ctx, ix: NodeIx, rec: &mut AttackRecord) {
    if !actors::join(ctx, ix, true).await {
        rec.detail = "could not join".into();
        return;
    }
    let Some(h) = ctx.up(ix).await else { return };
    let baseline = ctx.s.program.baseline.unwrap_or(8.0);
    for i in 0..ctx.s.hostile.spam {
        let (outputs, claim) = made_up_claim(ctx, Digest::of(format!("spam-{i}").as_bytes()));
        let result = NewResult {
            value: baseline + 1.0 + i as f64 * 1e-3,
            rung_id: "cpu".into(),
            outputs,
            claim: Some(claim),
            ..Default::default()
        };
        submit(ctx, ix, &h, result, rec).await;
    }
    rec.detail = format!("{} results, {} recorded", rec.sent, rec.answered);
}

/// An honest observer (else a worker) asks the owner for its KB status every
/// `hostile.probe_every_ms` until the run is done (refused: it is no member; the round trip is what
/// counts).
pub(crate) async fn latency_probe(ctx: std::sync::Arc<Ctx>) {
    let layout = &ctx.sim.layout;
    let Some(ix) = layout
        .with_role(Role::Observer)
        .first()
        .copied()
        .or_else(|| layout.with_role(Role::Worker).first().copied())
    else {
        return;
    };
    let mut done = ctx.done.subscribe();
    let pause = Duration::from_millis(ctx.s.hostile.probe_every_ms.max(10));
    while !*done.borrow() {
        if let Some(h) = ctx.sim.handle(ix) {
            let request = KbRequest {
                program: ctx.program,
                credential: Credential::from_bytes([9; 32]),
                call: KbCall::Status,
            };
            let t = Instant::now();
            let rtt = h.raw_kb(ctx.owner, request).await.ok().map(|_| t.elapsed());
            if rtt.is_none_or(|d| d > Duration::from_millis(500)) {
                tracing::debug!(at_ms = ctx.ms(), ?rtt, "slow owner answer");
            }
            ctx.rec().owner_rtts.push(rtt);
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = done.changed() => {}
        }
    }
}

/// After the attacks: the owner publishes a new program; every honest worker and observer must
/// learn it and join it (approved).
pub(crate) async fn late_program(ctx: &Ctx) {
    let Some(owner) = ctx.up(0).await else { return };
    let manifest = ctx
        .s
        .program
        .manifest("late", &crate::scenario::Workload::default());
    let program = match owner.publish(manifest).await {
        Ok(p) => p,
        Err(e) => {
            ctx.rec()
                .late
                .push((0, Err(format!("publish failed: {e}"))));
            return;
        }
    };
    let t0 = Instant::now();
    let limit = Duration::from_secs(ctx.s.checks.propagation_within_s);
    let honest: Vec<NodeIx> = (0..ctx.sim.layout.len())
        .filter(|&i| matches!(ctx.sim.layout.role(i), Role::Worker | Role::Observer))
        .collect();
    let joins = honest.iter().map(|&ix| {
        let owner = owner.clone();
        async move {
            let Some(h) = ctx.sim.handle(ix) else {
                return (ix, Err("down".to_string()));
            };
            let joined = async {
                btd::testkit::wait_known(&h, program, limit).await?;
                btd::testkit::join_approved(&owner, &h, program, limit).await
            };
            (
                ix,
                joined
                    .await
                    .map(|_| t0.elapsed())
                    .map_err(|e| e.to_string()),
            )
        }
    });
    let results = join_all(joins).await;
    ctx.rec().late.extend(results);
}
