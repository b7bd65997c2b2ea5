//! [`NodeHandle`]: how everything outside the node task talks to it. One async method per
//! operation; each sends a [`Command`] on the bounded queue and awaits the oneshot reply.

use std::sync::Arc;

use btd_protocol::dispatch::ComputePacket;
use btd_protocol::kb::{Entry, Verdict};
use btd_protocol::membership::Credential;
use btd_protocol::program::ProgramId;
use btd_protocol::wire::{
    ApprovalResponse, BlobRequest, BlobResponse, KbCall, KbRequest, KbResponse, StatusQuery,
    SubmitReceipt, VerifiedProgram,
};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, Notify};

use super::types::{
    ClaimJob, JoinEvent, MembersView, NewResult, NodeInfo, OutboxList, OutboxView, PeerView,
    ProgramView, PublishFiles, StatusView,
};
use btd_protocol::owner::SpendRequestView;

/// Progress events of one `join` buffered for its caller (a join sends at most three; the node
/// drops events rather than wait for a slow reader).
const JOIN_EVENTS: usize = 16;

/// Why the node did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The node task has ended (the daemon is stopping); nothing more will be answered.
    #[error("the node has stopped")]
    Stopped,
    /// The node, or the program's owner, refused; the reason says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// A peer could not be reached (dial failure, timeout, closed connection), in words.
    #[error("{0}")]
    Unreachable(String),
    /// The node could not do it right now (e.g. its store failed to write); retry later.
    #[error("{0}")]
    Unavailable(String),
}

impl From<btd_protocol::owner::OwnerError> for NodeError {
    fn from(e: btd_protocol::owner::OwnerError) -> Self {
        NodeError::Refused(e.to_string())
    }
}

