//! `btd runs PROGRAM --orp ROUND [--out DIR]`: a round's ORP packet, written beside its evidence.

use std::path::{Path, PathBuf};

use anyhow::anyhow;

use super::{call, parse, program_id};
use crate::control::Request;
use crate::output::{out, print_json, CmdError};
use crate::work::RunRecord;

pub(crate) fn runs_orp(
    home_dir: Option<PathBuf>,
    program: Option<&str>,
    round: u64,
    out_dir: Option<&Path>,
    json: bool,
) -> Result<(), CmdError> {
    let Some(program) = program else {
        return Err(CmdError::Usage(
            "--orp needs the program: btd runs PROGRAM --orp ROUND".to_string(),
        ));
    };
    let id = program_id(program)?;
    let v = call(home_dir, Request::Runs { program: Some(id) })?;
    let runs: Vec<RunRecord> = parse(v)?;
    let Some(record) = runs.iter().rev().find(|r| r.round == round) else {
        let known = match (runs.first(), runs.last()) {
            (Some(a), Some(b)) => format!("its rounds are {} to {}", a.round, b.round),
            _ => "it has no rounds on this node yet".to_string(),
        };
        return Err(CmdError::Rejected(anyhow!(
            "program {} has no round {round}: {known} (see `btd runs {program}`)",
            id.short()
        )));
    };
    // Absolute, so the packet's paths mean the same from anywhere.
    let out_dir = out_dir
        .map(std::path::absolute)
        .transpose()
        .map_err(|e| CmdError::Usage(format!("--out: {e}")))?;
    let export = crate::orp::export_round(record, out_dir.as_deref(), crate::clock::system_now())
        .map_err(|e| CmdError::Rejected(anyhow!(e)))?;
    if json {
        return print_json(&export.packet);
    }
    out!("{}", export.packet.artifacts.packet_json_path);
    Ok(())
}
