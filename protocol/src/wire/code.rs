//! Code hypotheses and the hypothesis ledger on `/btd/kb/1`.
//!
//! A worker of a program with a source bundle (`[task.source]`) or re-run verification
//! (`[verify] mode = "rerun"`) submits a [`CodeHypothesis`] beside its signed [`Submission`]: the
//! patch it ran (a unified diff against its parent's tree, possibly empty), the parent, the seed
//! and its rationale. The signed submission binds it: one of its outputs is named [`CODE_OUTPUT`]
//! and carries [`CodeHypothesis::digest`]. Members read the ledger ([`LedgerItem`]s, a page at a
//! time) and any result's code (`KbCall::Code`) to rebuild its tree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{bad, check_text, sanitize_text, MessageError, Sanitize, Submission};
use crate::kb::Entry;
use crate::patch::{tree_digest, Editable, Files, Patch, MAX_PATCH_BYTES};
use crate::{Digest, Timestamp};

/// The output name under which a submission carries the digest of its code hypothesis.
pub const CODE_OUTPUT: &str = "btd.code";
/// Longest rationale, bytes.
pub const MAX_RATIONALE_BYTES: usize = 2048;
/// Most ledger items in one page (each is at most a few KiB, so a page stays under the message cap).
pub const MAX_LEDGER_PAGE: u32 = 100;

/// What a worker ran, beside its signed submission: enough for anyone holding the bundle and the
/// ledger to rebuild the tree and run it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CodeHypothesis {
    /// The result whose tree the patch edits (its KB seq); `None`: the program's bundle itself.
    pub parent: Option<u64>,
    /// A unified diff against the parent's tree that touches only editable files; empty when the
    /// round ran the parent's tree unchanged (e.g. a numeric hypothesis).
    pub patch: String,
    /// Why the proposer thinks this helps (its `rationale.md`), at most [`MAX_RATIONALE_BYTES`].
    pub rationale: String,
    /// The seed the command ran with (`BTD_SEED`).
    pub seed: u64,
    /// `btd_protocol::patch::tree_digest` of the tree the command ran in.
    pub tree: Digest,
}

impl CodeHypothesis {
    /// Its content address, which the signed submission carries as output [`CODE_OUTPUT`].
    pub fn digest(&self) -> Digest {
        Digest::content_id("btd/code/v1", self)
    }

    /// Enforces the bounds; returns the parsed patch (`None` when empty). The rationale must
    /// already be in the form every reader shows it ([`sanitize_rationale`]: lines of text without
    /// control characters or a trailing newline), so what members read is what was signed.
    pub fn check(&self) -> Result<Option<Patch>, MessageError> {
        check_text_bytes("rationale", &self.rationale, MAX_RATIONALE_BYTES)?;
        if sanitize_rationale(&self.rationale) != self.rationale {
            return Err(bad(
                "rationale",
                "must be lines of plain text: no control characters, no trailing newline \
                 (btd normalises it before signing)",
            ));
        }
        if self.patch.len() > MAX_PATCH_BYTES {
            return Err(bad(
                "patch",
                format!(
                    "is {} bytes; a patch may have at most {MAX_PATCH_BYTES}",
                    self.patch.len()
                ),
            ));
        }
        if self.patch.trim().is_empty() {
            return Ok(None);
        }
        Patch::parse(&self.patch)
            .map(Some)
            .map_err(|e| bad("patch", e.to_string()))
    }

    /// [`CodeHypothesis::check`], then that every file the patch touches is editable.
    pub fn check_editable(&self, editable: &Editable) -> Result<(), MessageError> {
        if let Some(p) = self.check()? {
            p.check_editable(editable)
                .map_err(|e| bad("patch", e.to_string()))?;
        }
        Ok(())
    }

    /// Whether `submission` binds this hypothesis (carries its digest as output [`CODE_OUTPUT`]).
    pub fn bound_by(&self, submission: &Submission) -> bool {
        let d = self.digest();
        submission
            .outputs
            .iter()
            .any(|o| o.name == CODE_OUTPUT && o.sha256 == d)
    }
}

