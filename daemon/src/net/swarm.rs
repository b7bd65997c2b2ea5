//! [`Net`]: the swarm, the outstanding requests, and the translation of libp2p's events into
//! [`NetEvent`]s.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use btd_protocol::wire::{
    ApprovalRequest, ApprovalResponse, BlobRequest, BlobResponse, KbRequest, KbResponse,
    MembershipRequest, MembershipResponse,
};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, kad, mdns, relay, Multiaddr, PeerId, Swarm};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::behaviour::{KBUCKET_SIZE, MAX_RECORD_BYTES};
use super::conns::Conns;
use super::events::{
    Answer, GossipMessage, Inbound, Lookup, NetEvent, OfferedRecord, PeerInfo, Responder, Tags,
    Topic,
};

/// Gossip mesh peers spared by [`Net::trim`], per topic: gossipsub's default target mesh size.
const MESH_KEEP: usize = 6;

/// The relay v2 hop protocol: a peer that speaks it can relay for us.
const RELAY_HOP: &str = "/libp2p/circuit/relay/0.2.0/hop";

/// The swarm and what our outstanding requests were for. Owned by the node task: the node calls
/// its methods to act on the network and awaits [`Net::next_event`] for what happened.
pub struct Net<T: Tags> {
    swarm: Swarm<Behaviour>,
    membership: HashMap<OutboundRequestId, T::Membership>,
    kb: HashMap<OutboundRequestId, T::Kb>,
    approval: HashMap<OutboundRequestId, T::Approval>,
    blob: HashMap<OutboundRequestId, T::Blob>,
    /// libp2p's metrics: every swarm and behaviour event is recorded before it is translated.
    metrics: crate::metrics::Metrics,
}

impl<T: Tags> std::fmt::Debug for Net<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("peer_id", self.swarm.local_peer_id())
            .field(
                "outstanding",
                &(self.membership.len() + self.kb.len() + self.approval.len() + self.blob.len()),
            )
            .finish()
    }
}

/// A response type of one of btd's request-response protocols.
pub trait WireResponse: Sized {
    /// Sends `resp` on `channel` through the matching behaviour; gives it back if the requester
    /// went away.
    fn send(b: &mut Behaviour, channel: Responder<Self>, resp: Self) -> Result<(), Self>;
}

macro_rules! wire_response {
    ($resp:ty, $field:ident) => {
        impl WireResponse for $resp {
            fn send(b: &mut Behaviour, channel: Responder<Self>, resp: Self) -> Result<(), Self> {
                b.$field.send_response(channel.0, resp)
            }
        }
    };
}

wire_response!(MembershipResponse, membership);
wire_response!(KbResponse, kb);
wire_response!(ApprovalResponse, approval);
wire_response!(BlobResponse, blob);

fn ident(topic: Topic) -> IdentTopic {
    IdentTopic::new(topic.name())
}

impl<T: Tags> Net<T> {
    /// Wraps a built swarm ([`super::build_swarm`]); its events are recorded in `metrics`;
    /// [`Net::trim`] keeps about `max_peers` peers connected ([`super::NetParams::max_peers`]).
    pub fn new(swarm: Swarm<Behaviour>, metrics: crate::metrics::Metrics) -> Self {
        Self {
            swarm,
            membership: HashMap::new(),
            kb: HashMap::new(),
            approval: HashMap::new(),
            blob: HashMap::new(),
            metrics,
        }
    }

    /// The next event the node cares about. Cancel-safe: an event is translated and returned in the
    /// same poll that takes it from the swarm.
    pub async fn next_event(&mut self) -> NetEvent<T> {
        loop {
            let event = self.swarm.select_next_some().await;
            if let Some(event) = self.translate(event) {
                return event;
            }
        }
    }

    // --- requests ---

    /// Sends a membership request; its outcome comes back as [`NetEvent::Membership`] with `tag`.
    pub fn request_membership(&mut self, peer: PeerId, req: MembershipRequest, tag: T::Membership) {
        let id = self
            .swarm
            .behaviour_mut()
            .membership
            .send_request(&peer, req);
        self.swarm
            .behaviour_mut()
            .conns
            .request_started(peer, Instant::now());
        self.membership.insert(id, tag);
    }

    /// Sends a KB request; its outcome comes back as [`NetEvent::Kb`] with `tag`.
    pub fn request_kb(&mut self, peer: PeerId, req: KbRequest, tag: T::Kb) {
        let id = self.swarm.behaviour_mut().kb.send_request(&peer, req);
        self.swarm
            .behaviour_mut()
            .conns
            .request_started(peer, Instant::now());
        self.kb.insert(id, tag);
    }

