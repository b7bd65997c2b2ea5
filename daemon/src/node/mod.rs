//! The daemon's core. One task owns the swarm and the program state; everything else talks to it
//! through a cloneable [`NodeHandle`] (bounded command channel, oneshot replies). The task never
//! awaits inside an event handler: store writes run as futures the loop polls, and replies to the
//! control API are sent with `try_send`/oneshot.

mod blob;
mod gossip;
mod owner;
mod publish;
pub mod spend;
pub mod types;
mod worker;

pub(crate) use publish::holdout_path;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use btd_protocol::kb::Entry;
use btd_protocol::membership::Credential;
use btd_protocol::program::ProgramId;
use btd_protocol::seal::SealKey;
use btd_protocol::signed::Signed;
use btd_protocol::wire::{AdvertisedRung, ProgramAnnouncement, SubmitReceipt};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot};

use crate::net::{build_swarm, Behaviour, BehaviourEvent, NetParams, TransportKind};
use crate::store::{Snapshot, Store};
use types::{JoinEvent, MembersView, NewResult, NodeInfo, PeerView, ProgramView, StatusView};

/// Commands queued for the node task. A full queue makes callers wait.
const COMMAND_QUEUE: usize = 256;
/// Housekeeping period: join polls, expiry, re-announcements, retries.
const TICK: Duration = Duration::from_millis(250);
/// Re-announce own programs and rungs this often (gossip has no memory for late joiners).
const ANNOUNCE_EVERY: Duration = Duration::from_secs(30);
/// Shortest gap between two subscription-triggered re-gossips of own programs: a burst of new
/// subscribers costs the mesh one flood per gap, not one per subscriber (docs/netsim.md, finding 1).
const REGOSSIP_GAP: Duration = Duration::from_secs(2);
/// Most join flows in progress at once.
const MAX_JOINS: usize = 64;
/// Most outbound submissions awaiting an answer.
const MAX_PENDING_SUBMITS: usize = 1024;

/// Everything needed to start a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The identity.
    pub key: Keypair,
    /// Transport seam.
    pub transport: TransportKind,
    /// Network tunables.
    pub net: NetParams,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (and reserve a relay slot on, if they offer relay).
    pub bootstrap: Vec<Multiaddr>,
    /// Rungs to advertise.
    pub rungs: Vec<AdvertisedRung>,
    /// The home directory: artifacts under `blobs/`, owner-only holdouts under `holdout/`; a node
    /// with one also runs the owner's verifier (`crate::verify`). `None` serves and stores no
    /// artifacts and checks no claims (netsim nodes without disks).
    pub home: Option<std::path::PathBuf>,
}