/// The tree of a result: `bundle` with the patches of `chain` (root first, the result's own last)
/// applied in order; every step must give the tree its code names, so a tree is never silently
/// other than the one that was measured. Workers, the owner's verifier and `btd checkout` all
/// rebuild trees with it.
pub fn rebuild_tree(bundle: &Files, chain: &[CodeHypothesis]) -> Result<Files, String> {
    let mut tree = bundle.clone();
    for (i, code) in chain.iter().enumerate() {
        let step = || match code.parent {
            Some(p) => format!("the patch on result {p} (link {} of the chain)", i + 1),
            None => format!("the patch on the bundle (link {} of the chain)", i + 1),
        };
        if let Some(p) = code.check().map_err(|e| format!("{}: {e}", step()))? {
            tree = p.apply(&tree).map_err(|e| format!("{}: {e}", step()))?;
        }
        let got = tree_digest(&tree);
        if got != code.tree {
            return Err(format!(
                "{} gives tree {}, not the {} its code names",
                step(),
                got.short(),
                code.tree.short()
            ));
        }
    }
    Ok(tree)
}

fn check_text_bytes(field: &'static str, s: &str, max: usize) -> Result<(), MessageError> {
    if s.len() > max {
        return Err(bad(field, format!("is {} bytes, at most {max}", s.len())));
    }
    if s.contains('\0') {
        return Err(bad(field, "contains a NUL byte"));
    }
    Ok(())
}

/// A result's code hypothesis as the owner serves it, with its KB entry (who made it, how it fared).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CodeView {
    /// The result's KB entry.
    pub entry: Entry,
    /// Its code hypothesis.
    pub code: CodeHypothesis,
}

impl Sanitize for CodeView {
    fn sanitize(&mut self) {
        self.entry.sanitize();
        self.code.sanitize();
    }
}

/// One result in the hypothesis ledger: what was tried, on what, why, by whom, and how it fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LedgerItem {
    /// The KB entry (seq, member, value, KEEP verdict, the owner's check).
    pub entry: Entry,
    /// When the worker made it (its signed timestamp).
    pub created_at: Timestamp,
    /// The rung it ran on (its signed `rung_id`), so results are compared on like hardware.
    pub rung_id: String,
    /// The numeric hypothesis (search parameters), empty when none.
    pub hypothesis: BTreeMap<String, f64>,
    /// The code hypothesis, when the result carried one.
    pub code: Option<CodeSummary>,
}

/// A code hypothesis without its patch text (read it with `KbCall::Code`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CodeSummary {
    /// The parent result (`None`: the bundle).
    pub parent: Option<u64>,
    /// The rationale.
    pub rationale: String,
    /// Patch size in bytes (0: the parent's tree unchanged).
    pub patch_bytes: u64,
    /// The files the patch touches.
    pub files: Vec<String>,
    /// The tree it ran in.
    pub tree: Digest,
    /// [`CodeHypothesis::digest`].
    pub digest: Digest,
}

impl CodeSummary {
    /// The summary of `code` (whose patch already passed [`CodeHypothesis::check`]).
    pub fn of(code: &CodeHypothesis) -> CodeSummary {
        let files = code
            .check()
            .ok()
            .flatten()
            .map(|p| p.paths().into_iter().map(str::to_string).collect())
            .unwrap_or_default();
        CodeSummary {
            parent: code.parent,
            rationale: code.rationale.clone(),
            patch_bytes: code.patch.len() as u64,
            files,
            tree: code.tree,
            digest: code.digest(),
        }
    }
}

impl Sanitize for LedgerItem {
    fn sanitize(&mut self) {
        self.entry.sanitize();
        self.rung_id = sanitize_text(&self.rung_id, super::MAX_ID_BYTES);
        if let Some(c) = &mut self.code {
            c.rationale = sanitize_rationale(&c.rationale);
            c.files.truncate(crate::patch::MAX_PATCH_FILES);
            for f in &mut c.files {
                *f = sanitize_text(f, crate::patch::MAX_PATH_BYTES);
            }
        }
        self.hypothesis
            .retain(|k, v| check_text("hypothesis", k).is_ok() && v.is_finite());
    }
}

impl Sanitize for CodeHypothesis {
    fn sanitize(&mut self) {
        self.rationale = sanitize_rationale(&self.rationale);
        // The patch is not shown as is: it is parsed (and refused when invalid) before use.
    }
}

/// A rationale is shown on several lines: keep newlines, drop other control characters, cut.
pub fn sanitize_rationale(s: &str) -> String {
    s.lines()
        .map(|l| sanitize_text(l, MAX_RATIONALE_BYTES))
        .collect::<Vec<_>>()
        .join("\n")
        .chars()
        .scan(0usize, |n, c| {
            *n += c.len_utf8();
            (*n <= MAX_RATIONALE_BYTES).then_some(c)
        })
        .collect()
}
