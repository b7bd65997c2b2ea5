//! Tests for dispatch: fixtures here, cases in the submodules.

use std::collections::BTreeMap;

use libp2p_identity::Keypair;

use super::*;
use crate::trace::ApprovalReceipt;
use crate::Timestamp;

mod choose;
mod evaluate;
mod map;
mod validate;

/// Fixed "now" for every case.
pub(super) const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

pub(super) fn keypair() -> Keypair {
    Keypair::ed25519_from_bytes([7u8; 32]).unwrap()
}

pub(super) fn decision() -> Decision {
    Decision {
        id: "adult-vs-developmental-rgc".into(),
        question: "Does this route generalize on an adult holdout without false restoration drift?"
            .into(),
        required_outputs: vec!["run_manifest.json".into(), "metrics.csv".into()],
    }
}

pub(super) fn local_rung() -> Rung {
    Rung {
        id: "local-4090-scout".into(),
        label: "Local 4090 scout".into(),
        spend_class: SpendClass::LocalUnmetered,
        admitted: true,
        hardware: HardwareClass::Rtx4090,
    }
}

pub(super) fn paid_rung() -> Rung {
    Rung {
        id: "h100-transfer".into(),
        label: "Paid 1x H100 transfer check".into(),
        spend_class: SpendClass::PaidMetered,
        admitted: true,
        hardware: HardwareClass::H100,
    }
}

/// The package's quick-start policy: local allow, paid require explicit approval, nothing
/// pre-approved, no caps.
pub(super) fn policy() -> Policy {
    Policy {
        local: LocalPolicy {
            default_action: LocalAction::Allow,
        },
        paid: PaidPolicy {
            default_action: PaidAction::RequireExplicitApproval,
            approved_rungs: vec![],
            max_spend_per_packet: None,
            max_total_spend: None,
        },
    }
}

pub(super) fn packet(decision: &Decision, rung: &Rung) -> ComputePacket {
    ComputePacket {
        id: "wave-1-promotion-evidence".into(),
        decision_id: decision.id.clone(),
        rung_id: rung.id.clone(),
        question: "Can a bounded model separate adult RGC state from developmental movement?"
            .into(),
        success_bar: BTreeMap::from([("auroc_min".to_owned(), 0.9)]),
        stop_condition: "Hold if performance collapses on true holdouts.".into(),
        required_outputs: decision.required_outputs.clone(),
        budget: Budget {
            wall_clock_secs: Some(3600),
            steps: None,
            spend_cap: Some(50.0),
        },
    }
}

/// A receipt for `packet` on `rung`, valid for an hour around [`NOW`], covering `cap`.
pub(super) fn receipt(packet: &ComputePacket, rung: &Rung, cap: f64) -> ApprovalReceipt {
    ApprovalReceipt::issue(
        &keypair(),
        packet.id.clone(),
        rung.id.clone(),
        NOW,
        NOW.plus_secs(3600),
        cap,
    )
    .unwrap()
}

/// Owned dispatch input.
#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) decision: Decision,
    pub(super) rung: Rung,
    pub(super) policy: Policy,
    pub(super) packet: ComputePacket,
    pub(super) point: Option<ComputePoint>,
    pub(super) receipt: Option<ApprovalReceipt>,
    pub(super) trusted: Vec<String>,
    pub(super) spent_total: f64,
    pub(super) now: Timestamp,
}

impl Case {
    pub(super) fn with_rung(rung: Rung) -> Self {
        let decision = decision();
        let packet = packet(&decision, &rung);
        Self {
            decision,
            rung,
            policy: policy(),
            packet,
            point: None,
            receipt: None,
            trusted: trusted(),
            spent_total: 0.0,
            now: NOW,
        }
    }

    pub(super) fn local() -> Self {
        Self::with_rung(local_rung())
    }

    pub(super) fn paid() -> Self {
        Self::with_rung(paid_rung())
    }