/// What the control API can ask of the node.
#[derive(Debug)]
pub enum Command {
    /// `btd id`.
    Info(oneshot::Sender<NodeInfo>),
    /// `btd peers`.
    Peers(oneshot::Sender<Vec<PeerView>>),
    /// Dial an address.
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
    /// `btd publish`.
    Publish {
        /// Manifest text.
        manifest: String,
        /// The program id once durable.
        reply: oneshot::Sender<Result<ProgramId, String>>,
    },
    /// Publish a manifest with its files (dataset, holdout).
    PublishWith {
        /// Manifest text.
        manifest: String,
        /// The dataset and holdout files.
        files: types::PublishFiles,
        /// The program id, or why not.
        reply: oneshot::Sender<Result<ProgramId, String>>,
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
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// `btd members`.
    Members {
        /// The program.
        program: ProgramId,
        /// Members and pending codes.
        reply: oneshot::Sender<Result<MembersView, String>>,
    },
    /// `btd revoke`.
    Revoke {
        /// The program.
        program: ProgramId,
        /// The member id.
        member: String,
        /// Done.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// `btd submit`.
    Submit {
        /// The program.
        program: ProgramId,
        /// The result.
        result: NewResult,
        /// The owner's verdict.
        reply: oneshot::Sender<Result<SubmitReceipt, String>>,
    },
    /// `btd status`.
    Status {
        /// The program (None: the only program this node owns or belongs to).
        program: Option<ProgramId>,
        /// The view.
        reply: oneshot::Sender<Result<StatusView, String>>,
    },
    /// Send a raw membership request to a peer and return its raw response (tests, netsim probes).
    RawMembership {
        /// The peer.
        peer: PeerId,
        /// The request.
        request: btd_protocol::wire::MembershipRequest,
        /// Its response, or the transport failure.
        reply: oneshot::Sender<Result<btd_protocol::wire::MembershipResponse, String>>,
    },
    /// Send a raw KB request to a peer and return its raw response (tests, netsim probes).
    RawKb {
        /// The peer.
        peer: PeerId,
        /// The request.
        request: btd_protocol::wire::KbRequest,
        /// Its response, or the transport failure.
        reply: oneshot::Sender<Result<btd_protocol::wire::KbResponse, String>>,
    },
    /// A known program's verified announcement (the worker loop reads its task and owner).
    Program {
        /// The program.
        program: ProgramId,
        /// The verified program, if known.
        reply: oneshot::Sender<Option<btd_protocol::wire::VerifiedProgram>>,
    },
    /// This node's membership credential for a program, if any (tests, netsim probes).
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
        packet: btd_protocol::dispatch::ComputePacket,
        /// The owner's answer.
        reply: oneshot::Sender<Result<btd_protocol::wire::ApprovalResponse, String>>,
    },
    /// Owner: open and decided spend requests.
    SpendRequests(oneshot::Sender<Vec<spend::SpendRequestView>>),
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
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Ask a peer for one chunk of an artifact.
    Blob {
        /// The peer.
        peer: PeerId,
        /// The request.
        request: btd_protocol::wire::BlobRequest,
        /// Its response, or the transport failure.
        reply: oneshot::Sender<Result<btd_protocol::wire::BlobResponse, String>>,
    },
    /// Owner: the oldest claim waiting for a check in each owned program.
    NextClaims(oneshot::Sender<Vec<types::ClaimJob>>),
    /// Owner: apply a verdict on a pending claim (durable before the reply).
    Resolve {
        /// The program.
        program: ProgramId,
        /// The claim.
        seq: u64,
        /// The verdict.
        verdict: btd_protocol::kb::Verdict,
        /// The entry after the verdict.
        reply: oneshot::Sender<Result<Entry, String>>,
    },
    /// Stop the node (pending store writes finish first).
    Shutdown,
}

/// Handle to a running node.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    claims: std::sync::Arc<tokio::sync::Notify>,
}

impl NodeHandle {
    /// Signalled when an owned program gets a claim to check (a permit is kept if nobody waits,
    /// so no signal is lost).
    pub fn claims_ready(&self) -> &tokio::sync::Notify {
        &self.claims
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Sends a command built around a oneshot and awaits the reply.
    pub async fn ask<R>(&self, make: impl FnOnce(oneshot::Sender<R>) -> Command) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| anyhow!("the node has stopped"))?;
        rx.await
            .map_err(|_| anyhow!("the node stopped before answering"))
    }

    /// Sends a command without a reply.
    pub async fn send(&self, cmd: Command) -> Result<()> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| anyhow!("the node has stopped"))
    }
}

type BoxFut = Pin<Box<dyn Future<Output = Done> + Send>>;

/// What to do when an asynchronous step (a store write) finishes.
pub(crate) enum Done {
    /// Run this closure on the node (it gets `&mut Node`).
    Then(Box<dyn FnOnce(&mut Node) + Send>),
}

/// A join in progress (worker side).
pub(crate) struct JoinState {
    pub(crate) owner: PeerId,
    pub(crate) device_code: Option<btd_protocol::membership::DeviceCode>,
    pub(crate) interval: Duration,
    pub(crate) expires_at: Instant,
    pub(crate) next_poll: Instant,
    pub(crate) poll_in_flight: bool,
    pub(crate) events: mpsc::Sender<JoinEvent>,
}

/// This node's membership in a program it does not own.
#[derive(Clone)]
pub(crate) struct Membership {
    pub(crate) owner: PeerId,
    pub(crate) credential: Credential,
}

/// A program known from the mesh (or owned).
pub(crate) struct Known {
    pub(crate) view: btd_protocol::wire::VerifiedProgram,
    pub(crate) signed: Signed<ProgramAnnouncement>,
}

