//! The hypothesis ledger the owner keeps: for every result, its numeric hypothesis, when it was
//! made, and the code hypothesis it ran (parent, patch, rationale, seed, tree). Members read it a
//! page at a time (`KbCall::Ledger`) and fetch any result's code (`KbCall::Code`) to rebuild its
//! tree; the verifier gets a claim's whole patch chain from it.

use crate::kb::Entry;
use crate::wire::{CodeHypothesis, CodeSummary, CodeView, KbResponse, LedgerItem, Submission};
use crate::Timestamp;

/// Longest chain of code hypotheses from the bundle to a result: a tree is rebuilt by applying
/// every patch of its chain, so the depth bounds that work.
pub const MAX_CHAIN_DEPTH: usize = 1024;

/// Most patch and rationale bytes the owner holds for one member (64 MiB): every result's code
/// is stored and served again (ledger pages, re-runs), so this bounds what one member can make the
/// owner store, whatever its rate. An honest member writing 2 KiB patches reaches it after some
/// 30 000 results; the owner can revoke a member.
pub const MAX_CODE_BYTES_PER_MEMBER: u64 = 64 << 20;

/// [`Ledger::depth`]'s mark for a result without code.
const NO_CODE: u16 = u16::MAX;

/// What the owner keeps in memory of its ledger: per result, how deep its code chain is (2 bytes;
/// the rules check a new result's parent against it), and per member the code bytes it holds.
/// The notes themselves (hypothesis, rung, time, code) stay on disk in the signed submissions and
/// their code: a page is read from there ([`LedgerRead`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Ledger {
    /// `depth[seq - 1]`: patches from the bundle to result `seq`, or [`NO_CODE`].
    depth: Vec<u16>,
    /// Member → bytes of code (patch + rationale) held for it.
    code_bytes: std::collections::HashMap<String, u64>,
}

impl Ledger {
    /// The depth of result `seq`'s chain, when it carries code.
    fn depth(&self, seq: u64) -> Option<u16> {
        let d = *self.depth.get(usize::try_from(seq).ok()?.checked_sub(1)?)?;
        (d != NO_CODE).then_some(d)
    }

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
        match self.depth(p) {
            Some(d) if usize::from(d) + 1 > MAX_CHAIN_DEPTH => Err(format!(
                "result {p} is {d} patches deep; a chain may have at most {MAX_CHAIN_DEPTH}: \
                 build on a shallower result"
            )),
            Some(_) => Ok(()),
            None => Err(format!(
                "result {p} carries no code; build on the bundle (no parent) or on a result with code"
            )),
        }
    }

    /// Makes room for `additional` more results at once.
    pub(super) fn reserve(&mut self, additional: usize) {
        self.depth.reserve_exact(additional);
    }

    /// Bytes of code the ledger holds for `member`.
    pub(super) fn code_bytes(&self, member: &str) -> u64 {
        self.code_bytes.get(member).copied().unwrap_or(0)
    }

    /// Records result `seq` of `member` (its parent was checked with [`Ledger::check_parent`]; on
    /// restore an unknown parent only costs depth accuracy).
    pub(super) fn record(&mut self, seq: u64, member: &str, code: Option<&CodeLink>) {
        let Some(i) = usize::try_from(seq).ok().and_then(|s| s.checked_sub(1)) else {
            return;
        };
        let depth = match code {
            Some(c) => {
                *self.code_bytes.entry(member.to_string()).or_default() += c.bytes;
                let parent = c.parent.and_then(|p| self.depth(p)).unwrap_or(0);
                parent.saturating_add(u16::from(c.patched)).min(NO_CODE - 1)
            }
            None => NO_CODE,
        };
        if self.depth.len() <= i {
            self.depth.resize(i + 1, NO_CODE);
        }
        self.depth[i] = depth;
    }

    /// Whether result `seq` carries code.
    pub(super) fn has_code(&self, seq: u64) -> bool {
        self.depth(seq).is_some()
    }
}

/// What the ledger's rules read of a result's code hypothesis: its parent, whether its patch
/// changes anything, and its size (restart reads these without keeping the code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLink {
    /// The parent result (`None`: the bundle).
    pub parent: Option<u64>,
    /// Whether the patch is not empty.
    pub patched: bool,
    /// Patch and rationale bytes.
    pub bytes: u64,
}

impl CodeLink {
    /// The link of `code`.
    pub fn of(code: &CodeHypothesis) -> CodeLink {
        CodeLink {
            parent: code.parent,
            patched: !code.patch.trim().is_empty(),
            bytes: code_size(code),
        }
    }
}

