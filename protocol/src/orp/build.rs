//! Building an ORP packet from a round's records, and a gate result from a dispatch verdict.

use crate::dispatch::{Action, ComputePacket, DispatchResult};
use crate::kb::Check;
use crate::program::datetime::format_rfc3339;
use crate::trace::{
    ApprovalReceipt, BundleStatus, ImpactRead, ResultBundle, RunState, TraceabilityRecord,
};
use crate::wire::{sanitize_text, SubmitReceipt};
use crate::Timestamp;

use super::{
    markdown, serde_name, Artifacts, AtomStatus, AtomicContext, ClaimStatus, EvidenceStatus,
    GateResult, GateStatus, Lifecycle, OrpPacket, OverallResult, PacketKind, Phase,
    ProtocolBoundary, Repo, Run, Summary, Tool, WorkflowState, CHECK_GATE_ID, RUN_GATE_ID,
    SCHEMA_VERSION, TOOL_NAME,
};

/// Longest free text (bytes) a gate's note or the lifecycle's note keeps.
const MAX_NOTE_BYTES: usize = 2048;

/// The last instant RFC 3339 can write with a four-digit year (9999-12-31T23:59:59.999Z): later
/// timestamps (a broken clock) are written as this.
const MAX_RFC3339_MILLIS: u64 = 253_402_300_799_999;

/// One round's records, as the worker loop keeps them.
#[derive(Debug, Clone, Copy)]
pub struct RoundInput<'a> {
    /// The program id (hex).
    pub program: &'a str,
    /// Round number.
    pub round: u64,
    /// The member that ran it.
    pub member: &'a str,
    /// How it ended.
    pub state: RunState,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// The compute packet.
    pub packet: &'a ComputePacket,
    /// Dispatch's verdict.
    pub dispatch: &'a DispatchResult,
    /// The approval receipt it ran under (paid rungs).
    pub approval: Option<&'a ApprovalReceipt>,
    /// The champion's seq it started from.
    pub parent_seq: Option<u64>,
    /// The metric's name.
    pub metric: &'a str,
    /// Its value, when the run produced one.
    pub value: Option<f64>,
    /// What the run produced.
    pub bundle: Option<&'a ResultBundle>,
    /// The owner's verdict.
    pub verdict: Option<&'a SubmitReceipt>,
    /// What the verdict means.
    pub impact: Option<&'a ImpactRead>,
    /// The record linking them.
    pub trace: Option<&'a TraceabilityRecord>,
    /// The round's output files as they lie on disk (the caller lists those that exist: a
    /// bundle output need not be a file of that name, e.g. `btd.code` is kept as `code.json`).
    pub output_paths: &'a [String],
    /// What happened, in words.
    pub note: &'a str,
}

/// Where the export goes and what it says about itself.
#[derive(Debug, Clone, Copy)]
pub struct ExportPlace<'a> {
    /// The round's directory (its outputs and `run.json`).
    pub round_dir: &'a str,
    /// The directory the packet and its evidence files are written to.
    pub out_dir: &'a str,
    /// When the packet is made.
    pub created_at: Timestamp,
    /// btd's version.
    pub tool_version: &'a str,
    /// The command that ran the round, for the run gate (e.g. `btd join PROGRAM --rounds N`).
    pub command: &'a str,
}

/// One file of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    /// Where it goes.
    pub path: String,
    /// Its contents.
    pub contents: String,
}

/// What [`export_round`] makes: the packet and every file to write (the packet's JSON and
/// Markdown, then one JSON file per evidence object).
#[derive(Debug, Clone, PartialEq)]
pub struct OrpExport {
    /// The packet.
    pub packet: OrpPacket,
    /// The files, the packet's JSON first.
    pub files: Vec<ExportFile>,
}