/// Per-peer request budget (token bucket): bounded work per remote peer.
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Most peers tracked for rate limiting (oldest forgotten first).
const MAX_BUCKETS: usize = 4096;

/// The node task's state.
pub struct Node {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) key: Keypair,
    pub(crate) seal_key: SealKey,
    pub(crate) store: Store,
    pub(crate) rng: StdRng,
    pub(crate) rungs: Vec<AdvertisedRung>,
    pub(crate) known: HashMap<ProgramId, Known>,
    /// The programs this node owns: every owner rule (`btd_protocol::owner`).
    pub(crate) owners: btd_protocol::owner::Owners,
    pub(crate) memberships: HashMap<ProgramId, Membership>,
    pub(crate) joins: HashMap<ProgramId, JoinState>,
    pub(crate) out: worker::Outbound,
    pub(crate) pending: FuturesUnordered<BoxFut>,
    pub(crate) buckets: HashMap<PeerId, Bucket>,
    pub(crate) peer_rungs: HashMap<PeerId, (btd_protocol::Timestamp, Vec<AdvertisedRung>)>,
    pub(crate) agents: HashMap<PeerId, String>,
    pub(crate) bootstrap: HashMap<PeerId, Multiaddr>,
    pub(crate) reserved: HashSet<PeerId>,
    pub(crate) last_announce: Instant,
    /// Announce everything (programs on gossip and in the DHT, the rung advert) at the next tick.
    pub(crate) announce_soon: bool,
    /// A peer subscribed to the programs topic: re-gossip own programs (only), rate limited.
    pub(crate) regossip_programs: bool,
    pub(crate) last_program_gossip: Instant,
    /// When the rung advert is next due (`None`: at the next announcement).
    pub(crate) next_rung_advert: Option<Instant>,
    pub(crate) lookups: gossip::Lookups,
    pub(crate) relay_server: bool,
    /// Per-peer request budget (burst, per second).
    pub(crate) rate: (f64, f64),
    /// Artifacts this node serves and fetches.
    pub(crate) blobs: Option<crate::blobs::BlobStore>,
    /// The home directory (holdouts live under it).
    pub(crate) home: Option<std::path::PathBuf>,
    /// Per-peer artifact budget.
    pub(crate) blob_buckets: HashMap<PeerId, Bucket>,
    /// Per-peer artifact budget (burst, chunks per second).
    pub(crate) blob_rate: (f64, f64),
    /// Wakes the verifier when a claim becomes pending.
    pub(crate) claims_ready: std::sync::Arc<tokio::sync::Notify>,
    /// Open connections per peer, with their remote addresses (for `btd peers`).
    pub(crate) connections: HashMap<PeerId, Vec<(libp2p::swarm::ConnectionId, Multiaddr)>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", self.swarm.local_peer_id())
            .field("programs", &self.known.len())
            .finish()
    }
}

