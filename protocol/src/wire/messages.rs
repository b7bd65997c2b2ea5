//! The message types. Each has a `check` that enforces the bounds a handler may rely on; decoding
//! alone only guarantees the shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dispatch::{ComputePacket, HardwareClass, SpendClass};
use crate::kb::{Amount, Entry, Payouts};
use crate::membership::{Credential, DeviceAuthorization, DeviceCode};
use crate::program::{Program, ProgramId};
use crate::seal::{SealPublicKey, Sealed};
use crate::signed::{Signed, SignedDomain};
use crate::trace::{ApprovalReceipt, Output};
use crate::{Digest, Timestamp};

use super::code::{CodeHypothesis, CodeView, LedgerItem, MAX_LEDGER_PAGE};
use super::status::StatusQuery;

/// Most results one `Results` page may carry (keeps a page far below the message cap).
pub const MAX_RESULTS_PAGE: u32 = 1000;
/// Most rungs one advert may list.
pub const MAX_ADVERTISED_RUNGS: usize = 16;
/// Most programs one rung advert may name.
pub const MAX_ADVERTISED_PROGRAMS: usize = 64;
/// Most outputs or metrics one submission may carry.
pub const MAX_SUBMISSION_ITEMS: usize = 64;
/// Most results in one [`KbCall::SubmitBatch`].
pub const MAX_SUBMIT_BATCH: usize = 32;
/// Longest free-text field in a message (bytes).
pub const MAX_TEXT_BYTES: usize = 1024;
/// Longest identifier in a message (bytes).
pub const MAX_ID_BYTES: usize = 128;
/// How far in the future a signed timestamp may be (clock skew we tolerate), milliseconds.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// A message that breaks a bound a handler relies on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct MessageError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

pub(super) fn bad(field: &'static str, problem: impl Into<String>) -> MessageError {
    MessageError {
        field,
        problem: problem.into(),
    }
}

fn check_id(field: &'static str, s: &str) -> Result<(), MessageError> {
    if s.is_empty() || s.len() > MAX_ID_BYTES {
        return Err(bad(field, format!("must be 1 to {MAX_ID_BYTES} bytes")));
    }
    Ok(())
}

pub(super) fn check_text(field: &'static str, s: &str) -> Result<(), MessageError> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(bad(field, format!("longer than {MAX_TEXT_BYTES} bytes")));
    }
    Ok(())
}

fn check_finite(field: &'static str, v: f64) -> Result<(), MessageError> {
    if !v.is_finite() {
        return Err(bad(field, format!("{v} is not a finite number")));
    }
    Ok(())
}

