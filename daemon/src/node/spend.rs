//! Paid-compute approvals over `/btd/approval/1`.
//!
//! A member whose dispatch says `request_paid_approval` asks the owner; the owner's daemon records the
//! request (bounded) and answers `Pending` until a person runs `btd approve-spend` (or
//! `deny-spend`); the member asks again and then gets the signed `ApprovalReceipt` or the denial.
//! Requests are never held open while a human decides.

use btd_protocol::dispatch::ComputePacket;
use btd_protocol::program::ProgramId;
use btd_protocol::wire::{ApprovalRequest, ApprovalResponse};
use libp2p::PeerId;

use super::handle::{NodeError, Reply};
use super::Node;
use crate::net::Responder;

pub use btd_protocol::owner::SpendRequestView;

/// Serves an inbound approval request on the owner (the rules: `btd_protocol::owner`).
pub(super) fn on_request(
    node: &mut Node,
    peer: PeerId,
    req: ApprovalRequest,
    channel: Responder<ApprovalResponse>,
) {
    let resp = node.owners.on_approval(peer, &req, node.clock.now());
    match &resp {
        ApprovalResponse::Granted(_) => {
            tracing::info!(program = %req.program, peer = %peer, packet = %req.packet.id, "paid compute receipt handed out")
        }
        ApprovalResponse::Pending => {
            tracing::info!(program = %req.program, peer = %peer, packet = %req.packet.id, "paid compute requested; run `btd approve-spend`")
        }
        _ => {}
    }
    node.net.respond(channel, resp);
}

/// `btd approvals`: open and decided spend requests of own programs.
pub(super) fn list(node: &Node) -> Vec<SpendRequestView> {
    node.owners.spend_requests()
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
) -> Result<String, NodeError> {
    Ok(node.owners.decide_spend(
        &program,
        member,
        packet_id,
        approve,
        minutes,
        node.clock.now(),
    )?)
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