    /// Sends an approval request; its outcome comes back as [`NetEvent::Approval`] with `tag`.
    pub fn request_approval(&mut self, peer: PeerId, req: ApprovalRequest, tag: T::Approval) {
        let id = self.swarm.behaviour_mut().approval.send_request(&peer, req);
        self.swarm
            .behaviour_mut()
            .conns
            .request_started(peer, Instant::now());
        self.approval.insert(id, tag);
    }

    /// Sends a blob request; its outcome comes back as [`NetEvent::Blob`] with `tag`.
    pub fn request_blob(&mut self, peer: PeerId, req: BlobRequest, tag: T::Blob) {
        let id = self.swarm.behaviour_mut().blob.send_request(&peer, req);
        self.swarm
            .behaviour_mut()
            .conns
            .request_started(peer, Instant::now());
        self.blob.insert(id, tag);
    }

    /// The tags of the KB requests still waiting for an outcome.
    pub fn outstanding_kb(&self) -> impl Iterator<Item = &T::Kb> {
        self.kb.values()
    }

    /// Answers an inbound request. False if the requester went away (the answer is dropped).
    pub fn respond<R: WireResponse>(&mut self, to: Responder<R>, resp: R) -> bool {
        R::send(self.swarm.behaviour_mut(), to, resp).is_ok()
    }

    // --- gossip and the DHT ---

