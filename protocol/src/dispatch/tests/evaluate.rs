//! `evaluate_dispatch`: the known cases, the precedence table and receipts.

use super::*;

#[test]
fn known_case_admitted_local_rung_runs_local() {
    let r = Case::local().eval();
    assert_eq!(
        (r.action, r.reason),
        (Action::RunLocal, Reason::LocalAllowed)
    );
    assert_eq!(r.decision_id, "adult-vs-developmental-rgc");
    assert_eq!(r.packet_id, "wave-1-promotion-evidence");
    assert_eq!(r.rung_id, "local-4090-scout");
    assert_eq!(r.spend_class, SpendClass::LocalUnmetered);
    assert_eq!(r.required_outputs, decision().required_outputs);
}

#[test]
fn known_case_paid_rung_not_approved_requests_approval() {
    let r = Case::paid().eval();
    assert_eq!(
        (r.action, r.reason),
        (Action::RequestPaidApproval, Reason::ApprovalRequired)
    );
    assert_eq!(r.spend_class, SpendClass::PaidMetered);
    assert!(r.detail.contains("h100-transfer"), "{}", r.detail);
}

#[test]
fn known_case_paid_rung_in_approved_rungs_runs_paid() {
    let mut c = Case::paid();
    c.policy.paid.approved_rungs = vec!["h100-transfer".into()];
    let r = c.eval();
    assert_eq!(
        (r.action, r.reason),
        (Action::RunPaid, Reason::ApprovedRung)
    );
}

