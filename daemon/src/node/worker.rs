//! The worker's side: joining a program (device flow over the mesh), receiving the grant and
//! reading status from the owner (submissions go through `outbox.rs`). Answers to these requests come back here through
//! `dispatch.rs` with the tag they were sent with.

use rand::RngCore;
use std::time::{Duration, Instant};

use btd_protocol::membership::{self, Credential, MemberId};
use btd_protocol::program::ProgramId;
use btd_protocol::seal;
use btd_protocol::wire::{
    grant_seal_context, ErrorCode, ErrorReply, GrantDelivery, KbCall, KbRequest, KbResponse,
    MembershipRequest, MembershipResponse, PollStatus, StatusQuery,
};
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::dispatch::{KbTag, MembershipTag};
use super::handle::{NodeError, Reply};
use super::types::{JoinEvent, StatusView};
use super::{JoinPhase, JoinState, Membership, NextRequest, Node, MAX_JOINS};
use crate::net::Responder;
use crate::store::{self, MembershipRow};

/// A member's `btd status` on its way to the owner.
#[derive(Debug)]
pub(crate) struct PendingStatus {
    program: ProgramId,
    owner: PeerId,
    query: StatusQuery,
    reply: Reply<StatusView>,
}

/// `at` plus `secs`, or `None` when the sum leaves the clock's range. The seconds may come from a
/// remote peer: a number is bounded before it meets a clock, and the sum is checked anyway.
fn after_secs(at: Instant, secs: u64) -> Option<Instant> {
    at.checked_add(Duration::from_secs(secs))
}

fn event(events: &mpsc::Sender<JoinEvent>, e: JoinEvent) {
    // Progress is best effort: a CLI that went away (--no-wait) must not stall the node.
    let _ = events.try_send(e);
}

/// Tells the swarm where the owner can be reached (from its signed announcement).
pub(super) fn learn_owner_addresses(node: &mut Node, program: &ProgramId) -> Option<PeerId> {
    let k = node.known.get(program)?;
    let owner = k.view.owner;
    let addrs: Vec<libp2p::Multiaddr> = k
        .view
        .addresses
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    for a in addrs {
        node.net.add_peer_address(owner, a);
    }
    Some(owner)
}

/// `btd join`.
pub(super) fn join(node: &mut Node, program: ProgramId, events: mpsc::Sender<JoinEvent>) {
    if node.memberships.contains_key(&program) || node.owners.contains(&program) {
        return event(&events, JoinEvent::AlreadyMember { program });
    }
    if node.joins.len() >= MAX_JOINS && !node.joins.contains_key(&program) {
        return event(
            &events,
            JoinEvent::Failed {
                reason: format!("too many joins in progress (limit {MAX_JOINS})"),
            },
        );
    }
    if !node.known.contains(&program) {
        // Not seen on gossip yet: ask the DHT, then continue (see `gossip::on_kad`).
        super::gossip::lookup(node, program, events);
        return;
    }
    start_authorize(node, program, events);
}

/// Sends the device-authorization request to the owner.
pub(super) fn start_authorize(
    node: &mut Node,
    program: ProgramId,
    events: mpsc::Sender<JoinEvent>,
) {
    let Some(owner) = learn_owner_addresses(node, &program) else {
        return event(
            &events,
            JoinEvent::Failed {
                reason: format!("program {program} is not known on the mesh"),
            },
        );
    };
    // A program being joined is pinned: a flood of announcements cannot evict it mid-join.
    super::gossip::pin(node, program);
    let id = node.rng.next_u64();
    send_authorize(node, owner, program, id);
    let now = Instant::now();
    node.joins.insert(
        program,
        JoinState {
            id,
            owner,
            phase: JoinPhase::Authorizing { failed: 0 },
            next: NextRequest::InFlight,
            interval: Duration::from_secs(membership::POLL_INTERVAL_SECS),
            expires_at: now + Duration::from_secs(membership::DEVICE_CODE_EXPIRES_IN_SECS),
            events,
        },
    );
}