/// Rejects a signed timestamp too far in the future.
pub fn check_not_future(
    field: &'static str,
    at: Timestamp,
    now: Timestamp,
) -> Result<(), MessageError> {
    if at.millis_since(now) > MAX_CLOCK_SKEW_MS {
        return Err(bad(
            field,
            format!(
                "{} ms in the future (more than the {MAX_CLOCK_SKEW_MS} ms skew allowed); check the sender's clock",
                at.millis_since(now)
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Gossip

/// An owner's announcement of a program, signed by the owner (`Signed<ProgramAnnouncement>`).
///
/// It carries the manifest text, not the typed program, so receivers validate it with exactly the
/// rules `btd program check` applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramAnnouncement {
    /// The manifest (TOML).
    pub manifest: String,
    /// Multiaddrs where the owner can be reached (direct and relay-circuit), as strings.
    pub addresses: Vec<String>,
    /// When the owner published (or re-announced) it.
    pub published_at: Timestamp,
}

/// Most addresses one announcement may carry.
pub const MAX_ANNOUNCED_ADDRESSES: usize = 16;

impl SignedDomain for ProgramAnnouncement {
    const DOMAIN: &'static str = "btd/program-announcement/v1";
}

/// Why an announcement was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnnouncementError {
    /// Bad signature or signer.
    #[error("announcement signature: {0}")]
    Signature(#[from] crate::signed::SignedError),
    /// The manifest does not validate.
    #[error("announced manifest is invalid: {0}")]
    Manifest(#[from] crate::program::ManifestErrors),
    /// A bound is broken.
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// A verified announcement.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedProgram {
    /// The program's id (owner key + program).
    pub id: ProgramId,
    /// The owner.
    pub owner: libp2p_identity::PeerId,
    /// The validated program.
    pub program: Program,
    /// The manifest text as announced.
    pub manifest: String,
    /// Where the owner said it can be reached.
    pub addresses: Vec<String>,
    /// When it was published.
    pub published_at: Timestamp,
}

/// Verifies the owner's signature, validates the manifest, checks the timestamp against `now`, and
/// derives the program id from the signer's key.
pub fn verify_announcement(
    signed: &Signed<ProgramAnnouncement>,
    now: Timestamp,
) -> Result<VerifiedProgram, AnnouncementError> {
    let v = signed.verify()?;
    check_not_future("published_at", v.value.published_at, now)?;
    if v.value.addresses.len() > MAX_ANNOUNCED_ADDRESSES {
        return Err(bad("addresses", format!("more than {MAX_ANNOUNCED_ADDRESSES}")).into());
    }
    for a in &v.value.addresses {
        check_text("addresses", a)?;
    }
    let program = Program::from_toml(&v.value.manifest)?;
    Ok(VerifiedProgram {
        id: ProgramId::compute(&program, &v.public_key),
        owner: v.signer,
        program,
        manifest: v.value.manifest,
        addresses: v.value.addresses,
        published_at: v.value.published_at,
    })
}

/// One rung a worker offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AdvertisedRung {
    /// The worker's rung id.
    pub id: String,
    /// Hardware class.
    pub hardware: HardwareClass,
    /// Spend class.
    pub spend_class: SpendClass,
    /// Detected hardware in words, e.g. `NVIDIA H100 80GB HBM3 (81559 MiB, cc 9.0)`.
    pub detail: String,
}

/// A worker's signed advert of its rungs and the programs it works on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungAdvert {
    /// The rungs.
    pub rungs: Vec<AdvertisedRung>,
    /// Programs the worker is a member of.
    pub programs: Vec<ProgramId>,
    /// When it was made (adverts older than the newest seen from a peer are ignored).
    pub advertised_at: Timestamp,
}

impl SignedDomain for RungAdvert {
    const DOMAIN: &'static str = "btd/rung-advert/v1";
}

impl RungAdvert {
    /// Enforces the advert's bounds.
    pub fn check(&self, now: Timestamp) -> Result<(), MessageError> {
        if self.rungs.len() > MAX_ADVERTISED_RUNGS {
            return Err(bad("rungs", format!("more than {MAX_ADVERTISED_RUNGS}")));
        }
        if self.programs.len() > MAX_ADVERTISED_PROGRAMS {
            return Err(bad(
                "programs",
                format!("more than {MAX_ADVERTISED_PROGRAMS}"),
            ));
        }
        for r in &self.rungs {
            check_id("rungs.id", &r.id)?;
            check_text("rungs.detail", &r.detail)?;
        }
        check_not_future("advertised_at", self.advertised_at, now)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors carried in replies

/// Machine-readable error class in a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The peer does not own (or know) this program.
    UnknownProgram,
    /// The request needs a valid member credential.
    MembershipRequired,
    /// The member was revoked.
    Revoked,
    /// Too many requests; retry later.
    RateLimited,
    /// The request broke a rule (details in the message).
    Invalid,
    /// The program no longer takes work (a stop condition was reached).
    ProgramStopped,
    /// The owner could not serve the request right now (e.g. storage failure); retry later.
    Unavailable,
    /// The peer does not hold what was asked for (e.g. an artifact digest).
    NotFound,
}

/// An error reply: a class plus words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorReply {
    /// The class.
    pub code: ErrorCode,
    /// What went wrong and what to do.
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Membership: `/btd/membership/1`

/// A membership request. `Authorize` and `Poll` go from a worker to the owner; `PushGrant` from the
/// owner to the worker as soon as the owner approves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MembershipRequest {
    /// Start the device flow for a program; the credential will be sealed to `seal_key`.
    Authorize {
        /// The program to join.
        program: ProgramId,
        /// The worker's x25519 sealing key.
        seal_key: SealPublicKey,
    },
    /// Poll for the outcome.
    Poll {
        /// The program.
        program: ProgramId,
        /// The device code from `Authorization`.
        device_code: DeviceCode,
    },
    /// The owner pushes a grant right after approval.
    PushGrant(GrantDelivery),
}

/// A credential sealed to the worker's key (context: [`grant_seal_context`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantDelivery {
    /// The program joined.
    pub program: ProgramId,
    /// The device code the grant answers.
    pub device_code: DeviceCode,
    /// The sealed 32-byte credential.
    pub sealed: Sealed,
}

/// The sealing context of a grant: binds the ciphertext to the program and device code, so a sealed
/// credential cannot be replayed into another join.
pub fn grant_seal_context(program: &ProgramId, device_code: &DeviceCode) -> Vec<u8> {
    let mut ctx = b"btd/grant/v1".to_vec();
    ctx.extend_from_slice(program.0.as_bytes());
    ctx.extend_from_slice(&device_code.0);
    ctx
}

/// Poll outcomes other than a grant (RFC 8628 §3.5 error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PollStatus {
    /// Not approved yet; poll again after the interval.
    AuthorizationPending,
    /// Polling too fast; use the new interval (seconds).
    SlowDown {
        /// The interval to use from now on.
        interval: u64,
    },
    /// The owner denied the request.
    AccessDenied,
    /// The code expired; start again.
    ExpiredToken,
    /// No such code for this peer (or already consumed).
    NotFound,
}

/// A membership reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MembershipResponse {
    /// The device authorization (codes, expiry, interval).
    Authorization(DeviceAuthorization),
    /// The grant, sealed.
    Granted(GrantDelivery),
    /// Not granted (yet).
    Poll(PollStatus),
    /// The pushed grant was received.
    Ack,
    /// The request failed.
    Error(ErrorReply),
}

