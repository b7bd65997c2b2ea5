//! The daemon's core. One task owns the network ([`crate::net::Net`]) and the program state;
//! everything else talks to it through a cloneable [`NodeHandle`] (one async method per operation,
//! bounded command channel, oneshot replies, typed [`NodeError`]s). The task handles btd's network
//! events (`dispatch.rs` routes them), never libp2p's. It never awaits inside a handler: store
//! writes run as futures the loop polls, and replies to the control API are sent with
//! `try_send`/oneshot.

mod blob;
mod budget;
mod dispatch;
mod gossip;
mod handle;
mod outbox;
mod owner;
mod publish;
pub mod spend;
pub mod types;
mod worker;

pub(crate) use handle::Command;
pub use handle::{NodeError, NodeHandle};
pub use outbox::{queued_words, OutboxParams};

pub(crate) use publish::holdout_path;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use btd_protocol::membership::Credential;
use btd_protocol::program::ProgramId;
use btd_protocol::seal::SealKey;
use btd_protocol::signed::Signed;
use btd_protocol::wire::{AdvertisedRung, ProgramAnnouncement};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;

use crate::net::{build_swarm, ConnectionId, Net, NetParams, TransportKind};
use crate::store::{Snapshot, Store};
use dispatch::NodeTags;
use types::{JoinEvent, NodeInfo, PeerView, ProgramView};

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
    /// The node's clock: protocol time for every rule it applies (the system clock in the
    /// daemon; tests and netsim hand in one they move).
    pub clock: crate::clock::Clock,
    /// Seed of the node's RNG (device and user codes, nonces, sealing): `None` draws one from the
    /// operating system (the daemon); netsim passes one so a run replays. Never start the same
    /// identity twice with the same seed: its nonces would repeat, and an owner answers a repeated
    /// nonce with the earlier submission's receipt.
    pub rng_seed: Option<u64>,
    /// Where the node, its store, verifier and worker loops count things (`crate::metrics`).
    pub metrics: crate::metrics::Metrics,
}

type BoxFut = Pin<Box<dyn Future<Output = Done> + Send>>;

/// What to do when an asynchronous step (a store write) finishes.
pub(crate) enum Done {
    /// Run this closure on the node (it gets `&mut Node`).
    Then(Box<dyn FnOnce(&mut Node) + Send>),
}

/// A join in progress (worker side).
pub(crate) struct JoinState {
    /// Tells this join's answers from those of an earlier `btd join` of the same program (the
    /// requests carry it in their tag): a late answer to a join that was started again is
    /// ignored, never taken as this one's.
    pub(crate) id: u64,
    pub(crate) owner: PeerId,
    /// Asking for a code, or polling with it.
    pub(crate) phase: JoinPhase,
    /// When the phase's next request goes out, or that it is in flight.
    pub(crate) next: NextRequest,
    /// The owner's poll interval.
    pub(crate) interval: Duration,
    pub(crate) expires_at: Instant,
    pub(crate) events: mpsc::Sender<JoinEvent>,
}

impl JoinState {
    /// The phase's next request goes out `wait` from now (when the join expires, if that
    /// instant cannot be represented).
    pub(crate) fn wait(&mut self, wait: Duration) {
        let at = Instant::now().checked_add(wait).unwrap_or(self.expires_at);
        self.next = NextRequest::At(at);
    }
}

/// Where a join stands (worker side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinPhase {
    /// No code yet: the authorization request, sent again when it fails to reach the owner;
    /// `failed` of them did (`worker::AUTHORIZE_ATTEMPTS`).
    Authorizing { failed: u32 },
    /// The owner gave this device code: polling until the owner decides.
    Polling(btd_protocol::membership::DeviceCode),
}

/// A join's next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextRequest {
    /// One is in flight: nothing goes out until it is answered or fails.
    InFlight,
    /// Goes out at the first tick from then on.
    At(Instant),
}

