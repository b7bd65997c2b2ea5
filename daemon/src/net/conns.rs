//! The connection bound: which connections a node admits, which it keeps, and which it closes.
//!
//! libp2p never closes a connection to a gossipsub peer on its own (gossipsub's long-lived streams
//! count as activity, so the idle timeout never fires), Kademlia's queries dial ever more peers,
//! and Kademlia re-dials a disconnected routing-table entry whenever a new peer wants its full
//! bucket: left alone, every node of a mesh heads for a connection to every other (docs/netsim.md,
//! finding 2). [`Conns`] is a [`NetworkBehaviour`] that keeps the count bounded in two ways:
//!
//! - **Admission.** At `max_peers` open connections (dials in flight and connections a trim is
//!   still closing included), a connection to a new peer is refused, inbound or outbound, unless
//!   the peer is *exempt*: a request to or from it is in flight, the node dialled its address
//!   explicitly, the caller protects it (owners of joined programs, joins in progress, relays
//!   holding our reservation), or it is already connected (a second connection adds no peer). A refused Kademlia dial only costs that query one peer
//!   (`DialError::Denied` leaves the routing table alone). Nodes that serve others (a relay
//!   server, the owner of a program) admit every inbound connection: their members and the
//!   peers behind them must get through.
//! - **Upkeep dials stop at the low-water mark.** A dial nobody asked for is Kademlia keeping its
//!   routing table (its bootstraps and bucket refreshes, which reach most of a small mesh). At the
//!   low-water mark such a connection would only be trimmed again after [`GRACE`], so it is
//!   refused there, unless the node is looking something up or publishing (a record query runs,
//!   [`Conns::set_looking`]): then up to the bound, as before. Inbound connections are admitted up
//!   to the bound either way.
//! - **Trimming.** Above the low-water mark (three quarters of `max_peers`), the least recently
//!   used connections are closed down to it ([`Conns::trim`]), so a node has room for new peers
//!   without refusing them. Spared: exempt peers, gossipsub mesh peers (up to the target mesh size
//!   per topic, [`Conns::set_keep`]), peers connected or used within [`GRACE`], peers this node
//!   relays for, and relays carrying one of our connections.
//!
//! So a node that serves nobody holds at most `max_peers` connections plus those of exempt peers,
//! which are few (its owners and relays, and peers it has requests with: at most 4 connections
//! each), whatever the size of the mesh. The hard cap of libp2p's `connection_limits` stays behind it.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use super::swarm::relay_of;

/// A new connection, and a peer used for a request, is not closed for this long.
pub(crate) const GRACE: Duration = Duration::from_secs(10);
/// An explicit dial ([`Conns::want`]) is exempt from admission for this long.
const WANT_FOR: Duration = Duration::from_secs(30);

/// What the node knows of one connected peer.
#[derive(Debug)]
struct Peer {
    /// Open connections.
    connections: Vec<Link>,
    /// When the first of them was established.
    since: Instant,
    /// The last request sent to or received from the peer (or `since`).
    last_used: Instant,
}

impl Peer {
    /// Connections not being closed by a trim.
    fn live(&self) -> usize {
        self.connections.iter().filter(|l| !l.closing).count()
    }
}

/// One open connection.
#[derive(Debug)]
struct Link {
    id: ConnectionId,
    /// The relay it runs through (a relayed connection).
    via: Option<PeerId>,
    /// Closed by a trim and not gone yet: it still counts against admission (it holds its
    /// memory until it is gone), not against the next trim.
    closing: bool,
}

/// The connection bound was reached: the error a refused connection carries.
#[derive(Debug)]
pub(crate) struct AtBound(usize);

impl std::fmt::Display for AtBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at the connection bound ({} peers)", self.0)
    }
}

impl std::error::Error for AtBound {}

/// Open connections by peer, their use, and the bound.
#[derive(Debug)]
pub struct Conns {
    max_peers: usize,
    grace: Duration,
    /// Admit every inbound connection (a relay server, an owner).
    serving: bool,
    peers: HashMap<PeerId, Peer>,
    /// Outbound connections admitted and not yet established or failed, by peer.
    dialing: HashMap<ConnectionId, PeerId>,
    /// Requests in flight by peer (sent and received), whether or not it is connected yet.
    requests: HashMap<PeerId, u32>,
    /// Reservations and circuits this node (as a relay) holds for each peer.
    relaying: HashMap<PeerId, u32>,
    /// Addresses dialled explicitly (bootstrap, `btd dial`): exempt until then.
    wanted: HashMap<PeerId, Instant>,
    /// Exempt from admission and trimming (owners, joins, reserved relays).
    protected: HashSet<PeerId>,
    /// Spared by trimming only (gossipsub mesh peers).
    mesh: HashSet<PeerId>,
    /// A record query (lookup or publish) runs: its dials may go up to the bound.
    looking: bool,
}