    /// Subscribes to a gossip topic.
    pub fn subscribe(&mut self, topic: Topic) -> Result<(), gossipsub::SubscriptionError> {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&ident(topic))
            .map(|_| ())
    }

    /// Publishes on a gossip topic (fails with no subscribed peer; callers retry later).
    pub fn publish(&mut self, topic: Topic, data: Vec<u8>) -> Result<(), gossipsub::PublishError> {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(ident(topic), data)
            .map(|_| ())
    }

    /// Reports the node's verdict on a gossip message: only accepted messages are forwarded.
    pub fn validate(&mut self, id: &MessageId, source: &PeerId, verdict: MessageAcceptance) {
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, verdict);
    }

    /// Stores a record in the DHT (locally and at the peers closest to its key); the outcome comes
    /// back as [`NetEvent::Stored`].
    pub fn put_record(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<kad::QueryId, kad::store::Error> {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let query = kad.put_record(
            kad::Record::new(kad::RecordKey::new(&key), value),
            kad::Quorum::One,
        );
        self.follow_queries();
        query
    }

    /// Keeps a record a peer offered ([`NetEvent::RecordOffered`]) in this node's part of the DHT.
    pub fn store_record(&mut self, record: OfferedRecord) -> Result<(), kad::store::Error> {
        use kad::store::RecordStore;
        self.swarm.behaviour_mut().kad.store_mut().put(record.0)
    }

    /// Drops a record from this node's part of the DHT.
    pub fn forget_record(&mut self, key: &[u8]) {
        use kad::store::RecordStore;
        self.swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .remove(&kad::RecordKey::new(&key));
    }

    /// The value this node keeps in the DHT under `key` (tests).
    pub fn local_record(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        use kad::store::RecordStore;
        self.swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .get(&kad::RecordKey::new(&key))
            .map(|r| r.value.clone())
    }

    /// How many records this node keeps in the DHT (tests).
    pub fn local_record_count(&mut self) -> usize {
        use kad::store::RecordStore;
        self.swarm.behaviour_mut().kad.store_mut().records().count()
    }

    /// Looks a record up in the DHT; its steps come back as [`NetEvent::Lookup`].
    pub fn get_record(&mut self, key: &[u8]) -> kad::QueryId {
        let query = self
            .swarm
            .behaviour_mut()
            .kad
            .get_record(kad::RecordKey::new(&key));
        self.follow_queries();
        query
    }

    /// Tells the connection bound whether a record query runs (its dials may go up to the bound;
    /// Kademlia's own upkeep stops at the low-water mark, `net/conns.rs`).
    fn follow_queries(&mut self) {
        let b = self.swarm.behaviour_mut();
        let looking = b
            .kad
            .iter_queries()
            .any(|q| !matches!(q.info(), kad::QueryInfo::Bootstrap { .. }));
        b.conns.set_looking(looking);
    }

    /// Ends a DHT query early (a good record was found).
    pub fn finish_query(&mut self, query: kad::QueryId) {
        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&query) {
            q.finish();
        }
    }

    /// Tells the DHT where `peer` can be reached.
    ///
    /// Only into a bucket with room, or for a peer already in the table: Kademlia answers an
    /// insert into a full bucket by dialling the bucket's oldest disconnected entry to see whether
    /// it lives, and with the connection bound closing idle connections those are many. Each such
    /// dial is a new connection whose peer may in turn find a full bucket: the re-dial storm of
    /// docs/netsim.md, finding 2. Peers only enter the table this way (`BucketInserts::Manual`).
    pub fn add_dht_address(&mut self, peer: PeerId, addr: Multiaddr) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let room = kad.kbucket(peer).is_none_or(|b| {
            b.num_entries() < KBUCKET_SIZE && !b.has_pending()
                || b.iter().any(|e| e.node.key.preimage() == &peer)
        });
        if room {
            kad.add_address(&peer, addr);
        }
    }

    // --- connections and addresses ---

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Dials an address.
    pub fn dial(&mut self, addr: Multiaddr) -> Result<(), libp2p::swarm::DialError> {
        // Dialled on purpose: admitted past the connection bound.
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            self.swarm.behaviour_mut().conns.want(peer, Instant::now());
        }
        self.swarm.dial(addr)
    }

    /// Starts listening on an address (or through a relay circuit).
    pub fn listen_on(
        &mut self,
        addr: Multiaddr,
    ) -> Result<(), libp2p::TransportError<std::io::Error>> {
        self.swarm.listen_on(addr).map(|_| ())
    }

    /// Tells the swarm where `peer` can be reached (for requests that must dial it).
    pub fn add_peer_address(&mut self, peer: PeerId, addr: Multiaddr) {
        self.swarm.add_peer_address(peer, addr);
    }

    /// Declares an address of ours as reachable by others.
    pub fn add_external_address(&mut self, addr: Multiaddr) {
        self.swarm.add_external_address(addr);
    }

    /// Whether any connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.swarm.is_connected(peer)
    }

    /// Peers with an open connection.
    pub fn connected_peers(&self) -> impl Iterator<Item = &PeerId> {
        self.swarm.connected_peers()
    }

    /// Whether this node has as many peers connected as its bound: dial only peers it needs.
    pub fn at_bound(&self) -> bool {
        self.swarm.behaviour().conns.full()
    }

    /// Whether this node serves others (it owns a program or relays): it then admits every
    /// inbound connection (`net/conns.rs`).
    pub fn set_serving(&mut self, serving: bool) {
        self.swarm.behaviour_mut().conns.set_serving(serving);
    }

    /// Keeps the connection bound ([`super::NetParams::max_peers`], `net/conns.rs`): `protected`
    /// (owners of joined programs, joins in progress, relays holding our reservation) get in and
    /// stay whatever the count; above the low-water mark the least recently used connections are
    /// closed, sparing also gossipsub mesh peers, peers with requests in flight, new connections
    /// and relays in use. Returns how many peers it disconnects.
    pub fn trim(&mut self, protected: HashSet<PeerId>) -> usize {
        // Up to gossipsub's target mesh size per topic: inbound GRAFTs may grow a mesh to 12,
        // and a mesh peer closed beyond the target is replaced from the peers kept.
        let gossip = &self.swarm.behaviour().gossipsub;
        let mesh: HashSet<PeerId> = gossip
            .topics()
            .flat_map(|t| gossip.mesh_peers(t).take(MESH_KEEP))
            .copied()
            .collect();
        let conns = &mut self.swarm.behaviour_mut().conns;
        conns.set_keep(protected, mesh);
        let victims = conns.trim(Instant::now());
        let connected = conns.counted();
        for peer in &victims {
            // Err: already gone (its close event is on the way).
            let _ = self.swarm.disconnect_peer_id(*peer);
        }
        if !victims.is_empty() {
            tracing::debug!(closed = victims.len(), connected, "connections trimmed");
        }
        victims.len()
    }

    /// Addresses we listen on.
    pub fn listeners(&self) -> impl Iterator<Item = &Multiaddr> {
        self.swarm.listeners()
    }

    /// Our confirmed external addresses.
    pub fn external_addresses(&self) -> impl Iterator<Item = &Multiaddr> {
        self.swarm.external_addresses()
    }

    // --- translation ---

    fn translate(&mut self, event: SwarmEvent<BehaviourEvent>) -> Option<NetEvent<T>> {
        record(self.metrics.libp2p(), &event);
        self.count(&event);
        match event {
            SwarmEvent::Behaviour(e) => self.behaviour_event(e),
            SwarmEvent::NewListenAddr { address, .. } => Some(NetEvent::ListenAddr(address)),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => Some(NetEvent::Connected {
                peer: peer_id,
                connection: connection_id,
                addr: endpoint.get_remote_address().clone(),
            }),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => Some(NetEvent::Disconnected {
                peer: peer_id,
                connection: connection_id,
            }),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, error = %error, "dial failed");
                None
            }
            SwarmEvent::ListenerClosed { addresses, .. } => {
                tracing::debug!(?addresses, "listener closed");
                None
            }
            _ => None,
        }
    }

    /// Follows requests and relay use for the connection bound (connections it follows itself).
    fn count(&mut self, event: &SwarmEvent<BehaviourEvent>) {
        use request_response::Event as Rr;
        // Every inbound request ends with `ResponseSent` or `InboundFailure`, every outbound one
        // with a response or `OutboundFailure`.
        fn rr<Req, Resp>(c: &mut Conns, e: &Rr<Req, Resp>, now: Instant) {
            match e {
                Rr::Message {
                    peer,
                    message: request_response::Message::Request { .. },
                    ..
                } => c.request_started(*peer, now),
                Rr::Message { peer, .. }
                | Rr::OutboundFailure { peer, .. }
                | Rr::InboundFailure { peer, .. }
                | Rr::ResponseSent { peer, .. } => c.request_ended(*peer, now),
            }
        }
        let SwarmEvent::Behaviour(e) = event else {
            return;
        };
        if let BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { .. }) = e {
            // A finished query has left kad's pool by the time its last step is reported.
            self.follow_queries();
        }
        let now = Instant::now();
        let c = &mut self.swarm.behaviour_mut().conns;
        match e {
            BehaviourEvent::Membership(e) => rr(c, e, now),
            BehaviourEvent::Kb(e) => rr(c, e, now),
            BehaviourEvent::Approval(e) => rr(c, e, now),
            BehaviourEvent::Blob(e) => rr(c, e, now),
            BehaviourEvent::Relay(e) => relayed(c, e),
            _ => {}
        }
    }

    fn behaviour_event(&mut self, event: BehaviourEvent) -> Option<NetEvent<T>> {
        match event {
            BehaviourEvent::Membership(e) => exchange(
                &mut self.membership,
                e,
                "membership",
                Inbound::Membership,
                NetEvent::Membership,
            ),
            BehaviourEvent::Kb(e) => exchange(&mut self.kb, e, "KB", Inbound::Kb, NetEvent::Kb),
            BehaviourEvent::Approval(e) => exchange(
                &mut self.approval,
                e,
                "approval",
                Inbound::Approval,
                NetEvent::Approval,
            ),
            BehaviourEvent::Blob(e) => {
                exchange(&mut self.blob, e, "blob", Inbound::Blob, NetEvent::Blob)
            }
            BehaviourEvent::Gossipsub(e) => gossip(e),
            BehaviourEvent::Identify(e) => identified(e),
            BehaviourEvent::Kad(e) => lookup(e),
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => Some(NetEvent::Discovered(list)),
            _ => None,
        }
    }
}

