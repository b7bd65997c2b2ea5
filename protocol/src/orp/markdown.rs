//! The short Markdown summary written beside an ORP packet.

use super::{serde_name, GateStatus, OrpPacket, OverallResult};

/// A one-screen summary of `p`: result, lifecycle, one row per gate, the evidence files.
pub(super) fn summary(p: &OrpPacket) -> String {
    let overall = match p.summary.overall_result {
        OverallResult::Pass => "PASS",
        OverallResult::Fail => "FAIL",
        OverallResult::Inconclusive => "INCONCLUSIVE",
    };
    let mut out = format!("# ORP packet `{}`\n\n", p.packet_id);
    out += &format!(
        "- program: `{}`, decision `{}`, packet `{}`, {}\n",
        p.atomic_context.board_id,
        cell(&p.atomic_context.problem_id),
        cell(&p.atomic_context.ticket_id),
        p.atomic_context.atom_id
    );
    out += &format!(
        "- result: **{overall}** ({} of {} gates passed, {} failed)\n",
        p.summary.gates_passed, p.summary.gates_total, p.summary.gates_failed
    );
    out += &format!(
        "- lifecycle: {}{}\n",
        serde_name(&p.lifecycle.workflow_state),
        p.lifecycle
            .claim_status
            .map(|c| format!(" / {}", serde_name(&c)))
            .unwrap_or_default()
    );
    if let Some(note) = &p.lifecycle.state_note {
        out += &format!("- note: {}\n", cell(note));
    }
    out += &format!(
        "- run: `{}` from {} to {} ({} ms), input `{}`\n\n",
        p.run.run_id,
        p.run.started_at_utc,
        p.run.ended_at_utc,
        p.run.duration_ms,
        p.run.deterministic_input_hash
    );
    out += "| gate | phase | status | note |\n|---|---|---|---|\n";
    for g in &p.gates {
        let status = match g.status {
            GateStatus::Pass => "pass",
            GateStatus::Fail => "**fail**",
            GateStatus::Error => "**error**",
            GateStatus::Skipped => "skipped",
        };
        out += &format!(
            "| `{}` | {} | {status} | {} |\n",
            cell(&g.gate_id),
            serde_name(&g.phase),
            cell(g.evidence_note.as_deref().unwrap_or_default())
        );
    }
    out += "\nEvidence:\n\n";
    for path in &p.protocol_boundary.evidence_paths {
        out += &format!("- `{}`\n", cell(path));
    }
    out
}

/// Text safe in a Markdown table cell or code span: no newlines, pipes or backticks.
fn cell(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' => ' ',
            '|' => '/',
            '`' => '\'',
            c => c,
        })
        .collect()
}