impl NextRequest {
    /// Whether the next request goes out at `now`.
    pub(crate) fn due(self, now: Instant) -> bool {
        matches!(self, NextRequest::At(at) if now >= at)
    }
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

/// The node task's state.
pub struct Node {
    pub(crate) net: Net<NodeTags>,
    pub(crate) key: Keypair,
    pub(crate) seal_key: SealKey,
    pub(crate) store: Store,
    pub(crate) rng: StdRng,
    /// Protocol time (see [`crate::clock`]).
    pub(crate) clock: crate::clock::Clock,
    pub(crate) rungs: Vec<AdvertisedRung>,
    /// Programs known from the mesh or owned: a bounded table (per-owner and global caps on
    /// programs neither owned nor joined; see `btd_protocol::discovery`).
    pub(crate) known: btd_protocol::discovery::Discovery<Known>,
    /// The programs this node owns: every owner rule (`btd_protocol::owner`).
    pub(crate) owners: btd_protocol::owner::Owners,
    pub(crate) memberships: HashMap<ProgramId, Membership>,
    pub(crate) joins: HashMap<ProgramId, JoinState>,
    /// Submissions to owners, until they answer (`outbox.rs`).
    pub(crate) outbox: outbox::Outbox,
    pub(crate) pending: FuturesUnordered<BoxFut>,
    /// Submission signatures checked at once off this task (one per core): `owner::on_kb_request`.
    pub(crate) signature_checks: std::sync::Arc<tokio::sync::Semaphore>,
    /// Per-peer request budget.
    pub(crate) requests: budget::Budgets,
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
    /// Tests and netsim playing a hostile member: answer every artifact request with this.
    #[cfg(feature = "testkit")]
    pub(crate) poisoned_blobs: Option<btd_protocol::wire::BlobResponse>,
    pub(crate) lookups: gossip::Lookups,
    /// Known-program rows on their way to the database, in order.
    pub(crate) program_writes: gossip::ProgramWrites,
    pub(crate) relay_server: bool,
    /// Artifacts this node serves and fetches.
    pub(crate) blobs: Option<crate::blobs::BlobStore>,
    /// The home directory (holdouts live under it).
    pub(crate) home: Option<std::path::PathBuf>,
    /// Per-peer artifact budget (chunks).
    pub(crate) blob_requests: budget::Budgets,
    /// Wakes the verifier when a claim becomes pending.
    pub(crate) claims_ready: std::sync::Arc<tokio::sync::Notify>,
    /// Open connections per peer, with their remote addresses (for `btd peers`).
    pub(crate) connections: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    /// Counters of what the node does (`crate::metrics`).
    pub(crate) metrics: crate::metrics::Metrics,
    /// DHT stores a test asked for, waiting for their outcome.
    #[cfg(feature = "testkit")]
    pub(crate) raw_puts: HashMap<crate::net::QueryId, handle::Reply<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.net.local_peer_id())
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
    let home = cfg.home.clone();
    let (handle, task) = spawn_without_verifier(cfg, store).await?;
    // A node with a home checks the claims of the programs it owns; the verifier ends when the
    // node stops.
    if let Some(home) = home {
        tokio::spawn(crate::verify::run(handle.clone(), home));
    }
    Ok((handle, task))
}

/// [`spawn`] without the owner's verifier: claims stay pending until someone calls
/// [`NodeHandle::resolve`] (tests play the verifier with it).
pub(crate) async fn spawn_without_verifier(
    cfg: NodeConfig,
    store: Store,
) -> Result<(NodeHandle, tokio::task::JoinHandle<()>)> {
    let snapshot = store
        .read(crate::store::load_snapshot)
        .await
        .map_err(|e| anyhow!("cannot load the database: {e}"))?;
    store.record_commits(cfg.metrics.store_commit());
    let store_for_restore = store.clone();
    let swarm = build_swarm(cfg.key.clone(), cfg.transport, &cfg.net, &cfg.metrics)?;
    let mut net = Net::new(swarm, cfg.metrics.clone());
    for addr in &cfg.listen {
        net.listen_on(addr.clone())
            .map_err(|e| anyhow!("cannot listen on {addr}: {e}"))?;
    }
    let seal_key = SealKey::from_identity(&cfg.key)
        .map_err(|e| anyhow!("cannot derive the sealing key: {e}"))?;
    let peer_id = cfg.key.public().to_peer_id();
    let mut node = Node {
        net,
        key: cfg.key.clone(),
        seal_key,
        store,
        rng: match cfg.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        },
        clock: cfg.clock.clone(),
        rungs: cfg.rungs,
        known: btd_protocol::discovery::Discovery::default(),
        owners: btd_protocol::owner::Owners::new(cfg.key.clone()),
        memberships: HashMap::new(),
        joins: HashMap::new(),
        outbox: outbox::Outbox::new(
            cfg.net.outbox.clone(),
            (cfg.net.rate_burst, cfg.net.rate_per_sec),
        ),
        pending: FuturesUnordered::new(),
        signature_checks: std::sync::Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get().min(16)),
        )),
        requests: budget::Budgets::new((cfg.net.rate_burst, cfg.net.rate_per_sec)),
        peer_rungs: HashMap::new(),
        agents: HashMap::new(),
        bootstrap: HashMap::new(),
        reserved: HashSet::new(),
        last_announce: Instant::now(),
        announce_soon: true,
        regossip_programs: false,
        last_program_gossip: Instant::now(),
        next_rung_advert: None,
        #[cfg(feature = "testkit")]
        poisoned_blobs: None,
        lookups: gossip::Lookups::default(),
        program_writes: gossip::ProgramWrites::default(),
        relay_server: cfg.net.relay_server,
        blobs: cfg
            .home
            .as_ref()
            .map(|h| crate::blobs::BlobStore::new(h.join("blobs"))),
        home: cfg.home.clone(),
        blob_requests: budget::Budgets::new((cfg.net.blob_burst, cfg.net.blob_per_sec)),
        claims_ready: std::sync::Arc::new(tokio::sync::Notify::new()),
        connections: HashMap::new(),
        metrics: cfg.metrics.clone(),
        #[cfg(feature = "testkit")]
        raw_puts: HashMap::new(),
    };
    let owned = owner::restore_owned(&store_for_restore, &snapshot, node.clock.now()).await?;
    node.restore(snapshot, owned)?;
    gossip::subscribe(&mut node)?;
    for addr in cfg.bootstrap {
        if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
            node.bootstrap.insert(peer, addr.clone());
            node.net.add_dht_address(peer, addr.clone());
        }
        if let Err(e) = node.net.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let claims = node.claims_ready.clone();
    let task = tokio::spawn(node.run(rx));
    let handle = NodeHandle::new(
        tx,
        peer_id,
        claims,
        cfg.clock.clone(),
        cfg.metrics,
        cfg.net.outbox.submit_wait,
    );
    Ok((handle, task))
}

