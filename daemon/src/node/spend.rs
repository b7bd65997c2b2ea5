//! Paid-compute approvals over `/btd/approval/1`.
//!
//! A member whose dispatch says `request_paid_approval` asks the owner; the owner's daemon records the
//! request (bounded) and answers `Pending` until a person runs `btd approve-spend` (or
//! `deny-spend`); the member asks again and then gets the signed `ApprovalReceipt` or the denial.
//! Requests are never held open while a human decides.

use btd_protocol::dispatch::ComputePacket;
use btd_protocol::program::ProgramId;
use btd_protocol::wire::{ApprovalRequest, ApprovalResponse, ErrorCode};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::PeerId;
use tokio::sync::oneshot;

use super::owner::err;
use super::Node;

pub use btd_protocol::owner::SpendRequestView;

/// Serves an inbound approval request on the owner (the rules: `btd_protocol::owner`).
fn on_request(
    node: &mut Node,
    peer: PeerId,
    req: ApprovalRequest,
    channel: ResponseChannel<ApprovalResponse>,
) {
    let resp = node.owners.on_approval(peer, &req, crate::now());
    match &resp {
        ApprovalResponse::Granted(_) => {
            tracing::info!(program = %req.program, peer = %peer, packet = %req.packet.id, "paid compute receipt handed out")
        }
        ApprovalResponse::Pending => {
            tracing::info!(program = %req.program, peer = %peer, packet = %req.packet.id, "paid compute requested; run `btd approve-spend`")
        }
        _ => {}
    }
    let _ = node
        .swarm
        .behaviour_mut()
        .approval
        .send_response(channel, resp);
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
) -> Result<String, String> {
    node.owners
        .decide_spend(&program, member, packet_id, approve, minutes, crate::now())
        .map_err(|e| e.to_string())
}

/// Worker side: asks the owner for a receipt.
pub(super) fn request(
    node: &mut Node,
    program: ProgramId,
    packet: ComputePacket,
    reply: oneshot::Sender<Result<ApprovalResponse, String>>,
) {
    let Some(m) = node.memberships.get(&program).cloned() else {
        let _ = reply.send(Err(format!("membership required for {program}")));
        return;
    };
    let id = node.swarm.behaviour_mut().approval.send_request(
        &m.owner,
        ApprovalRequest {
            program,
            credential: m.credential,
            packet,
        },
    );
    node.out.approvals.insert(id, reply);
}

/// Approval protocol events.
pub(super) fn on_event(
    node: &mut Node,
    e: request_response::Event<ApprovalRequest, ApprovalResponse>,
) {
    match e {
        request_response::Event::Message { peer, message, .. } => match message {
            request_response::Message::Request {
                request, channel, ..
            } => {
                if node.allow(peer) {
                    on_request(node, peer, request, channel);
                } else {
                    let _ = node.swarm.behaviour_mut().approval.send_response(
                        channel,
                        ApprovalResponse::Error(err(ErrorCode::RateLimited, "slow down")),
                    );
                }
            }
            request_response::Message::Response {
                request_id,
                response,
            } => reply(node, request_id, Ok(response)),
        },
        request_response::Event::OutboundFailure {
            request_id, error, ..
        } => reply(node, request_id, Err(error.to_string())),
        _ => {}
    }
}

fn reply(node: &mut Node, id: OutboundRequestId, r: Result<ApprovalResponse, String>) {
    if let Some(tx) = node.out.approvals.remove(&id) {
        let _ = tx.send(r);
    }
}