// ---------------------------------------------------------------------------------------------
// Knowledge base: `/btd/kb/1`

/// A KB request: every call carries the program and the member's credential. The connection is
/// Noise-encrypted end to end (also through relays), so the credential is not exposed on the path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KbRequest {
    /// The program.
    pub program: ProgramId,
    /// The member credential.
    pub credential: Credential,
    /// The call.
    pub call: KbCall,
}

/// What a member asks of the KB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KbCall {
    /// The program manifest.
    Program,
    /// The current champion.
    Champion,
    /// A page of results with `seq > after_seq`.
    Results {
        /// Last seq already seen (0 for the start).
        after_seq: u64,
        /// Page size, at most [`MAX_RESULTS_PAGE`].
        limit: u32,
    },
    /// Program status: members, submissions, champion, payouts.
    Status,
    /// A result, signed by the worker.
    Submit(Signed<Submission>),
    /// A result with the code hypothesis it ran (programs with a source bundle or re-run
    /// verification); the signed submission binds the code by digest ([`CODE_OUTPUT`]).
    SubmitCode {
        /// The signed result.
        submission: Signed<Submission>,
        /// What it ran (boxed: the call stays small; the encoding is the same).
        code: Box<CodeHypothesis>,
    },
    /// A page of the hypothesis ledger with `seq > after_seq`.
    Ledger {
        /// Last seq already seen (0 for the start).
        after_seq: u64,
        /// Page size, at most [`MAX_LEDGER_PAGE`].
        limit: u32,
    },
    /// The code hypothesis of result `seq`, with its patch.
    Code {
        /// The result.
        seq: u64,
    },
    /// The newest `limit` items of the hypothesis ledger (in seq order): where a proposer's
    /// context starts, without paging through the whole ledger.
    LedgerTail {
        /// At most [`MAX_LEDGER_PAGE`].
        limit: u32,
    },
    /// The status with one page of results ([`StatusQuery`]), in one round trip.
    StatusPage(StatusQuery),
    /// Several results at once (1 to [`MAX_SUBMIT_BATCH`]), each signed by the worker and judged
    /// as if it came alone, in order: one round trip and one durable write for all of them.
    /// Answered by [`KbResponse::SubmittedBatch`]. (Results with code go alone, as
    /// [`KbCall::SubmitCode`].)
    SubmitBatch(Vec<Signed<Submission>>),
}

