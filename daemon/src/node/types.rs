//! What the node reports to the control API (all serde, printed by the CLI as text or JSON).

use btd_protocol::kb::{Amount, Entry, Payouts};
use btd_protocol::membership::MemberRecord;
use btd_protocol::program::ProgramId;
use btd_protocol::trace::Output;
use btd_protocol::wire::AdvertisedRung;
use btd_protocol::Timestamp;
use serde::{Deserialize, Serialize};

/// `btd id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// This node's peer id.
    pub peer_id: String,
    /// Addresses it listens on.
    pub listen: Vec<String>,
    /// Addresses others have confirmed or relays provide.
    pub external: Vec<String>,
    /// The rungs it advertises.
    pub rungs: Vec<AdvertisedRung>,
}

/// One connected peer, for `btd peers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerView {
    /// Its peer id.
    pub peer_id: String,
    /// Addresses of the open connections.
    pub addresses: Vec<String>,
    /// Its agent (e.g. `btd/0.1.0`), once identified.
    pub agent: Option<String>,
    /// Its advertised rungs, once seen.
    pub rungs: Vec<AdvertisedRung>,
}

/// A program this node knows, for `btd programs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramView {
    /// Program id.
    pub id: ProgramId,
    /// Its name.
    pub name: String,
    /// Its objective.
    pub objective: String,
    /// The owner's peer id.
    pub owner: String,
    /// Whether this node owns it.
    pub own: bool,
    /// Whether this node is a member.
    pub member: bool,
    /// When it was published.
    pub published_at: Timestamp,
}

/// Progress of `btd join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JoinEvent {
    /// The owner issued a code: show it to the owner for approval.
    Code {
        /// The program.
        program: ProgramId,
        /// The user code, `XXXX-XXXX`.
        user_code: String,
        /// The owner's peer id.
        owner: String,
        /// Seconds until the code expires.
        expires_in: u64,
    },
    /// Membership granted; the credential is stored.
    Granted {
        /// The program.
        program: ProgramId,
        /// This node's member id.
        member: String,
    },
    /// Already a member: nothing to do.
    AlreadyMember {
        /// The program.
        program: ProgramId,
    },
    /// The join failed.
    Failed {
        /// Why, in words.
        reason: String,
    },
}

/// A member, for `btd members`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberView {
    /// Its member id (peer id).
    pub member: String,
    /// When it joined.
    pub joined_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

impl From<&MemberRecord> for MemberView {
    fn from(r: &MemberRecord) -> Self {
        Self {
            member: r.member.to_string(),
            joined_at: r.joined_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A pending join code, for `btd members` (owner side).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingView {
    /// The user code.
    pub user_code: String,
    /// The requesting peer.
    pub peer: String,
    /// Seconds left.
    pub expires_in: u64,
}

/// `btd members PROGRAM-ID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembersView {
    /// The program.
    pub program: ProgramId,
    /// Members, active and revoked.
    pub members: Vec<MemberView>,
    /// Codes waiting for approval.
    pub pending: Vec<PendingView>,
}

/// `btd status PROGRAM-ID`: the program, members, results, champion and payouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    /// The program.
    pub program: ProgramId,
    /// Its name.
    pub name: String,
    /// The metric.
    pub metric: String,
    /// Which way it improves (absent from daemons before 0.2: read as unknown).
    #[serde(default)]
    pub direction: Option<btd_protocol::kb::Direction>,
    /// The owner.
    pub owner: String,
    /// Whether this view comes from this node's own store (owner) or from the owner over the mesh.
    pub source: String,
    /// Active members.
    pub members: u64,
    /// Submissions recorded.
    pub submissions: u64,
    /// Accepted submissions.
    pub accepted: u64,
    /// Claims waiting for the owner's check.
    #[serde(default)]
    pub pending: u64,
    /// Claims the owner verified.
    #[serde(default)]
    pub verified: u64,
    /// Claims that failed the owner's check.
    #[serde(default)]
    pub rejected: u64,
    /// The champion.
    pub champion: Option<Entry>,
    /// Payouts (micro-unit exact, 6 decimals).
    pub payouts: Payouts,
    /// The pool.
    pub pool: Amount,
    /// The token.
    pub token: String,
    /// One page of results, in the order asked (`btd status --page/--limit/--oldest-first`;
    /// by default the newest 20, newest first).
    pub results: Vec<Entry>,
    /// The page these results are (from 1).
    #[serde(default = "first_page")]
    pub page: u32,
    /// Results per page asked for.
    #[serde(default)]
    pub limit: u32,
    /// Whether the pages run oldest first.
    #[serde(default)]
    pub oldest_first: bool,
    /// Whether a later page holds results.
    #[serde(default)]
    pub more: bool,
}

fn first_page() -> u32 {
    1
}

impl StatusView {
    /// The view of a status and its page of results, as asked by `query`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn of(
        st: btd_protocol::wire::KbStatus,
        criteria: Option<&btd_protocol::program::Criteria>,
        owner: String,
        source: &str,
        query: &btd_protocol::wire::StatusQuery,
        results: Vec<Entry>,
        more: bool,
    ) -> Self {
        StatusView {
            program: st.program,
            name: st.name,
            metric: criteria.map(|c| c.metric.clone()).unwrap_or_default(),
            direction: criteria.map(|c| c.direction),
            owner,
            source: source.to_string(),
            members: st.members,
            submissions: st.submissions,
            accepted: st.accepted,
            pending: st.pending,
            verified: st.verified,
            rejected: st.rejected,
            champion: st.champion,
            payouts: st.payouts,
            pool: st.pool,
            token: st.token,
            results,
            page: query.page,
            limit: query.limit,
            oldest_first: query.oldest_first,
            more,
        }
    }
}

