//! The simulated nodes: identities, addresses and bootstrap topology drawn from the seed, and their
//! life cycle (start, silent or loud crash, restart with the same key, store and address). Every
//! node is the daemon's real core (`btd::node::spawn`) on netsim's transport.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use btd::net::behaviour::{BoxError, CustomTransport};
use btd::net::{NetParams, TransportKind};
use btd::node::{self, NodeConfig, NodeHandle};
use btd::store::Store;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::roles::{Layout, Role};
use crate::scenario::{Scenario, StoreKind};
use crate::transport::SimTransport;
use crate::world::{NodeIx, World};

/// Listen ports: node `i` listens on `/memory/(PORT_BASE + i)` in every incarnation.
const PORT_BASE: u64 = 10_000;
/// Idle connections close after this (as in the daemon's tests).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restart waits for the crashed incarnation's database handle to let go.
const STORE_OPEN_WAIT: Duration = Duration::from_secs(10);

struct Running {
    handle: NodeHandle,
    task: tokio::task::JoinHandle<()>,
}

/// One simulated node: fixed identity and address, and its current incarnation (if running).
pub(crate) struct SimNode {
    pub(crate) key: Keypair,
    pub(crate) peer: PeerId,
    pub(crate) listen: Option<Multiaddr>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) relay: bool,
    db: Option<PathBuf>,
    /// Artifacts and holdouts (train workloads: the owner and members).
    pub(crate) home: Option<PathBuf>,
    running: Mutex<Option<Running>>,
    /// How often the node was started: each start seeds its RNG afresh (a restarted node that
    /// replayed its RNG would reuse its nonces, and the owner would answer them as retries).
    starts: std::sync::atomic::AtomicU64,
}

/// All nodes of a run, on one [`World`].
pub(crate) struct Sim {
    pub(crate) world: Arc<World>,
    pub(crate) layout: Layout,
    pub(crate) nodes: Vec<SimNode>,
    net: NetParams,
    /// The run's seed (node RNGs derive from it).
    seed: u64,
    _dir: tempfile::TempDir,
}

impl Sim {
    /// Draws keys, addresses and the bootstrap topology from `seed`. Nothing runs yet.
    pub(crate) fn build(s: &Scenario, seed: u64) -> Result<Sim> {
        let layout = Layout::new(s);
        let n = layout.len();
        let world = Arc::new(World::new(n, seed));
        let dir = tempfile::Builder::new()
            .prefix("btd-netsim-")
            .tempdir()
            .context("cannot create a temp dir for the node stores")?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut nodes: Vec<SimNode> = Vec::with_capacity(n);
        for ix in 0..n {
            let mut secret = [0u8; 32];
            rng.fill_bytes(&mut secret);
            let key = Keypair::ed25519_from_bytes(secret)
                .map_err(|e| anyhow!("cannot derive node key {ix}: {e}"))?;
            let peer = key.public().to_peer_id();
            let listen = (!layout.unreachable(ix))
                .then(|| Multiaddr::empty().with(Protocol::Memory(PORT_BASE + ix as u64)));
            let mut earlier: Vec<&SimNode> = nodes.iter().filter(|n| n.listen.is_some()).collect();
            earlier.shuffle(&mut rng);
            let mut bootstrap: Vec<Multiaddr> = earlier
                .iter()
                .take(s.nodes.degree)
                .filter_map(|n| n.dial_addr())
                .collect();
            if listen.is_none() {
                // Unreachable nodes also bootstrap to every relay so they can reserve a slot.
                for r in layout.with_role(Role::Relay) {
                    if let Some(a) = nodes.get(r).and_then(SimNode::dial_addr) {
                        if !bootstrap.contains(&a) {
                            bootstrap.push(a);
                        }
                    }
                }
            }
            tracing::debug!(node = ix, label = %layout.label(ix), %peer, "node identity");
            let file = s.nodes.store == StoreKind::File || layout.role(ix) == Role::Owner;
            nodes.push(SimNode {
                key,
                peer,
                listen,
                bootstrap,
                relay: layout.role(ix) == Role::Relay,
                db: file.then(|| dir.path().join(format!("node-{ix}.sqlite"))),
                home: (s.workload.source == "train"
                    && (layout.role(ix) == Role::Owner || layout.role(ix).is_member()))
                .then(|| dir.path().join(format!("home-{ix}"))),
                running: Mutex::new(None),
                starts: std::sync::atomic::AtomicU64::new(0),
            });
        }
        let net = NetParams {
            relay_server: false,
            mdns: false,
            gossip_heartbeat: Duration::from_millis(s.net.heartbeat_ms),
            request_timeout: Duration::from_millis(s.net.request_timeout_ms),
            idle_timeout: IDLE_TIMEOUT,
            autonat: false,
            max_peers: match s.net.max_peers {
                0 => btd::net::behaviour::DEFAULT_MAX_PEERS,
                n => n,
            },
            ..NetParams::default()
        };
        Ok(Sim {
            world,
            layout,
            nodes,
            net,
            seed,
            _dir: dir,
        })
    }

