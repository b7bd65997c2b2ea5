//! The shared world that every simulated node's transport consults: who listens where, which links
//! are cut (partition), black-holed or shaped (latency, jitter, bandwidth), which nodes are down,
//! and per-node traffic counters. Faults are changed here; connections react through [`World`]'s
//! epoch channel, so nothing polls.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, watch};

use crate::transport::Incoming;

/// Index of a node in the world (stable across crash and restart).
pub type NodeIx = usize;

/// Latency, jitter and bandwidth of a link (applied in each direction).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Shape {
    /// One-way delay added to every write.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` (from the world's seeded RNG); order within a
    /// connection is kept, as on a TCP stream.
    pub jitter: Duration,
    /// Bytes per second in each direction; `None` is unlimited.
    pub bandwidth: Option<u64>,
}

/// Traffic seen at the fault layer for one node (all incarnations).
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes this node wrote (Noise-encrypted Yamux frames).
    pub bytes_out: AtomicU64,
    /// Bytes delivered to this node.
    pub bytes_in: AtomicU64,
    /// Writes this node made (roughly one per Yamux frame).
    pub writes_out: AtomicU64,
    /// Writes delivered to this node.
    pub writes_in: AtomicU64,
    /// Connections opened to or from this node.
    pub connections: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    /// Bytes written.
    pub bytes_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Writes made.
    pub writes_out: u64,
    /// Writes received.
    pub writes_in: u64,
    /// Connections opened.
    pub connections: u64,
}

/// Whether a connection's far end can still receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// The incarnation that opened the connection is running.
    Alive,
    /// It crashed silently: bytes vanish and nothing tells the peer.
    Vanished,
    /// It crashed loudly, or restarted since (a restarted host answers stale packets with a reset).
    Reset,
}

#[derive(Debug, Clone, Copy)]
struct Life {
    incarnation: u64,
    up: bool,
    silent: bool,
}

struct Listening {
    node: NodeIx,
    token: u64,
    incoming: mpsc::Sender<Incoming>,
}

struct ConnInfo {
    a: NodeIx,
    b: NodeIx,
    kill: watch::Sender<bool>,
}

struct State {
    rng: ChaCha8Rng,
    listeners: HashMap<u64, Listening>,
    life: Vec<Life>,
    group: Vec<u32>,
    blackholes: HashSet<(NodeIx, NodeIx)>,
    default_shape: Shape,
    shapes: HashMap<(NodeIx, NodeIx), Shape>,
    conns: HashMap<u64, ConnInfo>,
    /// Open connections per node.
    open: Vec<usize>,
    /// Most open connections per node (`None`: unlimited); servers always accept.
    max_conns: Option<usize>,
    servers: HashSet<NodeIx>,
    next_conn: u64,
    next_token: u64,
    next_port: u64,
}

/// The simulated network shared by all nodes of one run.
pub struct World {
    state: Mutex<State>,
    epoch: watch::Sender<u64>,
    counters: Vec<Counters>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("nodes", &self.counters.len())
            .finish()
    }
}

fn pair(a: NodeIx, b: NodeIx) -> (NodeIx, NodeIx) {
    (a.min(b), a.max(b))
}

/// Ports handed out for `/memory/0` listeners start here, far above the ones netsim assigns.
const AUTO_PORT_BASE: u64 = 1 << 40;