/// A reply to the caller.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// What the node task can be asked. Built only by [`NodeHandle`] (and the worker loop, through
/// `ask`).
#[derive(Debug)]
pub(crate) enum Command {
    /// `btd id`.
    Info(oneshot::Sender<NodeInfo>),
    /// `btd peers`.
    Peers(oneshot::Sender<Vec<PeerView>>),
    /// Dial an address.
    Dial(Multiaddr, Reply<()>),
    /// Publish a manifest with its files (dataset, holdout).
    PublishWith {
        /// Manifest text.
        manifest: String,
        /// The dataset and holdout files.
        files: PublishFiles,
        /// The program id once durable.
        reply: Reply<ProgramId>,
    },
    /// `btd programs`.
    Programs(oneshot::Sender<Vec<ProgramView>>),
    /// `btd join`.
    Join {
        /// The program.
        program: ProgramId,
        /// Progress events (bounded; dropped events never block the node).
        events: mpsc::Sender<JoinEvent>,
    },
    /// `btd approve` / `btd deny`.
    Decide {
        /// The user code as typed.
        user_code: String,
        /// Approve (true) or deny.
        approve: bool,
        /// Result in words.
        reply: Reply<String>,
    },
    /// `btd members`.
    Members {
        /// The program.
        program: ProgramId,
        /// Members and pending codes.
        reply: Reply<MembersView>,
    },
    /// `btd revoke`.
    Revoke {
        /// The program.
        program: ProgramId,
        /// The member id.
        member: String,
        /// Done.
        reply: Reply<()>,
    },
    /// `btd submit`: into the outbox, then to the owner.
    Submit {
        /// The program.
        program: ProgramId,
        /// The result.
        result: NewResult,
        /// The entry once it is stored in the outbox.
        reply: Reply<OutboxView>,
        /// The owner's receipt or permanent refusal (dropped when the caller stops waiting).
        delivered: Reply<SubmitReceipt>,
    },
    /// `btd outbox`.
    Outbox {
        /// The program (all when absent).
        program: Option<ProgramId>,
        /// The queue and the newest refusals.
        reply: Reply<OutboxList>,
    },
    /// `btd status`.
    Status {
        /// The program (None: the only program this node owns or belongs to).
        program: Option<ProgramId>,
        /// Which page of results.
        query: StatusQuery,
        /// The view.
        reply: Reply<StatusView>,
    },
    /// Send a raw membership request to a peer and return its raw response (tests, netsim probes).
    #[cfg(feature = "testkit")]
    RawMembership {
        /// The peer.
        peer: PeerId,
        /// The request.
        request: btd_protocol::wire::MembershipRequest,
        /// Its response, or the transport failure.
        reply: Reply<btd_protocol::wire::MembershipResponse>,
    },
    /// Hand the node's join flow a membership reply as if `peer` had sent it (tests play a hostile
    /// owner with it: the reply goes through the worker's real handler, not the network).
    #[cfg(feature = "testkit")]
    InjectMembershipAnswer {
        /// The peer the reply claims to come from.
        peer: PeerId,
        /// The program whose join it answers.
        program: ProgramId,
        /// True: it answers a poll; false: the authorization request.
        poll: bool,
        /// The reply.
        response: btd_protocol::wire::MembershipResponse,
        /// Answered once the node has handled it.
        reply: Reply<()>,
    },
    /// Hand the node a programs-topic gossip payload as if `source` had published it (tests play
    /// a flooding peer with it): it goes through the node's real validation. Answers whether the
    /// node accepted it (would forward it).
    #[cfg(feature = "testkit")]
    InjectAnnouncement {
        /// The claimed gossip author.
        source: Option<PeerId>,
        /// The payload (an encoded `Signed<ProgramAnnouncement>`, or anything).
        data: Vec<u8>,
        /// Accepted or not.
        reply: Reply<bool>,
    },
    /// Put any record into the DHT; answered once the store query finished (tests).
    #[cfg(feature = "testkit")]
    RawPutRecord {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Done once a peer stored it (or why not).
        reply: Reply<()>,
    },
    /// The value this node keeps in the DHT under a key, and how many records it keeps (tests).
    #[cfg(feature = "testkit")]
    LocalRecord {
        /// The key.
        key: Vec<u8>,
        /// The value, and the number of records kept.
        reply: Reply<(Option<Vec<u8>>, usize)>,
    },
    /// Publish any bytes on a gossip topic, as this node (tests and netsim play a hostile peer).
    #[cfg(feature = "testkit")]
    RawGossip {
        /// The topic.
        topic: crate::net::Topic,
        /// The message, as is.
        data: Vec<u8>,
        /// Published, or why not.
        reply: Reply<()>,
    },
    /// Answer every artifact request with this reply (`None`: serve normally again).
    #[cfg(feature = "testkit")]
    PoisonBlobs {
        /// The reply.
        response: Option<btd_protocol::wire::BlobResponse>,
        /// Done.
        reply: Reply<()>,
    },
    /// Answer a read-only KB call (ledger, code) from an owned program's core; `None` when this
    /// node does not own the program.
    OwnerRead {
        /// The program.
        program: ProgramId,
        /// The call.
        call: KbCall,
        /// The answer.
        reply: oneshot::Sender<Option<KbResponse>>,
    },
    /// Send a KB request to a peer and return its response (`NodeHandle::champion` reads the
    /// champion with it; the `testkit` probe `raw_kb` sends any request).
    Kb {
        /// The peer.
        peer: PeerId,
        /// The request.
        request: KbRequest,
        /// Its response, or the transport failure.
        reply: Reply<KbResponse>,
    },
    /// A known program's verified announcement (the worker loop reads its task and owner).
    Program {
        /// The program.
        program: ProgramId,
        /// The verified program, if known.
        reply: oneshot::Sender<Option<VerifiedProgram>>,
    },
    /// This node's membership credential for a program, if any.
    Credential {
        /// The program.
        program: ProgramId,
        /// The owner and credential.
        reply: oneshot::Sender<Option<(PeerId, Credential)>>,
    },
    /// Member: ask the owner to approve paid compute for a packet.
    RequestSpend {
        /// The program.
        program: ProgramId,
        /// The packet.
        packet: ComputePacket,
        /// The owner's answer.
        reply: Reply<ApprovalResponse>,
    },
    /// Owner: open and decided spend requests.
    SpendRequests(oneshot::Sender<Vec<SpendRequestView>>),
    /// Owner: approve or deny a spend request.
    DecideSpend {
        /// The program.
        program: ProgramId,
        /// The member.
        member: String,
        /// The packet id.
        packet_id: String,
        /// Approve (true) or deny.
        approve: bool,
        /// Receipt validity in minutes.
        minutes: u64,
        /// Result in words.
        reply: Reply<String>,
    },
    /// Ask a peer for one chunk of an artifact.
    Blob {
        /// The peer.
        peer: PeerId,
        /// The request.
        request: BlobRequest,
        /// Its response, or the transport failure.
        reply: Reply<BlobResponse>,
    },
    /// Owner: the oldest claim waiting for a check in each owned program.
    NextClaims(oneshot::Sender<Vec<ClaimJob>>),
    /// Owner: apply a verdict on a pending claim (durable before the reply).
    Resolve {
        /// The program.
        program: ProgramId,
        /// The claim.
        seq: u64,
        /// The verdict.
        verdict: Verdict,
        /// The entry after the verdict.
        reply: Reply<Entry>,
    },
    /// Stop the node (pending store writes finish first).
    Shutdown,
}

