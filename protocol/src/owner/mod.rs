//! The owner of a research program as a sans-IO state machine.
//!
//! [`ProgramOwner`] holds everything the owner's daemon keeps for one program it published: the
//! program and its signed announcement, the membership registry, the KB, the claims waiting for
//! the owner's check, the nonce index that makes retried submissions idempotent, the grants still to
//! deliver and the paid-compute requests. Every owner rule lives here:
//!
//! | rule | method |
//! |---|---|
//! | device flow: request, poll, seal the grant to the requester's key, push it, poll fallback | [`ProgramOwner::on_membership`], [`ProgramOwner::approve`], [`ProgramOwner::on_push_result`] |
//! | KB gating: only members, revoked members refused, bounded calls | [`ProgramOwner::on_kb`] |
//! | submissions: signed by the sender, for this program, fresh; a verifying program needs a claim; a checkpoint another member claimed first is refused; at most [`MAX_PENDING_PER_MEMBER`] waiting per member; stop conditions; nonce idempotency | [`ProgramOwner::on_kb`] (`KbCall::Submit`) |
//! | claims: oldest first, share-if-verified for re-training, verdicts | [`ProgramOwner::next_claim`], [`ProgramOwner::on_verdict`] |
//! | paid compute: approve only the program's own packets, pre-approved rungs, bounded book | [`ProgramOwner::on_approval`], [`ProgramOwner::decide_spend`] |
//! | restart: the same state from the stored event log, streamed | [`ProgramOwner::restore_from`] ([`ProgramOwner::restore`] for a log in memory) |
//!
//! Methods take the input plus `now` (and an RNG where a rule draws randomness) and return
//! [`Effects`]: the records to make durable, then the reply and the grants to push. The daemon
//! persists the records **before** the reply goes out (an acknowledged write is durable), and after
//! a failed write rebuilds the program with [`ProgramOwner::restore`] from what is durable. Nothing
//! here reads a clock, touches a socket or a database.

mod kb;
mod ledger;
mod membership;
mod owners;
mod precheck;
mod records;
mod spend;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use libp2p_identity::PeerId;

use crate::kb::{Kb, LogEvent, Verdict};
use crate::membership::{DeviceCode, MemberRecord, Registry, RestoreError};
use crate::program::{Program, ProgramId};
use crate::seal::SealPublicKey;
use crate::signed::Signed;
use crate::wire::{ErrorCode, ErrorReply, GrantDelivery, ProgramAnnouncement, Submission};
use crate::{Digest, Timestamp};

pub use kb::ClaimToCheck;
pub use ledger::{
    code_chain, CodeLink, LedgerRead, LedgerReadKind, StoredResult, MAX_CHAIN_DEPTH,
    MAX_CODE_BYTES_PER_MEMBER,
};
pub use owners::{Owners, Published};
pub use precheck::{submissions_of, CheckedSubmission};
pub use records::{kb_history, Record, StoredSubmission, SubmissionRecord, VerdictRecord};
pub use spend::{
    SpendRequestView, SpendState, MAX_SPEND_REQUESTS, PREAPPROVED_RECEIPT_SECS, SPEND_IDLE_SECS,
};

/// Most claims one member may have waiting for the owner's check: checking costs the owner an
/// evaluation each, so a member cannot queue unbounded work.
pub const MAX_PENDING_PER_MEMBER: usize = 8;

/// Most submissions the owner stores from one member in any [`SUBMISSION_WINDOW_SECS`]: one a
/// second on average. A worker submits once per round and a round trains for at least a second
/// (`[task] seconds` ≥ 1) and evaluates, so an honest worker never reaches it; a member that does is
/// told `rate_limited` with when to try again. It bounds how fast one member grows the program's
/// log (in memory and on disk). Counted from the stored submissions' receipt times, so a restart
/// does not reset it.
pub const MAX_SUBMISSIONS_PER_MEMBER_PER_WINDOW: usize = 3600;

/// The window of [`MAX_SUBMISSIONS_PER_MEMBER_PER_WINDOW`]: one hour.
pub const SUBMISSION_WINDOW_SECS: u64 = 3600;