impl Conns {
    /// A bound of `max_peers` connections beyond the exempt ones; `serving` admits every
    /// inbound connection.
    pub(crate) fn new(max_peers: usize, serving: bool) -> Self {
        Self::with_grace(max_peers, serving, GRACE)
    }

    /// As [`Conns::new`] with another grace period (tests).
    pub(crate) fn with_grace(max_peers: usize, serving: bool, grace: Duration) -> Self {
        Self {
            max_peers,
            grace,
            serving,
            peers: HashMap::new(),
            dialing: HashMap::new(),
            requests: HashMap::new(),
            relaying: HashMap::new(),
            wanted: HashMap::new(),
            protected: HashSet::new(),
            mesh: HashSet::new(),
            looking: false,
        }
    }

    /// The low-water mark [`Conns::trim`] closes down to: a quarter of the bound stays free for
    /// new peers.
    pub(crate) fn low_water(&self) -> usize {
        self.max_peers - self.max_peers / 4
    }

    /// Open connections not being closed, plus dials in flight: what [`Conns::trim`] brings down
    /// to the low-water mark. Connections, not peers: what costs memory is the connection, and
    /// two peers dialling each other at once hold two.
    pub(crate) fn counted(&self) -> usize {
        let live: usize = self.peers.values().map(Peer::live).sum();
        live + self.dialing.len()
    }

    /// Every open connection, those being closed included, plus dials in flight: what admission
    /// holds to the bound. A trimmed connection may take a while to go on a busy node; counting
    /// it until then keeps the open count within the bound, not just the live one.
    pub(crate) fn open(&self) -> usize {
        let open: usize = self.peers.values().map(|p| p.connections.len()).sum();
        open + self.dialing.len()
    }

    /// Whether this node is at its bound (so it should not dial peers it does not need).
    pub(crate) fn full(&self) -> bool {
        self.open() >= self.max_peers
    }

    /// Whether a record query (lookup or publish, not Kademlia's own upkeep) runs.
    pub(crate) fn set_looking(&mut self, looking: bool) {
        self.looking = looking;
    }

    /// Whether the node serves others (admits every inbound connection).
    pub(crate) fn set_serving(&mut self, serving: bool) {
        self.serving = serving;
    }

    /// The peers the caller protects from admission and trimming, and the gossip mesh peers
    /// spared by trimming; replaces the previous sets.
    pub(crate) fn set_keep(&mut self, protected: HashSet<PeerId>, mesh: HashSet<PeerId>) {
        self.protected = protected;
        self.mesh = mesh;
    }

