//! Compute governance: decisions, rungs, policy, packets and [`evaluate_dispatch`] (semantics §4).
//!
//! Every object has a `validate()` that returns every [`Problem`] it finds (empty = valid).
//! [`evaluate_dispatch`] applies semantics §4's precedence, first match wins; see its docs.
//! [`ProjectComputeMap::packet_for_point`] builds the objects to dispatch from a compute map.
//! [`choose_rung`] picks the program rung a worker runs on from the rungs it advertises.
//!
//! Content digests ([`Decision::content_digest`] etc.) are what a
//! [`crate::trace::TraceabilityRecord`] links by.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;

mod choose;
mod evaluate;
mod map;
mod validate;

#[cfg(test)]
mod tests;

pub use crate::trace::{Problem, Problems, MAX_ID_BYTES};
pub use choose::{choose_rung, RungChoiceError};
pub use evaluate::{evaluate_dispatch, DispatchInput};
pub use map::{MapError, PointDispatch};

/// Domain tag of [`Decision::content_digest`].
pub const DECISION_DOMAIN: &str = "btd/decision/v1";
/// Domain tag of [`Rung::content_digest`].
pub const RUNG_DOMAIN: &str = "btd/rung/v1";
/// Domain tag of [`ComputePacket::content_digest`].
pub const PACKET_DOMAIN: &str = "btd/compute-packet/v1";

impl Decision {
    /// `Digest::content_id("btd/decision/v1", self)`: the whole decision, id included.
    pub fn content_digest(&self) -> Digest {
        Digest::content_id(DECISION_DOMAIN, self)
    }
}

impl Rung {
    /// `Digest::content_id("btd/rung/v1", self)`: the whole rung, id included.
    pub fn content_digest(&self) -> Digest {
        Digest::content_id(RUNG_DOMAIN, self)
    }
}

impl ComputePacket {
    /// `Digest::content_id("btd/compute-packet/v1", self)`: the whole packet, id included.
    pub fn content_digest(&self) -> Digest {
        Digest::content_id(PACKET_DOMAIN, self)
    }
}

/// Whether running on a rung costs money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SpendClass {
    /// Hardware the worker owns; no metered spend.
    LocalUnmetered,
    /// Rented, metered hardware; spend needs authorization.
    PaidMetered,
}

/// The hardware class of a rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HardwareClass {
    /// CPU only.
    Cpu,
    /// NVIDIA GeForce RTX 4090.
    Rtx4090,
    /// NVIDIA GB10 (DGX Spark).
    Gb10,
    /// NVIDIA H100.
    H100,
    /// Any other GPU.
    OtherGpu,
}

/// The exact question a host system wants answered, and the outputs an answer must include.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decision {
    /// Stable id.
    pub id: String,
    /// The question.
    pub question: String,
    /// Names of the outputs a result must include to count.
    pub required_outputs: Vec<String>,
}

/// A compute tier, e.g. a local RTX 4090 or a paid H100.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rung {
    /// Stable id, e.g. `local-4090`.
    pub id: String,
    /// Human label.
    pub label: String,
    /// Whether it is metered.
    pub spend_class: SpendClass,
    /// Whether the program admits it at all.
    pub admitted: bool,
    /// Its hardware class.
    pub hardware: HardwareClass,
}

/// What to do with local (unmetered) packets by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LocalAction {
    /// Run admitted local packets.
    Allow,
    /// Hold every local packet.
    Deny,
}

/// What to do with paid (metered) packets whose rung is not pre-approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaidAction {
    /// Ask a human for an approval receipt first.
    RequireExplicitApproval,
    /// Hold every paid packet that is not pre-approved.
    Deny,
}

/// Local part of a [`Policy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LocalPolicy {
    /// Default action for local rungs.
    pub default_action: LocalAction,
}

/// Paid part of a [`Policy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PaidPolicy {
    /// Default action for paid rungs not listed in `approved_rungs`.
    pub default_action: PaidAction,
    /// Paid rungs approved in advance (no receipt needed).
    pub approved_rungs: Vec<String>,
    /// Largest spend cap one paid packet may carry (spend units, e.g. USD).
    pub max_spend_per_packet: Option<f64>,
    /// Largest total paid spend for the program.
    pub max_total_spend: Option<f64>,
}