/// Starts a node: opens nothing itself (the store is given), builds the swarm, loads state, starts
/// listening and dialing, and spawns the node task. Returns the handle and the task.
pub async fn spawn(
    cfg: NodeConfig,
    store: Store,
) -> Result<(NodeHandle, tokio::task::JoinHandle<()>)> {
    let snapshot = store
        .read(crate::store::load_snapshot)
        .await
        .map_err(|e| anyhow!("cannot load the database: {e}"))?;
    let mut swarm = build_swarm(cfg.key.clone(), cfg.transport, &cfg.net)?;
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| anyhow!("cannot listen on {addr}: {e}"))?;
    }
    let seal_key = SealKey::from_identity(&cfg.key)
        .map_err(|e| anyhow!("cannot derive the sealing key: {e}"))?;
    let peer_id = cfg.key.public().to_peer_id();
    let mut node = Node {
        swarm,
        key: cfg.key.clone(),
        seal_key,
        store,
        rng: StdRng::from_entropy(),
        rungs: cfg.rungs,
        known: HashMap::new(),
        owners: btd_protocol::owner::Owners::new(cfg.key.clone()),
        memberships: HashMap::new(),
        joins: HashMap::new(),
        out: worker::Outbound::default(),
        pending: FuturesUnordered::new(),
        buckets: HashMap::new(),
        peer_rungs: HashMap::new(),
        agents: HashMap::new(),
        bootstrap: HashMap::new(),
        reserved: HashSet::new(),
        last_announce: Instant::now(),
        announce_soon: true,
        regossip_programs: false,
        last_program_gossip: Instant::now(),
        next_rung_advert: None,
        lookups: gossip::Lookups::default(),
        relay_server: cfg.net.relay_server,
        rate: (cfg.net.rate_burst, cfg.net.rate_per_sec),
        blobs: cfg
            .home
            .as_ref()
            .map(|h| crate::blobs::BlobStore::new(h.join("blobs"))),
        home: cfg.home.clone(),
        blob_buckets: HashMap::new(),
        blob_rate: (cfg.net.blob_burst, cfg.net.blob_per_sec),
        claims_ready: std::sync::Arc::new(tokio::sync::Notify::new()),
        connections: HashMap::new(),
    };
    node.restore(snapshot)?;
    gossip::subscribe(&mut node)?;
    for addr in cfg.bootstrap {
        if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
            node.bootstrap.insert(peer, addr.clone());
            node.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
        }
        if let Err(e) = node.swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let claims = node.claims_ready.clone();
    let home = node.home.clone();
    let task = tokio::spawn(node.run(rx));
    let handle = NodeHandle {
        tx,
        peer_id,
        claims,
    };
    // A node with a home checks the claims of the programs it owns; the verifier ends when the
    // node stops.
    if let Some(home) = home {
        tokio::spawn(crate::verify::run(handle.clone(), home));
    }
    Ok((handle, task))
}

