//! ORP (open-research-protocol) export: a round's records as an ORP packet v1, and a dispatch verdict
//! as an ORP gate result.
//!
//! ORP's packet schema is `spec/v1/packet.schema.json` in the SproutSeeds/orp repository (a copy the
//! tests validate against is `protocol/tests/fixtures/orp/packet.schema.json`). The types here are
//! that schema's objects, as far as btd fills them; every string enum is a Rust enum, so a packet
//! built here cannot carry a value the schema refuses.
//!
//! The mapping (pure: paths and times come in, nothing is read or written here):
//!
//! | ORP | from btd |
//! |---|---|
//! | `kind` | always `problem_scope` |
//! | `atomic_context` | `board_id` = program id, `problem_id` = the decision (program name), `ticket_id` = packet id, `gate_id` = rung, `atom_id` = `round-NNNNN`, `dependencies` = the champion result it started from |
//! | `run` | `run_id` = `btd-<program short>-round-NNNNN`, tool `btd`, `deterministic_input_hash` = `sha256:` + the packet's content digest, start and end of the round |
//! | gate 1 (`scope_lock`, id = rung) | the dispatch verdict, as ORP's compute wrapper maps it: `run_local`/`run_paid` → `pass`, `hold_packet` → `fail`, `request_paid_approval` → `skipped` (ORP's wrapper says `hold`, which the schema's status set lacks) |
//! | gate 2 (`custom`, id `run`) | the run: `pass` when its bundle completed, `fail` when it failed or timed out, `error` when the round failed before a bundle, `skipped` when it never ran |
//! | gate 3 (`verification`, id `owner-check`) | the owner's verdict: `pass` when verified and accepted (or accepted by a program that checks nothing), `fail` when rejected (reason in `evidence_note`), `skipped` while pending, queued in the member's outbox or never submitted |
//! | `lifecycle` | accepted + verified → `accepted`/`Verified`; rejected or check failed → `blocked`/`Blocked`; check pending → `reviewed`/`In review`; held, failed, cancelled, unsubmitted → `blocked`/`Blocked`; running or queued in the member's outbox → `draft`/`Draft` |
//! | `summary` | `FAIL` if any gate failed or errored, `PASS` if all passed, else `INCONCLUSIVE` |
//!
//! The run gate's `exit_code` is the command's exit status when the round's bundle kept one (the
//! `exit_code` metric of shell rounds); otherwise, and for the other gates, it is btd's code for
//! the gate (0 pass or skipped, 1 fail, 2 error).

use serde::{Deserialize, Serialize};

mod build;
mod markdown;

#[cfg(test)]
mod tests;

pub use build::{dispatch_gate, export_round, ExportFile, ExportPlace, OrpExport, RoundInput};

/// The serde name of a unit enum value (`run_local`, `scope_lock`, ...), as records and ORP spell it.
fn serde_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The packet schema version btd writes.
pub const SCHEMA_VERSION: &str = "1.0.0";
/// The tool name in `run.tool.name`.
pub const TOOL_NAME: &str = "btd";
/// Gate id of the run gate.
pub const RUN_GATE_ID: &str = "run";
/// Gate id of the owner's verification gate.
pub const CHECK_GATE_ID: &str = "owner-check";

/// An ORP packet v1 (the fields btd fills).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrpPacket {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// `pkt-btd-<program short>-round-NNNNN` (matches `^[A-Za-z0-9._:-]+$`).
    pub packet_id: String,
    /// Always `problem_scope`.
    pub kind: PacketKind,
    /// When the packet was made (RFC 3339, UTC).
    pub created_at_utc: String,
    /// The packet is process metadata; where the evidence is.
    pub protocol_boundary: ProtocolBoundary,
    /// Where the work happened (the round's directory).
    pub repo: Repo,
    /// The run.
    pub run: Run,
    /// Where the round stands.
    pub lifecycle: Lifecycle,
    /// Program, decision, packet, rung and round.
    pub atomic_context: AtomicContext,
    /// Dispatch, run and the owner's check.
    pub gates: Vec<GateResult>,
    /// The overall result and gate counts.
    pub summary: Summary,
    /// Where the packet and its evidence were written.
    pub artifacts: Artifacts,
}

/// ORP packet kinds (btd writes only `problem_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PacketKind {
    /// One piece of scoped work on a board.
    ProblemScope,
}