/// What the daemon must do after the core applied an input, in this order: make `persist`
/// durable (or, with `after_durable`, wait until every earlier write is), then send `reply`, then
/// push `push`, then wake the verifier if `claims_ready`.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "effects carry the reply and the records that must be stored before it"]
pub struct Effects<R> {
    /// Records to store, in one transaction, before anything else goes out.
    pub persist: Vec<Record>,
    /// Reply only once every write queued earlier is durable (a retried submission's original
    /// receipt, a grant that a push already carries).
    pub after_durable: bool,
    /// The answer to the requester.
    pub reply: R,
    /// Grants to push to their requesters once `persist` is durable.
    pub push: Vec<Push>,
    /// A claim became pending: the verifier has work.
    pub claims_ready: bool,
    /// A ledger read to complete from the store: the reply is its [`LedgerRead::answer`] (and
    /// `reply` only if the store cannot be read).
    pub read: Option<LedgerRead>,
}

impl<R> Effects<R> {
    /// Just a reply: nothing to store, nothing to push.
    pub fn reply(reply: R) -> Self {
        Effects {
            persist: Vec::new(),
            after_durable: false,
            reply,
            push: Vec::new(),
            claims_ready: false,
            read: None,
        }
    }

    /// A reply that goes out once `records` are durable.
    pub fn persist_then(records: Vec<Record>, reply: R) -> Self {
        Effects {
            persist: records,
            ..Effects::reply(reply)
        }
    }

    /// Whether the reply must wait for the store.
    pub fn waits_for_store(&self) -> bool {
        self.after_durable || !self.persist.is_empty()
    }

    /// The same effects with another reply.
    pub fn map<S>(self, f: impl FnOnce(R) -> S) -> Effects<S> {
        Effects {
            persist: self.persist,
            after_durable: self.after_durable,
            reply: f(self.reply),
            push: self.push,
            claims_ready: self.claims_ready,
            read: self.read,
        }
    }
}

/// A sealed grant to push to the worker that asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// The requesting peer.
    pub peer: PeerId,
    /// The sealed credential.
    pub delivery: GrantDelivery,
}

/// Why the owner refused a local command (`btd approve`, `btd revoke`, a verdict, …). The text says
/// what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// The node does not own this program.
    #[error("this node does not own program {0}")]
    NotOwned(ProgramId),
    /// The command broke a rule; the reason in words.
    #[error("{0}")]
    Refused(String),
}

/// Why a stored program could not be rebuilt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OwnerRestoreError {
    /// The program's KB rules are invalid.
    #[error("invalid KB rules of {program}: {detail}")]
    Rules {
        /// The program.
        program: ProgramId,
        /// What is wrong.
        detail: String,
    },
    /// The stored members do not restore.
    #[error("members of {program}: {error}")]
    Members {
        /// The program.
        program: ProgramId,
        /// Why.
        error: RestoreError,
    },
    /// The stored submissions are not a gap-free sequence.
    #[error("stored submission {seq} of {program} is out of sequence (position {position})")]
    OutOfSequence {
        /// The program.
        program: ProgramId,
        /// The stored seq.
        seq: u64,
        /// Its position in the log.
        position: u64,
    },
    /// Replaying the log through the KB rules failed.
    #[error("the KB log of {program}: {detail}")]
    Replay {
        /// The program.
        program: ProgramId,
        /// Why.
        detail: String,
    },
    /// A stored signed submission is missing or unreadable.
    #[error("stored submission {seq} of {program}: {detail}")]
    Submission {
        /// The program.
        program: ProgramId,
        /// The seq.
        seq: u64,
        /// Why.
        detail: String,
    },
}

/// The nonce index's key for `nonce` of the member with KB index `worker`: a 64-bit SipHash
/// fingerprint (16 bytes per result in memory instead of the member id and nonce). A hit is
/// taken as a retry only when the stored result's member is the sender, so a false hit needs two
/// of one member's own random nonces to collide (about 2^-64 per pair).
pub(crate) fn nonce_key(worker: u32, nonce: &[u8; 16]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    h.write_u32(worker);
    h.write(nonce);
    h.finish()
}

/// The claimed-checkpoint index's key: the digest's first 8 bytes (a SHA-256 digest is uniform;
/// a collision refuses a claim with words saying why, it never accepts one).
pub(crate) fn digest_key(d: &Digest) -> u64 {
    let mut k = [0u8; 8];
    k.copy_from_slice(&d.as_bytes()[..8]);
    u64::from_le_bytes(k)
}