/// Handle to a running node: cheap to clone; the node stops when asked to or when every handle is
/// gone.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    claims: Arc<Notify>,
    clock: crate::clock::Clock,
    metrics: crate::metrics::Metrics,
    submit_wait: std::time::Duration,
}

impl NodeHandle {
    pub(super) fn new(
        tx: mpsc::Sender<Command>,
        peer_id: PeerId,
        claims: Arc<Notify>,
        clock: crate::clock::Clock,
        metrics: crate::metrics::Metrics,
        submit_wait: std::time::Duration,
    ) -> Self {
        Self {
            tx,
            peer_id,
            claims,
            clock,
            metrics,
            submit_wait,
        }
    }

    /// The metrics the node counts into (its verifier and worker loops count there too).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// How long a caller that needs the owner's answer waits for it before the result is reported
    /// as queued in the outbox (`OutboxParams::submit_wait`).
    pub fn submit_wait(&self) -> std::time::Duration {
        self.submit_wait
    }

    /// The node's protocol time (its clock, shared with the worker loop).
    pub fn now(&self) -> btd_protocol::Timestamp {
        self.clock.now()
    }

    /// Signalled when an owned program gets a claim to check (a permit is kept if nobody waits,
    /// so no signal is lost).
    pub fn claims_ready(&self) -> &Notify {
        &self.claims
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Sends a command and awaits its reply.
    async fn call<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<R>) -> Command,
    ) -> Result<R, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Sends a command whose reply may be a refusal.
    pub(super) async fn try_call<R>(
        &self,
        make: impl FnOnce(Reply<R>) -> Command,
    ) -> Result<R, NodeError> {
        self.call(make).await?
    }

    /// `btd id`: peer id, addresses, rungs.
    pub async fn info(&self) -> Result<NodeInfo, NodeError> {
        self.call(Command::Info).await
    }

    /// `btd peers`: connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerView>, NodeError> {
        self.call(Command::Peers).await
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.try_call(|reply| Command::Dial(addr, reply)).await
    }

    /// `btd publish`: validates, stores and announces a manifest; returns the program id.
    pub async fn publish(&self, manifest: String) -> Result<ProgramId, NodeError> {
        self.publish_with(manifest, PublishFiles::default()).await
    }

    /// Publishes a manifest with its files (dataset, holdout).
    pub async fn publish_with(
        &self,
        manifest: String,
        files: PublishFiles,
    ) -> Result<ProgramId, NodeError> {
        self.try_call(|reply| Command::PublishWith {
            manifest,
            files,
            reply,
        })
        .await
    }

    /// `btd programs`: the programs this node knows.
    pub async fn programs(&self) -> Result<Vec<ProgramView>, NodeError> {
        self.call(Command::Programs).await
    }

    /// A known program's verified announcement.
    pub async fn program(&self, program: ProgramId) -> Result<Option<VerifiedProgram>, NodeError> {
        self.call(|reply| Command::Program { program, reply }).await
    }

    /// `btd join`: starts joining; the join's progress arrives on the returned channel (a code,
    /// then the grant or the failure).
    pub async fn join(&self, program: ProgramId) -> Result<mpsc::Receiver<JoinEvent>, NodeError> {
        let (events, rx) = mpsc::channel(JOIN_EVENTS);
        self.tx
            .send(Command::Join { program, events })
            .await
            .map_err(|_| NodeError::Stopped)?;
        Ok(rx)
    }

    /// `btd approve`: approves a join code; says whom for which program.
    pub async fn approve(&self, user_code: String) -> Result<String, NodeError> {
        self.decide(user_code, true).await
    }

    /// `btd deny`: denies a join code.
    pub async fn deny(&self, user_code: String) -> Result<String, NodeError> {
        self.decide(user_code, false).await
    }

    async fn decide(&self, user_code: String, approve: bool) -> Result<String, NodeError> {
        self.try_call(|reply| Command::Decide {
            user_code,
            approve,
            reply,
        })
        .await
    }

    /// `btd members`: members and pending codes of an own program.
    pub async fn members(&self, program: ProgramId) -> Result<MembersView, NodeError> {
        self.try_call(|reply| Command::Members { program, reply })
            .await
    }

    /// `btd revoke`: revokes a member of an own program (durable before the reply).
    pub async fn revoke(&self, program: ProgramId, member: String) -> Result<(), NodeError> {
        self.try_call(|reply| Command::Revoke {
            program,
            member,
            reply,
        })
        .await
    }

    /// `btd status`: an own program from the store, a joined one from its owner (`None`: the only
    /// program this node owns or belongs to).
    /// The results are the newest [`btd_protocol::wire::DEFAULT_STATUS_LIMIT`], newest first.
    pub async fn status(&self, program: Option<ProgramId>) -> Result<StatusView, NodeError> {
        self.status_page(program, StatusQuery::default()).await
    }

    /// `btd status --page/--limit/--oldest-first`: the summary and the page `query` names.
    pub async fn status_page(
        &self,
        program: Option<ProgramId>,
        query: StatusQuery,
    ) -> Result<StatusView, NodeError> {
        self.try_call(|reply| Command::Status {
            program,
            query,
            reply,
        })
        .await
    }

    /// Results `after_seq < seq ≤ after_seq + limit` of a program (`limit` ≤
    /// [`btd_protocol::wire::MAX_RESULTS_PAGE`]), in seq order, and whether more follow.
    pub async fn results(
        &self,
        program: ProgramId,
        after_seq: u64,
        limit: u32,
    ) -> Result<(Vec<Entry>, bool), NodeError> {
        match self
            .kb_read(program, KbCall::Results { after_seq, limit })
            .await?
        {
            KbResponse::Results { entries, more } => Ok((entries, more)),
            other => Err(unexpected(&other)),
        }
    }

    /// This node's owner and credential for a joined program (`None`: not a member).
    pub async fn credential(
        &self,
        program: ProgramId,
    ) -> Result<Option<(PeerId, Credential)>, NodeError> {
        self.call(|reply| Command::Credential { program, reply })
            .await
    }

    /// A read-only KB call on `program`: answered by this node's own core when it owns the
    /// program, else sent to the owner with this member's credential. An error reply becomes
    /// `NodeError::Refused` with the owner's words.
    pub async fn kb_read(&self, program: ProgramId, call: KbCall) -> Result<KbResponse, NodeError> {
        let local = call.clone();
        if let Some(r) = self
            .call(|reply| Command::OwnerRead {
                program,
                call: local,
                reply,
            })
            .await?
        {
            return match r {
                KbResponse::Error(e) => Err(NodeError::Refused(e.message)),
                other => Ok(other),
            };
        }
        let (owner, credential) = self.credential(program).await?.ok_or_else(|| {
            NodeError::Refused(format!(
                "this node neither owns nor is a member of {program}; `btd join {program}` first"
            ))
        })?;
        let request = KbRequest {
            program,
            credential,
            call,
        };
        match self
            .try_call(|reply| Command::Kb {
                peer: owner,
                request,
                reply,
            })
            .await?
        {
            KbResponse::Error(e) => Err(NodeError::Refused(e.message)),
            other => Ok(other),
        }
    }

    /// One page of the program's hypothesis ledger (`seq > after_seq`) and whether more follow.
    pub async fn ledger(
        &self,
        program: ProgramId,
        after_seq: u64,
        limit: u32,
    ) -> Result<(Vec<btd_protocol::wire::LedgerItem>, bool), NodeError> {
        match self
            .kb_read(program, KbCall::Ledger { after_seq, limit })
            .await?
        {
            KbResponse::Ledger { items, more } => Ok((items, more)),
            other => Err(unexpected(&other)),
        }
    }

    /// The newest `limit` items of the program's hypothesis ledger, in seq order.
    pub async fn ledger_tail(
        &self,
        program: ProgramId,
        limit: u32,
    ) -> Result<Vec<btd_protocol::wire::LedgerItem>, NodeError> {
        match self.kb_read(program, KbCall::LedgerTail { limit }).await? {
            KbResponse::Ledger { items, .. } => Ok(items),
            other => Err(unexpected(&other)),
        }
    }

    /// The code hypothesis of result `seq` with its entry (`None`: it carried none).
    pub async fn code(
        &self,
        program: ProgramId,
        seq: u64,
    ) -> Result<Option<btd_protocol::wire::CodeView>, NodeError> {
        match self.kb_read(program, KbCall::Code { seq }).await? {
            KbResponse::Code(c) => Ok(c.map(|c| *c)),
            other => Err(unexpected(&other)),
        }
    }

    /// Member: the program's champion as its owner serves it (entry and signed submission), or
    /// `None` when there is none yet.
    pub async fn champion(
        &self,
        program: ProgramId,
    ) -> Result<Option<btd_protocol::wire::ChampionView>, NodeError> {
        match self.kb_read(program, KbCall::Champion).await? {
            KbResponse::Champion(c) => Ok(c.map(|c| *c)),
            other => Err(unexpected(&other)),
        }
    }

    /// Member: asks the owner to approve paid compute for a packet.
    pub async fn request_spend(
        &self,
        program: ProgramId,
        packet: ComputePacket,
    ) -> Result<ApprovalResponse, NodeError> {
        self.try_call(|reply| Command::RequestSpend {
            program,
            packet,
            reply,
        })
        .await
    }

    /// Owner: open and decided spend requests.
    pub async fn spend_requests(&self) -> Result<Vec<SpendRequestView>, NodeError> {
        self.call(Command::SpendRequests).await
    }

    /// Owner: approves (a receipt valid for `minutes`) or denies a spend request; says what was
    /// decided.
    pub async fn decide_spend(
        &self,
        program: ProgramId,
        member: String,
        packet_id: String,
        approve: bool,
        minutes: u64,
    ) -> Result<String, NodeError> {
        self.try_call(|reply| Command::DecideSpend {
            program,
            member,
            packet_id,
            approve,
            minutes,
            reply,
        })
        .await
    }

    /// Asks a peer for one chunk of an artifact.
    pub async fn blob(
        &self,
        peer: PeerId,
        request: BlobRequest,
    ) -> Result<BlobResponse, NodeError> {
        self.try_call(|reply| Command::Blob {
            peer,
            request,
            reply,
        })
        .await
    }

    /// Owner: the oldest claim waiting for a check in each owned program.
    pub async fn next_claims(&self) -> Result<Vec<ClaimJob>, NodeError> {
        self.call(Command::NextClaims).await
    }

    /// Owner: applies a verdict on a pending claim; returns the entry once the verdict is durable.
    pub async fn resolve(
        &self,
        program: ProgramId,
        seq: u64,
        verdict: Verdict,
    ) -> Result<Entry, NodeError> {
        self.try_call(|reply| Command::Resolve {
            program,
            seq,
            verdict,
            reply,
        })
        .await
    }

    /// Completes once the node has stopped (its command loop is gone).
    pub async fn stopped(&self) {
        self.tx.closed().await
    }

    /// Stops the node; pending store writes finish first. Returns once the stop is queued.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.tx
            .send(Command::Shutdown)
            .await
            .map_err(|_| NodeError::Stopped)
    }
}

