//! The owner's side of the node: decode → owner core → persist → respond.
//!
//! Every owner rule lives in [`btd_protocol::owner`]; this module hands it the inbound requests and
//! the owner's commands with `now` and the node's RNG, then carries out its [`Effects`]: the
//! records are written in one transaction, and only once they are durable does the reply go out
//! and the grants get pushed. A failed write answers "unavailable" and rebuilds the program from
//! what is durable, so memory never runs ahead of disk for long.

use btd_protocol::kb::{Check, Entry, Verdict};
use btd_protocol::membership::DeviceCode;
use std::collections::HashMap;

use btd_protocol::owner::{
    submissions_of, CheckedSubmission, Effects, LedgerRead, ProgramOwner, Push, Record,
};
use btd_protocol::program::ProgramId;
use btd_protocol::signed::Signed;
use btd_protocol::wire::{
    ErrorCode, ErrorReply, KbRequest, KbResponse, MembershipRequest, MembershipResponse,
    Submission, SubmitOutcome,
};
use btd_protocol::wire::{ProgramAnnouncement, StatusQuery, VerifiedProgram};
use libp2p::PeerId;

use super::dispatch::MembershipTag;
use super::handle::{NodeError, Reply};
use super::types::{ClaimJob, MembersView, PendingView, StatusView};
use super::Node;
use crate::net::Responder;
use crate::store;

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
        read: _,
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
    // Queued now, in the order the core made the records (KB entries must be stored in seq
    // order), not when the future below is first polled.
    let durable = node.store.write_in_order(move |tx| {
        if persist.is_empty() {
            Ok(()) // a barrier: durable once every earlier write is
        } else {
            store::put_records(tx, &persist)
        }
    });
    node.after(async move {
        let res = durable.await;
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

/// Inbound KB request: membership-gated against the Noise-authenticated peer id. A member's
/// submission has its signature checked first on the blocking pool, at most one check per core at
/// once, so the node task only applies the KB rules (in the order the checks finish).
pub(super) fn on_kb_request(
    node: &mut Node,
    peer: PeerId,
    req: KbRequest,
    channel: Responder<KbResponse>,
) {
    let member = |node: &Node| {
        node.owners
            .get(&req.program)
            .is_some_and(|o| o.registry().verify(&req.credential, &peer).is_ok())
    };
    let signed: Vec<Signed<Submission>> = submissions_of(&req.call).into_iter().cloned().collect();
    if signed.is_empty() || !member(node) {
        return answer_kb(node, peer, req, Vec::new(), channel);
    }
    // A batch is checked in one blocking task, in order; batches and single results from many
    // members are checked in parallel, up to one task per core.
    let permits = node.signature_checks.clone();
    node.after(async move {
        let checked = match permits.acquire_owned().await {
            Ok(permit) => tokio::task::spawn_blocking(move || {
                let _permit = permit;
                signed
                    .iter()
                    .map_while(|s| CheckedSubmission::check(&peer, s).ok())
                    .collect()
            })
            .await
            .unwrap_or_default(),
            // Closed only at shutdown: the core checks them itself.
            Err(_) => Vec::new(),
        };
        move |node: &mut Node| answer_kb(node, peer, req, checked, channel)
    });
}

/// Applies a KB request to the owner core (`checked`: its submission's signature, already
/// checked; the core checks it itself otherwise) and answers once the effects are durable.
fn answer_kb(
    node: &mut Node,
    peer: PeerId,
    req: KbRequest,
    checked: Vec<CheckedSubmission>,
    channel: Responder<KbResponse>,
) {
    let now = node.clock.now();
    let program = req.program;
    let submitting = !submissions_of(&req.call).is_empty();
    let mut fx = node.owners.on_kb_checked(peer, req, checked, now);
    if let Some(read) = fx.read.take() {
        let fallback = fx.reply;
        complete_read(node, read, fallback, move |node, resp| {
            respond_kb(node, channel, resp)
        });
        return;
    }
    match &fx.reply {
        KbResponse::Submitted(r) if !r.duplicate => {
            tracing::info!(program = %program, peer = %peer, seq = r.seq, accepted = r.accepted, check = r.check.label(), "submission");
        }
        KbResponse::SubmittedBatch(list) => {
            let recorded = list
                .iter()
                .filter(|o| matches!(o, SubmitOutcome::Submitted(r) if !r.duplicate))
                .count();
            let refused = list
                .iter()
                .filter(|o| matches!(o, SubmitOutcome::Refused(_)))
                .count();
            tracing::info!(program = %program, peer = %peer, results = list.len(), recorded, refused, "batch of submissions");
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

/// Completes a ledger read the owner core gated: reads its results' submissions and code from the
/// store, then `send`s the answer (`fallback`, "unavailable", if the store cannot be read).
pub(super) fn complete_read(
    node: &mut Node,
    read: LedgerRead,
    fallback: KbResponse,
    send: impl FnOnce(&mut Node, KbResponse) + Send + 'static,
) {
    let store = node.store.clone();
    node.after(async move {
        let program = read.program;
        let stored = match read.seqs() {
            Some((first, last)) => {
                store
                    .read(move |conn| store::load_results(conn, program, first, last))
                    .await
            }
            None => Ok(Default::default()),
        };
        let resp = match stored {
            Ok(mut stored) => read.answer(|seq| stored.remove(&seq)),
            Err(e) => {
                tracing::warn!(program = %program, error = %e, "cannot read the ledger");
                fallback
            }
        };
        Box::new(move |node: &mut Node| send(node, resp))
    });
}

/// The announcement of a stored program row, decoded and verified again (stored announcements
/// were verified when received; never trust disk more than the mesh), tolerating old timestamps.
pub(super) fn stored_announcement(
    row: &store::ProgramRow,
    now: btd_protocol::Timestamp,
) -> Result<(Signed<ProgramAnnouncement>, VerifiedProgram), String> {
    let signed: Signed<ProgramAnnouncement> =
        btd_protocol::wire::decode(&row.announcement).map_err(|e| e.to_string())?;
    let view = btd_protocol::wire::verify_announcement(&signed, now.plus_secs(1 << 30))
        .map_err(|e| e.to_string())?;
    Ok((signed, view))
}

/// Rebuilds every owned program of `snap` from the store, each in the store's thread (its log is
/// streamed through the owner core, never held whole). A program whose announcement does not read
/// is left to [`Node`]'s restore, which drops it.
pub(super) async fn restore_owned(
    store: &store::Store,
    snap: &store::Snapshot,
    now: btd_protocol::Timestamp,
) -> anyhow::Result<HashMap<ProgramId, ProgramOwner>> {
    let mut out = HashMap::new();
    for row in snap.programs.iter().filter(|r| r.own) {
        let Ok((signed, view)) = stored_announcement(row, now) else {
            continue;
        };
        let records = snap.records_of(row.id);
        let id = row.id;
        let started = std::time::Instant::now();
        let owned = store
            .read(move |conn| store::restore_owner(conn, &view, signed, records))
            .await
            .map_err(|e| anyhow::anyhow!("cannot restore program {id}: {e}"))?;
        tracing::info!(program = %id, results = owned.kb().len(), ms = started.elapsed().as_millis() as u64, "program restored");
        out.insert(id, owned);
    }
    Ok(out)
}

/// After a failed write, rebuilds an owned program from what is durable.
fn reload(node: &mut Node, program: ProgramId) {
    let store = node.store.clone();
    let Some(k) = node.known.get(&program) else {
        return;
    };
    let (view, signed) = (k.view.clone(), k.signed.clone());
    node.after(async move {
        let owned = match store.read(store::load_snapshot).await {
            Ok(snap) => {
                let records = snap.records_of(program);
                store
                    .read(move |conn| store::restore_owner(conn, &view, signed, records))
                    .await
            }
            Err(e) => Err(e),
        };
        Box::new(move |node: &mut Node| match owned {
            Ok(o) => node.owners.insert(o),
            Err(e) => tracing::error!(program = %program, error = %e, "cannot reload the KB"),
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
pub(super) fn status(owned: &ProgramOwner, me: &str, query: &StatusQuery) -> StatusView {
    let (st, results, more) = owned.status_page(query);
    StatusView::of(
        st,
        Some(&owned.program().criteria),
        me.to_string(),
        "own store",
        query,
        results,
        more,
    )
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

/// The oldest claim waiting for a check in each owned program, each with its patch chain read from
/// the store (a claim whose chain cannot be read is left out: it stays pending, and the reason is
/// logged).
pub(super) fn next_claims(node: &mut Node, reply: tokio::sync::oneshot::Sender<Vec<ClaimJob>>) {
    let claims = node.owners.next_claims();
    if claims.iter().all(|c| !c.has_code) {
        let _ = reply.send(claims);
        return;
    }
    let store = node.store.clone();
    node.after(async move {
        let mut out = Vec::with_capacity(claims.len());
        for mut c in claims {
            if c.has_code {
                let (program, seq) = (c.program, c.seq);
                match store
                    .read(move |conn| store::load_chain(conn, program, seq))
                    .await
                {
                    Ok(Some(chain)) => c.chain = chain,
                    Ok(None) => {
                        tracing::error!(program = %program, seq, "a link of the claim's patch chain is missing from the store");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(program = %program, seq, error = %e, "cannot read the claim's patch chain");
                        continue;
                    }
                }
            }
            out.push(c);
        }
        Box::new(move |_: &mut Node| {
            let _ = reply.send(out);
        })
    });
}
