//! Traceability: result bundles, impact reads, approval receipts and the records that link them to
//! the decision, rung and packet they came from (semantics §4).
//!
//! Every object here has a content-hash id, `Digest::content_id("btd/<kind>/v1", body)`, where the
//! body is the object's fields in declaration order **without** its `id` field (a private struct
//! borrowing them, so the bytes hashed are the canonical encoding of exactly those fields). An
//! [`ApprovalReceipt`] has no id field; its [`ApprovalReceipt::id`] hashes the whole receipt,
//! signature included. Changing an object's encoding changes its ids: that is a protocol change.
//!
//! [`ImpactRead::from_receipt`] is the rule that reads the owner's verdict on a result.
//!
//! Validators return every [`Problem`] they find (empty = valid), with paths rooted at `bundle`,
//! `impact`, `receipt` and `record`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;

mod impact;
pub(crate) mod problem;
mod receipt;
mod record;

#[cfg(test)]
mod tests;

pub use problem::{Problem, Problems, MAX_ID_BYTES};
pub use receipt::{ApprovalReceipt, ReceiptError, APPROVAL_RECEIPT_DOMAIN};
pub use record::{TraceabilityRecord, TRACEABILITY_RECORD_DOMAIN};

use problem::{at, check_finite, check_id, check_text, index};

/// Domain tag of [`ResultBundle`] ids.
pub const RESULT_BUNDLE_DOMAIN: &str = "btd/result-bundle/v1";
/// Domain tag of [`ImpactRead`] ids.
pub const IMPACT_READ_DOMAIN: &str = "btd/impact-read/v1";

/// One artifact a run produced: its name and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Output {
    /// The output's name, as in the packet's `required_outputs` (e.g. `metrics.csv`).
    pub name: String,
    /// SHA-256 of its contents.
    pub sha256: Digest,
}

impl Output {
    /// The output `name` with contents `bytes`.
    pub fn of(name: impl Into<String>, bytes: &[u8]) -> Self {
        Self {
            name: name.into(),
            sha256: Digest::of(bytes),
        }
    }
}

/// How one round of a worker loop ended (its run record's state; an ORP export's lifecycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Running (a round the daemon was killed during becomes `cancelled` when it starts again).
    Running,
    /// Dispatch held the packet.
    Held,
    /// The task failed or produced no value.
    Failed,
    /// The daemon was stopping, or was killed while the round ran; nothing was submitted.
    Cancelled,
    /// The result ran but the owner did not record it.
    Unsubmitted,
    /// The result waits in the member's outbox: the owner was rate limiting or unreachable when
    /// the round ended; the daemon keeps sending it (it becomes `submitted` or `unsubmitted`).
    Queued,
    /// The owner recorded it.
    Submitted,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BundleStatus {
    /// Ran to its stop condition or success bar.
    Completed,
    /// Failed.
    Failed,
    /// Hit its wall-clock or step budget.
    TimedOut,
    /// Held before or during the run.
    Held,
}

/// What a run produced for one packet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResultBundle {
    /// Content id: `content_id("btd/result-bundle/v1", every field but id)`.
    pub id: Digest,
    /// The packet that was run.
    pub packet_id: String,
    /// The artifacts, each once.
    pub outputs: Vec<Output>,
    /// How the run ended.
    pub status: BundleStatus,
    /// Named measurements, e.g. `{"val_bpb": 1.05}`.
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct ResultBundleBody<'a> {
    packet_id: &'a str,
    outputs: &'a [Output],
    status: BundleStatus,
    metrics: &'a BTreeMap<String, f64>,
}

impl ResultBundle {
    /// A bundle with its id computed.
    pub fn new(
        packet_id: impl Into<String>,
        outputs: Vec<Output>,
        status: BundleStatus,
        metrics: BTreeMap<String, f64>,
    ) -> Self {
        let mut bundle = Self {
            id: Digest([0; 32]),
            packet_id: packet_id.into(),
            outputs,
            status,
            metrics,
        };
        bundle.id = bundle.compute_id();
        bundle
    }