    fn node(&self, ix: NodeIx) -> Result<&SimNode> {
        self.nodes.get(ix).ok_or_else(|| anyhow!("no node {ix}"))
    }

    /// The running incarnation's handle, if the node is up.
    pub(crate) fn handle(&self, ix: NodeIx) -> Option<NodeHandle> {
        let node = self.nodes.get(ix)?;
        let running = node.running.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().map(|r| r.handle.clone())
    }

    /// The node's peer id.
    pub(crate) fn peer(&self, ix: NodeIx) -> Option<PeerId> {
        self.nodes.get(ix).map(|n| n.peer)
    }

    async fn open_store(&self, ix: NodeIx) -> Result<Store> {
        let Some(path) = self.node(ix)?.db.clone() else {
            return Store::open_in_memory().map_err(|e| anyhow!("in-memory store: {e}"));
        };
        let deadline = tokio::time::Instant::now() + STORE_OPEN_WAIT;
        loop {
            match Store::open(&path) {
                Ok(s) => return Ok(s),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(anyhow!("cannot open {}: {e}", path.display()))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The simulated transport of node `ix` (any identity may use it: hostile raw peers do).
    pub(crate) fn transport(&self, ix: NodeIx) -> TransportKind {
        let world = self.world.clone();
        TransportKind::Custom(CustomTransport::new(move |key| {
            SimTransport::authenticated(world.clone(), ix, key).map_err(|e| Box::new(e) as BoxError)
        }))
    }

    /// Starts (or restarts) node `ix` with its key, store and address.
    pub(crate) async fn start(&self, ix: NodeIx) -> Result<()> {
        let node = self.node(ix)?;
        if self.handle(ix).is_some() {
            return Ok(());
        }
        let store = self.open_store(ix).await?;
        self.world.restart(ix);
        let cfg = NodeConfig {
            key: node.key.clone(),
            transport: self.transport(ix),
            net: NetParams {
                relay_server: node.relay,
                ..self.net.clone()
            },
            listen: node.listen.iter().cloned().collect(),
            bootstrap: node.bootstrap.clone(),
            rungs: btd::config::Config::default_rungs(),
            home: node.home.clone(),
            clock: btd::clock::Clock::system(),
            // Each start of each node draws from its own stream of the run's seed: codes and nonces
            // replay with the seed, and a restart never repeats a nonce.
            rng_seed: Some(node_seed(
                self.seed,
                ix,
                node.starts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            )),
            metrics: btd::metrics::Metrics::new(),
        };
        let (handle, task) = node::spawn(cfg, store)
            .await
            .with_context(|| format!("cannot start node {}", self.layout.label(ix)))?;
        *node.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running { handle, task });
        Ok(())
    }

    /// Crashes node `ix`: the world drops its bytes (and, if loud, resets its connections), then
    /// its task is aborted and awaited. Its key, store file and address are kept for a restart.
    pub(crate) async fn crash(&self, ix: NodeIx, silent: bool) {
        let Ok(node) = self.node(ix) else { return };
        let running = node
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(r) = running else { return };
        self.world.crash(ix, silent);
        r.task.abort();
        let _ = r.task.await;
    }

    /// Crashes every running node (teardown).
    pub(crate) async fn crash_all(&self) {
        for ix in 0..self.nodes.len() {
            self.crash(ix, false).await;
        }
    }

    /// The owner's database file.
    pub(crate) fn owner_db(&self) -> Option<PathBuf> {
        self.nodes.first().and_then(|n| n.db.clone())
    }
}

impl SimNode {
    /// The address to dial this node at (with `/p2p/`), if it listens.
    pub(crate) fn dial_addr(&self) -> Option<Multiaddr> {
        self.listen
            .clone()
            .map(|a| a.with(Protocol::P2p(self.peer)))
    }
}

/// The RNG seed of start number `start` of node `ix` in a run seeded with `seed` (SplitMix64
/// finaliser over the three, so neighbouring inputs give unrelated streams).
fn node_seed(seed: u64, ix: NodeIx, start: u64) -> u64 {
    let mut z = seed
        ^ (ix as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ start.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
