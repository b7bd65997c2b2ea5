//! The hypothesis ledger the owner keeps: for every result, its numeric hypothesis, when it was
//! made, and the code hypothesis it ran (parent, patch, rationale, seed, tree). Members read it a
//! page at a time (`KbCall::Ledger`) and fetch any result's code (`KbCall::Code`) to rebuild its
//! tree; the verifier gets a claim's whole patch chain from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::kb::Entry;
use crate::wire::{CodeHypothesis, CodeSummary, LedgerItem, Submission};
use crate::Timestamp;

/// Longest chain of code hypotheses from the bundle to a result: a tree is rebuilt by applying
/// every patch of its chain, so the depth bounds that work.
pub const MAX_CHAIN_DEPTH: usize = 1024;

/// Most patch and rationale bytes the owner keeps for one member (64 MiB): the ledger holds every
/// result's code in memory, so this bounds what one member can make the owner hold, whatever
/// its rate. An honest member writing 2 KiB patches reaches it after some 30 000 results; the
/// owner can revoke a member, and the KB's move to disk will lift it.
pub const MAX_CODE_BYTES_PER_MEMBER: u64 = 64 << 20;

/// What the ledger keeps per result.
#[derive(Debug, Clone)]
struct Note {
    created_at: Timestamp,
    rung_id: String,
    hypothesis: BTreeMap<String, f64>,
    code: Option<Arc<CodeHypothesis>>,
    /// What the ledger shows of the code (its patch parsed once, when recorded).
    summary: Option<CodeSummary>,
    /// Patches from the bundle to this result (0: no code, or the bundle's own tree unchanged).
    depth: usize,
}

/// The ledger: one note per stored result, by seq.
#[derive(Debug, Clone, Default)]
pub(super) struct Ledger {
    notes: BTreeMap<u64, Note>,
    /// Member → bytes of code (patch + rationale) the ledger holds for it.
    code_bytes: std::collections::HashMap<String, u64>,
}

impl Ledger {
    /// Why `code` may not build on its parent, if it may not: the parent must be an earlier
    /// result that carries code, and the chain must stay within [`MAX_CHAIN_DEPTH`].
    pub(super) fn check_parent(&self, code: &CodeHypothesis, next_seq: u64) -> Result<(), String> {
        let Some(p) = code.parent else {
            return Ok(());
        };
        if p == 0 || p >= next_seq {
            return Err(format!(
                "the code's parent is result {p}, which does not exist yet (the ledger has {} \
                 results)",
                next_seq.saturating_sub(1)
            ));
        }
        match self.notes.get(&p) {
            Some(n) if n.code.is_some() => {
                if n.depth + 1 > MAX_CHAIN_DEPTH {
                    Err(format!(
                        "result {p} is {} patches deep; a chain may have at most {MAX_CHAIN_DEPTH}: \
                         build on a shallower result",
                        n.depth
                    ))
                } else {
                    Ok(())
                }
            }
            _ => Err(format!(
                "result {p} carries no code; build on the bundle (no parent) or on a result with code"
            )),
        }
    }

    /// Bytes of code the ledger holds for `member`.
    pub(super) fn code_bytes(&self, member: &str) -> u64 {
        self.code_bytes.get(member).copied().unwrap_or(0)
    }

    /// Records result `seq` of `member` (its parent was checked with [`Ledger::check_parent`]; on
    /// restore an unknown parent only costs depth accuracy).
    pub(super) fn record(
        &mut self,
        seq: u64,
        member: &str,
        sub: &Submission,
        code: Option<CodeHypothesis>,
    ) {
        if let Some(c) = &code {
            *self.code_bytes.entry(member.to_string()).or_default() += code_size(c);
        }
        let depth = code.as_ref().map_or(0, |c| {
            let parent = c
                .parent
                .and_then(|p| self.notes.get(&p))
                .map_or(0, |n| n.depth);
            parent + usize::from(!c.patch.trim().is_empty())
        });
        self.notes.insert(
            seq,
            Note {
                created_at: sub.created_at,
                rung_id: sub.rung_id.clone(),
                hypothesis: sub.hypothesis.clone(),
                summary: code.as_ref().map(CodeSummary::of),
                code: code.map(Arc::new),
                depth,
            },
        );
    }

    /// The code hypothesis of result `seq`.
    pub(super) fn code(&self, seq: u64) -> Option<&CodeHypothesis> {
        self.notes.get(&seq)?.code.as_deref()
    }

    /// The code hypotheses from the bundle to result `seq`, root first, `seq`'s own last; empty
    /// when `seq` carries no code. `None` when a link is missing or the chain is too long.
    pub(super) fn chain(&self, seq: u64) -> Option<Vec<CodeHypothesis>> {
        let mut out = Vec::new();
        let mut at = Some(seq);
        while let Some(s) = at {
            let Some(c) = self.code(s) else {
                // Only the claim itself may carry no code.
                return (s == seq).then(Vec::new);
            };
            if out.len() > MAX_CHAIN_DEPTH {
                return None;
            }
            out.push(c.clone());
            at = c.parent.filter(|p| *p < s);
            if c.parent.is_some() && at.is_none() {
                return None;
            }
        }
        out.reverse();
        Some(out)
    }

    /// A page of items with `seq > after_seq`, in seq order, and whether more follow.
    pub(super) fn page(
        &self,
        entries: &[Entry],
        after_seq: u64,
        limit: usize,
    ) -> (Vec<LedgerItem>, bool) {
        let start = usize::try_from(after_seq)
            .unwrap_or(usize::MAX)
            .min(entries.len());
        let rest = &entries[start..];
        let items = rest
            .iter()
            .take(limit)
            .map(|e| {
                let note = self.notes.get(&e.seq);
                LedgerItem {
                    entry: e.clone(),
                    created_at: note.map_or(Timestamp::from_millis(0), |n| n.created_at),
                    rung_id: note.map_or_else(String::new, |n| n.rung_id.clone()),
                    hypothesis: note.map(|n| n.hypothesis.clone()).unwrap_or_default(),
                    code: note.and_then(|n| n.summary.clone()),
                }
            })
            .collect();
        (items, rest.len() > limit)
    }
}

/// The bytes of a code hypothesis the ledger holds (patch and rationale).
pub(super) fn code_size(code: &CodeHypothesis) -> u64 {
    (code.patch.len() + code.rationale.len()) as u64
}