/// A join's first request fails this many times (the owner unreachable, busy or restarting)
/// before `btd join` gives up; it is sent again after 1, 2, 4, 8 and 16 s (about half a minute).
pub(crate) const AUTHORIZE_ATTEMPTS: u32 = 6;

fn send_authorize(node: &mut Node, owner: PeerId, program: ProgramId, join: u64) {
    let req = MembershipRequest::Authorize {
        program,
        seal_key: node.seal_key.public(),
    };
    node.net
        .request_membership(owner, req, MembershipTag::Authorize(program, join));
}

fn fail_join(node: &mut Node, program: ProgramId, reason: String) {
    if let Some(j) = node.joins.remove(&program) {
        tracing::info!(program = %program, %reason, "join failed");
        super::gossip::unpin(node, program);
        event(&j.events, JoinEvent::Failed { reason });
    }
}

/// Opens a grant and stores the membership; the join completes once it is durable.
fn accept_grant(node: &mut Node, from: PeerId, delivery: &GrantDelivery) -> Result<(), String> {
    let program = delivery.program;
    let Some(join) = node.joins.get(&program) else {
        return Err("no join in progress for this program".into());
    };
    if join.owner != from {
        return Err("the grant does not come from the program's owner".into());
    }
    if join.phase != JoinPhase::Polling(delivery.device_code) {
        // The grant of an earlier `btd join` of this program, come late. Taking it would leave
        // this node with a dead credential: approving the current code replaces the member's
        // credential at the owner (netsim scale-1000: members refused as non-members).
        return Err(
            "the grant answers another join code (an earlier join of this program); \
                    this join waits for the grant of its own code"
                .into(),
        );
    }
    let ctx = grant_seal_context(&program, &delivery.device_code);
    let plain = seal::open(&node.seal_key, &ctx, &delivery.sealed)
        .map_err(|e| format!("cannot open the sealed credential: {e}"))?;
    let bytes: [u8; 32] = plain
        .try_into()
        .map_err(|_| "the credential has the wrong length".to_string())?;
    let credential = Credential::from_bytes(bytes);
    let Some(join) = node.joins.remove(&program) else {
        return Ok(());
    };
    let row = MembershipRow {
        program,
        owner: from.to_string(),
        credential: credential.clone(),
        joined_at: node.clock.now(),
    };
    let store = node.store.clone();
    node.after(async move {
        let res = store.write(move |tx| store::put_membership(tx, &row)).await;
        Box::new(move |node: &mut Node| match res {
            Ok(()) => {
                node.memberships.insert(
                    program,
                    Membership {
                        owner: from,
                        credential,
                    },
                );
                let member = MemberId::from_peer(&node.net.local_peer_id()).to_string();
                tracing::info!(program = %program, "joined");
                node.announce_soon = true;
                node.next_rung_advert = None;
                event(&join.events, JoinEvent::Granted { program, member });
            }
            Err(e) => {
                super::gossip::unpin(node, program);
                event(
                    &join.events,
                    JoinEvent::Failed {
                        reason: format!("cannot store the credential: {e}"),
                    },
                )
            }
        })
    });
    Ok(())
}

/// The owner pushed a grant.
pub(super) fn on_push_grant(
    node: &mut Node,
    peer: PeerId,
    delivery: GrantDelivery,
    channel: Responder<MembershipResponse>,
) {
    let resp = match accept_grant(node, peer, &delivery) {
        Ok(()) => MembershipResponse::Ack,
        Err(e) => MembershipResponse::Error(ErrorReply {
            code: ErrorCode::Invalid,
            message: e,
        }),
    };
    node.net.respond(channel, resp);
}