/// A stored result as the ledger reads it back: the submission (its signature was checked when it
/// was received) and its code hypothesis.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    /// The submission.
    pub submission: Submission,
    /// Its code hypothesis, when it carried one.
    pub code: Option<CodeHypothesis>,
}

impl StoredResult {
    /// Decodes a stored signed submission and code without checking the signature again (it was
    /// checked on receipt, before it was stored).
    pub fn decode(signed: &[u8], code: Option<&[u8]>) -> Result<StoredResult, String> {
        let signed = crate::wire::decode::<crate::signed::Signed<Submission>>(signed)
            .map_err(|e| format!("the signed submission: {e}"))?;
        let submission = signed
            .payload_unverified()
            .map_err(|e| format!("the submission: {e}"))?;
        let code = code
            .map(crate::wire::decode::<CodeHypothesis>)
            .transpose()
            .map_err(|e| format!("its code hypothesis: {e}"))?;
        Ok(StoredResult { submission, code })
    }
}

/// What a ledger read answers once its results are read from the store.
#[derive(Debug, Clone, PartialEq)]
pub enum LedgerReadKind {
    /// A page of [`LedgerItem`]s (`more`: whether later results follow).
    Page {
        /// Whether later results follow.
        more: bool,
    },
    /// One result's code ([`crate::wire::KbResponse::Code`]).
    Code,
}

/// A ledger read the owner core gated and the daemon completes from its store: the entries come
/// from the KB in memory, each result's submission and code from disk ([`LedgerRead::answer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRead {
    /// The program.
    pub program: crate::program::ProgramId,
    /// The entries of the results to read, in seq order.
    pub entries: Vec<Entry>,
    /// What to answer.
    pub kind: LedgerReadKind,
}

impl LedgerRead {
    /// The seqs to read from the store: `first..=last` (empty when there are no entries).
    pub fn seqs(&self) -> Option<(u64, u64)> {
        Some((self.entries.first()?.seq, self.entries.last()?.seq))
    }

    /// The answer, with `stored` giving each result's stored submission and code (a result the
    /// store lacks shows no hypothesis and no code).
    pub fn answer(self, mut stored: impl FnMut(u64) -> Option<StoredResult>) -> KbResponse {
        match self.kind {
            LedgerReadKind::Page { more } => KbResponse::Ledger {
                items: self
                    .entries
                    .into_iter()
                    .map(|entry| {
                        let r = stored(entry.seq);
                        LedgerItem {
                            created_at: r
                                .as_ref()
                                .map_or(Timestamp::from_millis(0), |r| r.submission.created_at),
                            rung_id: r
                                .as_ref()
                                .map_or_else(String::new, |r| r.submission.rung_id.clone()),
                            code: r
                                .as_ref()
                                .and_then(|r| r.code.as_ref())
                                .map(CodeSummary::of),
                            hypothesis: r.map(|r| r.submission.hypothesis).unwrap_or_default(),
                            entry,
                        }
                    })
                    .collect(),
                more,
            },
            LedgerReadKind::Code => {
                KbResponse::Code(self.entries.into_iter().next().and_then(|entry| {
                    let code = stored(entry.seq)?.code?;
                    Some(Box::new(CodeView { entry, code }))
                }))
            }
        }
    }
}

/// The code hypotheses from the bundle to result `seq`, root first, `seq`'s own last, with `code`
/// reading a result's code from the store; empty when `seq` carries no code. `None` when a link is
/// missing or the chain is longer than [`MAX_CHAIN_DEPTH`].
pub fn code_chain(
    seq: u64,
    mut code: impl FnMut(u64) -> Option<CodeHypothesis>,
) -> Option<Vec<CodeHypothesis>> {
    let mut out = Vec::new();
    let mut at = Some(seq);
    while let Some(s) = at {
        let Some(c) = code(s) else {
            // Only the claim itself may carry no code.
            return (s == seq).then(Vec::new);
        };
        if out.len() > MAX_CHAIN_DEPTH {
            return None;
        }
        at = c.parent.filter(|p| *p < s);
        if c.parent.is_some() && at.is_none() {
            return None;
        }
        out.push(c);
    }
    out.reverse();
    Some(out)
}

/// The bytes of a code hypothesis the ledger holds (patch and rationale).
pub(super) fn code_size(code: &CodeHypothesis) -> u64 {
    (code.patch.len() + code.rationale.len()) as u64
}
