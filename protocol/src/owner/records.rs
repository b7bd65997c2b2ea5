//! What the owner stores: the event log its state is rebuilt from.

use crate::kb::{Entry, LogEvent, Verdict};
use crate::membership::{DeviceCode, MemberRecord, UndecidedCode};
use crate::program::ProgramId;
use crate::seal::SealPublicKey;
use crate::Timestamp;

/// One durable record of an owned program. The store keeps members by (program, member) (a
/// later record of a member replaces the earlier one), submissions by seq, verdicts in the order
/// they were decided, and undecided join codes by device code (a closed one is deleted).
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A member was approved or revoked.
    Member {
        /// The program.
        program: ProgramId,
        /// The member as it stands now (credential hash only).
        record: MemberRecord,
    },
    /// A submission was recorded.
    Submission(SubmissionRecord),
    /// The owner decided on a pending claim.
    Verdict(VerdictRecord),
    /// A join request waits for the owner's decision: kept so that a restart does not lose it.
    JoinCode {
        /// The program.
        program: ProgramId,
        /// The code.
        code: UndecidedCode,
        /// The requester's sealing key (its grant is sealed to it).
        seal_key: SealPublicKey,
    },
    /// A stored join request was decided, expired or evicted: forget it.
    JoinCodeClosed {
        /// The program.
        program: ProgramId,
        /// The code.
        device_code: DeviceCode,
    },
}

impl Record {
    /// The program the record belongs to.
    pub fn program(&self) -> ProgramId {
        match self {
            Record::Member { program, .. } => *program,
            Record::Submission(s) => s.program,
            Record::Verdict(v) => v.program,
            Record::JoinCode { program, .. } | Record::JoinCodeClosed { program, .. } => *program,
        }
    }
}

/// A submission as the owner stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionRecord {
    /// The program.
    pub program: ProgramId,
    /// The entry (seq, worker, value, verdict).
    pub entry: Entry,
    /// The worker's nonce (idempotency key).
    pub nonce: [u8; 16],
    /// The encoded `Signed<Submission>` as received.
    pub signed: Vec<u8>,
    /// The encoded `CodeHypothesis` it came with, if any.
    pub code: Option<Vec<u8>>,
    /// When the owner received it.
    pub received_at: Timestamp,
}

/// The owner's verdict on a pending claim, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictRecord {
    /// The program.
    pub program: ProgramId,
    /// The claim's seq.
    pub seq: u64,
    /// How many submissions the KB held when the verdict was applied.
    pub after: u64,
    /// The verdict.
    pub verdict: Verdict,
    /// When it was decided.
    pub decided_at: Timestamp,
}

/// Interleaves stored submissions (in seq order) and verdicts (in decision order) into the KB's
/// history: a verdict applied when the KB held `after` submissions comes right after submission
/// `after`. Replaying it through [`crate::kb::Kb::replay_events`] gives the state the owner had.
pub fn kb_history<'a>(
    subs: impl IntoIterator<Item = &'a SubmissionRecord>,
    verdicts: impl IntoIterator<Item = &'a VerdictRecord>,
) -> Vec<LogEvent<'a>> {
    let resolve = |v: &'a VerdictRecord| LogEvent::Resolve {
        seq: v.seq,
        verdict: &v.verdict,
    };
    let mut verdicts = verdicts.into_iter().peekable();
    let mut events = Vec::new();
    for r in subs {
        while let Some(v) = verdicts.next_if(|v| v.after < r.entry.seq) {
            events.push(resolve(v));
        }
        events.push(LogEvent::Submit {
            worker: &r.entry.worker,
            value: r.entry.value,
        });
    }
    events.extend(verdicts.map(resolve));
    events
}

/// A stored submission as restart reads it: what the rules and the indexes need, without the
/// signed bytes (the ledger reads those from the store when a page is asked for).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSubmission {
    /// The KB entry as stored (its check is rebuilt from the verdicts).
    pub entry: Entry,
    /// The member's nonce.
    pub nonce: [u8; 16],
    /// When the owner received it (the per-member quota).
    pub received_at: crate::Timestamp,
    /// The checkpoint it claimed, if any.
    pub checkpoint: Option<crate::Digest>,
    /// What the ledger keeps of its code hypothesis, if any.
    pub code: Option<super::CodeLink>,
}

impl StoredSubmission {
    /// Reads `row`'s signed submission and code (no signature check: it was checked on receipt).
    pub fn of(row: &SubmissionRecord) -> Result<StoredSubmission, String> {
        StoredSubmission::decode(
            row.entry.clone(),
            row.nonce,
            row.received_at,
            &row.signed,
            row.code.as_deref(),
        )
    }

    /// Reads a stored row's signed submission and code.
    pub fn decode(
        entry: Entry,
        nonce: [u8; 16],
        received_at: crate::Timestamp,
        signed: &[u8],
        code: Option<&[u8]>,
    ) -> Result<StoredSubmission, String> {
        let r = super::StoredResult::decode(signed, code)?;
        Ok(StoredSubmission {
            entry,
            nonce,
            received_at,
            checkpoint: r.submission.claim.map(|c| c.checkpoint),
            code: r.code.as_ref().map(super::CodeLink::of),
        })
    }
}