/// The owner answered a join's authorization or poll (or the request failed).
pub(super) fn on_membership_answer(
    node: &mut Node,
    peer: PeerId,
    program: ProgramId,
    join: u64,
    poll: bool,
    result: Result<MembershipResponse, String>,
) {
    if node.joins.get(&program).map(|j| j.id) != Some(join) {
        // An answer to an earlier `btd join` of this program (started again since), or to a join
        // that ended: it must not steer the current one.
        tracing::debug!(program = %program, "an answer to an earlier join; ignored");
        return;
    }
    let resp = match result {
        Ok(resp) => resp,
        Err(_) if poll => {
            // Polling retries on the next interval.
            if let Some(j) = node.joins.get_mut(&program) {
                j.wait(j.interval);
            }
            return;
        }
        Err(error) => {
            // Only the first request (no code yet) is asked again, a bounded number of times.
            let retry = node.joins.get_mut(&program).and_then(|j| match j.phase {
                JoinPhase::Authorizing { failed } if failed + 1 < AUTHORIZE_ATTEMPTS => {
                    Some((j, failed + 1))
                }
                _ => None,
            });
            let Some((j, failed)) = retry else {
                return fail_join(
                    node,
                    program,
                    format!("cannot reach the program's owner: {error}"),
                );
            };
            j.phase = JoinPhase::Authorizing { failed };
            j.wait(Duration::from_secs(1 << (failed - 1).min(4)));
            tracing::info!(program = %program, %error, attempt = failed, "join: the owner did not answer; asking again");
            return;
        }
    };
    match resp {
        MembershipResponse::Authorization(auth) => {
            if !node.joins.contains_key(&program) {
                return;
            }
            let now = Instant::now();
            let interval = Duration::from_secs(membership::poll_interval_secs(auth.interval));
            let times = membership::check_authorization(&auth).and_then(|()| {
                let expires_at = after_secs(now, auth.expires_in);
                let next_poll = now.checked_add(interval);
                expires_at.zip(next_poll).ok_or_else(|| {
                    "the owner's join code outlives this machine's clock".to_string()
                })
            });
            let (expires_at, next_poll) = match times {
                Ok(t) => t,
                Err(why) => return fail_join(node, program, why),
            };
            let Some(j) = node.joins.get_mut(&program) else {
                return;
            };
            j.phase = JoinPhase::Polling(auth.device_code);
            j.next = NextRequest::At(next_poll);
            j.interval = interval;
            j.expires_at = expires_at;
            let e = JoinEvent::Code {
                program,
                user_code: auth.user_code.to_string(),
                owner: j.owner.to_string(),
                expires_in: auth.expires_in,
            };
            event(&j.events, e);
        }
        MembershipResponse::Granted(delivery) => {
            if let Err(e) = accept_grant(node, peer, &delivery) {
                fail_join(node, program, e);
            }
        }
        MembershipResponse::Poll(status) => {
            let Some(j) = node.joins.get_mut(&program) else {
                return;
            };
            match status {
                PollStatus::AuthorizationPending => {}
                PollStatus::SlowDown { interval } => {
                    j.interval = Duration::from_secs(membership::poll_interval_secs(interval));
                }
                PollStatus::AccessDenied => {
                    return fail_join(node, program, "the owner denied the join request".into())
                }
                PollStatus::ExpiredToken => {
                    return fail_join(
                        node,
                        program,
                        "the join code expired before the owner approved it; run `btd join` again"
                            .into(),
                    )
                }
                PollStatus::NotFound => {
                    return fail_join(
                        node,
                        program,
                        "the owner no longer knows this join code (it restarted or the code was used); run `btd join` again".into(),
                    )
                }
            }
            j.wait(j.interval);
        }
        MembershipResponse::Error(e) => fail_join(node, program, e.message),
        MembershipResponse::Ack => {}
    }
}

