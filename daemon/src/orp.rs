//! ORP export of a worker-loop round: [`export_round`] maps a [`RunRecord`] with the protocol's
//! pure builder ([`btd_protocol::orp`]) and writes the packet, its Markdown summary and one JSON
//! file per evidence object (result bundle, impact read, approval receipt, traceability record).

use std::path::{Component, Path, PathBuf};

use btd_protocol::orp::{ExportPlace, OrpExport, RoundInput};
use btd_protocol::wire::CODE_OUTPUT;
use btd_protocol::Timestamp;

use crate::work::RunRecord;

/// The directory a round's export goes to by default: `orp/` in the round's directory.
pub fn default_out_dir(record: &RunRecord) -> PathBuf {
    record.dir.join("orp")
}

/// Writes the ORP packet of `record` (and its summary and evidence files) into `out` (default:
/// [`default_out_dir`]), creating it, and returns what was written. `now` is the packet's
/// creation time (and the run's end while it is still running).
pub fn export_round(
    record: &RunRecord,
    out: Option<&Path>,
    now: Timestamp,
) -> Result<OrpExport, String> {
    let out = out.map_or_else(|| default_out_dir(record), Path::to_path_buf);
    let program = record.program.to_string();
    let round_dir = record.dir.to_string_lossy();
    // The packet names its files as text, and they are written where it says.
    let out_dir = out.to_str().ok_or_else(|| {
        format!(
            "{} is not valid UTF-8; ORP packets name their files as text, choose another --out",
            out.display()
        )
    })?;
    let command = format!("btd join {program} --rounds (round {})", record.round);
    let output_paths = output_files(record);
    let export = btd_protocol::orp::export_round(
        &RoundInput {
            program: &program,
            round: record.round,
            member: &record.member,
            state: record.state,
            started_at: record.started_at,
            finished_at: record.finished_at,
            packet: &record.packet,
            dispatch: &record.dispatch,
            approval: record.approval.as_ref(),
            parent_seq: record.parent_seq,
            metric: &record.metric,
            value: record.value,
            bundle: record.bundle.as_ref(),
            verdict: record.verdict.as_ref(),
            impact: record.impact.as_ref(),
            trace: record.trace.as_ref(),
            output_paths: &output_paths,
            note: &record.note,
        },
        &ExportPlace {
            round_dir: &round_dir,
            out_dir,
            created_at: now,
            tool_version: env!("CARGO_PKG_VERSION"),
            command: &command,
        },
    )?;
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    for f in &export.files {
        std::fs::write(&f.path, &f.contents)
            .map_err(|e| format!("cannot write {}: {e}", f.path))?;
    }
    Ok(export)
}

/// The round's output files that exist: each bundle output by its name in the round's directory,
/// a code hypothesis ([`CODE_OUTPUT`]) as the `code.json` and `patch.diff` kept beside it.
fn output_files(record: &RunRecord) -> Vec<String> {
    let Some(bundle) = &record.bundle else {
        return Vec::new();
    };
    let mut names: Vec<&str> = Vec::new();
    for o in &bundle.outputs {
        if o.name == CODE_OUTPUT {
            names.extend(["code.json", "patch.diff"]);
        } else {
            names.push(&o.name);
        }
    }
    names
        .into_iter()
        // Only plain names below the round's directory (no `..`, no absolute paths).
        .filter(|n| {
            Path::new(n)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        })
        .map(|n| record.dir.join(n))
        .filter(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}