/// The relay a relayed connection runs through: the peer named before `/p2p-circuit`.
pub(super) fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut relay = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(peer) => relay = Some(peer),
            Protocol::P2pCircuit => return relay,
            _ => {}
        }
    }
    None
}

/// A relay server's reservations and circuits, for the connection bound.
fn relayed(c: &mut Conns, e: &relay::Event) {
    use relay::Event as E;
    match e {
        E::ReservationReqAccepted {
            src_peer_id,
            renewed: false,
        } => c.relay_started(*src_peer_id),
        E::ReservationClosed { src_peer_id } | E::ReservationTimedOut { src_peer_id } => {
            c.relay_ended(*src_peer_id)
        }
        E::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => {
            c.relay_started(*src_peer_id);
            c.relay_started(*dst_peer_id);
        }
        E::CircuitClosed {
            src_peer_id,
            dst_peer_id,
            ..
        } => {
            c.relay_ended(*src_peer_id);
            c.relay_ended(*dst_peer_id);
        }
        _ => {}
    }
}

/// Records a swarm event, and the event of the behaviour it carries, in libp2p's metrics.
fn record(m: &libp2p::metrics::Metrics, event: &SwarmEvent<BehaviourEvent>) {
    m.record(event);
    let SwarmEvent::Behaviour(e) = event else {
        return;
    };
    match e {
        BehaviourEvent::Gossipsub(e) => m.record(e),
        BehaviourEvent::Identify(e) => m.record(e),
        BehaviourEvent::Kad(e) => m.record(e),
        BehaviourEvent::Relay(e) => m.record(e),
        BehaviourEvent::Ping(e) => m.record(e),
        BehaviourEvent::Dcutr(e) => m.record(e),
        _ => {}
    }
}