/// Budget and authorization rules for local and paid compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Policy {
    /// Local rules.
    pub local: LocalPolicy,
    /// Paid rules.
    pub paid: PaidPolicy,
}

/// The finite budget of a packet. A packet is bounded only if it has a wall-clock and/or step budget,
/// and (on a paid rung) a spend cap.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Budget {
    /// Wall-clock limit in seconds.
    pub wall_clock_secs: Option<u64>,
    /// Step limit.
    pub steps: Option<u64>,
    /// Spend cap (spend units), required on paid rungs.
    pub spend_cap: Option<f64>,
}

/// The bounded unit of work: one question on one rung with a success bar, a stop condition,
/// required outputs and a budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ComputePacket {
    /// Stable id.
    pub id: String,
    /// The decision it serves.
    pub decision_id: String,
    /// The rung it runs on.
    pub rung_id: String,
    /// The question it answers.
    pub question: String,
    /// Named numeric bars, e.g. `{"val_bpb_max": 3.0}`.
    pub success_bar: BTreeMap<String, f64>,
    /// When to stop (or hold) the work.
    pub stop_condition: String,
    /// Outputs it must produce.
    pub required_outputs: Vec<String>,
    /// Its budget.
    pub budget: Budget,
}

/// One place in a project where targeted compute may legitimately reduce uncertainty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ComputePoint {
    /// Stable id.
    pub id: String,
    /// Human label.
    pub label: String,
    /// The question compute answers here.
    pub question: String,
    /// What kind of work, e.g. `classification`.
    pub intent: String,
    /// Where in the host system this point is entered.
    pub entry_surfaces: Vec<String>,
    /// Signals that make the point ready.
    pub trigger_signals: Vec<String>,
    /// The rung used when none is named.
    pub default_rung_id: String,
    /// Rungs this point may use.
    pub permitted_rung_ids: Vec<String>,
    /// Outputs a result must include.
    pub required_outputs: Vec<String>,
    /// What evidence a result should provide.
    pub evidence_expectation: String,
    /// Conditions to stop or hold.
    pub stop_conditions: Vec<String>,
    /// Budget for packets built from this point (btd addition: a packet needs one to be bounded).
    pub budget: Budget,
}

/// A project's catalog of compute points, with its rungs and default policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProjectComputeMap {
    /// Stable id.
    pub project_id: String,
    /// Human label.
    pub label: String,
    /// Repository roots the map covers.
    pub repo_roots: Vec<String>,
    /// Rung catalog.
    pub rungs: Vec<Rung>,
    /// Default policy.
    pub default_policy: Policy,
    /// The points.
    pub compute_points: Vec<ComputePoint>,
}

/// The dispatch verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Run on local, unmetered hardware.
    RunLocal,
    /// Ask for a paid-compute approval receipt.
    RequestPaidApproval,
    /// Run on paid hardware (pre-approved rung or valid receipt).
    RunPaid,
    /// Do not run.
    HoldPacket,
}

/// Machine-readable reason for an [`Action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Local rung, local policy allows.
    LocalAllowed,
    /// Paid rung listed in `approved_rungs`.
    ApprovedRung,
    /// Paid rung with a valid, unexpired approval receipt for this packet.
    ApprovalReceipt,
    /// Paid rung needs an explicit approval.
    ApprovalRequired,
    /// An object failed validation.
    Invalid,
    /// `packet.decision_id` is not the decision's id.
    DecisionMismatch,
    /// `packet.rung_id` is not the rung's id.
    RungMismatch,
    /// The packet is not bounded.
    Unbounded,
    /// The packet omits outputs the decision requires.
    MissingRequiredOutputs,
    /// The rung is not admitted (or not permitted at the compute point).
    RungNotAdmitted,
    /// Local policy denies.
    LocalDenied,
    /// Paid policy denies.
    PaidDenied,
    /// The packet's spend exceeds a cap.
    OverBudget,
}

/// The result of [`evaluate_dispatch`]-style evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DispatchResult {
    /// The verdict.
    pub action: Action,
    /// Why, machine-readable.
    pub reason: Reason,
    /// Why, in words a user can act on.
    pub detail: String,
    /// The decision.
    pub decision_id: String,
    /// The packet.
    pub packet_id: String,
    /// The rung.
    pub rung_id: String,
    /// The rung's spend class.
    pub spend_class: SpendClass,
    /// Outputs the run must produce.
    pub required_outputs: Vec<String>,
}