impl Node {
    fn restore(&mut self, snap: Snapshot) -> Result<()> {
        let now = crate::now();
        for row in &snap.programs {
            let signed: Signed<ProgramAnnouncement> = match btd_protocol::wire::decode(
                &row.announcement,
            ) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(program = %row.id, error = %e, "skipping unreadable stored program");
                    continue;
                }
            };
            // Stored announcements were verified when received; verify again (never trust disk
            // more than the mesh), but tolerate old timestamps.
            let view = match btd_protocol::wire::verify_announcement(
                &signed,
                now.plus_secs(1 << 30),
            ) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(program = %row.id, error = %e, "skipping invalid stored program");
                    continue;
                }
            };
            if row.own {
                let owned = self
                    .owners
                    .restore(&view, signed.clone(), snap.records_of(row.id))
                    .map_err(|e| anyhow!("{e}"))?;
                self.owners.insert(owned);
            }
            self.known.insert(row.id, Known { view, signed });
        }
        for m in snap.memberships {
            let owner: PeerId = m
                .owner
                .parse()
                .map_err(|e| anyhow!("stored owner of {}: {e}", m.program))?;
            self.memberships.insert(
                m.program,
                Membership {
                    owner,
                    credential: m.credential,
                },
            );
        }
        tracing::info!(
            programs = self.known.len(),
            owned = self.owners.len(),
            memberships = self.memberships.len(),
            "state restored"
        );
        Ok(())
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(cmd) => self.on_command(cmd),
                },
                Some(done) = self.pending.next(), if !self.pending.is_empty() => self.on_done(done),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = tick.tick() => self.on_tick(),
            }
        }
        // Let queued writes finish before the task ends: an acknowledged write is already durable,
        // but the replies of in-flight ones should still go out.
        while let Some(done) = self.pending.next().await {
            self.on_done(done);
        }
        tracing::info!("node stopped");
    }

    /// Queues an asynchronous step whose continuation runs on the node.
    pub(crate) fn after<F, C>(&mut self, fut: F)
    where
        F: Future<Output = C> + Send + 'static,
        C: FnOnce(&mut Node) + Send + 'static,
    {
        self.pending.push(Box::pin(async move {
            let then = fut.await;
            Done::Then(Box::new(then))
        }));
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Then(f) => f(self),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peers());
            }
            Command::Dial(addr, reply) => {
                let _ = reply.send(self.swarm.dial(addr).map_err(|e| e.to_string()));
            }
            Command::Publish { manifest, reply } => {
                publish::publish(self, manifest, Default::default(), reply)
            }
            Command::PublishWith {
                manifest,
                files,
                reply,
            } => publish::publish(self, manifest, files, reply),
            Command::Programs(reply) => {
                let _ = reply.send(self.programs());
            }
            Command::Join { program, events } => worker::join(self, program, events),
            Command::Decide {
                user_code,
                approve,
                reply,
            } => owner::decide(self, &user_code, approve, reply),
            Command::Members { program, reply } => {
                let _ = reply.send(owner::members(self, &program));
            }
            Command::Revoke {
                program,
                member,
                reply,
            } => owner::revoke(self, program, &member, reply),
            Command::Submit {
                program,
                result,
                reply,
            } => worker::submit(self, program, result, reply),
            Command::Status { program, reply } => worker::status(self, program, reply),
            Command::RawMembership {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .membership
                    .send_request(&peer, request);
                self.out.raw_membership.insert(id, reply);
            }
            Command::RawKb {
                peer,
                request,
                reply,
            } => {
                let id = self.swarm.behaviour_mut().kb.send_request(&peer, request);
                self.out.raw_kb.insert(id, reply);
            }
            Command::Program { program, reply } => {
                let _ = reply.send(self.known.get(&program).map(|k| k.view.clone()));
            }
            Command::Credential { program, reply } => {
                let _ = reply.send(
                    self.memberships
                        .get(&program)
                        .map(|m| (m.owner, m.credential.clone())),
                );
            }
            Command::RequestSpend {
                program,
                packet,
                reply,
            } => spend::request(self, program, packet, reply),
            Command::SpendRequests(reply) => {
                let _ = reply.send(spend::list(self));
            }
            Command::DecideSpend {
                program,
                member,
                packet_id,
                approve,
                minutes,
                reply,
            } => {
                let _ = reply.send(spend::decide(
                    self, program, &member, &packet_id, approve, minutes,
                ));
            }
            Command::Blob {
                peer,
                request,
                reply,
            } => {
                let id = self.swarm.behaviour_mut().blob.send_request(&peer, request);
                self.out.blobs.insert(id, reply);
            }
            Command::NextClaims(reply) => {
                let _ = reply.send(self.owners.next_claims());
            }
            Command::Resolve {
                program,
                seq,
                verdict,
                reply,
            } => owner::resolve(self, program, seq, verdict, reply),
            Command::Shutdown => {}
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => gossip::on_gossip(self, e),
            SwarmEvent::Behaviour(BehaviourEvent::Membership(e)) => worker::on_membership(self, e),
            SwarmEvent::Behaviour(BehaviourEvent::Kb(e)) => worker::on_kb(self, e),
            SwarmEvent::Behaviour(BehaviourEvent::Approval(e)) => spend::on_event(self, e),
            SwarmEvent::Behaviour(BehaviourEvent::Blob(e)) => blob::on_event(self, e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => gossip::on_identify(self, e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => gossip::on_kad(self, e),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(e)) => gossip::on_mdns(self, e),
            SwarmEvent::Behaviour(_) => {}
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                // A relay server is run on a machine its operator says is reachable: its listen
                // addresses are its external addresses (libp2p's relay only serves once it has
                // confirmed external addresses).
                let circuit = address
                    .iter()
                    .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit));
                if self.relay_server && !circuit {
                    self.swarm.add_external_address(address);
                }
                self.announce_soon = true;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                tracing::debug!(peer = %peer_id, %addr, "connected");
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .push((connection_id, addr));
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                tracing::debug!(peer = %peer_id, "connection closed");
                if let Some(list) = self.connections.get_mut(&peer_id) {
                    list.retain(|(c, _)| *c != connection_id);
                    if list.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                if !self.swarm.is_connected(&peer_id) {
                    self.reserved.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, error = %error, "dial failed");
            }
            SwarmEvent::ListenerClosed { addresses, .. } => {
                tracing::debug!(?addresses, "listener closed");
            }
            _ => {}
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        worker::on_tick(self, now);
        owner::on_tick(self);
        if self.announce_soon || now.duration_since(self.last_announce) >= ANNOUNCE_EVERY {
            self.announce_soon = false;
            self.regossip_programs = false;
            self.last_announce = now;
            self.last_program_gossip = now;
            gossip::announce_all(self);
        } else if self.regossip_programs
            && now.duration_since(self.last_program_gossip) >= REGOSSIP_GAP
        {
            self.regossip_programs = false;
            self.last_program_gossip = now;
            gossip::regossip_programs(self);
        }
    }

    /// Takes one token from `peer`'s request budget; false means "rate limited".
    pub(crate) fn allow(&mut self, peer: PeerId) -> bool {
        take_token(&mut self.buckets, peer, self.rate)
    }

    /// Takes one token from `peer`'s artifact budget; false means "rate limited".
    pub(crate) fn allow_blob(&mut self, peer: PeerId) -> bool {
        take_token(&mut self.blob_buckets, peer, self.blob_rate)
    }

    /// Addresses to tell others: listeners and confirmed external addresses, without unspecified
    /// ones.
    pub(crate) fn my_addresses(&self) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = self
            .swarm
            .listeners()
            .chain(self.swarm.external_addresses())
            .filter(|a| {
                !a.iter().any(|p| {
                    matches!(p, libp2p::multiaddr::Protocol::Ip4(ip) if ip.is_unspecified())
                        || matches!(p, libp2p::multiaddr::Protocol::Ip6(ip) if ip.is_unspecified())
                })
            })
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out.truncate(btd_protocol::wire::MAX_ANNOUNCED_ADDRESSES);
        out
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            peer_id: self.swarm.local_peer_id().to_string(),
            listen: self.swarm.listeners().map(ToString::to_string).collect(),
            external: self
                .swarm
                .external_addresses()
                .map(ToString::to_string)
                .collect(),
            rungs: self.rungs.clone(),
        }
    }

    fn peers(&self) -> Vec<PeerView> {
        let mut out: Vec<PeerView> = self
            .swarm
            .connected_peers()
            .map(|p| PeerView {
                peer_id: p.to_string(),
                addresses: self
                    .connections
                    .get(p)
                    .map(|l| l.iter().map(|(_, a)| a.to_string()).collect())
                    .unwrap_or_default(),
                agent: self.agents.get(p).cloned(),
                rungs: self
                    .peer_rungs
                    .get(p)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default(),
            })
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }

    fn programs(&self) -> Vec<ProgramView> {
        let mut out: Vec<ProgramView> = self
            .known
            .iter()
            .map(|(id, k)| ProgramView {
                id: *id,
                name: k.view.program.name.clone(),
                objective: k.view.program.objective.clone(),
                owner: k.view.owner.to_string(),
                own: self.owners.contains(id),
                member: self.memberships.contains_key(id),
                published_at: k.view.published_at,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        out
    }
}

/// Takes one token from `peer`'s bucket (burst, refill per second), evicting the least recently
/// used bucket when [`MAX_BUCKETS`] are tracked; false means "rate limited".
fn take_token(
    buckets: &mut HashMap<PeerId, Bucket>,
    peer: PeerId,
    (burst, per_sec): (f64, f64),
) -> bool {
    let now = Instant::now();
    if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&peer) {
        if let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.last).map(|(p, _)| *p) {
            buckets.remove(&oldest);
        }
    }
    let b = buckets.entry(peer).or_insert(Bucket {
        tokens: burst,
        last: now,
    });
    let elapsed = now.duration_since(b.last).as_secs_f64();
    b.tokens = (b.tokens + elapsed * per_sec).min(burst);
    b.last = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_refill_per_peer() {
        let mut buckets = HashMap::new();
        let (a, b) = (PeerId::random(), PeerId::random());
        // Burst 3, refill 1/s: three requests pass at once, the fourth is rate limited.
        let rate = (3.0, 1.0);
        assert!((0..3).all(|_| take_token(&mut buckets, a, rate)));
        assert!(!take_token(&mut buckets, a, rate));
        // Another peer has its own budget.
        assert!(take_token(&mut buckets, b, rate));
        // Time refills it: 1.5 s gives one and a half tokens.
        if let Some(bucket) = buckets.get_mut(&a) {
            bucket.last -= Duration::from_millis(1500);
        }
        assert!(take_token(&mut buckets, a, rate));
        assert!(!take_token(&mut buckets, a, rate));
    }
}
