//! The connection bound: which open connections a node keeps, and which it closes.
//!
//! libp2p never closes a connection to a gossipsub peer on its own (gossipsub's long-lived streams
//! count as activity, so the idle timeout never fires), and Kademlia's bootstrap and record queries
//! dial ever more peers: left alone, every node of a mesh heads for a connection to every other
//! (docs/netsim.md, finding 2). [`Conns`] keeps the count near [`NetParams::max_peers`]: when more
//! peers are connected, the least recently used ones are closed, except protected peers:
//!
//! - peers with a request in flight, either way (any of btd's request-response protocols);
//! - peers connected or used within [`GRACE`] (a Kademlia query or a join's first exchange);
//! - peers this node relays for (a reservation or a circuit), and relays carrying one of our
//!   relayed connections;
//! - what the caller protects: gossipsub mesh peers ([`super::Net::trim`]), and the node's owners
//!   of joined programs, joins in progress and relays it holds a reservation on.
//!
//! So the bound is `max_peers` plus protected peers, which are themselves bounded (the gossip mesh
//! by gossipsub's `mesh_n_high` per topic, requests by the streams each protocol allows). The
//! hard cap of libp2p's `connection_limits` stays behind it.
//!
//! [`NetParams::max_peers`]: super::NetParams::max_peers

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::PeerId;

/// A new connection, and a peer used for a request, is not closed for this long.
pub(crate) const GRACE: Duration = Duration::from_secs(10);

/// What the node knows of one connected peer.
#[derive(Debug)]
struct Peer {
    /// Open connections, each with the relay it runs through (relayed connections).
    connections: Vec<(ConnectionId, Option<PeerId>)>,
    /// When the first of them was established.
    since: Instant,
    /// The last request sent to or received from the peer (or `since`).
    last_used: Instant,
    /// Being closed by a trim: no longer counted against the bound.
    closing: bool,
}

/// Open connections by peer, their use, and the bound.
#[derive(Debug)]
pub(crate) struct Conns {
    max_peers: usize,
    grace: Duration,
    peers: HashMap<PeerId, Peer>,
    /// Requests in flight by peer (sent and received), whether or not it is connected yet.
    requests: HashMap<PeerId, u32>,
    /// Reservations and circuits this node (as a relay) holds for each peer.
    relaying: HashMap<PeerId, u32>,
}

impl Conns {
    /// A bound of `max_peers` connected peers beyond the protected ones.
    pub(crate) fn new(max_peers: usize) -> Self {
        Self::with_grace(max_peers, GRACE)
    }

    /// As [`Conns::new`] with another grace period (tests).
    pub(crate) fn with_grace(max_peers: usize, grace: Duration) -> Self {
        Self {
            max_peers,
            grace,
            peers: HashMap::new(),
            requests: HashMap::new(),
            relaying: HashMap::new(),
        }
    }

    /// The bound.
    pub(crate) fn max_peers(&self) -> usize {
        self.max_peers
    }

    /// Connected peers not being closed.
    pub(crate) fn counted(&self) -> usize {
        self.peers.values().filter(|p| !p.closing).count()
    }

    /// Whether the node is at or above its bound (so it should not dial peers it does not need).
    pub(crate) fn full(&self) -> bool {
        self.counted() >= self.max_peers
    }

    /// A connection was established; `via` is the relay of a relayed connection.
    pub(crate) fn established(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        via: Option<PeerId>,
        now: Instant,
    ) {
        let p = self.peers.entry(peer).or_insert(Peer {
            connections: Vec::new(),
            since: now,
            last_used: now,
            closing: false,
        });
        p.connections.push((id, via));
    }