/// A result to submit: what `btd submit` and the worker loop hand the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewResult {
    /// The metric value.
    pub value: f64,
    /// The rung it ran on.
    pub rung_id: String,
    /// Outputs by digest.
    pub outputs: Vec<Output>,
    /// Other metrics (tokens/s, steps, …).
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// The hypothesis it tested.
    pub hypothesis: std::collections::BTreeMap<String, f64>,
    /// What the owner needs to check it (candle results).
    #[serde(default)]
    pub claim: Option<btd_protocol::wire::Claim>,
    /// The code hypothesis it ran (programs with a source bundle or re-run verification); the
    /// node adds its digest to the outputs (`btd.code`) before signing.
    #[serde(default)]
    pub code: Option<btd_protocol::wire::CodeHypothesis>,
}

/// A claim waiting for the owner's check (the owner core's view of it).
pub type ClaimJob = btd_protocol::owner::ClaimToCheck;

/// Files published with a program: its dataset (served to members by digest) and the owner-only
/// holdout (never served).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishFiles {
    /// The dataset file, for a program whose dataset is a file.
    pub data: Option<std::path::PathBuf>,
    /// The holdout text (synthetic corpora get a generated one).
    pub holdout: Option<std::path::PathBuf>,
    /// The source tree of a shell program with `[task.source]`: a directory (packed canonically)
    /// or the tar `btd source pack` wrote; its SHA-256 must match the manifest's.
    #[serde(default)]
    pub source: Option<std::path::PathBuf>,
}

/// One submission in the member's outbox (`btd outbox`): queued until its owner answers, or
/// refused by it for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxView {
    /// Its id on this node.
    pub id: u64,
    /// The submission's nonce, hex (a resend carries the same one: the owner counts it once).
    pub nonce: String,
    /// The program.
    pub program: ProgramId,
    /// The metric value.
    pub value: f64,
    /// The rung.
    pub rung: String,
    /// Sends so far (since the daemon started).
    pub attempts: u32,
    /// Why the last send did not get an answer, in words.
    pub last_error: Option<String>,
    /// Seconds until the next send (`None`: a send is in flight, or it was refused).
    pub next_attempt_secs: Option<u64>,
    /// Seconds since it was queued.
    pub age_secs: u64,
    /// The owner's words when it refused the submission for good (it left the queue).
    #[serde(default)]
    pub refused: Option<String>,
}

/// `btd outbox`: the queued submissions (oldest first) and the newest refusals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutboxList {
    /// Waiting to be sent, or for the owner's answer.
    pub queued: Vec<OutboxView>,
    /// Refused by the owner for good, newest first.
    pub refused: Vec<OutboxView>,
}

/// What a submission got: the owner's receipt, or its place in the outbox when the owner did not
/// answer in time (rate limited, offline); the daemon keeps sending it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Submitted {
    /// The owner recorded it.
    Receipt(btd_protocol::wire::SubmitReceipt),
    /// Still in the outbox.
    Queued {
        /// Where it stands.
        queued: OutboxView,
    },
}
