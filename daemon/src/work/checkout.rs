//! `btd checkout PROGRAM [SEQ] DIR`: any result's tree (the bundle plus its patch chain), written
//! to a directory, on an owner's or a member's daemon.

use std::collections::HashMap;
use std::path::PathBuf;

use btd_protocol::patch::tree_digest;
use btd_protocol::program::{ProgramId, Task};
use btd_protocol::Digest;
use serde::{Deserialize, Serialize};

use super::WorkContext;

/// What `btd checkout` wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutView {
    /// The program.
    pub program: ProgramId,
    /// The result checked out (`None`: the bundle itself).
    pub seq: Option<u64>,
    /// The directory.
    pub dir: PathBuf,
    /// Files written.
    pub files: usize,
    /// The tree's digest (the one the result's code names).
    pub tree: Digest,
    /// The chain from the bundle: each link's seq, member and rationale's first line.
    pub chain: Vec<ChainLink>,
}

/// One patch of a checked-out chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainLink {
    /// The result.
    pub seq: u64,
    /// Who made it.
    pub member: String,
    /// Patch size in bytes.
    pub patch_bytes: u64,
    /// The first line of its rationale.
    pub rationale: String,
}

impl WorkContext {
    /// Writes result `seq`'s tree (the champion's when `None`, the bundle when there is none) to
    /// `dir`, which must not exist or be empty.
    pub async fn checkout(
        &self,
        program: ProgramId,
        seq: Option<u64>,
        dir: PathBuf,
    ) -> Result<CheckoutView, String> {
        let view = self
            .node
            .program(program)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("program {program} is not known to this daemon"))?;
        let Task::Shell(task) = &view.program.task else {
            return Err("this program has no source tree (it is a candle program)".into());
        };
        let src = task
            .source
            .as_ref()
            .ok_or("this program ships no source tree ([task.source])")?;
        let max = view.program.verify.max_artifact_bytes;
        if self.blobs.size(&program, &src.sha256).is_none() {
            super::dataset::fetch_artifact(
                self,
                program,
                view.owner,
                src.sha256,
                max,
                "source bundle",
            )
            .await?;
        }
        let seq = match seq {
            Some(s) => Some(s),
            None => self
                .node
                .status_page(Some(program), btd_protocol::wire::StatusQuery::summary())
                .await
                .map_err(|e| e.to_string())?
                .champion
                .map(|c| c.seq),
        };
        let chain = match seq {
            Some(s) => {
                crate::source::fetch_chain(&self.node, program, s, &mut HashMap::new()).await?
            }
            None => Vec::new(),
        };
        let links = chain
            .iter()
            .map(|v| ChainLink {
                seq: v.entry.seq,
                member: v.entry.worker.clone(),
                patch_bytes: v.code.patch.len() as u64,
                rationale: v.code.rationale.lines().next().unwrap_or("").to_string(),
            })
            .collect();
        let codes: Vec<_> = chain.into_iter().map(|v| v.code).collect();
        let (blobs, sha, out) = (self.blobs.clone(), src.sha256, dir.clone());
        let (files, tree) = tokio::task::spawn_blocking(move || {
            let bundle = crate::source::load_bundle(&blobs, &program, sha, max)?;
            let tree = btd_protocol::wire::rebuild_tree(&bundle, &codes)?;
            btd_trainer::source::write_tree(&tree, &out)
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            Ok::<_, String>((tree.len(), tree_digest(&tree)))
        })
        .await
        .map_err(|e| format!("the checkout failed: {e}"))??;
        Ok(CheckoutView {
            program,
            seq,
            dir,
            files,
            tree,
            chain: links,
        })
    }
}
