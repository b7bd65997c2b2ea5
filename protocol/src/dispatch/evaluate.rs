//! `evaluate_dispatch`: semantics §4's precedence, first match wins.

use super::{
    Action, ComputePacket, ComputePoint, Decision, DispatchResult, LocalAction, PaidAction, Policy,
    Reason, Rung, SpendClass,
};
use crate::trace::problem::{check_amount, join_problems, Problem};
use crate::trace::{ApprovalReceipt, ReceiptError};
use crate::Timestamp;

/// Everything [`evaluate_dispatch`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct DispatchInput<'a> {
    /// The decision the packet serves.
    pub decision: &'a Decision,
    /// The rung the packet would run on.
    pub rung: &'a Rung,
    /// The policy in force.
    pub policy: &'a Policy,
    /// The packet.
    pub packet: &'a ComputePacket,
    /// The compute point the packet comes from, if any: its permitted rungs then also apply.
    pub point: Option<&'a ComputePoint>,
    /// An approval receipt for a paid rung, if the caller has one.
    ///
    /// [`evaluate_dispatch`] uses it only if it is well signed, for this packet and rung, unexpired
    /// ([`ApprovalReceipt::is_valid_for`]) and signed by one of `trusted_approvers`.
    pub approval: Option<&'a ApprovalReceipt>,
    /// Peer ids (base58) allowed to approve paid spend: in btd, the program owner. A receipt from
    /// anyone else is ignored, however well signed.
    pub trusted_approvers: &'a [String],
    /// Paid spend already committed for the program (spend units), for `max_total_spend`.
    pub spent_total: f64,
    /// The current time, for the receipt's validity window.
    pub now: Timestamp,
}

impl DispatchInput<'_> {
    /// Every validation problem among the input's objects (rule 1), rooted at `decision`, `rung`,
    /// `policy`, `packet`, `point` and `spent_total`. The approval receipt is not included: an
    /// unusable receipt is ignored, not fatal.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.decision.validate_at("decision", &mut out);
        self.rung.validate_at("rung", &mut out);
        self.policy.validate_at("policy", &mut out);
        self.packet.validate_at("packet", &mut out);
        if let Some(point) = self.point {
            point.validate_at("point", &mut out);
        }
        check_amount(&mut out, "spent_total".to_owned(), self.spent_total);
        out
    }
}

/// Decides what to do with a packet (semantics §4). Rules in order, first match wins:
///
/// 1. any validation problem in the decision, rung, policy, packet or point, or a non-finite or
///    negative `spent_total` → `hold_packet` / `invalid` (the detail lists every problem);
/// 2. `packet.decision_id != decision.id` → `decision_mismatch`; then `packet.rung_id != rung.id` →
///    `rung_mismatch`;
/// 3. packet not bounded ([`ComputePacket::unbounded_reasons`]) → `unbounded`;
/// 4. packet's required outputs miss one of the decision's → `missing_required_outputs`;
/// 5. rung not admitted, or a point is given and does not permit the rung → `rung_not_admitted`;
/// 6. local rung: policy `allow` → `run_local` / `local_allowed`; `deny` → `local_denied`;
/// 7. paid rung: first over a spend cap (packet cap > `max_spend_per_packet`, `spent_total` + cap >
///    `max_total_spend`, or the receipt used has a smaller cap than the packet) → `over_budget`;
///    then rung in `approved_rungs` → `run_paid` / `approved_rung`; then a valid receipt →
///    `run_paid` / `approval_receipt`; else policy `require_explicit_approval` →
///    `request_paid_approval` / `approval_required`, `deny` → `paid_denied`.
///
/// A receipt is used only when the rung is not pre-approved and it is valid for this packet and
/// rung at `now` (valid while `granted_at <= now < expires_at`: at `now == expires_at` it has
/// expired). A receipt that is given but unusable is ignored, and the detail says why. A valid
/// receipt authorises the packet even under a `deny` paid policy: it is an explicit approval.
pub fn evaluate_dispatch(input: &DispatchInput<'_>) -> DispatchResult {
    let DispatchInput {
        decision,
        rung,
        policy,
        packet,
        point,
        ..
    } = *input;
    let result = |action: Action, reason: Reason, detail: String| DispatchResult {
        action,
        reason,
        detail,
        decision_id: decision.id.clone(),
        packet_id: packet.id.clone(),
        rung_id: rung.id.clone(),
        spend_class: rung.spend_class,
        required_outputs: packet.required_outputs.clone(),
    };
    let hold = |reason: Reason, detail: String| result(Action::HoldPacket, reason, detail);

    let problems = input.problems();
    if !problems.is_empty() {
        return hold(
            Reason::Invalid,
            format!(
                "held: the dispatch input is invalid, {}. Fix them and dispatch again.",
                join_problems(&problems)
            ),
        );
    }

    if packet.decision_id != decision.id {
        return hold(
            Reason::DecisionMismatch,
            format!(
                "held: packet {:?} serves decision {:?} but was dispatched with decision {:?}; \
                 pass the packet's decision or fix packet.decision_id",
                packet.id, packet.decision_id, decision.id
            ),
        );
    }
    if packet.rung_id != rung.id {
        return hold(
            Reason::RungMismatch,
            format!(
                "held: packet {:?} names rung {:?} but was dispatched on rung {:?}; pass the \
                 packet's rung or fix packet.rung_id",
                packet.id, packet.rung_id, rung.id
            ),
        );
    }

    let unbounded = packet.unbounded_reasons(rung.spend_class);
    if !unbounded.is_empty() {
        return hold(
            Reason::Unbounded,
            format!(
                "held: packet {:?} is not bounded: {}",
                packet.id,
                unbounded.join("; ")
            ),
        );
    }

    let missing: Vec<&str> = decision
        .required_outputs
        .iter()
        .filter(|o| !packet.required_outputs.contains(o))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return hold(
            Reason::MissingRequiredOutputs,
            format!(
                "held: packet {:?} omits outputs that decision {:?} requires: {}; add them to \
                 packet.required_outputs",
                packet.id,
                decision.id,
                missing.join(", ")
            ),
        );
    }

    if !rung.admitted {
        return hold(
            Reason::RungNotAdmitted,
            format!(
                "held: rung {:?} is not admitted; admit it (rung.admitted = true) or choose an \
                 admitted rung",
                rung.id
            ),
        );
    }
    if let Some(point) = point {
        if !point.permitted_rung_ids.contains(&rung.id) {
            return hold(
                Reason::RungNotAdmitted,
                format!(
                    "held: rung {:?} is not permitted at compute point {:?} (permitted: {}); \
                     choose a permitted rung or add it to the point's permitted_rung_ids",
                    rung.id,
                    point.id,
                    point.permitted_rung_ids.join(", ")
                ),
            );
        }
    }

    match rung.spend_class {
        SpendClass::LocalUnmetered => match policy.local.default_action {
            LocalAction::Allow => result(
                Action::RunLocal,
                Reason::LocalAllowed,
                format!(
                    "run locally: rung {:?} is local and admitted, and local policy allows it",
                    rung.id
                ),
            ),
            LocalAction::Deny => hold(
                Reason::LocalDenied,
                format!(
                    "held: local policy denies local compute (policy.local.default_action = \
                     deny); set it to allow to run rung {:?}",
                    rung.id
                ),
            ),
        },
        SpendClass::PaidMetered => {
            let (action, reason, detail) = paid(input);
            result(action, reason, detail)
        }
    }
}