impl World {
    /// A world of `nodes` nodes, all up, one partition group, no faults; `seed` drives jitter.
    pub fn new(nodes: usize, seed: u64) -> World {
        let life = Life {
            incarnation: 0,
            up: true,
            silent: false,
        };
        World {
            state: Mutex::new(State {
                rng: ChaCha8Rng::seed_from_u64(seed),
                listeners: HashMap::new(),
                life: vec![life; nodes],
                group: vec![0; nodes],
                blackholes: HashSet::new(),
                default_shape: Shape::default(),
                shapes: HashMap::new(),
                conns: HashMap::new(),
                open: vec![0; nodes],
                max_conns: None,
                servers: HashSet::new(),
                next_conn: 1,
                next_token: 1,
                next_port: AUTO_PORT_BASE,
            }),
            epoch: watch::channel(0).0,
            counters: (0..nodes).map(|_| Counters::default()).collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that matters
        // to a simulation; keep going with the inner value.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// True for a world without nodes.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    // ---- faults ----

    /// Splits the network: nodes in `groups[i]` can only reach nodes of the same group; nodes in no
    /// group form one more group. Existing connections across groups stall (bytes are held, as
    /// dropped packets would be) and new dials time out.
    pub fn partition(&self, groups: &[Vec<NodeIx>]) {
        let mut s = self.lock();
        s.group.iter_mut().for_each(|g| *g = 0);
        for (i, members) in groups.iter().enumerate() {
            for &n in members {
                if let Some(g) = s.group.get_mut(n) {
                    *g = u32::try_from(i + 1).unwrap_or(u32::MAX);
                }
            }
        }
        drop(s);
        self.bump();
    }

    /// Removes every partition: stalled bytes flow again.
    pub fn heal(&self) {
        self.lock().group.iter_mut().for_each(|g| *g = 0);
        self.bump();
    }

    /// Black-holes (or restores) the link between `a` and `b`: bytes stop, connections stay open.
    pub fn blackhole(&self, a: NodeIx, b: NodeIx, on: bool) {
        let mut s = self.lock();
        if on {
            s.blackholes.insert(pair(a, b));
        } else {
            s.blackholes.remove(&pair(a, b));
        }
        drop(s);
        self.bump();
    }

    /// Sets the shape of every link without its own shape.
    pub fn set_default_shape(&self, shape: Shape) {
        self.lock().default_shape = shape;
        self.bump();
    }

    /// Sets (or with `None` clears) the shape of the link between `a` and `b`.
    pub fn set_shape(&self, a: NodeIx, b: NodeIx, shape: Option<Shape>) {
        let mut s = self.lock();
        match shape {
            Some(sh) => s.shapes.insert(pair(a, b), sh),
            None => s.shapes.remove(&pair(a, b)),
        };
        drop(s);
        self.bump();
    }

    /// Limits every node to `max` open connections (a host's connection table), except that dials
    /// to `servers` (the owner, relays) are always accepted. `None` removes the limit.
    pub fn limit_connections(&self, max: Option<usize>, servers: &[NodeIx]) {
        let mut s = self.lock();
        s.max_conns = max;
        s.servers = servers.iter().copied().collect();
    }

    /// Marks `node` as crashed. Silent: its peers are told nothing (a power cut); otherwise its
    /// connections are reset at once (the process died and its host closed the sockets). Bytes it
    /// writes from now on are dropped, so a dying swarm's close frames never leave it.
    pub fn crash(&self, node: NodeIx, silent: bool) {
        let mut s = self.lock();
        if let Some(l) = s.life.get_mut(node) {
            l.up = false;
            l.silent = silent;
        }
        if !silent {
            for c in s.conns.values() {
                if c.a == node || c.b == node {
                    let _ = c.kill.send(true);
                }
            }
        }
        drop(s);
        self.bump();
    }

    /// Marks `node` as running again (a new incarnation). Stale connections to the old incarnation
    /// are reset when their peer next sends (TCP answers segments for unknown connections with RST).
    pub fn restart(&self, node: NodeIx) {
        let mut s = self.lock();
        if let Some(l) = s.life.get_mut(node) {
            l.incarnation += 1;
            l.up = true;
            l.silent = false;
        }
        drop(s);
        self.bump();
    }

    /// Resets every connection between a node of `a` and a node of `b` (with `b` empty: every
    /// connection of the nodes in `a`). In-flight requests and gossip on them are lost.
    pub fn reset(&self, a: &[NodeIx], b: &[NodeIx]) -> usize {
        let s = self.lock();
        let mut n = 0;
        for c in s.conns.values() {
            let hit = if b.is_empty() {
                a.contains(&c.a) || a.contains(&c.b)
            } else {
                (a.contains(&c.a) && b.contains(&c.b)) || (a.contains(&c.b) && b.contains(&c.a))
            };
            if hit {
                let _ = c.kill.send(true);
                n += 1;
            }
        }
        n
    }

    /// Whether `node` is running.
    pub fn is_up(&self, node: NodeIx) -> bool {
        self.lock().life.get(node).is_some_and(|l| l.up)
    }

    /// Traffic counters of `node`.
    pub fn traffic(&self, node: NodeIx) -> Traffic {
        self.counters
            .get(node)
            .map(|c| Traffic {
                bytes_out: c.bytes_out.load(Ordering::Relaxed),
                bytes_in: c.bytes_in.load(Ordering::Relaxed),
                writes_out: c.writes_out.load(Ordering::Relaxed),
                writes_in: c.writes_in.load(Ordering::Relaxed),
                connections: c.connections.load(Ordering::Relaxed),
            })
            .unwrap_or_default()
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.lock().conns.len()
    }

    /// Distinct node pairs with at least one open connection.
    pub fn connected_pairs(&self) -> usize {
        let s = self.lock();
        s.conns
            .values()
            .map(|c| pair(c.a, c.b))
            .collect::<HashSet<_>>()
            .len()
    }

    /// Connections currently open per node.
    pub fn open_connections_per_node(&self) -> Vec<usize> {
        self.lock().open.clone()
    }

    // ---- used by the transport ----

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    pub(crate) fn register_listener(
        &self,
        node: NodeIx,
        port: u64,
        incoming: mpsc::Sender<Incoming>,
    ) -> Option<(u64, u64)> {
        let mut s = self.lock();
        let port = if port == 0 {
            s.next_port += 1;
            s.next_port
        } else {
            port
        };
        if s.listeners.contains_key(&port) {
            return None;
        }
        let token = s.next_token;
        s.next_token += 1;
        s.listeners.insert(
            port,
            Listening {
                node,
                token,
                incoming,
            },
        );
        Some((port, token))
    }

    pub(crate) fn unregister_listener(&self, port: u64, token: u64) {
        let mut s = self.lock();
        if s.listeners.get(&port).is_some_and(|l| l.token == token) {
            s.listeners.remove(&port);
        }
    }

    pub(crate) fn lookup(&self, port: u64) -> Option<(NodeIx, mpsc::Sender<Incoming>)> {
        self.lock()
            .listeners
            .get(&port)
            .map(|l| (l.node, l.incoming.clone()))
    }

    /// The link's shape if it carries bytes now; `None` while partitioned or black-holed.
    pub(crate) fn passable(&self, a: NodeIx, b: NodeIx) -> Option<Shape> {
        let s = self.lock();
        let cut = s.group.get(a) != s.group.get(b) || s.blackholes.contains(&pair(a, b));
        (!cut).then(|| {
            s.shapes
                .get(&pair(a, b))
                .copied()
                .unwrap_or(s.default_shape)
        })
    }

    pub(crate) fn jitter(&self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.lock().rng.gen_range(0..=nanos))
    }

    pub(crate) fn incarnation(&self, node: NodeIx) -> u64 {
        self.lock().life.get(node).map_or(0, |l| l.incarnation)
    }

    /// Whether bytes written by `node`'s incarnation `inc` must be dropped.
    pub(crate) fn is_dead(&self, node: NodeIx, inc: u64) -> bool {
        self.lock()
            .life
            .get(node)
            .is_none_or(|l| !l.up || l.incarnation != inc)
    }

    pub(crate) fn fate(&self, node: NodeIx, inc: u64) -> Fate {
        match self.lock().life.get(node) {
            Some(l) if l.incarnation == inc && l.up => Fate::Alive,
            Some(l) if l.incarnation == inc && l.silent => Fate::Vanished,
            _ => Fate::Reset,
        }
    }

    /// Opens a connection from `a` to `b`, unless the connection limit refuses it.
    pub(crate) fn open_conn(&self, a: NodeIx, b: NodeIx) -> Option<(u64, watch::Receiver<bool>)> {
        let (kill, rx) = watch::channel(false);
        let mut s = self.lock();
        if let Some(max) = s.max_conns {
            let full = |n: NodeIx| s.open.get(n).is_some_and(|c| *c >= max);
            if !s.servers.contains(&b) && (full(a) || full(b)) {
                return None;
            }
        }
        let id = s.next_conn;
        s.next_conn += 1;
        s.conns.insert(id, ConnInfo { a, b, kill });
        for n in [a, b] {
            if let Some(c) = s.open.get_mut(n) {
                *c += 1;
            }
        }
        drop(s);
        for n in [a, b] {
            if let Some(c) = self.counters.get(n) {
                c.connections.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some((id, rx))
    }

    pub(crate) fn kill_conn(&self, id: u64) {
        if let Some(c) = self.lock().conns.get(&id) {
            let _ = c.kill.send(true);
        }
    }

    pub(crate) fn close_conn(&self, id: u64) {
        let mut s = self.lock();
        if let Some(c) = s.conns.remove(&id) {
            for n in [c.a, c.b] {
                if let Some(x) = s.open.get_mut(n) {
                    *x = x.saturating_sub(1);
                }
            }
        }
    }

    pub(crate) fn count_out(&self, node: NodeIx, bytes: usize) {
        if let Some(c) = self.counters.get(node) {
            c.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
            c.writes_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_in(&self, node: NodeIx, bytes: usize) {
        if let Some(c) = self.counters.get(node) {
            c.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
            c.writes_in.fetch_add(1, Ordering::Relaxed);
        }
    }
}
