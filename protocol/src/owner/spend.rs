//! Paid-compute approvals, owner side.
//!
//! A member whose dispatch says `request_paid_approval` asks the owner; the owner records the
//! request (bounded) and answers `Pending` until a person runs `btd approve-spend` (or
//! `deny-spend`); the member asks again and then gets the signed `ApprovalReceipt` or the denial.
//! Requests are never held open while a human decides.

use std::collections::BTreeMap;

use libp2p_identity::{Keypair, PeerId};
use serde::{Deserialize, Serialize};

use super::{err, OwnerError, ProgramOwner};
use crate::dispatch::{evaluate_dispatch, Action, ComputePacket, DispatchInput};
use crate::membership::{AuthError, MemberId};
use crate::program::ProgramId;
use crate::trace::ApprovalReceipt;
use crate::wire::{ApprovalRequest, ApprovalResponse, ErrorCode};
use crate::Timestamp;

/// Most open spend requests per program: bounds what members can make the owner remember.
pub const MAX_SPEND_REQUESTS: usize = 256;
/// Validity of a receipt issued for a rung the policy pre-approves.
pub const PREAPPROVED_RECEIPT_SECS: u64 = 3600;
/// How long a spend request stays in the book after its member last asked about it (or the owner
/// decided it): a worker waiting for a decision asks every few seconds, and one that got its answer
/// or gave up stops asking, so an hour of silence means the entry serves no one. [`ProgramOwner::tick`]
/// drops such entries, so the book cannot fill up for good.
pub const SPEND_IDLE_SECS: u64 = 3600;

/// One spend request as the owner sees it (`btd approvals`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Where a spend request stands.
#[derive(Debug, Clone, PartialEq)]
pub enum SpendState {
    /// Waiting for a person.
    Pending,
    /// Approved: the receipt the member gets.
    Granted(ApprovalReceipt),
    /// Denied, with the reason the member gets.
    Denied(String),
}

impl SpendState {
    fn label(&self) -> &'static str {
        match self {
            SpendState::Pending => "pending",
            SpendState::Granted(_) => "granted",
            SpendState::Denied(_) => "denied",
        }
    }
}

#[derive(Debug, Clone)]
struct SpendEntry {
    packet: ComputePacket,
    requested_at: Timestamp,
    /// When the member last asked, or the owner decided, whichever is later.
    touched_at: Timestamp,
    state: SpendState,
}

/// The owner's spend requests of one program, keyed by (member, packet id).
#[derive(Debug, Default)]
pub(crate) struct SpendBook {
    entries: BTreeMap<(String, String), SpendEntry>,
}

impl SpendBook {
    /// Drops requests nobody asked about or decided for [`SPEND_IDLE_SECS`].
    pub(crate) fn prune(&mut self, now: Timestamp) {
        self.entries
            .retain(|_, e| now < e.touched_at.plus_secs(SPEND_IDLE_SECS));
    }
}