/// The ORP gate result for a dispatch verdict, as ORP's compute wrapper maps it: `run_*` pass,
/// `hold_packet` fails, `request_paid_approval` is skipped (it waits for paid approval; ORP's
/// wrapper says `hold`, which ORP's schema does not allow).
pub fn dispatch_gate(result: &DispatchResult, command: &str) -> GateResult {
    let (status, waits) = match result.action {
        Action::RunLocal | Action::RunPaid => (GateStatus::Pass, String::new()),
        Action::HoldPacket => (GateStatus::Fail, String::new()),
        Action::RequestPaidApproval => (
            GateStatus::Skipped,
            format!("waits for paid approval of rung {:?}: ", result.rung_id),
        ),
    };
    let note = format!(
        "{} ({}): {waits}{}",
        serde_name(&result.action),
        serde_name(&result.reason),
        result.detail
    );
    GateResult {
        gate_id: result.rung_id.clone(),
        phase: Phase::ScopeLock,
        command: command.to_string(),
        status,
        exit_code: exit_code(status),
        duration_ms: 0,
        evidence_paths: Vec::new(),
        evidence_status: Some(EvidenceStatus::ProcessOnly),
        evidence_note: Some(bound(&note)),
    }
}

/// The ORP packet of one round and the files to write for it. Fails only if an evidence object
/// cannot be encoded as JSON.
pub fn export_round(r: &RoundInput<'_>, place: &ExportPlace<'_>) -> Result<OrpExport, String> {
    let short: String = r.program.chars().take(12).collect();
    let run_id = id_safe(&format!("btd-{short}-round-{:05}", r.round));
    let packet_id = format!("pkt-{run_id}");
    let out = |name: &str| join(place.out_dir, &format!("{packet_id}.{name}"));
    let in_round = |name: &str| join(place.round_dir, name);

    // The evidence objects, each its own file.
    let mut files: Vec<ExportFile> = Vec::new();
    let bundle_path = evidence(&mut files, out("result-bundle.json"), r.bundle)?;
    let impact_path = evidence(&mut files, out("impact-read.json"), r.impact)?;
    let approval_path = evidence(&mut files, out("approval-receipt.json"), r.approval)?;
    let trace_path = evidence(&mut files, out("traceability-record.json"), r.trace)?;
    let outputs = r.output_paths.to_vec();

    // Gate 1: dispatch.
    let mut dispatch = dispatch_gate(
        r.dispatch,
        &format!(
            "btd dispatch: packet {:?} on rung {:?}",
            r.packet.id, r.dispatch.rung_id
        ),
    );
    dispatch.evidence_paths.extend(approval_path.clone());
    // Gate 2: the run.
    let ended = r.finished_at.unwrap_or(place.created_at);
    let duration_ms = ended.millis_since(r.started_at);
    let mut run_gate = run_gate(r, place.command, duration_ms);
    run_gate.evidence_paths.extend(bundle_path.clone());
    run_gate.evidence_paths.extend(outputs.iter().cloned());
    // Gate 3: the owner's check.
    let mut check = check_gate(r);
    check.evidence_paths.extend(impact_path.clone());
    check.evidence_paths.extend(trace_path.clone());
    let gates = vec![dispatch, run_gate, check];
    let gates_total = gates.len();

    let passed = count(&gates, |s| s == GateStatus::Pass);
    let failed = count(&gates, |s| {
        matches!(s, GateStatus::Fail | GateStatus::Error)
    });
    let overall = if failed > 0 {
        OverallResult::Fail
    } else if passed == gates_total as u64 {
        OverallResult::Pass
    } else {
        OverallResult::Inconclusive
    };

    let mut evidence_paths: Vec<String> = [bundle_path, impact_path, approval_path, trace_path]
        .into_iter()
        .flatten()
        .collect();
    evidence_paths.extend(outputs.iter().cloned());
    let mut extra_paths = vec![in_round("run.json")];
    extra_paths.extend(outputs);

    let packet = OrpPacket {
        schema_version: SCHEMA_VERSION.to_string(),
        packet_id: packet_id.clone(),
        kind: PacketKind::ProblemScope,
        created_at_utc: utc(place.created_at),
        protocol_boundary: ProtocolBoundary {
            process_only: true,
            evidence_paths,
            note: Some(
                "Process metadata. The evidence is btd's own records (result bundle, impact read, \
                 approval receipt, traceability record; each a JSON file beside this packet, with a \
                 content-hash id) and the round's outputs."
                    .to_string(),
            ),
        },
        repo: Repo {
            root_path: place.round_dir.to_string(),
        },
        run: Run {
            run_id,
            tool: Tool {
                name: TOOL_NAME.to_string(),
                version: place.tool_version.to_string(),
            },
            deterministic_input_hash: format!("sha256:{}", r.packet.content_digest()),
            started_at_utc: utc(r.started_at),
            ended_at_utc: utc(ended),
            duration_ms,
        },
        lifecycle: lifecycle(r),
        atomic_context: AtomicContext {
            board_id: r.program.to_string(),
            problem_id: r.packet.decision_id.clone(),
            ticket_id: r.packet.id.clone(),
            gate_id: r.dispatch.rung_id.clone(),
            atom_id: format!("round-{:05}", r.round),
            dependencies: r.parent_seq.map(|s| format!("seq-{s}")).into_iter().collect(),
        },
        gates,
        summary: Summary {
            overall_result: overall,
            gates_passed: passed,
            gates_failed: failed,
            gates_total: gates_total as u64,
            note: Some(format!(
                "round {} of program {short} by member {}",
                r.round, r.member
            )),
        },
        artifacts: Artifacts {
            packet_json_path: out("json"),
            packet_md_path: out("md"),
            artifact_root: place.round_dir.to_string(),
            extra_paths,
        },
    };
    let json = serde_json::to_string_pretty(&packet)
        .map_err(|e| format!("cannot encode the ORP packet as JSON: {e}"))?;
    let mut all = vec![
        ExportFile {
            path: packet.artifacts.packet_json_path.clone(),
            contents: json + "\n",
        },
        ExportFile {
            path: packet.artifacts.packet_md_path.clone(),
            contents: markdown::summary(&packet),
        },
    ];
    all.extend(files);
    Ok(OrpExport { packet, files: all })
}