impl KbCall {
    /// Enforces the call's bounds.
    pub fn check(&self) -> Result<(), MessageError> {
        match self {
            KbCall::Results { limit, .. } if *limit == 0 || *limit > MAX_RESULTS_PAGE => Err(bad(
                "limit",
                format!("must be 1 to {MAX_RESULTS_PAGE}, got {limit}"),
            )),
            KbCall::Ledger { limit, .. } | KbCall::LedgerTail { limit }
                if *limit == 0 || *limit > MAX_LEDGER_PAGE =>
            {
                Err(bad(
                    "limit",
                    format!("must be 1 to {MAX_LEDGER_PAGE}, got {limit}"),
                ))
            }
            KbCall::StatusPage(q) => q.check(),
            KbCall::SubmitBatch(list) if list.is_empty() || list.len() > MAX_SUBMIT_BATCH => {
                Err(bad(
                    "batch",
                    format!(
                        "must hold 1 to {MAX_SUBMIT_BATCH} results, got {}",
                        list.len()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A worker's result for one packet. Signed by the worker; its identity in the KB is its peer id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Submission {
    /// The program.
    pub program: ProgramId,
    /// Random per-result nonce: a retried submission with the same nonce is not counted twice.
    pub nonce: [u8; 16],
    /// The metric value.
    pub value: f64,
    /// The rung it ran on.
    pub rung_id: String,
    /// Outputs by digest.
    pub outputs: Vec<Output>,
    /// Other metrics (e.g. tokens/s).
    pub metrics: BTreeMap<String, f64>,
    /// The hypothesis it tested: the values of the program's search parameters (empty when the
    /// program declares no search space).
    pub hypothesis: BTreeMap<String, f64>,
    /// When the worker made it.
    pub created_at: Timestamp,
    /// What the owner needs to check the value (candle tasks); `None` for shell tasks.
    pub claim: Option<Claim>,
}

/// What a worker states about how it measured a value, so the owner can check it: the checkpoint
/// to fetch and re-evaluate, and the config, seed and step count to re-train it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Claim {
    /// SHA-256 of the checkpoint the value was measured on; the worker serves it over
    /// `/btd/blob/1` to the program's owner.
    pub checkpoint: Digest,
    /// Its size in bytes.
    pub checkpoint_bytes: u64,
    /// The training seed.
    pub seed: u64,
    /// Optimiser steps taken.
    pub steps: u64,
    /// The device it trained and evaluated on, e.g. `cpu: AMD EPYC 7B13` or `cuda: NVIDIA H100`.
    pub device: String,
    /// The btd version that measured it.
    pub btd_version: String,
}

impl SignedDomain for Submission {
    const DOMAIN: &'static str = "btd/submission/v1";
}

impl Submission {
    /// Enforces the submission's bounds.
    pub fn check(&self, now: Timestamp) -> Result<(), MessageError> {
        check_finite("value", self.value)?;
        check_id("rung_id", &self.rung_id)?;
        if self.outputs.len() > MAX_SUBMISSION_ITEMS {
            return Err(bad("outputs", format!("more than {MAX_SUBMISSION_ITEMS}")));
        }
        if self.metrics.len() > MAX_SUBMISSION_ITEMS {
            return Err(bad("metrics", format!("more than {MAX_SUBMISSION_ITEMS}")));
        }
        for o in &self.outputs {
            check_id("outputs.name", &o.name)?;
        }
        for (k, v) in &self.metrics {
            check_id("metrics.name", k)?;
            check_finite("metrics.value", *v)?;
        }
        if self.hypothesis.len() > crate::program::search::MAX_SEARCH_PARAMS {
            return Err(bad(
                "hypothesis",
                format!(
                    "more than {} parameters",
                    crate::program::search::MAX_SEARCH_PARAMS
                ),
            ));
        }
        for (k, v) in &self.hypothesis {
            check_id("hypothesis.name", k)?;
            check_finite("hypothesis.value", *v)?;
        }
        if let Some(c) = &self.claim {
            check_text("claim.device", &c.device)?;
            check_id("claim.btd_version", &c.btd_version)?;
            if !self.outputs.iter().any(|o| o.sha256 == c.checkpoint) {
                return Err(bad(
                    "claim.checkpoint",
                    "is not among the submission's outputs",
                ));
            }
        }
        check_not_future("created_at", self.created_at, now)
    }
}

/// What the owner's KB did with a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubmitReceipt {
    /// Its sequence number.
    pub seq: u64,
    /// Whether the KEEP rule accepted it.
    pub accepted: bool,
    /// Whether it became champion.
    pub champion: bool,
    /// Its impact.
    pub impact: f64,
    /// Where the owner's check stands (`pending` until the owner has verified it).
    pub check: crate::kb::Check,
    /// True when this nonce was already recorded (the receipt is the original one).
    pub duplicate: bool,
}

/// The champion as the KB serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChampionView {
    /// Its KB entry.
    pub entry: Entry,
    /// The worker's signed submission, as received.
    pub submission: Signed<Submission>,
}

/// A program's status as the owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KbStatus {
    /// The program.
    pub program: ProgramId,
    /// Its name.
    pub name: String,
    /// Active (not revoked) members.
    pub members: u64,
    /// Submissions recorded.
    pub submissions: u64,
    /// Accepted submissions.
    pub accepted: u64,
    /// Claims waiting for the owner's check.
    pub pending: u64,
    /// Claims the owner verified.
    pub verified: u64,
    /// Claims that failed the owner's check.
    pub rejected: u64,
    /// The champion.
    pub champion: Option<Entry>,
    /// Current payouts.
    pub payouts: Payouts,
    /// The pool.
    pub pool: Amount,
    /// The token symbol.
    pub token: String,
}

/// A KB reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KbResponse {
    /// The signed announcement of the program (manifest + owner signature).
    Program(Signed<ProgramAnnouncement>),
    /// The champion, if any, with the signed submission that made it (its hypothesis, outputs
    /// and metrics).
    Champion(Option<Box<ChampionView>>),
    /// A page of results.
    Results {
        /// Entries in seq order.
        entries: Vec<Entry>,
        /// True if more entries follow.
        more: bool,
    },
    /// Status.
    Status(KbStatus),
    /// A submission was recorded.
    Submitted(SubmitReceipt),
    /// The request failed.
    Error(ErrorReply),
    /// A page of the hypothesis ledger.
    Ledger {
        /// Items in seq order.
        items: Vec<LedgerItem>,
        /// True if more items follow.
        more: bool,
    },
    /// A result's code hypothesis with its entry (`None`: no such result, or it carried none).
    Code(Option<Box<CodeView>>),
    /// The status and one page of results, in the query's order.
    StatusPage {
        /// The summary.
        status: KbStatus,
        /// The page (fewer than asked when a full page would not fit in one message).
        results: Vec<Entry>,
        /// Whether a later page holds results.
        more: bool,
    },
    /// The answers to a [`KbCall::SubmitBatch`], one per result in its order: each what
    /// [`KbCall::Submit`] would have answered ([`KbResponse::Submitted`] or
    /// [`KbResponse::Error`]).
    SubmittedBatch(Vec<SubmitOutcome>),
}

/// One result's answer in a [`KbResponse::SubmittedBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SubmitOutcome {
    /// Recorded (or a retry of a recorded one: `duplicate`).
    Submitted(SubmitReceipt),
    /// Refused, with the reason.
    Refused(ErrorReply),
}