/// Attacker probes for tests and netsim (`testkit` feature): raw requests to any peer.
#[cfg(feature = "testkit")]
impl NodeHandle {
    /// Sends a raw membership request to `peer`; returns its raw response.
    pub async fn raw_membership(
        &self,
        peer: PeerId,
        request: btd_protocol::wire::MembershipRequest,
    ) -> Result<btd_protocol::wire::MembershipResponse, NodeError> {
        self.try_call(|reply| Command::RawMembership {
            peer,
            request,
            reply,
        })
        .await
    }

    /// Feeds the join flow for `program` a membership reply as if `peer` had sent it (`poll`: it
    /// answers a poll rather than the authorization request). Returns once the node handled it.
    pub async fn inject_membership_answer(
        &self,
        peer: PeerId,
        program: ProgramId,
        poll: bool,
        response: btd_protocol::wire::MembershipResponse,
    ) -> Result<(), NodeError> {
        self.try_call(|reply| Command::InjectMembershipAnswer {
            peer,
            program,
            poll,
            response,
            reply,
        })
        .await
    }

    /// Hands the node a programs-topic gossip payload as if `source` had published it: it goes
    /// through the node's real validation. Returns whether the node accepted it.
    pub async fn inject_announcement(
        &self,
        source: Option<PeerId>,
        data: Vec<u8>,
    ) -> Result<bool, NodeError> {
        self.try_call(|reply| Command::InjectAnnouncement {
            source,
            data,
            reply,
        })
        .await
    }