impl Node {
    fn restore(
        &mut self,
        mut snap: Snapshot,
        mut owned: HashMap<ProgramId, btd_protocol::owner::ProgramOwner>,
    ) -> Result<()> {
        let now = self.clock.now();
        let mut rows = Vec::with_capacity(snap.programs.len());
        // Rows that cannot be read or verified are dropped from the store (unless own).
        let mut unreadable = Vec::new();
        outbox::restore(self, std::mem::take(&mut snap.outbox), snap.outbox_last_id);
        for row in &snap.programs {
            let (signed, view) = match owner::stored_announcement(row, now) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(program = %row.id, error = %e, "skipping unreadable stored program");
                    unreadable.push(row.id);
                    continue;
                }
            };
            if row.own {
                let o = owned
                    .remove(&row.id)
                    .ok_or_else(|| anyhow!("own program {} was not restored", row.id))?;
                self.owners.insert(o);
            }
            rows.push((
                row.id,
                view.owner,
                view.published_at,
                Known { view, signed },
            ));
        }
        // Own and joined programs are pinned; the others are bounded as the mesh's are (the store
        // already loaded at most the newest MAX_UNPINNED_PROGRAMS of them).
        let pins = snap
            .programs
            .iter()
            .filter(|r| r.own)
            .map(|r| r.id)
            .chain(snap.memberships.iter().map(|m| m.program));
        let (known, mut dropped) = btd_protocol::discovery::Discovery::restore(
            btd_protocol::discovery::Limits::default(),
            pins,
            rows,
        );
        self.known = known;
        dropped.extend(unreadable);
        gossip::forget_stored(self, dropped);
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
                event = self.net.next_event() => self.on_net_event(event),
                _ = tick.tick() => self.on_tick(),
            }
            // An owner (from its first program on) and a relay server admit every inbound
            // connection: their members must get through the connection bound (`net/conns.rs`).
            self.net
                .set_serving(self.relay_server || !self.owners.is_empty());
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

    fn on_tick(&mut self) {
        let now = Instant::now();
        worker::on_tick(self, now);
        outbox::on_tick(self, now);
        owner::on_tick(self);
        self.trim_connections();
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

    /// Keeps the connection bound (docs/netsim.md, finding 2, `net/conns.rs`): the owners of
    /// programs this node is a member of or joining, and the relays it holds a reservation on,
    /// get in and stay whatever the count.
    fn trim_connections(&mut self) {
        let protected: std::collections::HashSet<PeerId> = self
            .reserved
            .iter()
            .copied()
            .chain(self.memberships.values().map(|m| m.owner))
            .chain(self.joins.values().map(|j| j.owner))
            .collect();
        self.net.trim(protected);
    }

    /// Addresses to tell others: listeners and confirmed external addresses, without unspecified
    /// ones.
    pub(crate) fn my_addresses(&self) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = self
            .net
            .listeners()
            .chain(self.net.external_addresses())
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
            peer_id: self.net.local_peer_id().to_string(),
            listen: self.net.listeners().map(ToString::to_string).collect(),
            external: self
                .net
                .external_addresses()
                .map(ToString::to_string)
                .collect(),
            rungs: self.rungs.clone(),
        }
    }

    fn peers(&self) -> Vec<PeerView> {
        let mut out: Vec<PeerView> = self
            .net
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