/// One request-response event, translated: a peer's request (wrapped by `inbound`), or the
/// outcome of one of ours with its tag (wrapped by `answer`).
fn exchange<T: Tags, Req, Resp, Tag>(
    pending: &mut HashMap<OutboundRequestId, Tag>,
    event: request_response::Event<Req, Resp>,
    protocol: &'static str,
    inbound: fn(Req, Responder<Resp>) -> Inbound,
    answer: fn(Answer<Tag, Resp>) -> NetEvent<T>,
) -> Option<NetEvent<T>> {
    use request_response::{Event, Message};
    match event {
        Event::Message { peer, message, .. } => match message {
            Message::Request {
                request, channel, ..
            } => Some(NetEvent::Inbound {
                peer,
                request: inbound(request, Responder(channel)),
            }),
            Message::Response {
                request_id,
                response,
            } => pending.remove(&request_id).map(|tag| {
                answer(Answer {
                    peer,
                    tag,
                    result: Ok(response),
                })
            }),
        },
        Event::OutboundFailure {
            peer,
            request_id,
            error,
            ..
        } => pending.remove(&request_id).map(|tag| {
            answer(Answer {
                peer,
                tag,
                result: Err(error.to_string()),
            })
        }),
        Event::InboundFailure { peer, error, .. } => {
            tracing::debug!(peer = %peer, error = %error, protocol, "inbound request failed");
            None
        }
        Event::ResponseSent { .. } => None,
    }
}

fn gossip<T: Tags>(event: gossipsub::Event) -> Option<NetEvent<T>> {
    match event {
        gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } => Some(NetEvent::Gossip(GossipMessage {
            id: message_id,
            propagation_source,
            source: message.source,
            topic: Topic::of(&message.topic),
            data: message.data,
        })),
        gossipsub::Event::Subscribed { peer_id, topic, .. } => {
            Topic::of(&topic).map(|topic| NetEvent::Subscribed {
                peer: peer_id,
                topic,
            })
        }
        _ => None,
    }
}

fn identified<T: Tags>(event: identify::Event) -> Option<NetEvent<T>> {
    let identify::Event::Received { peer_id, info, .. } = event else {
        return None;
    };
    Some(NetEvent::Identified(PeerInfo {
        peer: peer_id,
        relay: info.protocols.iter().any(|p| p.as_ref() == RELAY_HOP),
        agent_version: info.agent_version,
        protocol_version: info.protocol_version,
        listen_addrs: info.listen_addrs,
    }))
}

fn lookup<T: Tags>(event: kad::Event) -> Option<NetEvent<T>> {
    let (id, result, step) = match event {
        kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } => (id, result, step),
        kad::Event::InboundRequest {
            request:
                kad::InboundRequest::PutRecord {
                    source,
                    record: Some(record),
                    ..
                },
        } => {
            if record.value.len() > MAX_RECORD_BYTES {
                tracing::debug!(peer = %source, bytes = record.value.len(), "oversized DHT record dropped");
                return None;
            }
            return Some(NetEvent::RecordOffered {
                peer: source,
                record: OfferedRecord(record),
            });
        }
        _ => return None,
    };
    let result = match result {
        kad::QueryResult::GetRecord(result) => result,
        kad::QueryResult::PutRecord(result) => {
            return Some(NetEvent::Stored {
                query: id,
                result: result.map(|_| ()).map_err(|e| e.to_string()),
            });
        }
        _ => return None,
    };
    let step = match result {
        Ok(kad::GetRecordOk::FoundRecord(peer_record)) => Lookup::Found {
            value: peer_record.record.value,
            last: step.last,
        },
        Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => Lookup::NotFound,
        Err(e) => Lookup::Failed(e.to_string()),
    };
    Some(NetEvent::Lookup { query: id, step })
}