    /// Puts any record into the DHT; returns once a peer stored it (or the query failed).
    pub async fn raw_put_record(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), NodeError> {
        self.try_call(|reply| Command::RawPutRecord { key, value, reply })
            .await
    }

    /// The value this node keeps in the DHT under `key`, and how many records it keeps.
    pub async fn local_record(&self, key: Vec<u8>) -> Result<(Option<Vec<u8>>, usize), NodeError> {
        self.try_call(|reply| Command::LocalRecord { key, reply })
            .await
    }

    /// Publishes `data` as is on `topic` (signed by this node's gossip identity, as gossipsub
    /// requires; the payload may be anything).
    pub async fn raw_gossip(
        &self,
        topic: crate::net::Topic,
        data: Vec<u8>,
    ) -> Result<(), NodeError> {
        self.try_call(|reply| Command::RawGossip { topic, data, reply })
            .await
    }

    /// From now on answers every artifact request with `response` (a hostile member's blob
    /// server: e.g. an error of nearly a whole message); `None` serves normally again.
    pub async fn poison_blobs(
        &self,
        response: Option<btd_protocol::wire::BlobResponse>,
    ) -> Result<(), NodeError> {
        self.try_call(|reply| Command::PoisonBlobs { response, reply })
            .await
    }

    /// Sends a raw KB request to `peer`; returns its raw response.
    pub async fn raw_kb(&self, peer: PeerId, request: KbRequest) -> Result<KbResponse, NodeError> {
        self.try_call(|reply| Command::Kb {
            peer,
            request,
            reply,
        })
        .await
    }
}

/// An owner's reply of the wrong kind, in words.
fn unexpected(reply: &KbResponse) -> NodeError {
    let kind = format!("{reply:?}");
    NodeError::Refused(format!(
        "unexpected reply from the owner: {}",
        kind.chars().take(120).collect::<String>()
    ))
}