/// Adds `object` (if any) to `files` as pretty JSON at `path`, and returns the path.
fn evidence<T: serde::Serialize>(
    files: &mut Vec<ExportFile>,
    path: String,
    object: Option<&T>,
) -> Result<Option<String>, String> {
    let Some(object) = object else {
        return Ok(None);
    };
    let json = serde_json::to_string_pretty(object)
        .map_err(|e| format!("cannot encode {path} as JSON: {e}"))?;
    files.push(ExportFile {
        path: path.clone(),
        contents: json + "\n",
    });
    Ok(Some(path))
}

/// The run gate: passes when the bundle completed.
fn run_gate(r: &RoundInput<'_>, command: &str, duration_ms: u64) -> GateResult {
    let value = match r.value {
        Some(v) => format!("{} = {v}", r.metric),
        None => format!("no {}", r.metric),
    };
    let (status, note) = match (r.state, r.bundle) {
        (RunState::Held, _) => (GateStatus::Skipped, format!("never ran: {}", r.note)),
        (RunState::Cancelled, _) => (
            GateStatus::Skipped,
            format!("cancelled, the daemon stopped: {}", r.note),
        ),
        (RunState::Running, None) => (GateStatus::Skipped, "still running".to_string()),
        (_, Some(b)) => {
            let status = match b.status {
                BundleStatus::Completed => GateStatus::Pass,
                BundleStatus::Failed | BundleStatus::TimedOut => GateStatus::Fail,
                BundleStatus::Held => GateStatus::Skipped,
            };
            (
                status,
                format!("{}; {value}; {}", bundle_status_name(b.status), r.note),
            )
        }
        (_, None) => (
            GateStatus::Error,
            format!(
                "the round failed before its run produced a bundle: {}",
                r.note
            ),
        ),
    };
    GateResult {
        gate_id: RUN_GATE_ID.to_string(),
        phase: Phase::Custom,
        command: command.to_string(),
        status,
        // The command's own exit status where the round kept one (shell rounds), else btd's.
        exit_code: r
            .bundle
            .and_then(|b| b.metrics.get("exit_code"))
            .filter(|c| c.fract() == 0.0 && c.abs() <= f64::from(i32::MAX))
            .map_or_else(|| exit_code(status), |c| *c as i64),
        duration_ms,
        evidence_paths: Vec::new(),
        evidence_status: Some(if r.bundle.is_some() {
            EvidenceStatus::Evidence
        } else {
            EvidenceStatus::ProcessOnly
        }),
        evidence_note: Some(bound(&note)),
    }
}