    /// The node dials `peer` on purpose (a bootstrap address, `btd dial`): admitted for a while.
    pub(crate) fn want(&mut self, peer: PeerId, now: Instant) {
        let cap = 4 * self.max_peers.max(16);
        if self.wanted.len() >= cap {
            self.wanted
                .retain(|_, at| now.saturating_duration_since(*at) < WANT_FOR);
            if self.wanted.len() >= cap {
                if let Some(oldest) = self
                    .wanted
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(p, _)| *p)
                {
                    self.wanted.remove(&oldest);
                }
            }
        }
        self.wanted.insert(peer, now);
    }

    /// Whether the node needs `peer` now: a request in flight, protected, or dialled on purpose.
    fn needed(&self, peer: &PeerId, now: Instant) -> bool {
        self.requests.contains_key(peer)
            || self.protected.contains(peer)
            || self
                .wanted
                .get(peer)
                .is_some_and(|at| now.saturating_duration_since(*at) < WANT_FOR)
    }

    /// Whether a connection to `peer` (inbound or outbound) is admitted now: always when the node
    /// needs the peer, or inbound to a node that serves; otherwise only below the bound (also a
    /// second connection to a connected peer: the first one stays), and a dial while no record
    /// query runs only below the low-water mark (module docs).
    pub(crate) fn admit(&self, peer: &PeerId, inbound: bool, now: Instant) -> bool {
        let room = if inbound || self.looking {
            self.max_peers
        } else {
            self.low_water()
        };
        (inbound && self.serving) || self.needed(peer, now) || self.open() < room
    }

    /// An outbound connection to `peer` was admitted and is being dialled.
    fn dialing(&mut self, id: ConnectionId, peer: PeerId) {
        self.dialing.insert(id, peer);
    }

    /// A connection was established; `via` is the relay of a relayed connection.
    pub(crate) fn established(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        via: Option<PeerId>,
        now: Instant,
    ) {
        self.dialing.remove(&id);
        let p = self.peers.entry(peer).or_insert(Peer {
            connections: Vec::new(),
            since: now,
            last_used: now,
        });
        p.connections.push(Link {
            id,
            via,
            closing: false,
        });
    }

    /// A dial failed (or was denied by another behaviour).
    fn dial_failed(&mut self, id: ConnectionId) {
        self.dialing.remove(&id);
    }

    /// A connection closed.
    pub(crate) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        let gone = self.peers.get_mut(&peer).is_none_or(|p| {
            p.connections.retain(|l| l.id != id);
            p.connections.is_empty()
        });
        if gone {
            self.peers.remove(&peer);
            // Reservations and circuits live on connections: none is left.
            self.relaying.remove(&peer);
        }
    }

    /// A request to or from `peer` started.
    pub(crate) fn request_started(&mut self, peer: PeerId, now: Instant) {
        *self.requests.entry(peer).or_default() += 1;
        self.touch(peer, now);
    }

    /// A request to or from `peer` ended (answered, failed or timed out).
    pub(crate) fn request_ended(&mut self, peer: PeerId, now: Instant) {
        if let Some(n) = self.requests.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.requests.remove(&peer);
            }
        }
        self.touch(peer, now);
    }

    /// This node (a relay) started holding a reservation or a circuit for `peer`.
    pub(crate) fn relay_started(&mut self, peer: PeerId) {
        if self.peers.contains_key(&peer) {
            *self.relaying.entry(peer).or_default() += 1;
        }
    }

    /// A reservation or circuit for `peer` ended.
    pub(crate) fn relay_ended(&mut self, peer: PeerId) {
        if let Some(n) = self.relaying.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.relaying.remove(&peer);
            }
        }
    }

    fn touch(&mut self, peer: PeerId, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_used = p.last_used.max(now);
        }
    }

    /// The peers to disconnect now to get back to the low-water mark: the least recently used
    /// of those not spared (module docs). They are marked as closing.
    pub(crate) fn trim(&mut self, now: Instant) -> Vec<PeerId> {
        let excess = self.counted().saturating_sub(self.low_water());
        if excess == 0 {
            return Vec::new();
        }
        let relays: HashSet<PeerId> = self
            .peers
            .values()
            .flat_map(|p| p.connections.iter().filter_map(|l| l.via))
            .collect();
        let mut candidates: Vec<(Instant, Instant, PeerId, usize)> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                p.live() > 0
                    && now.saturating_duration_since(p.last_used) >= self.grace
                    && !self.needed(id, now)
                    && !self.relaying.contains_key(id)
                    && !relays.contains(id)
                    && !self.mesh.contains(id)
            })
            .map(|(id, p)| (p.last_used, p.since, *id, p.live()))
            .collect();
        candidates.sort_unstable();
        let mut freed = 0;
        let out: Vec<PeerId> = candidates
            .into_iter()
            .take_while(|(_, _, _, n)| {
                let more = freed < excess;
                freed += n;
                more
            })
            .map(|(_, _, id, _)| id)
            .collect();
        for id in &out {
            if let Some(p) = self.peers.get_mut(id) {
                for l in &mut p.connections {
                    l.closing = true;
                }
            }
        }
        out
    }

    fn refuse(&self) -> ConnectionDenied {
        ConnectionDenied::new(AtBound(self.max_peers))
    }
}

/// The bound as a behaviour: it admits or refuses connections and follows them. Requests and the
/// sets it spares come from [`super::Net`].
impl NetworkBehaviour for Conns {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if self.admit(&peer, true, Instant::now()) {
            Ok(dummy::ConnectionHandler)
        } else {
            tracing::debug!(%peer, "inbound connection refused: at the connection bound");
            Err(self.refuse())
        }
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        // A dial by address alone is an explicit one (bootstrap, `btd dial`).
        let Some(peer) = peer else {
            return Ok(Vec::new());
        };
        if self.admit(&peer, false, Instant::now()) {
            self.dialing(id, peer);
            Ok(Vec::new())
        } else {
            tracing::debug!(%peer, "dial refused: at the connection bound");
            Err(self.refuse())
        }
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => self.established(
                e.peer_id,
                e.connection_id,
                relay_of(e.endpoint.get_remote_address()),
                Instant::now(),
            ),
            FromSwarm::ConnectionClosed(e) => self.closed(e.peer_id, e.connection_id),
            FromSwarm::DialFailure(e) => self.dial_failed(e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