    pub(super) fn eval(&self) -> DispatchResult {
        evaluate_dispatch(&DispatchInput {
            decision: &self.decision,
            rung: &self.rung,
            policy: &self.policy,
            packet: &self.packet,
            point: self.point.as_ref(),
            approval: self.receipt.as_ref(),
            trusted_approvers: &self.trusted,
            spent_total: self.spent_total,
            now: self.now,
        })
    }
}

pub(super) fn point(rungs: &[&Rung]) -> ComputePoint {
    ComputePoint {
        id: "adult-vs-developmental-rgc-opponent".into(),
        label: "Adult vs developmental RGC opponent lane".into(),
        question: "Can a bounded model distinguish adult human RGC state on honest holdouts?"
            .into(),
        intent: "classification".into(),
        entry_surfaces: vec!["controller.phase.350.1".into()],
        trigger_signals: vec!["honest holdout split materialized".into()],
        default_rung_id: rungs.first().map(|r| r.id.clone()).unwrap_or_default(),
        permitted_rung_ids: rungs.iter().map(|r| r.id.clone()).collect(),
        required_outputs: vec!["run_manifest.json".into(), "metrics.csv".into()],
        evidence_expectation: "A bounded result bundle.".into(),
        stop_conditions: vec![
            "Hold if the signal tracks protocol more than biology.".into(),
            "Stop after one holdout pass.".into(),
        ],
        budget: Budget {
            wall_clock_secs: Some(1800),
            steps: Some(10_000),
            spend_cap: Some(25.0),
        },
    }
}

pub(super) fn map() -> ProjectComputeMap {
    let local = local_rung();
    let paid = paid_rung();
    ProjectComputeMap {
        project_id: "longevity-controller".into(),
        label: "Partial reprogramming controller".into(),
        repo_roots: vec!["/abs/path/to/longevity-research".into()],
        rungs: vec![local.clone(), paid.clone()],
        default_policy: policy(),
        compute_points: vec![point(&[&local, &paid])],
    }
}

#[test]
fn content_digests_are_domain_separated_and_track_content() {
    let d = decision();
    let r = local_rung();
    let p = packet(&d, &r);
    assert_eq!(d.content_digest(), decision().content_digest());
    assert_ne!(d.content_digest(), Digest::content_id(RUNG_DOMAIN, &d));
    let mut d2 = d.clone();
    d2.question.push('?');
    assert_ne!(d.content_digest(), d2.content_digest());
    let mut r2 = r.clone();
    r2.admitted = false;
    assert_ne!(r.content_digest(), r2.content_digest());
    let mut p2 = p.clone();
    p2.budget.steps = Some(1);
    assert_ne!(p.content_digest(), p2.content_digest());
}

#[test]
fn serde_names_are_snake_case() {
    let result = Case::paid().eval();
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(json["action"], "request_paid_approval");
    assert_eq!(json["reason"], "approval_required");
    assert_eq!(json["spend_class"], "paid_metered");
    let back: DispatchResult = serde_json::from_value(json).unwrap();
    assert_eq!(back, result);
    let bytes = crate::wire::codec::encode(&map()).unwrap();
    assert_eq!(
        crate::wire::codec::decode::<ProjectComputeMap>(&bytes).unwrap(),
        map()
    );
}

/// The approvers the test cases trust: the key that signs [`receipt`].
pub(super) fn trusted() -> Vec<String> {
    vec![keypair().public().to_peer_id().to_base58()]
}

#[test]
fn receipt_from_an_untrusted_approver_is_ignored() {
    let mut case = Case::with_rung(paid_rung());
    case.receipt = Some(receipt(&case.packet, &case.rung, 50.0));
    assert_eq!(case.eval().action, Action::RunPaid);
    case.trusted = vec![Keypair::ed25519_from_bytes([8u8; 32])
        .unwrap()
        .public()
        .to_peer_id()
        .to_base58()];
    let r = case.eval();
    assert_eq!(r.action, Action::RequestPaidApproval);
    assert!(r.detail.contains("may not approve spend"), "{}", r.detail);
}