    /// A connection closed.
    pub(crate) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        let gone = self.peers.get_mut(&peer).is_none_or(|p| {
            p.connections.retain(|(c, _)| *c != id);
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

    /// The peers to disconnect now to get back to the bound: the least recently used of the
    /// unprotected ones (`keep` protects more). They are marked as closing.
    pub(crate) fn trim(&mut self, now: Instant, keep: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
        let excess = self.counted().saturating_sub(self.max_peers);
        if excess == 0 {
            return Vec::new();
        }
        let relays: HashSet<PeerId> = self
            .peers
            .values()
            .flat_map(|p| p.connections.iter().filter_map(|(_, via)| *via))
            .collect();
        let mut candidates: Vec<(Instant, Instant, PeerId)> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                !p.closing
                    && now.saturating_duration_since(p.last_used) >= self.grace
                    && !self.requests.contains_key(id)
                    && !self.relaying.contains_key(id)
                    && !relays.contains(id)
                    && !keep(id)
            })
            .map(|(id, p)| (p.last_used, p.since, *id))
            .collect();
        candidates.sort_unstable();
        candidates.truncate(excess);
        let out: Vec<PeerId> = candidates.into_iter().map(|(_, _, id)| id).collect();
        for id in &out {
            if let Some(p) = self.peers.get_mut(id) {
                p.closing = true;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    #[test]
    fn trims_the_least_recently_used_unprotected_peers_down_to_the_bound() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(60);
        let mut c = Conns::new(3);
        let peers: Vec<PeerId> = (0..8).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate().take(7) {
            c.established(*p, conn(i), None, t0 + Duration::from_secs(i as u64));
        }
        // 0 has a request in flight, 1 is protected by the caller, 2 was used recently, 7 is new.
        c.request_started(peers[0], t0);
        c.request_started(peers[2], later - Duration::from_secs(1));
        c.request_ended(peers[2], later - Duration::from_secs(1));
        c.established(peers[7], conn(70), None, later);
        let keep = peers[1];
        let out = c.trim(later, |p| *p == keep);
        // 8 connected, bound 3: five to close, from the oldest unprotected (3, 4, 5, 6) only.
        assert_eq!(out, vec![peers[3], peers[4], peers[5], peers[6]]);
        // Closing peers are not counted again: one more to go once the caller stops protecting 1.
        assert_eq!(c.counted(), 4);
        assert_eq!(c.trim(later, |_| false), vec![peers[1]]);
        assert_eq!(c.counted(), 3);
        for (i, p) in out.iter().enumerate() {
            c.closed(*p, conn(3 + i));
        }
        assert_eq!(c.peers.len(), 4, "1 is closing, 0, 2 and 7 stay");
    }

    #[test]
    fn nothing_is_trimmed_at_or_under_the_bound() {
        let t0 = Instant::now();
        let mut c = Conns::with_grace(2, Duration::ZERO);
        c.established(PeerId::random(), conn(1), None, t0);
        c.established(PeerId::random(), conn(2), None, t0);
        assert!(c.full());
        assert!(c.trim(t0 + Duration::from_secs(60), |_| false).is_empty());
    }

    #[test]
    fn relays_in_use_and_relayed_for_peers_are_kept() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(60);
        let mut c = Conns::with_grace(0, Duration::ZERO);
        let (relay, behind, served, other) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        c.established(relay, conn(1), None, t0);
        c.established(behind, conn(2), Some(relay), t0);
        c.established(served, conn(3), None, t0);
        c.established(other, conn(4), None, t0);
        c.relay_started(served);
        let mut out = c.trim(later, |_| false);
        out.sort();
        let mut want = vec![behind, other];
        want.sort();
        assert_eq!(out, want);
        // Once the relayed connection and the reservation are gone, both go too.
        c.closed(behind, conn(2));
        c.closed(other, conn(4));
        c.relay_ended(served);
        let mut out = c.trim(later, |_| false);
        out.sort();
        let mut want = vec![relay, served];
        want.sort();
        assert_eq!(out, want);
    }

    #[test]
    fn request_counts_survive_a_peer_not_yet_connected() {
        let t0 = Instant::now();
        let mut c = Conns::with_grace(0, Duration::ZERO);
        let p = PeerId::random();
        c.request_started(p, t0);
        c.established(p, conn(1), None, t0);
        assert!(c.trim(t0, |_| false).is_empty());
        c.request_ended(p, t0);
        assert_eq!(c.trim(t0, |_| false), vec![p]);
        c.closed(p, conn(1));
        assert!(c.peers.is_empty() && c.requests.is_empty());
    }
}