/// Polls pending joins whose interval has passed; expires stale ones.
pub(super) fn on_tick(node: &mut Node, now: Instant) {
    let mut expired = Vec::new();
    let mut due = Vec::new();
    let mut again = Vec::new();
    for (program, j) in &node.joins {
        if now > j.expires_at {
            expired.push(*program);
        } else if j.next.due(now) {
            match j.phase {
                JoinPhase::Authorizing { .. } => again.push((*program, j.owner, j.id)),
                JoinPhase::Polling(code) => due.push((*program, j.owner, code, j.id)),
            }
        }
    }
    for p in expired {
        fail_join(
            node,
            p,
            "the join code expired before the owner approved it".into(),
        );
    }
    for (program, owner, id) in again {
        send_authorize(node, owner, program, id);
        if let Some(j) = node.joins.get_mut(&program) {
            j.next = NextRequest::InFlight;
        }
    }
    for (program, owner, device_code, id) in due {
        let poll = MembershipRequest::Poll {
            program,
            device_code,
        };
        node.net
            .request_membership(owner, poll, MembershipTag::Poll(program, id));
        if let Some(j) = node.joins.get_mut(&program) {
            j.next = NextRequest::InFlight;
        }
    }
}

/// `btd status`: the owner reads its store; a member asks the owner.
pub(super) fn status(
    node: &mut Node,
    program: Option<ProgramId>,
    query: StatusQuery,
    reply: Reply<StatusView>,
) {
    if let Err(e) = query.check() {
        let _ = reply.send(Err(NodeError::Refused(format!("status: {e}"))));
        return;
    }
    let program = match program {
        Some(p) => p,
        None => {
            let mine: Vec<ProgramId> = node
                .owners
                .ids()
                .chain(node.memberships.keys().copied())
                .collect();
            match mine.as_slice() {
                [one] => *one,
                [] => {
                    let _ = reply.send(Err(NodeError::Refused(
                        "this node owns no program and is a member of none; name a program id"
                            .into(),
                    )));
                    return;
                }
                _ => {
                    let _ = reply.send(Err(NodeError::Refused(
                        "this node has several programs; name one (see `btd programs`)".into(),
                    )));
                    return;
                }
            }
        }
    };
    if let Some(o) = node.owners.get(&program) {
        let me = node.net.local_peer_id().to_string();
        let _ = reply.send(Ok(super::owner::status(o, &me, &query)));
        return;
    }
    let Some(m) = node.memberships.get(&program).cloned() else {
        let _ = reply.send(Err(NodeError::Refused(format!(
            "membership required: this node is not a member of {program} (`btd join {program}`)"
        ))));
        return;
    };
    learn_owner_addresses(node, &program);
    let request = KbRequest {
        program,
        credential: m.credential,
        call: KbCall::StatusPage(query),
    };
    let pending = PendingStatus {
        program,
        owner: m.owner,
        query,
        reply,
    };
    node.net
        .request_kb(m.owner, request, KbTag::Status(pending));
}

/// The owner answered a member's `btd status` (or the request failed).
pub(super) fn on_status_answer(
    node: &mut Node,
    s: PendingStatus,
    result: Result<KbResponse, String>,
) {
    let resp = match result {
        Ok(resp) => resp,
        Err(error) => {
            let _ = s.reply.send(Err(NodeError::Unreachable(format!(
                "cannot reach the program's owner: {error}"
            ))));
            return;
        }
    };
    match resp {
        KbResponse::StatusPage {
            status,
            results,
            more,
        } => {
            let criteria = node.known.get(&s.program).map(|k| &k.view.program.criteria);
            let view = StatusView::of(
                status,
                criteria,
                s.owner.to_string(),
                "owner over the mesh",
                &s.query,
                results,
                more,
            );
            let _ = s.reply.send(Ok(view));
        }
        KbResponse::Error(e) => {
            let _ = s.reply.send(Err(NodeError::Refused(e.message)));
        }
        _ => {
            let _ = s.reply.send(Err(NodeError::Refused(
                "the owner answered a status read with something else; run the same btd \
                 version as the owner"
                    .into(),
            )));
        }
    }
}