/// The owner's verification gate.
fn check_gate(r: &RoundInput<'_>) -> GateResult {
    let impact = r.impact.map(|i| i.summary.as_str()).unwrap_or_default();
    let (status, command, note) = match r.verdict {
        None if r.state == RunState::Queued => (
            GateStatus::Skipped,
            "the owner's check (result still queued)".to_string(),
            format!("the result waits in the member's outbox: {}", r.note),
        ),
        None => (
            GateStatus::Skipped,
            "the owner's check (never submitted)".to_string(),
            format!("the owner never received the result: {}", r.note),
        ),
        Some(v) => {
            let command = format!("the owner's check of result seq {}", v.seq);
            let (status, note) = match (&v.check, v.accepted) {
                (Check::Failed(why), _) => (
                    GateStatus::Fail,
                    format!("rejected by the owner's check: {why}"),
                ),
                (Check::Pending, _) => (
                    GateStatus::Skipped,
                    format!("waits for the owner's check: {impact}"),
                ),
                (Check::Verified, true) => (
                    GateStatus::Pass,
                    format!("verified by the owner and accepted: {impact}"),
                ),
                (Check::NotNeeded, true) => (
                    GateStatus::Pass,
                    format!("accepted; the program does not check claims: {impact}"),
                ),
                (Check::Verified | Check::NotNeeded, false) => (
                    GateStatus::Fail,
                    format!("rejected by the program's acceptance rule: {impact}"),
                ),
            };
            (status, command, note)
        }
    };
    GateResult {
        gate_id: CHECK_GATE_ID.to_string(),
        phase: Phase::Verification,
        command,
        status,
        exit_code: exit_code(status),
        duration_ms: 0,
        evidence_paths: Vec::new(),
        evidence_status: Some(if r.impact.is_some() {
            EvidenceStatus::Evidence
        } else {
            EvidenceStatus::ProcessOnly
        }),
        evidence_note: Some(bound(&note)),
    }
}

/// The lifecycle of a round.
fn lifecycle(r: &RoundInput<'_>) -> Lifecycle {
    let why = r
        .impact
        .map(|i| i.summary.clone())
        .unwrap_or_else(|| r.note.to_string());
    let (workflow, claim, atom) = match (r.state, r.verdict) {
        (RunState::Running | RunState::Queued, _) => (
            WorkflowState::Draft,
            Some(ClaimStatus::Draft),
            AtomStatus::InProgress,
        ),
        (RunState::Submitted, Some(v)) => match (&v.check, v.accepted) {
            (Check::Failed(_), _) | (Check::Verified | Check::NotNeeded, false) => (
                WorkflowState::Blocked,
                Some(ClaimStatus::Blocked),
                AtomStatus::Blocked,
            ),
            (Check::Pending, _) => (
                WorkflowState::Reviewed,
                Some(ClaimStatus::InReview),
                AtomStatus::InProgress,
            ),
            (Check::Verified, true) => (
                WorkflowState::Accepted,
                Some(ClaimStatus::Verified),
                AtomStatus::Done,
            ),
            // Accepted, but nobody checked it: no claim status to state.
            (Check::NotNeeded, true) => (WorkflowState::Accepted, None, AtomStatus::Done),
        },
        _ => (
            WorkflowState::Blocked,
            Some(ClaimStatus::Blocked),
            AtomStatus::Blocked,
        ),
    };
    Lifecycle {
        workflow_state: workflow,
        claim_status: claim,
        atom_status: Some(atom),
        state_note: Some(bound(&format!("{}: {why}", serde_name(&r.state)))),
    }
}

fn count(gates: &[GateResult], f: impl Fn(GateStatus) -> bool) -> u64 {
    gates.iter().filter(|g| f(g.status)).count() as u64
}

fn exit_code(status: GateStatus) -> i64 {
    match status {
        GateStatus::Pass | GateStatus::Skipped => 0,
        GateStatus::Fail => 1,
        GateStatus::Error => 2,
    }
}

/// RFC 3339 UTC, seconds precision (clamped to year 9999).
fn utc(t: Timestamp) -> String {
    format_rfc3339(Timestamp::from_millis(
        t.as_millis().min(MAX_RFC3339_MILLIS),
    ))
}

/// Free text bounded and without control characters.
fn bound(s: &str) -> String {
    sanitize_text(s, MAX_NOTE_BYTES)
}

/// `s` with every character ORP ids refuse (outside `A-Za-z0-9._:-`) replaced by `-`.
fn id_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

fn bundle_status_name(s: BundleStatus) -> &'static str {
    match s {
        BundleStatus::Completed => "completed",
        BundleStatus::Failed => "failed",
        BundleStatus::TimedOut => "timed out",
        BundleStatus::Held => "held",
    }
}
