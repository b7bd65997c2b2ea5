//! The owner's side of the node: decode → owner core → persist → respond.
//!
//! Every owner rule lives in [`btd_protocol::owner`]; this module hands it the inbound requests and
//! the owner's commands with `now` and the node's RNG, then carries out its [`Effects`]: the
//! records are written in one transaction, and only once they are durable does the reply go out
//! and the grants get pushed. A failed write answers "unavailable" and rebuilds the program from
//! what is durable, so memory never runs ahead of disk for long.

use btd_protocol::kb::{Check, Entry, Verdict};
use btd_protocol::membership::DeviceCode;
use btd_protocol::owner::{Effects, ProgramOwner, Push, Record};
use btd_protocol::program::ProgramId;
use btd_protocol::wire::{
    ErrorCode, ErrorReply, KbCall, KbRequest, KbResponse, MembershipRequest, MembershipResponse,
};
use libp2p::PeerId;

use super::dispatch::MembershipTag;
use super::handle::{NodeError, Reply};
use super::types::{MembersView, PendingView, StatusView};
use super::Node;
use crate::net::Responder;
use crate::store;

/// Most results returned in an owner's status view.
const STATUS_RESULTS: usize = 1000;

pub(crate) fn err(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
    ErrorReply {
        code,
        message: message.into(),
    }
}