/// Rule 7, for a valid, bounded, admitted packet on a paid rung.
fn paid(input: &DispatchInput<'_>) -> (Action, Reason, String) {
    let DispatchInput {
        rung,
        policy,
        packet,
        approval,
        trusted_approvers,
        spent_total,
        now,
        ..
    } = *input;
    let pre_approved = policy.paid.approved_rungs.contains(&rung.id);
    let receipt: Option<Result<&ApprovalReceipt, ReceiptError>> = approval.map(|r| {
        r.authorizes(&packet.id, &rung.id, trusted_approvers, now)
            .map(|()| r)
    });
    let used = match receipt {
        Some(Ok(r)) if !pre_approved => Some(r),
        _ => None,
    };
    let note = match &receipt {
        None => String::new(),
        Some(Err(e)) => format!(" (the approval receipt given was not used: {e})"),
        Some(Ok(_)) if pre_approved => {
            " (the approval receipt given was not needed: the rung is pre-approved)".to_owned()
        }
        Some(Ok(_)) => String::new(),
    };

    // Bounded paid packets always carry a spend cap (rule 3); 0.0 only keeps this total.
    let cap = packet.budget.spend_cap.unwrap_or(0.0);
    if let Some(max) = policy.paid.max_spend_per_packet {
        if cap > max {
            return over_budget(format!(
                "packet spend cap {cap} is over the policy's per-packet cap {max}; lower \
                 packet.budget.spend_cap or raise policy.paid.max_spend_per_packet{note}"
            ));
        }
    }
    if let Some(max) = policy.paid.max_total_spend {
        let total = spent_total + cap;
        if total > max {
            return over_budget(format!(
                "{spent_total} already spent plus this packet's cap {cap} is {total}, over the \
                 policy's total cap {max}; lower packet.budget.spend_cap or raise \
                 policy.paid.max_total_spend{note}"
            ));
        }
    }
    if let Some(r) = used {
        if r.spend_cap < cap {
            return over_budget(format!(
                "the approval receipt covers at most {} but the packet's spend cap is {cap}; \
                 lower packet.budget.spend_cap or ask for a receipt covering {cap}",
                r.spend_cap
            ));
        }
    }

    if pre_approved {
        return (
            Action::RunPaid,
            Reason::ApprovedRung,
            format!(
                "run paid: rung {:?} is listed in policy.paid.approved_rungs, spend cap {cap}{note}",
                rung.id
            ),
        );
    }
    if let Some(r) = used {
        return (
            Action::RunPaid,
            Reason::ApprovalReceipt,
            format!(
                "run paid: approval receipt from {} covers packet {:?} on rung {:?} up to {} \
                 until {}",
                r.approver, packet.id, rung.id, r.spend_cap, r.expires_at
            ),
        );
    }
    match policy.paid.default_action {
        PaidAction::RequireExplicitApproval => (
            Action::RequestPaidApproval,
            Reason::ApprovalRequired,
            format!(
                "approval needed: rung {:?} is paid and not pre-approved; ask the program owner \
                 for an approval receipt for packet {:?} on this rung covering {cap}{note}",
                rung.id, packet.id
            ),
        ),
        PaidAction::Deny => (
            Action::HoldPacket,
            Reason::PaidDenied,
            format!(
                "held: paid policy denies rungs not pre-approved (policy.paid.default_action = \
                 deny); add {:?} to policy.paid.approved_rungs or present an approval \
                 receipt{note}",
                rung.id
            ),
        ),
    }
}

fn over_budget(detail: String) -> (Action, Reason, String) {
    (
        Action::HoldPacket,
        Reason::OverBudget,
        format!("held: over budget: {detail}"),
    )
}