/// The owner of one program: its rules and all the state they need.
pub struct ProgramOwner {
    id: ProgramId,
    owner: PeerId,
    program: Program,
    announcement: Signed<ProgramAnnouncement>,
    registry: Registry,
    kb: Kb,
    /// Fingerprint of (member, nonce) → seq: a retried submission gets its original receipt
    /// ([`nonce_key`]; the seq's member is compared too).
    nonces: HashMap<u64, u64>,
    /// Device code → (requesting peer, its sealing key, expiry): to seal and push the grant.
    seal_keys: HashMap<DeviceCode, (PeerId, SealPublicKey, Timestamp)>,
    /// Grants handed out (pushed and not acknowledged, or answered to a poll) until their code's
    /// grace period ends: a later poll from the same peer gets the same grant again.
    undelivered: HashMap<DeviceCode, (PeerId, GrantDelivery, Timestamp)>,
    /// Paid-compute requests.
    spend: spend::SpendBook,
    /// The signed submission of the current champion (its hypothesis is where workers search).
    champion: Option<Signed<Submission>>,
    /// The signed submissions of the claims waiting for the owner's check, by seq.
    claims: BTreeMap<u64, Signed<Submission>>,
    /// Checkpoint digest's fingerprint ([`digest_key`]) → the member (its index in the KB) that
    /// first claimed it: every member can read the champion's claim, so a digest is one member's
    /// to claim.
    claimed: HashMap<u64, u32>,
    /// Member → receipt times of its latest stored submissions (at most
    /// [`MAX_SUBMISSIONS_PER_MEMBER_PER_WINDOW`], oldest first): the per-member quota.
    recent: HashMap<String, VecDeque<Timestamp>>,
    /// Device codes of the undecided join requests the store holds (see [`Record::JoinCode`]).
    stored_codes: BTreeSet<DeviceCode>,
    /// The hypothesis ledger: every result's hypothesis and code.
    ledger: ledger::Ledger,
}

impl std::fmt::Debug for ProgramOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgramOwner")
            .field("id", &self.id)
            .field("program", &self.program.name)
            .field("entries", &self.kb.len())
            .field("pending", &self.claims.len())
            .finish_non_exhaustive()
    }
}

/// An error reply with words a user can act on.
pub(crate) fn err(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
    ErrorReply {
        code,
        message: message.into(),
    }
}

impl ProgramOwner {
    /// A freshly published program: no members, an empty KB. `announcement` must be the owner's
    /// own signed announcement of `program` (its verification gave `id` and `owner`).
    pub fn new(
        id: ProgramId,
        owner: PeerId,
        program: Program,
        announcement: Signed<ProgramAnnouncement>,
    ) -> Result<ProgramOwner, OwnerRestoreError> {
        let kb = program.kb().map_err(|e| OwnerRestoreError::Rules {
            program: id,
            detail: format!("{e:?}"),
        })?;
        Ok(ProgramOwner {
            id,
            owner,
            registry: Registry::new(program.membership),
            program,
            announcement,
            kb,
            nonces: HashMap::new(),
            seal_keys: HashMap::new(),
            undelivered: HashMap::new(),
            spend: spend::SpendBook::default(),
            champion: None,
            claims: BTreeMap::new(),
            claimed: HashMap::new(),
            recent: HashMap::new(),
            stored_codes: BTreeSet::new(),
            ledger: ledger::Ledger::default(),
        })
    }

    /// Rebuilds a program from its stored event log held in memory (tests, offline tools):
    /// [`ProgramOwner::restore_from`] with the submissions taken out of `log`.
    pub fn restore(
        id: ProgramId,
        owner: PeerId,
        program: Program,
        announcement: Signed<ProgramAnnouncement>,
        log: impl IntoIterator<Item = Record>,
    ) -> Result<ProgramOwner, OwnerRestoreError> {
        let mut records = Vec::new();
        let mut subs: Vec<SubmissionRecord> = Vec::new();
        for r in log {
            match r {
                Record::Submission(s) if s.program == id => subs.push(s),
                r => records.push(r),
            }
        }
        subs.sort_by_key(|s| s.entry.seq);
        let signed: HashMap<u64, Vec<u8>> = subs
            .iter()
            .map(|s| (s.entry.seq, s.signed.clone()))
            .collect();
        let results = subs.iter().map(|s| {
            StoredSubmission::of(s).map_err(|detail| OwnerRestoreError::Submission {
                program: id,
                seq: s.entry.seq,
                detail,
            })
        });
        ProgramOwner::restore_from(id, owner, program, announcement, records, results, |seq| {
            signed.get(&seq).cloned()
        })
    }