    /// The id its content calls for.
    pub fn compute_id(&self) -> Digest {
        Digest::content_id(
            RESULT_BUNDLE_DOMAIN,
            &ResultBundleBody {
                packet_id: &self.packet_id,
                outputs: &self.outputs,
                status: self.status,
                metrics: &self.metrics,
            },
        )
    }

    /// The names in `required` that no output has, in order, each once.
    pub fn missing_outputs(&self, required: &[String]) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        for name in required {
            if !self.outputs.iter().any(|o| &o.name == name) && !missing.contains(name) {
                missing.push(name.clone());
            }
        }
        missing
    }

    /// Every problem with this bundle (empty when valid).
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.validate_at("bundle", &mut out);
        out
    }

    pub(crate) fn validate_at(&self, path: &str, out: &mut Vec<Problem>) {
        check_id(out, at(path, "packet_id"), &self.packet_id);
        let outputs = at(path, "outputs");
        for (i, output) in self.outputs.iter().enumerate() {
            let name = at(&index(&outputs, i), "name");
            if output.name.trim().is_empty() {
                out.push(Problem::new(
                    name,
                    "must not be empty; give the output a name",
                ));
            } else if let Some(first) = self
                .outputs
                .iter()
                .position(|o| o.name == output.name)
                .filter(|&j| j < i)
            {
                out.push(Problem::new(
                    name,
                    format!(
                        "repeats {:?} (already at [{first}]); each output appears once",
                        output.name
                    ),
                ));
            }
        }
        let metrics = at(path, "metrics");
        for (name, value) in &self.metrics {
            let entry = format!("{metrics}[{name:?}]");
            if name.trim().is_empty() {
                out.push(Problem::new(entry.clone(), "metric name must not be empty"));
            }
            check_finite(out, entry, *value);
        }
        check_content_id(out, at(path, "id"), self.id, self.compute_id());
    }
}

/// What the host system does next because of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NextAction {
    /// Keep the result; it changes the host's belief.
    Keep,
    /// Discard it.
    Discard,
    /// Run the packet again.
    Rerun,
    /// Escalate to a heavier rung.
    Escalate,
    /// Hold: decide later.
    Hold,
}

/// How a result bundle changes the host system's next action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ImpactRead {
    /// Content id: `content_id("btd/impact-read/v1", every field but id)`.
    pub id: Digest,
    /// The bundle read.
    pub bundle_id: Digest,
    /// What to do next.
    pub next_action: NextAction,
    /// Why, in words.
    pub summary: String,
}

#[derive(Serialize)]
struct ImpactReadBody<'a> {
    bundle_id: Digest,
    next_action: NextAction,
    summary: &'a str,
}

impl ImpactRead {
    /// An impact read with its id computed.
    pub fn new(bundle_id: Digest, next_action: NextAction, summary: impl Into<String>) -> Self {
        let mut read = Self {
            id: Digest([0; 32]),
            bundle_id,
            next_action,
            summary: summary.into(),
        };
        read.id = read.compute_id();
        read
    }

    /// The id its content calls for.
    pub fn compute_id(&self) -> Digest {
        Digest::content_id(
            IMPACT_READ_DOMAIN,
            &ImpactReadBody {
                bundle_id: self.bundle_id,
                next_action: self.next_action,
                summary: &self.summary,
            },
        )
    }

    /// Every problem with this impact read (empty when valid).
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.validate_at("impact", &mut out);
        out
    }

    pub(crate) fn validate_at(&self, path: &str, out: &mut Vec<Problem>) {
        check_text(out, at(path, "summary"), &self.summary);
        check_content_id(out, at(path, "id"), self.id, self.compute_id());
    }
}

/// Checks that a stored content id is the one the content calls for.
fn check_content_id(out: &mut Vec<Problem>, path: String, stored: Digest, computed: Digest) {
    if stored != computed {
        out.push(Problem::new(
            path,
            format!(
                "is {stored} but the content hashes to {computed}; the object was changed after \
                 its id was computed (recompute it with compute_id())"
            ),
        ));
    }
}
