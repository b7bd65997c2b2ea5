//! `btd source pack DIR`: the canonical tar of a program's source tree and its digest.

use anyhow::anyhow;

use crate::cli::SourceCmd;
use crate::output::{out, print_json, CmdError};

/// Runs a `btd source` command.
pub(crate) fn run(cmd: SourceCmd, json: bool) -> Result<(), CmdError> {
    match cmd {
        SourceCmd::Pack {
            dir,
            out,
            max_bytes,
        } => {
            let bytes = crate::source::bundle_bytes(&dir, max_bytes)
                .map_err(|e| CmdError::Rejected(anyhow!(e)))?;
            let files = btd_trainer::source::read_tar(&bytes, max_bytes)
                .map_err(|e| CmdError::Rejected(anyhow!("{e}")))?;
            let sha256 = btd_protocol::Digest::of(&bytes);
            if let Some(out) = &out {
                std::fs::write(out, &bytes).map_err(|e| {
                    CmdError::Rejected(anyhow!("cannot write {}: {e}", out.display()))
                })?;
            }
            if json {
                return print_json(&serde_json::json!({
                    "sha256": sha256,
                    "bytes": bytes.len(),
                    "files": files.len(),
                    "tree": btd_protocol::patch::tree_digest(&files),
                    "out": out,
                }));
            }
            out!("{sha256}");
            eprintln!(
                "{} files, {} bytes{}; put `sha256 = \"{sha256}\"` in the manifest's [task.source]",
                files.len(),
                bytes.len(),
                out.as_ref()
                    .map(|p| format!(", written to {}", p.display()))
                    .unwrap_or_default()
            );
            Ok(())
        }
    }
}
