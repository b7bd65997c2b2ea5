//! Paid-compute approvals over `/btd/approval/1`.
//!
//! A member whose dispatch says `request_paid_approval` asks the owner; the owner's daemon records the
//! request (bounded) and answers `Pending` until a person runs `btd approve-spend` (or
//! `deny-spend`); the member asks again and then gets the signed `ApprovalReceipt` or the denial.
//! Requests are never held open while a human decides.

use std::collections::BTreeMap;

use btd_protocol::dispatch::{evaluate_dispatch, Action, ComputePacket, DispatchInput};
use btd_protocol::membership::MemberId;
use btd_protocol::program::ProgramId;
use btd_protocol::trace::ApprovalReceipt;
use btd_protocol::wire::{ApprovalRequest, ApprovalResponse, ErrorCode};
use btd_protocol::Timestamp;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::handle::{NodeError, Reply};
use super::owner::err;
use super::Node;
use crate::net::Responder;

/// Most open spend requests per program: bounds what members can make the owner remember.
const MAX_SPEND_REQUESTS: usize = 256;
/// Validity of a receipt issued for a rung the policy pre-approves.
const PREAPPROVED_RECEIPT_SECS: u64 = 3600;

/// One spend request as the owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpendRequestView {
    /// The program.
    pub program: ProgramId,
    /// The requesting member.
    pub member: String,
    /// The packet.
    pub packet: ComputePacket,
    /// When it was first asked.
    pub requested_at: Timestamp,
    /// `pending`, `granted` or `denied`.
    pub state: String,
}

#[derive(Debug, Clone)]
enum SpendState {
    Pending,
    Granted(ApprovalReceipt),
    Denied(String),
}

#[derive(Debug, Clone)]
struct SpendEntry {
    packet: ComputePacket,
    requested_at: Timestamp,
    state: SpendState,
}

/// The owner's spend requests of one program, keyed by (member, packet id).
#[derive(Debug, Default)]
pub(crate) struct SpendBook {
    entries: BTreeMap<(String, String), SpendEntry>,
}

/// Serves an inbound approval request on the owner.
pub(super) fn on_request(
    node: &mut Node,
    peer: PeerId,
    req: ApprovalRequest,
    channel: Responder<ApprovalResponse>,
) {
    let now = crate::now();
    let resp = answer(node, peer, req, now);
    node.net.respond(channel, resp);
}

fn answer(node: &mut Node, peer: PeerId, req: ApprovalRequest, now: Timestamp) -> ApprovalResponse {
    let me = node.net.local_peer_id().to_base58();
    let Some(owned) = node.own.get_mut(&req.program) else {
        return ApprovalResponse::Error(err(
            ErrorCode::UnknownProgram,
            format!("this peer does not own program {}", req.program),
        ));
    };
    let member = match owned.registry.verify(&req.credential, &peer) {
        Ok(m) => m,
        Err(btd_protocol::membership::AuthError::Revoked) => {
            return ApprovalResponse::Error(err(ErrorCode::Revoked, "revoked"))
        }
        Err(_) => {
            return ApprovalResponse::Error(err(
                ErrorCode::MembershipRequired,
                "membership required: join the program first",
            ))
        }
    };
    // The owner approves only its program's own packets, exactly as a worker would build them.
    let expected = match owned.program.packet_for_rung(&req.packet.rung_id) {
        Ok(p) => p,
        Err(e) => return ApprovalResponse::Error(err(ErrorCode::Invalid, e.to_string())),
    };
    if expected != req.packet {
        return ApprovalResponse::Error(err(
            ErrorCode::Invalid,
            "the packet differs from the program's packet for that rung",
        ));
    }
    let decision = owned.program.decision();
    let Ok(rung) = owned.program.rung(&req.packet.rung_id) else {
        return ApprovalResponse::Error(err(ErrorCode::Invalid, "unknown rung"));
    };
    let verdict = evaluate_dispatch(&DispatchInput {
        decision: &decision,
        rung,
        policy: &owned.program.policy,
        packet: &req.packet,
        point: None,
        approval: None,
        trusted_approvers: std::slice::from_ref(&me),
        spent_total: 0.0,
        now,
    });
    if verdict.action == Action::RunPaid {
        // The policy approved this rung in advance; the receipt records that approval (a
        // traceability record of paid compute always links one).
        let cap = req.packet.budget.spend_cap.unwrap_or(0.0);
        return match ApprovalReceipt::issue(
            &node.key,
            req.packet.id.clone(),
            req.packet.rung_id.clone(),
            now,
            now.plus_secs(PREAPPROVED_RECEIPT_SECS),
            cap,
        ) {
            Ok(r) => {
                tracing::info!(program = %req.program, member = %member, packet = %req.packet.id, "paid compute pre-approved by policy; receipt issued");
                ApprovalResponse::Granted(r)
            }
            Err(e) => ApprovalResponse::Error(err(ErrorCode::Invalid, e.to_string())),
        };
    }
    if verdict.action != Action::RequestPaidApproval {
        return ApprovalResponse::Denied {
            reason: format!("no approval applies: {}", verdict.detail),
        };
    }
    let key = (member.to_string(), req.packet.id.clone());
    let book = &mut owned.spend.entries;
    if !book.contains_key(&key) && book.len() >= MAX_SPEND_REQUESTS {
        return ApprovalResponse::Error(err(
            ErrorCode::RateLimited,
            "too many open spend requests for this program; ask again later",
        ));
    }
    let entry = book.entry(key).or_insert_with(|| {
        tracing::info!(program = %req.program, member = %member, packet = %req.packet.id, "paid compute requested; run `btd approve-spend`");
        SpendEntry {
            packet: req.packet.clone(),
            requested_at: now,
            state: SpendState::Pending,
        }
    });
    match &entry.state {
        SpendState::Pending => ApprovalResponse::Pending,
        SpendState::Granted(r) => ApprovalResponse::Granted(r.clone()),
        SpendState::Denied(why) => ApprovalResponse::Denied {
            reason: why.clone(),
        },
    }
}

