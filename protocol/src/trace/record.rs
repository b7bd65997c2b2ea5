//! Traceability records: one run's decision, rung, packet, receipt, bundle and impact read, linked
//! by content hash.

use serde::{Deserialize, Serialize};

use super::problem::{at, check_id, Problem};
use super::{
    check_content_id, ApprovalReceipt, BundleStatus, ImpactRead, ReceiptError, ResultBundle,
};
use crate::dispatch::{ComputePacket, Decision, Rung, SpendClass};
use crate::Digest;

/// Domain tag of [`TraceabilityRecord`] ids.
pub const TRACEABILITY_RECORD_DOMAIN: &str = "btd/traceability-record/v1";

/// Links one run's objects by content hash, so any of them can be checked against the record later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TraceabilityRecord {
    /// Content id: `content_id("btd/traceability-record/v1", every field but id)`.
    pub id: Digest,
    /// The decision's id, for lookup.
    pub decision_id: String,
    /// [`Decision::content_digest`].
    pub decision: Digest,
    /// [`Rung::content_digest`].
    pub rung: Digest,
    /// [`ComputePacket::content_digest`].
    pub packet: Digest,
    /// [`ApprovalReceipt::id`], for paid runs.
    pub approval_receipt: Option<Digest>,
    /// [`ResultBundle::id`].
    pub bundle: Digest,
    /// [`ImpactRead::id`].
    pub impact_read: Digest,
}

#[derive(Serialize)]
struct RecordBody<'a> {
    decision_id: &'a str,
    decision: Digest,
    rung: Digest,
    packet: Digest,
    approval_receipt: Option<Digest>,
    bundle: Digest,
    impact_read: Digest,
}

impl TraceabilityRecord {
    /// Links the objects of one run, after checking that they belong together: every object
    /// valid, the packet for this decision and rung, the bundle for this packet, the impact read
    /// for this bundle, the receipt (if any) verified and for this packet and rung, a receipt
    /// present when the rung is paid, and a completed bundle holding every output the decision and
    /// the packet require. Returns every problem found.
    ///
    /// A paid rung always needs a receipt here, even when the policy pre-approved it: the host
    /// records who approved the spend by issuing one. Receipt expiry is not checked: it mattered at
    /// dispatch time, which the record does not know.
    pub fn link(
        decision: &Decision,
        rung: &Rung,
        packet: &ComputePacket,
        receipt: Option<&ApprovalReceipt>,
        bundle: &ResultBundle,
        impact: &ImpactRead,
    ) -> Result<Self, Vec<Problem>> {
        let problems = link_problems(decision, rung, packet, receipt, bundle, impact);
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut record = Self {
            id: Digest([0; 32]),
            decision_id: decision.id.clone(),
            decision: decision.content_digest(),
            rung: rung.content_digest(),
            packet: packet.content_digest(),
            approval_receipt: receipt.map(ApprovalReceipt::id),
            bundle: bundle.id,
            impact_read: impact.id,
        };
        record.id = record.compute_id();
        Ok(record)
    }

    /// The id its content calls for.
    pub fn compute_id(&self) -> Digest {
        Digest::content_id(
            TRACEABILITY_RECORD_DOMAIN,
            &RecordBody {
                decision_id: &self.decision_id,
                decision: self.decision,
                rung: self.rung,
                packet: self.packet,
                approval_receipt: self.approval_receipt,
                bundle: self.bundle,
                impact_read: self.impact_read,
            },
        )
    }