    /// Rebuilds a program from its stored event log: member records (the latest per member wins),
    /// undecided join codes and verdicts (in the order they were stored) in `records`, and the
    /// submissions streamed in seq order (gap-free) in `results` (its size hint's lower bound sizes
    /// the tables once); `signed(seq)` reads one stored
    /// signed submission (those of the champion and of the pending claims, the only ones kept in
    /// memory). The submissions and verdicts are replayed through the KB rules in the order they
    /// happened, so the result is the state the owner had when the last record became durable.
    /// No stored signature is checked again (each was checked when it was received). Approved
    /// grants not yet delivered and spend requests are not durable and start empty.
    pub fn restore_from(
        id: ProgramId,
        owner: PeerId,
        program: Program,
        announcement: Signed<ProgramAnnouncement>,
        records: impl IntoIterator<Item = Record>,
        results: impl IntoIterator<Item = Result<StoredSubmission, OwnerRestoreError>>,
        mut signed: impl FnMut(u64) -> Option<Vec<u8>>,
    ) -> Result<ProgramOwner, OwnerRestoreError> {
        let mut o = ProgramOwner::new(id, owner, program, announcement)?;
        let mut members: BTreeMap<String, MemberRecord> = BTreeMap::new();
        let mut verdicts: Vec<VerdictRecord> = Vec::new();
        let mut codes: BTreeMap<DeviceCode, (crate::membership::UndecidedCode, SealPublicKey)> =
            BTreeMap::new();
        for record in records {
            match record {
                Record::Member { program, record } if program == id => {
                    members.insert(record.member.to_string(), record);
                }
                Record::Verdict(v) if v.program == id => verdicts.push(v),
                Record::JoinCode {
                    program,
                    code,
                    seal_key,
                } if program == id => {
                    codes.insert(code.device_code, (code, seal_key));
                }
                Record::JoinCodeClosed {
                    program,
                    device_code,
                } if program == id => {
                    codes.remove(&device_code);
                }
                _ => {}
            }
        }
        o.registry = Registry::restore(o.program.membership, members.into_values())
            .map_err(|error| OwnerRestoreError::Members { program: id, error })?;
        // Undecided join requests come back with their sealing keys; every stored one is tracked,
        // so one the bounds left out is deleted from the store with the next membership write.
        o.stored_codes = codes.keys().copied().collect();
        let keys: BTreeMap<DeviceCode, SealPublicKey> =
            codes.iter().map(|(dc, (_, k))| (*dc, *k)).collect();
        for dc in o
            .registry
            .restore_codes(codes.into_values().map(|(c, _)| c))
        {
            let Some(key) = keys.get(&dc) else { continue };
            if let Some(p) = o.registry.undecided_codes().find(|c| c.device_code == dc) {
                if let Ok(peer) = p.peer.parse::<PeerId>() {
                    o.seal_keys.insert(dc, (peer, *key, p.expires_at));
                }
            }
        }
        let replay = |detail: String| OwnerRestoreError::Replay {
            program: id,
            detail,
        };
        let mut verdicts = verdicts.iter().peekable();
        // The log's tables are sized once when the caller says how many results follow.
        let results = results.into_iter();
        let expected = results.size_hint().0;
        o.kb.reserve(expected);
        o.ledger.reserve(expected);
        o.nonces.reserve(expected);
        for (i, row) in results.enumerate() {
            let row = row?;
            let position = i as u64 + 1;
            if row.entry.seq != position {
                return Err(OwnerRestoreError::OutOfSequence {
                    program: id,
                    seq: row.entry.seq,
                    position,
                });
            }
            while let Some(v) = verdicts.next_if(|v| v.after < row.entry.seq) {
                o.kb.apply(LogEvent::Resolve {
                    seq: v.seq,
                    verdict: &v.verdict,
                })
                .map_err(|e| replay(e.to_string()))?;
            }
            o.kb.apply(LogEvent::Submit {
                worker: &row.entry.worker,
                value: row.entry.value,
            })
            .map_err(|e| replay(e.to_string()))?;
            let worker = o.kb.worker_index(&row.entry.worker);
            if let Some(w) = worker {
                o.nonces
                    .entry(nonce_key(w, &row.nonce))
                    .or_insert(row.entry.seq);
                if let Some(c) = &row.checkpoint {
                    o.claimed.entry(digest_key(c)).or_insert(w);
                }
            }
            o.note_submission(&row.entry.worker, row.received_at);
            o.ledger
                .record(row.entry.seq, &row.entry.worker, row.code.as_ref());
        }
        for v in verdicts {
            o.kb.apply(LogEvent::Resolve {
                seq: v.seq,
                verdict: &v.verdict,
            })
            .map_err(|e| replay(e.to_string()))?;
        }
        let mut signed = |seq: u64| -> Result<Signed<Submission>, OwnerRestoreError> {
            let missing = |detail: String| OwnerRestoreError::Submission {
                program: id,
                seq,
                detail,
            };
            let bytes = signed(seq).ok_or_else(|| missing("missing".into()))?;
            crate::wire::decode(&bytes).map_err(|e| missing(e.to_string()))
        };
        o.champion = o.kb.champion().map(|c| signed(c.seq)).transpose()?;
        let pending: Vec<u64> = o.kb.pending().map(|e| e.seq).collect();
        o.claims = pending
            .into_iter()
            .map(|seq| Ok((seq, signed(seq)?)))
            .collect::<Result<_, OwnerRestoreError>>()?;
        Ok(o)
    }