impl SubmitOutcome {
    /// A result's answer as [`KbCall::Submit`] gives it: `Submitted` or `Error` (anything else
    /// is no answer to a result: "try again").
    pub fn from_reply(reply: KbResponse) -> Self {
        match reply {
            KbResponse::Submitted(r) => SubmitOutcome::Submitted(r),
            KbResponse::Error(e) => SubmitOutcome::Refused(e),
            _ => SubmitOutcome::Refused(ErrorReply {
                code: ErrorCode::Unavailable,
                message: "try again".into(),
            }),
        }
    }

    /// The answer [`KbCall::Submit`] would have given for this result alone.
    pub fn into_reply(self) -> KbResponse {
        match self {
            SubmitOutcome::Submitted(r) => KbResponse::Submitted(r),
            SubmitOutcome::Refused(e) => KbResponse::Error(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paid approval: `/btd/approval/1`

/// A member asks the owner to approve one paid packet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The program.
    pub program: ProgramId,
    /// The member credential.
    pub credential: Credential,
    /// The packet to run.
    pub packet: ComputePacket,
}

/// The owner's answer to an approval request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApprovalResponse {
    /// Approved: the signed receipt.
    Granted(ApprovalReceipt),
    /// Waiting for the owner; ask again later.
    Pending,
    /// Denied, with the reason.
    Denied {
        /// Why.
        reason: String,
    },
    /// The request failed.
    Error(ErrorReply),
}

// ---------------------------------------------------------------------------------------------
// Artifacts: `/btd/blob/1`

/// Largest chunk one blob reply carries (stays under the message cap with room for framing).
pub const MAX_BLOB_CHUNK: u32 = 512 * 1024;

/// A request for one chunk of a content-addressed artifact (a dataset from the owner, a checkpoint
/// from a worker). Each program's artifacts are served only inside the program: a member fetches
/// from the owner with its credential; the owner fetches from a member as itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobRequest {
    /// The program the artifact belongs to.
    pub program: ProgramId,
    /// The member credential (requests to the owner); `None` when the owner asks a member.
    pub credential: Option<Credential>,
    /// SHA-256 of the whole artifact.
    pub digest: Digest,
    /// First byte wanted.
    pub offset: u64,
    /// Most bytes wanted, at most [`MAX_BLOB_CHUNK`].
    pub len: u32,
}

impl BlobRequest {
    /// Enforces the request's bounds.
    pub fn check(&self) -> Result<(), MessageError> {
        if self.len == 0 || self.len > MAX_BLOB_CHUNK {
            return Err(bad(
                "len",
                format!("must be 1 to {MAX_BLOB_CHUNK}, got {}", self.len),
            ));
        }
        Ok(())
    }
}

/// A blob reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BlobResponse {
    /// Bytes `offset .. offset + data.len()` of an artifact of `size` bytes (empty at the end).
    Chunk {
        /// The artifact's total size.
        size: u64,
        /// Where `data` starts.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The request failed.
    Error(ErrorReply),
}