/// A way to break one rule, with the reason it must produce.
type Violation = (&'static str, fn(&mut Case), Reason);

fn shared_violations() -> Vec<Violation> {
    vec![
        ("invalid", |c| c.decision.question.clear(), Reason::Invalid),
        (
            "decision mismatch",
            |c| c.packet.decision_id = "other-decision".into(),
            Reason::DecisionMismatch,
        ),
        (
            "rung mismatch",
            |c| c.packet.rung_id = "other-rung".into(),
            Reason::RungMismatch,
        ),
        (
            "unbounded",
            |c| c.packet.stop_condition.clear(),
            Reason::Unbounded,
        ),
        (
            "missing outputs",
            |c| c.packet.required_outputs.truncate(1),
            Reason::MissingRequiredOutputs,
        ),
        (
            "not admitted",
            |c| c.rung.admitted = false,
            Reason::RungNotAdmitted,
        ),
        (
            "point forbids rung",
            |c| c.point = Some(point(&[&local_rung_named("elsewhere")])),
            Reason::RungNotAdmitted,
        ),
    ]
}

fn local_rung_named(id: &str) -> Rung {
    Rung {
        id: id.into(),
        ..local_rung()
    }
}

fn local_violations() -> Vec<Violation> {
    let mut v = shared_violations();
    v.push((
        "local deny",
        |c| c.policy.local.default_action = LocalAction::Deny,
        Reason::LocalDenied,
    ));
    v
}

/// Paid outcomes in precedence order; the "violations" after over budget are conditions that
/// change the outcome, each overriding those after it.
fn paid_violations() -> Vec<Violation> {
    let mut v = shared_violations();
    v.extend([
        (
            "over per-packet cap",
            (|c: &mut Case| c.policy.paid.max_spend_per_packet = Some(10.0)) as fn(&mut Case),
            Reason::OverBudget,
        ),
        (
            "rung pre-approved",
            |c: &mut Case| c.policy.paid.approved_rungs = vec![c.rung.id.clone()],
            Reason::ApprovedRung,
        ),
        (
            "valid receipt",
            |c: &mut Case| c.receipt = Some(receipt(&c.packet, &c.rung, 100.0)),
            Reason::ApprovalReceipt,
        ),
        (
            "paid deny",
            |c: &mut Case| c.policy.paid.default_action = PaidAction::Deny,
            Reason::PaidDenied,
        ),
    ]);
    v
}

/// Rule i applied together with every later rule: rule i wins.
fn check_suffixes(base: fn() -> Case, violations: &[Violation], fallback: Reason) {
    for i in 0..violations.len() {
        let mut c = base();
        for (_, apply, _) in violations.iter().skip(i).rev() {
            apply(&mut c);
        }
        let (name, _, expected) = violations[i];
        let got = c.eval();
        assert_eq!(
            got.reason, expected,
            "{name} with all later rules: {}",
            got.detail
        );
    }
    assert_eq!(base().eval().reason, fallback);
}

#[test]
fn precedence_table_local() {
    check_suffixes(Case::local, &local_violations(), Reason::LocalAllowed);
}

#[test]
fn precedence_table_paid() {
    check_suffixes(Case::paid, &paid_violations(), Reason::ApprovalRequired);
}

/// Every subset of rule-breaking conditions: the first in precedence order decides.
fn check_all_subsets(base: fn() -> Case, violations: &[Violation], fallback: Reason) {
    for mask in 0u32..(1 << violations.len()) {
        let mut c = base();
        for (i, (_, apply, _)) in violations.iter().enumerate().rev() {
            if mask & (1 << i) != 0 {
                apply(&mut c);
            }
        }
        let expected = (0..violations.len())
            .find(|i| mask & (1 << i) != 0)
            .map_or(fallback, |i| violations[i].2);
        let got = c.eval();
        assert_eq!(got.reason, expected, "mask {mask:#b}: {}", got.detail);
        let action = match expected {
            Reason::LocalAllowed => Action::RunLocal,
            Reason::ApprovedRung | Reason::ApprovalReceipt => Action::RunPaid,
            Reason::ApprovalRequired => Action::RequestPaidApproval,
            _ => Action::HoldPacket,
        };
        assert_eq!(got.action, action, "mask {mask:#b}");
    }
}

#[test]
fn precedence_every_combination_local() {
    check_all_subsets(Case::local, &local_violations(), Reason::LocalAllowed);
}

#[test]
fn precedence_every_combination_paid() {
    check_all_subsets(Case::paid, &paid_violations(), Reason::ApprovalRequired);
}

#[test]
fn invalid_detail_lists_every_problem() {
    let mut c = Case::local();
    c.decision.id = "bad id".into();
    c.packet.question.clear();
    c.packet.budget.spend_cap = Some(f64::NAN);
    c.spent_total = f64::INFINITY;
    let r = c.eval();
    assert_eq!((r.action, r.reason), (Action::HoldPacket, Reason::Invalid));
    for path in [
        "decision.id",
        "packet.question",
        "packet.budget.spend_cap",
        "spent_total",
    ] {
        assert!(r.detail.contains(path), "{path} missing from {}", r.detail);
    }
    assert!(r.detail.contains("4 problems"), "{}", r.detail);
}

#[test]
fn negative_or_nan_spent_total_is_invalid() {
    for spent in [-1.0, f64::NAN] {
        let mut c = Case::paid();
        c.spent_total = spent;
        assert_eq!(c.eval().reason, Reason::Invalid);
    }
}

#[test]
fn unbounded_reasons() {
    let mut c = Case::paid();
    c.packet.budget = Budget {
        wall_clock_secs: Some(0),
        steps: Some(0),
        spend_cap: None,
    };
    let r = c.eval();
    assert_eq!(r.reason, Reason::Unbounded);
    assert!(
        r.detail.contains("wall-clock or step limit"),
        "{}",
        r.detail
    );
    assert!(r.detail.contains("spend cap"), "{}", r.detail);
    // The same packet with a step budget but no cap is bounded on a local rung only.
    c.packet.budget.steps = Some(1);
    assert!(c.packet.is_bounded(SpendClass::LocalUnmetered));
    assert!(!c.packet.is_bounded(SpendClass::PaidMetered));
    c.packet.required_outputs.clear();
    c.decision.required_outputs.clear();
    assert_eq!(
        c.packet.unbounded_reasons(SpendClass::LocalUnmetered).len(),
        1
    );
}

#[test]
fn missing_outputs_are_named() {
    let mut c = Case::local();
    c.decision.required_outputs.push("impact_note.md".into());
    let r = c.eval();
    assert_eq!(r.reason, Reason::MissingRequiredOutputs);
    assert!(r.detail.contains("impact_note.md"), "{}", r.detail);
    assert!(!r.detail.contains("metrics.csv"), "{}", r.detail);
}

#[test]
fn point_permits_rung() {
    let mut c = Case::local();
    c.point = Some(point(&[&local_rung()]));
    assert_eq!(c.eval().reason, Reason::LocalAllowed);
    c.point = Some(point(&[&paid_rung()]));
    let r = c.eval();
    assert_eq!(r.reason, Reason::RungNotAdmitted);
    assert!(r.detail.contains("h100-transfer"), "{}", r.detail);
}

#[test]
fn spend_caps() {
    let mut c = Case::paid();
    c.policy.paid.approved_rungs = vec![c.rung.id.clone()];
    c.policy.paid.max_spend_per_packet = Some(50.0);
    c.policy.paid.max_total_spend = Some(100.0);
    c.spent_total = 50.0;
    // Exactly at both caps is within them.
    assert_eq!(c.eval().reason, Reason::ApprovedRung);
    c.spent_total = 50.5;
    let r = c.eval();
    assert_eq!(r.reason, Reason::OverBudget);
    assert!(r.detail.contains("max_total_spend"), "{}", r.detail);
    c.spent_total = 0.0;
    c.packet.budget.spend_cap = Some(50.01);
    let r = c.eval();
    assert_eq!(r.reason, Reason::OverBudget);
    assert!(r.detail.contains("max_spend_per_packet"), "{}", r.detail);
}

#[test]
fn receipt_authorises_its_packet_and_rung() {
    let mut c = Case::paid();
    c.receipt = Some(receipt(&c.packet, &c.rung, 50.0));
    let r = c.eval();
    assert_eq!(
        (r.action, r.reason),
        (Action::RunPaid, Reason::ApprovalReceipt)
    );
    // Even a deny policy yields to an explicit approval.
    c.policy.paid.default_action = PaidAction::Deny;
    assert_eq!(c.eval().reason, Reason::ApprovalReceipt);
}

#[test]
fn receipt_covering_less_than_the_packet_is_over_budget() {
    let mut c = Case::paid();
    c.receipt = Some(receipt(&c.packet, &c.rung, 49.0));
    let r = c.eval();
    assert_eq!(r.reason, Reason::OverBudget);
    assert!(
        r.detail.contains("receipt covers at most 49"),
        "{}",
        r.detail
    );
    // A pre-approved rung does not use the receipt, so its cap does not apply.
    c.policy.paid.approved_rungs = vec![c.rung.id.clone()];
    let r = c.eval();
    assert_eq!(r.reason, Reason::ApprovedRung);
    assert!(r.detail.contains("not needed"), "{}", r.detail);
}

#[test]
fn receipt_expires_at_the_exact_instant() {
    let mut c = Case::paid();
    let rec = receipt(&c.packet, &c.rung, 50.0);
    let expires = rec.expires_at;
    c.receipt = Some(rec);
    c.now = Timestamp::from_millis(expires.as_millis() - 1);
    assert_eq!(c.eval().reason, Reason::ApprovalReceipt);
    c.now = expires;
    let r = c.eval();
    assert_eq!(r.reason, Reason::ApprovalRequired);
    assert!(
        r.detail.contains("not used") && r.detail.contains("expired"),
        "{}",
        r.detail
    );
    // Valid from granted_at inclusive, not before.
    c.now = NOW;
    assert_eq!(c.eval().reason, Reason::ApprovalReceipt);
    c.now = Timestamp::from_millis(NOW.as_millis() - 1);
    let r = c.eval();
    assert_eq!(r.reason, Reason::ApprovalRequired);
    assert!(r.detail.contains("valid only from"), "{}", r.detail);
}

#[test]
fn receipt_for_another_packet_or_rung_is_ignored() {
    let base = Case::paid();
    let mut other_packet = base.packet.clone();
    other_packet.id = "wave-2".into();
    let mut other_rung = base.rung.clone();
    other_rung.id = "h100-other".into();
    for (rec, says) in [
        (
            receipt(&other_packet, &base.rung, 50.0),
            "packet \"wave-2\"",
        ),
        (
            receipt(&base.packet, &other_rung, 50.0),
            "rung \"h100-other\"",
        ),
    ] {
        let mut c = base.clone();
        c.receipt = Some(rec);
        let r = c.eval();
        assert_eq!(r.reason, Reason::ApprovalRequired, "{}", r.detail);
        assert!(r.detail.contains(says), "{}", r.detail);
        c.policy.paid.default_action = PaidAction::Deny;
        let r = c.eval();
        assert_eq!(r.reason, Reason::PaidDenied);
        assert!(r.detail.contains("not used"), "{}", r.detail);
    }
}

#[test]
fn tampered_receipt_is_ignored() {
    let mut c = Case::paid();
    let mut rec = receipt(&c.packet, &c.rung, 10.0);
    rec.spend_cap = 1000.0;
    c.receipt = Some(rec);
    let r = c.eval();
    assert_eq!(r.reason, Reason::ApprovalRequired);
    assert!(
        r.detail.contains("signature does not verify"),
        "{}",
        r.detail
    );
}

#[test]
fn mismatch_details_name_both_ids() {
    let mut c = Case::local();
    c.packet.decision_id = "other-decision".into();
    let r = c.eval();
    assert!(
        r.detail.contains("other-decision") && r.detail.contains("adult-vs-developmental-rgc"),
        "{}",
        r.detail
    );
    assert_eq!(r.decision_id, "adult-vs-developmental-rgc");
}