/// `btd approvals`: open and decided spend requests of own programs.
pub(super) fn list(node: &Node) -> Vec<SpendRequestView> {
    let mut out = Vec::new();
    for (id, o) in &node.own {
        for ((member, _), e) in &o.spend.entries {
            out.push(SpendRequestView {
                program: *id,
                member: member.clone(),
                packet: e.packet.clone(),
                requested_at: e.requested_at,
                state: match e.state {
                    SpendState::Pending => "pending",
                    SpendState::Granted(_) => "granted",
                    SpendState::Denied(_) => "denied",
                }
                .into(),
            });
        }
    }
    out
}

/// `btd approve-spend` / `btd deny-spend`: decides a request; approval signs a receipt valid for
/// `minutes`, covering the packet's spend cap.
pub(super) fn decide(
    node: &mut Node,
    program: ProgramId,
    member: &str,
    packet_id: &str,
    approve: bool,
    minutes: u64,
) -> Result<String, String> {
    let now = crate::now();
    let member: MemberId = member
        .parse()
        .map_err(|e| format!("{member:?} is not a member id: {e}"))?;
    let key = node.key.clone();
    let owned = node
        .own
        .get_mut(&program)
        .ok_or_else(|| format!("this node does not own program {program}"))?;
    let entry = owned
        .spend
        .entries
        .get_mut(&(member.to_string(), packet_id.to_string()))
        .ok_or_else(|| {
            format!("no spend request from {member} for packet {packet_id:?} (see `btd approvals`)")
        })?;
    if !approve {
        entry.state = SpendState::Denied("the owner denied the paid compute".into());
        return Ok(format!("denied paid compute for {packet_id} by {member}"));
    }
    let cap = entry.packet.budget.spend_cap.unwrap_or(0.0);
    let receipt = ApprovalReceipt::issue(
        &key,
        entry.packet.id.clone(),
        entry.packet.rung_id.clone(),
        now,
        now.plus_secs(minutes.saturating_mul(60)),
        cap,
    )
    .map_err(|e| e.to_string())?;
    entry.state = SpendState::Granted(receipt);
    Ok(format!(
        "approved paid compute for {packet_id} by {member} (cap {cap}, valid {minutes} min)"
    ))
}

/// Worker side: asks the owner for a receipt.
pub(super) fn request(
    node: &mut Node,
    program: ProgramId,
    packet: ComputePacket,
    reply: Reply<ApprovalResponse>,
) {
    let Some(m) = node.memberships.get(&program).cloned() else {
        let _ = reply.send(Err(NodeError::Refused(format!(
            "membership required for {program}"
        ))));
        return;
    };
    let request = ApprovalRequest {
        program,
        credential: m.credential,
        packet,
    };
    node.net.request_approval(m.owner, request, reply);
}