    /// The program's id.
    pub fn id(&self) -> ProgramId {
        self.id
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The owner's signed announcement of the program.
    pub fn announcement(&self) -> &Signed<ProgramAnnouncement> {
        &self.announcement
    }

    /// The membership registry (read only: changes go through the owner's rules).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The KB (read only).
    pub fn kb(&self) -> &Kb {
        &self.kb
    }

    /// The signed submission of the current champion.
    pub fn champion_submission(&self) -> Option<&Signed<Submission>> {
        self.champion.as_ref()
    }

    /// Seqs of the claims waiting for the owner's check, oldest first.
    pub fn pending_claims(&self) -> impl Iterator<Item = u64> + '_ {
        self.claims.keys().copied()
    }

    /// The records that bring the store's undecided join codes in line with the registry: a new
    /// undecided code is stored (with its sealing key), one decided, expired past its grace or
    /// evicted is deleted.
    fn code_records(&mut self) -> Vec<Record> {
        // Called on every join request: compare device codes only, and build a record (with its
        // base58 peer id) only for a code not stored yet.
        let mut out = Vec::new();
        let closed: Vec<DeviceCode> = self
            .stored_codes
            .iter()
            .filter(|dc| !self.registry.is_undecided(dc))
            .copied()
            .collect();
        for device_code in closed {
            self.stored_codes.remove(&device_code);
            out.push(Record::JoinCodeClosed {
                program: self.id,
                device_code,
            });
        }
        let new: Vec<DeviceCode> = self
            .registry
            .undecided_device_codes()
            .filter(|dc| !self.stored_codes.contains(dc))
            .copied()
            .collect();
        for dc in new {
            let (Some(code), Some((_, seal_key, _))) =
                (self.registry.undecided_code(&dc), self.seal_keys.get(&dc))
            else {
                continue;
            };
            self.stored_codes.insert(dc);
            out.push(Record::JoinCode {
                program: self.id,
                code,
                seal_key: *seal_key,
            });
        }
        out
    }

    /// Remembers that a submission of `member` was stored at `at` (for the per-member quota).
    fn note_submission(&mut self, member: &str, at: Timestamp) {
        let times = self.recent.entry(member.to_string()).or_default();
        if times.len() >= MAX_SUBMISSIONS_PER_MEMBER_PER_WINDOW {
            times.pop_front();
        }
        times.push_back(at);
    }

    /// Drops expired join state (codes past their grace period, sealing keys past their code's
    /// expiry, handed-out grants past the code's grace period) and spend requests idle for
    /// [`SPEND_IDLE_SECS`].
    pub fn tick(&mut self, now: Timestamp) {
        self.registry.expire(now);
        self.seal_keys.retain(|_, (_, _, exp)| *exp >= now);
        self.undelivered.retain(|_, (_, _, exp)| *exp >= now);
        self.spend.prune(now);
    }

    /// Applies the owner's verdict on the pending claim `seq`; the verdict is stored before the
    /// entry is reported.
    pub fn on_verdict(
        &mut self,
        seq: u64,
        verdict: Verdict,
        now: Timestamp,
    ) -> Result<Effects<crate::kb::Entry>, OwnerError> {
        // A reason may quote a peer (a fetch error); what is stored and served is bounded.
        let verdict = verdict.bounded();
        let after = self.kb.len();
        let entry = self
            .kb
            .resolve(seq, &verdict)
            .map_err(|e| OwnerError::Refused(e.to_string()))?;
        if entry.champion {
            self.champion = self.claims.get(&seq).cloned();
        }
        let still: std::collections::BTreeSet<u64> = self.kb.pending().map(|e| e.seq).collect();
        self.claims.retain(|s, _| still.contains(s));
        let record = Record::Verdict(VerdictRecord {
            program: self.id,
            seq,
            after,
            verdict,
            decided_at: now,
        });
        Ok(Effects::persist_then(vec![record], entry))
    }
}