/// Carries out the core's effects: persist (or wait for earlier writes), then `send` the reply,
/// push the grants and wake the verifier. On a failed write, `send`s `unavailable(reason)` instead
/// and reloads the programs the records belonged to.
fn execute<R: Send + 'static>(
    node: &mut Node,
    fx: Effects<R>,
    unavailable: impl FnOnce(String) -> R + Send + 'static,
    send: impl FnOnce(&mut Node, R) + Send + 'static,
) {
    let Effects {
        persist,
        after_durable,
        reply,
        push,
        claims_ready,
    } = fx;
    if persist.is_empty() && !after_durable {
        send(node, reply);
        deliver(node, push);
        if claims_ready {
            node.claims_ready.notify_one();
        }
        return;
    }
    let mut programs: Vec<ProgramId> = persist.iter().map(Record::program).collect();
    programs.dedup();
    let store = node.store.clone();
    node.after(async move {
        let res = if persist.is_empty() {
            store.barrier().await
        } else {
            store
                .write(move |tx| store::put_records(tx, &persist))
                .await
        };
        Box::new(move |node: &mut Node| match res {
            Ok(()) => {
                send(node, reply);
                deliver(node, push);
                if claims_ready {
                    node.claims_ready.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store the owner's records; reloading from the store");
                send(node, unavailable(e.to_string()));
                for p in programs {
                    reload(node, p);
                }
            }
        })
    });
}

/// Pushes sealed grants to their requesters.
fn deliver(node: &mut Node, push: Vec<Push>) {
    for Push { peer, delivery } in push {
        let tag = MembershipTag::Push(delivery.program, delivery.device_code);
        node.net
            .request_membership(peer, MembershipRequest::PushGrant(delivery), tag);
    }
}

fn respond(node: &mut Node, channel: Responder<MembershipResponse>, resp: MembershipResponse) {
    if !node.net.respond(channel, resp) {
        tracing::debug!("membership response dropped: the requester went away");
    }
}

fn respond_kb(node: &mut Node, channel: Responder<KbResponse>, resp: KbResponse) {
    if !node.net.respond(channel, resp) {
        tracing::debug!("KB response dropped: the requester went away");
    }
}

/// Inbound membership request for a program this node may own (a grant pushed to this node as
/// a worker goes to `worker.rs` instead).
pub(super) fn on_membership_request(
    node: &mut Node,
    peer: PeerId,
    req: MembershipRequest,
    channel: Responder<MembershipResponse>,
) {
    let now = node.clock.now();
    let fx = node.owners.on_membership(peer, req, now, &mut node.rng);
    if let MembershipResponse::Authorization(a) = &fx.reply {
        tracing::info!(peer = %peer, user_code = %a.user_code, "join requested");
    }
    execute(
        node,
        fx,
        |e| {
            MembershipResponse::Error(err(
                ErrorCode::Unavailable,
                format!("the owner could not store the membership ({e}); retry later"),
            ))
        },
        move |node, resp| respond(node, channel, resp),
    );
}

/// Inbound KB request: membership-gated against the Noise-authenticated peer id.
pub(super) fn on_kb_request(
    node: &mut Node,
    peer: PeerId,
    req: KbRequest,
    channel: Responder<KbResponse>,
) {
    let now = node.clock.now();
    let program = req.program;
    let submitting = matches!(req.call, KbCall::Submit(_) | KbCall::SubmitCode { .. });
    let fx = node.owners.on_kb(peer, req, now);
    match &fx.reply {
        KbResponse::Submitted(r) if !r.duplicate => {
            tracing::info!(program = %program, peer = %peer, seq = r.seq, accepted = r.accepted, check = r.check.label(), "submission");
        }
        KbResponse::Error(e) if submitting || e.code != ErrorCode::Invalid => {
            tracing::info!(program = %program, peer = %peer, code = ?e.code, reason = %e.message, "KB request refused");
        }
        _ => {}
    }
    execute(
        node,
        fx,
        |e| {
            KbResponse::Error(err(
                ErrorCode::Unavailable,
                format!("the owner could not store the result ({e}); retry later"),
            ))
        },
        move |node, resp| {
            if submitting {
                node.metrics.submission(&resp);
            }
            respond_kb(node, channel, resp)
        },
    );
}

/// After a failed write, rebuilds an owned program from what is durable.
fn reload(node: &mut Node, program: ProgramId) {
    let store = node.store.clone();
    node.after(async move {
        let snap = store.read(store::load_snapshot).await;
        Box::new(move |node: &mut Node| {
            let (Ok(snap), Some(k)) = (snap, node.known.get(&program)) else {
                return;
            };
            match node
                .owners
                .restore(&k.view, k.signed.clone(), snap.records_of(program))
            {
                Ok(o) => node.owners.insert(o),
                Err(e) => tracing::error!(program = %program, error = %e, "cannot reload the KB"),
            }
        })
    });
}

/// Drops expired join state.
pub(super) fn on_tick(node: &mut Node) {
    node.owners.tick(node.clock.now());
}

/// `btd approve` / `btd deny`: the member is stored before the owner hears it is done and before
/// the grant is pushed.
pub(super) fn decide(node: &mut Node, user_code: &str, approve: bool, reply: Reply<String>) {
    let now = node.clock.now();
    match node.owners.decide(user_code, approve, now, &mut node.rng) {
        Ok(fx) => execute(
            node,
            fx.map(Ok),
            |e| {
                Err(NodeError::Unavailable(format!(
                    "cannot store the member: {e}"
                )))
            },
            move |_, r| {
                let _ = reply.send(r);
            },
        ),
        Err(e) => {
            let _ = reply.send(Err(e.into()));
        }
    }
}

/// `btd revoke`: permanent, durable before the reply.
pub(super) fn revoke(node: &mut Node, program: ProgramId, member: &str, reply: Reply<()>) {
    match node.owners.revoke(&program, member, node.clock.now()) {
        Ok(fx) => execute(
            node,
            fx.map(Ok),
            |e| {
                Err(NodeError::Unavailable(format!(
                    "cannot store the revocation: {e}"
                )))
            },
            move |_, r| {
                let _ = reply.send(r);
            },
        ),
        Err(e) => {
            let _ = reply.send(Err(e.into()));
        }
    }
}

/// A pushed grant was acknowledged (or failed: then the poll fallback delivers it).
pub(super) fn on_push_result(node: &mut Node, program: ProgramId, code: DeviceCode, ok: bool) {
    node.owners.on_push_result(&program, &code, ok);
}

/// `btd members`: members and the codes waiting for approval.
pub(super) fn members(node: &Node, program: &ProgramId) -> Result<MembersView, NodeError> {
    let owned = node
        .owners
        .get(program)
        .ok_or(btd_protocol::owner::OwnerError::NotOwned(*program))?;
    let now = node.clock.now();
    Ok(MembersView {
        program: *program,
        members: owned.registry().members().map(Into::into).collect(),
        pending: owned
            .registry()
            .pending(now)
            .map(|p| PendingView {
                user_code: p.user_code.to_string(),
                peer: p.member.to_string(),
                expires_in: p.expires_at.millis_since(now) / 1000,
            })
            .collect(),
    })
}

/// The owner's own status view of a program (read from its state, not over the mesh).
pub(super) fn status(owned: &ProgramOwner, me: &str) -> StatusView {
    let s = owned.kb_status();
    StatusView {
        program: s.program,
        name: s.name,
        metric: owned.program().criteria.metric.clone(),
        direction: Some(owned.program().criteria.direction),
        owner: me.to_string(),
        source: "own store".to_string(),
        members: s.members,
        submissions: s.submissions,
        accepted: s.accepted,
        pending: s.pending,
        verified: s.verified,
        rejected: s.rejected,
        champion: s.champion,
        payouts: s.payouts,
        pool: s.pool,
        token: s.token,
        results: owned.recent_results(STATUS_RESULTS),
    }
}

/// Applies the owner's verdict, stores it, then answers (durable before the reply).
pub(super) fn resolve(
    node: &mut Node,
    program: ProgramId,
    seq: u64,
    verdict: Verdict,
    reply: Reply<Entry>,
) {
    let fx = match node
        .owners
        .on_verdict(&program, seq, verdict, node.clock.now())
    {
        Ok(fx) => fx,
        Err(e) => {
            let _ = reply.send(Err(e.into()));
            return;
        }
    };
    let entry = &fx.reply;
    match &entry.check {
        Check::Failed(why) => {
            tracing::info!(program = %program, seq, worker = %entry.worker, value = entry.value, reason = %why, "claim rejected")
        }
        _ => {
            tracing::info!(program = %program, seq, worker = %entry.worker, value = entry.value, champion = entry.champion, "claim verified")
        }
    }
    execute(
        node,
        fx.map(Ok),
        |e| {
            Err(NodeError::Unavailable(format!(
                "cannot store the verdict: {e}"
            )))
        },
        move |_, r| {
            let _ = reply.send(r);
        },
    );
}