impl ProgramOwner {
    /// Serves a member's request for paid compute. The owner approves only its program's own
    /// packets, exactly as a worker would build them; a rung the policy pre-approves gets a receipt
    /// at once (signed with `key`, the owner's identity); otherwise the request waits for a person.
    pub fn on_approval(
        &mut self,
        peer: PeerId,
        req: &ApprovalRequest,
        key: &Keypair,
        now: Timestamp,
    ) -> ApprovalResponse {
        let member = match self.registry.verify(&req.credential, &peer) {
            Ok(m) => m,
            Err(AuthError::Revoked) => {
                return ApprovalResponse::Error(err(ErrorCode::Revoked, "revoked"))
            }
            Err(AuthError::MembershipRequired) => {
                return ApprovalResponse::Error(err(
                    ErrorCode::MembershipRequired,
                    "membership required: join the program first",
                ))
            }
        };
        let expected = match self.program.packet_for_rung(&req.packet.rung_id) {
            Ok(p) => p,
            Err(e) => return ApprovalResponse::Error(err(ErrorCode::Invalid, e.to_string())),
        };
        if expected != req.packet {
            return ApprovalResponse::Error(err(
                ErrorCode::Invalid,
                "the packet differs from the program's packet for that rung",
            ));
        }
        let decision = self.program.decision();
        let Ok(rung) = self.program.rung(&req.packet.rung_id) else {
            return ApprovalResponse::Error(err(ErrorCode::Invalid, "unknown rung"));
        };
        let me = self.owner.to_base58();
        let verdict = evaluate_dispatch(&DispatchInput {
            decision: &decision,
            rung,
            policy: &self.program.policy,
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
                key,
                req.packet.id.clone(),
                req.packet.rung_id.clone(),
                now,
                now.plus_secs(PREAPPROVED_RECEIPT_SECS),
                cap,
            ) {
                Ok(r) => ApprovalResponse::Granted(r),
                Err(e) => ApprovalResponse::Error(err(ErrorCode::Invalid, e.to_string())),
            };
        }
        if verdict.action != Action::RequestPaidApproval {
            return ApprovalResponse::Denied {
                reason: format!("no approval applies: {}", verdict.detail),
            };
        }
        let book_key = (member.to_string(), req.packet.id.clone());
        self.spend.prune(now);
        let book = &mut self.spend.entries;
        if !book.contains_key(&book_key) && book.len() >= MAX_SPEND_REQUESTS {
            return ApprovalResponse::Error(err(
                ErrorCode::RateLimited,
                "too many open spend requests for this program; ask again later",
            ));
        }
        let entry = book.entry(book_key).or_insert_with(|| SpendEntry {
            packet: req.packet.clone(),
            requested_at: now,
            touched_at: now,
            state: SpendState::Pending,
        });
        entry.touched_at = entry.touched_at.max(now);
        match &entry.state {
            SpendState::Pending => ApprovalResponse::Pending,
            SpendState::Granted(r) => ApprovalResponse::Granted(r.clone()),
            SpendState::Denied(why) => ApprovalResponse::Denied {
                reason: why.clone(),
            },
        }
    }

    /// `btd approve-spend` / `btd deny-spend`: decides a request; approval signs a receipt (with
    /// `key`) valid for `minutes`, covering the packet's spend cap.
    pub fn decide_spend(
        &mut self,
        member: &str,
        packet_id: &str,
        approve: bool,
        minutes: u64,
        key: &Keypair,
        now: Timestamp,
    ) -> Result<String, OwnerError> {
        let member: MemberId = member
            .parse()
            .map_err(|e| OwnerError::Refused(format!("{member:?} is not a member id: {e}")))?;
        let entry = self
            .spend
            .entries
            .get_mut(&(member.to_string(), packet_id.to_string()))
            .ok_or_else(|| {
                OwnerError::Refused(format!(
                    "no spend request from {member} for packet {packet_id:?} (see `btd approvals`)"
                ))
            })?;
        entry.touched_at = entry.touched_at.max(now);
        if !approve {
            entry.state = SpendState::Denied("the owner denied the paid compute".into());
            return Ok(format!("denied paid compute for {packet_id} by {member}"));
        }
        let cap = entry.packet.budget.spend_cap.unwrap_or(0.0);
        let receipt = ApprovalReceipt::issue(
            key,
            entry.packet.id.clone(),
            entry.packet.rung_id.clone(),
            now,
            now.plus_secs(minutes.saturating_mul(60)),
            cap,
        )
        .map_err(|e| OwnerError::Refused(e.to_string()))?;
        entry.state = SpendState::Granted(receipt);
        Ok(format!(
            "approved paid compute for {packet_id} by {member} (cap {cap}, valid {minutes} min)"
        ))
    }

    /// Open and decided spend requests, by member then packet id.
    pub fn spend_requests(&self) -> Vec<SpendRequestView> {
        self.spend
            .entries
            .iter()
            .map(|((member, _), e)| SpendRequestView {
                program: self.id,
                member: member.clone(),
                packet: e.packet.clone(),
                requested_at: e.requested_at,
                state: e.state.label().into(),
            })
            .collect()
    }
}