    /// Every problem with the record on its own (empty when valid): its decision id and its
    /// content id.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        check_id(&mut out, "record.decision_id".to_owned(), &self.decision_id);
        check_content_id(&mut out, "record.id".to_owned(), self.id, self.compute_id());
        out
    }

    /// Every problem with this record as the record of these objects: [`Self::validate`], every
    /// check of [`Self::link`], and each stored hash against the object's.
    pub fn validate_against(
        &self,
        decision: &Decision,
        rung: &Rung,
        packet: &ComputePacket,
        receipt: Option<&ApprovalReceipt>,
        bundle: &ResultBundle,
        impact: &ImpactRead,
    ) -> Vec<Problem> {
        let mut out = self.validate();
        out.extend(link_problems(
            decision, rung, packet, receipt, bundle, impact,
        ));
        if self.decision_id != decision.id {
            out.push(Problem::new(
                "record.decision_id",
                format!(
                    "is {:?} but the decision's id is {:?}",
                    self.decision_id, decision.id
                ),
            ));
        }
        let mut hash = |field: &str, stored: Digest, actual: Digest, what: &str| {
            if stored != actual {
                out.push(Problem::new(
                    format!("record.{field}"),
                    format!(
                        "is {stored} but the {what} hashes to {actual}; this record is not the \
                         record of this {what}"
                    ),
                ));
            }
        };
        hash(
            "decision",
            self.decision,
            decision.content_digest(),
            "decision",
        );
        hash("rung", self.rung, rung.content_digest(), "rung");
        hash("packet", self.packet, packet.content_digest(), "packet");
        hash("bundle", self.bundle, bundle.id, "result bundle");
        hash("impact_read", self.impact_read, impact.id, "impact read");
        match (self.approval_receipt, receipt) {
            (Some(stored), Some(r)) => {
                let actual = r.id();
                if stored != actual {
                    out.push(Problem::new(
                        "record.approval_receipt",
                        format!(
                            "is {stored} but the receipt hashes to {actual}; this record is not \
                             the record of this receipt"
                        ),
                    ));
                }
            }
            (Some(_), None) => out.push(Problem::new(
                "record.approval_receipt",
                "names a receipt but none was given; pass the receipt the record names",
            )),
            (None, Some(_)) => out.push(Problem::new(
                "record.approval_receipt",
                "names no receipt but one was given; this record is not the record of this receipt",
            )),
            (None, None) => {}
        }
        out
    }
}

/// Every problem with linking these objects into one record.
fn link_problems(
    decision: &Decision,
    rung: &Rung,
    packet: &ComputePacket,
    receipt: Option<&ApprovalReceipt>,
    bundle: &ResultBundle,
    impact: &ImpactRead,
) -> Vec<Problem> {
    let mut out = Vec::new();
    decision.validate_at("decision", &mut out);
    rung.validate_at("rung", &mut out);
    packet.validate_at("packet", &mut out);
    if let Some(r) = receipt {
        r.validate_at("receipt", &mut out);
    }
    bundle.validate_at("bundle", &mut out);
    impact.validate_at("impact", &mut out);

    if packet.decision_id != decision.id {
        out.push(Problem::new(
            "packet.decision_id",
            format!(
                "is {:?} but the decision is {:?}; link the packet with its own decision",
                packet.decision_id, decision.id
            ),
        ));
    }
    if packet.rung_id != rung.id {
        out.push(Problem::new(
            "packet.rung_id",
            format!(
                "is {:?} but the rung is {:?}; link the packet with its own rung",
                packet.rung_id, rung.id
            ),
        ));
    }
    if bundle.packet_id != packet.id {
        out.push(Problem::new(
            "bundle.packet_id",
            format!(
                "is {:?} but the packet is {:?}; link the bundle with the packet it ran",
                bundle.packet_id, packet.id
            ),
        ));
    }
    if impact.bundle_id != bundle.id {
        out.push(Problem::new(
            "impact.bundle_id",
            format!(
                "is {} but the bundle is {}; link the impact read with the bundle it reads",
                impact.bundle_id, bundle.id
            ),
        ));
    }
    match receipt {
        Some(r) => {
            if r.packet_id != packet.id {
                out.push(Problem::new(
                    "receipt.packet_id",
                    format!("is {:?} but the packet is {:?}", r.packet_id, packet.id),
                ));
            }
            if r.rung_id != rung.id {
                out.push(Problem::new(
                    "receipt.rung_id",
                    format!("is {:?} but the rung is {:?}", r.rung_id, rung.id),
                ));
            }
            // A malformed receipt was reported above; verifying it would repeat that.
            if r.validate().is_empty() {
                if let Err(e) = r.verify() {
                    let field = match e {
                        ReceiptError::ApproverMismatch { .. } => "approver",
                        _ => "signature",
                    };
                    out.push(Problem::new(at("receipt", field), e.to_string()));
                }
            }
        }
        None if rung.spend_class == SpendClass::PaidMetered => out.push(Problem::new(
            "receipt",
            format!(
                "is missing: rung {:?} is paid, so the run must be linked with the approval \
                 receipt that authorised its spend",
                rung.id
            ),
        )),
        None => {}
    }
    if bundle.status == BundleStatus::Completed {
        let mut required = decision.required_outputs.clone();
        required.extend(packet.required_outputs.iter().cloned());
        let missing = bundle.missing_outputs(&required);
        if !missing.is_empty() {
            out.push(Problem::new(
                "bundle.outputs",
                format!(
                    "a completed bundle must hold every required output, but lacks: {}",
                    missing.join(", ")
                ),
            ));
        }
    }
    out
}
