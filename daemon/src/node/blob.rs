//! `/btd/blob/1`: serving artifact chunks inside a program (fetches are `NodeHandle::blob`).
//!
//! Who may fetch what:
//! - from the owner of a program, a member (with its credential) may fetch the program's dataset;
//! - from a member of a program, the program's owner may fetch what the member stored for that
//!   program (its claimed checkpoints).
//!
//! Everything else is refused. Each peer has its own chunk budget (`Node::blob_requests`); chunks
//! are read from disk off the event loop.

use btd_protocol::program::ProgramId;
use btd_protocol::wire::{BlobRequest, BlobResponse, ErrorCode};
use libp2p::PeerId;

use super::owner::err;
use super::Node;
use crate::net::Responder;

fn respond(node: &mut Node, channel: Responder<BlobResponse>, resp: BlobResponse) {
    if !node.net.respond(channel, resp) {
        tracing::debug!("blob response dropped: the requester went away");
    }
}

/// Answers a blob request with an error.
pub(super) fn refuse(
    node: &mut Node,
    channel: Responder<BlobResponse>,
    code: ErrorCode,
    msg: String,
) {
    respond(node, channel, BlobResponse::Error(err(code, msg)));
}

/// Whether `peer` may fetch `req.digest` of `req.program` from this node, or why not.
fn authorize(node: &Node, peer: &PeerId, req: &BlobRequest) -> Result<(), (ErrorCode, String)> {
    let program: ProgramId = req.program;
    if let Some(owned) = node.owners.get(&program) {
        return owned.may_fetch(peer, req.credential.as_ref(), &req.digest);
    }
    match node.memberships.get(&program) {
        Some(m) if m.owner == *peer => Ok(()),
        Some(_) => Err((
            ErrorCode::MembershipRequired,
            "only the program's owner may fetch a member's artifacts".to_string(),
        )),
        None => Err((
            ErrorCode::UnknownProgram,
            format!("this peer has no artifacts of program {program}"),
        )),
    }
}

/// Serves an inbound blob request (the peer's budget was already checked).
pub(super) fn on_request(
    node: &mut Node,
    peer: PeerId,
    req: BlobRequest,
    channel: Responder<BlobResponse>,
) {
    #[cfg(feature = "testkit")]
    if let Some(poison) = node.poisoned_blobs.clone() {
        return respond(node, channel, poison);
    }
    if let Err(e) = req.check() {
        return refuse(node, channel, ErrorCode::Invalid, e.to_string());
    }
    if let Err((code, msg)) = authorize(node, &peer, &req) {
        tracing::debug!(peer = %peer, program = %req.program, "refused a blob request: {msg}");
        return refuse(node, channel, code, msg);
    }
    let Some(store) = node.blobs.clone() else {
        return refuse(
            node,
            channel,
            ErrorCode::NotFound,
            "this node keeps no artifacts".into(),
        );
    };
    node.after(async move {
        let (program, digest, offset, len) = (req.program, req.digest, req.offset, req.len);
        let read =
            tokio::task::spawn_blocking(move || store.read_chunk(&program, &digest, offset, len))
                .await;
        move |node: &mut Node| {
            let resp = match read {
                Ok(Ok(Some((size, data)))) => BlobResponse::Chunk { size, offset, data },
                Ok(Ok(None)) => BlobResponse::Error(err(
                    ErrorCode::NotFound,
                    format!("this peer does not have {digest}"),
                )),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, digest = %digest.short(), "cannot read an artifact");
                    BlobResponse::Error(err(
                        ErrorCode::Unavailable,
                        "cannot read the artifact; retry later",
                    ))
                }
                Err(_) => BlobResponse::Error(err(ErrorCode::Unavailable, "retry later")),
            };
            let sent = match &resp {
                BlobResponse::Chunk { data, .. } => data.len(),
                _ => 0,
            };
            if node.net.respond(channel, resp) {
                node.metrics.blob_served(sent);
            } else {
                tracing::debug!("blob response dropped: the requester went away");
            }
        }
    });
}