/// `protocol_boundary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolBoundary {
    /// Always true: the packet describes the process, the evidence lives in its own files.
    pub process_only: bool,
    /// The evidence files.
    pub evidence_paths: Vec<String>,
    /// Words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `repo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repo {
    /// The round's directory.
    pub root_path: String,
}

/// `run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// `btd-<program short>-round-NNNNN`.
    pub run_id: String,
    /// `btd` and its version.
    pub tool: Tool,
    /// `sha256:` + the compute packet's content digest.
    pub deterministic_input_hash: String,
    /// When the round started.
    pub started_at_utc: String,
    /// When it ended (the export time while it runs).
    pub ended_at_utc: String,
    /// Milliseconds between the two.
    pub duration_ms: u64,
}

/// `run.tool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    /// [`TOOL_NAME`].
    pub name: String,
    /// btd's version.
    pub version: String,
}

/// `lifecycle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Where the work stands.
    pub workflow_state: WorkflowState,
    /// Where the claim stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_status: Option<ClaimStatus>,
    /// Where the atom (the round) stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atom_status: Option<AtomStatus>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_note: Option<String>,
}

/// `lifecycle.workflow_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Still running.
    Draft,
    /// Ready.
    Ready,
    /// Waiting for review (the owner's check).
    Reviewed,
    /// Accepted.
    Accepted,
    /// Held, failed or rejected.
    Blocked,
    /// Withdrawn.
    Retracted,
}

/// `lifecycle.claim_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimStatus {
    /// Still running.
    Draft,
    /// The owner is checking it.
    #[serde(rename = "In review")]
    InReview,
    /// The owner verified it.
    Verified,
    /// Held, failed or rejected.
    Blocked,
    /// Withdrawn.
    Retracted,
}

/// `lifecycle.atom_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtomStatus {
    /// Not started.
    Todo,
    /// Running, or waiting for the owner's check.
    InProgress,
    /// Held, failed or rejected.
    Blocked,
    /// Finished.
    Done,
}

/// `atomic_context`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtomicContext {
    /// The program id.
    pub board_id: String,
    /// The decision the packet serves (the program's name).
    pub problem_id: String,
    /// The compute packet id.
    pub ticket_id: String,
    /// The rung.
    pub gate_id: String,
    /// `round-NNNNN`.
    pub atom_id: String,
    /// The result the round started from (`seq-N`), if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
}

/// One gate's result (ORP's `gate_result`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateResult {
    /// The gate.
    pub gate_id: String,
    /// Its phase.
    pub phase: Phase,
    /// What was run, in words.
    pub command: String,
    /// How it ended.
    pub status: GateStatus,
    /// btd's code: 0 pass or skipped, 1 fail, 2 error.
    pub exit_code: i64,
    /// How long it took (0 for rules evaluated at once).
    pub duration_ms: u64,
    /// The files that back it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence_paths: Vec<String>,
    /// What kind of evidence backs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_status: Option<EvidenceStatus>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_note: Option<String>,
}

/// `gate_result.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Deciding whether the work may run (dispatch).
    ScopeLock,
    /// Unused by btd.
    StructureKernel,
    /// Unused by btd.
    QuantAssembly,
    /// Unused by btd.
    InterfaceLift,
    /// The owner's check.
    Verification,
    /// The run.
    Custom,
}

/// `gate_result.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    /// Passed.
    Pass,
    /// Failed.
    Fail,
    /// Could not be evaluated.
    Error,
    /// Not (yet) evaluated.
    Skipped,
}

/// `gate_result.evidence_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceStatus {
    /// A rule's verdict, no artifact.
    ProcessOnly,
    /// Unused by btd.
    StarterScaffold,
    /// Unused by btd.
    StarterStub,
    /// Backed by artifacts.
    Evidence,
}

/// `summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The verdict over all gates.
    pub overall_result: OverallResult,
    /// Gates that passed.
    pub gates_passed: u64,
    /// Gates that failed or errored.
    pub gates_failed: u64,
    /// All gates.
    pub gates_total: u64,
    /// Words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `summary.overall_result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OverallResult {
    /// Every gate passed.
    Pass,
    /// A gate failed or errored.
    Fail,
    /// Some gate was skipped, none failed.
    Inconclusive,
}

/// `artifacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifacts {
    /// The packet's JSON file.
    pub packet_json_path: String,
    /// Its Markdown summary.
    pub packet_md_path: String,
    /// The round's directory.
    pub artifact_root: String,
    /// Other files: `run.json` and the round's outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_paths: Vec<String>,
}
