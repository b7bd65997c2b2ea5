//! btd's network events: what [`super::Net`] makes of libp2p's swarm events. The node handles these
//! and never sees a `SwarmEvent` or a request-response event.

use btd_protocol::wire::{
    ApprovalRequest, ApprovalResponse, BlobRequest, BlobResponse, KbRequest, KbResponse,
    MembershipRequest, MembershipResponse,
};
use libp2p::gossipsub::{MessageId, TopicHash};
use libp2p::request_response::ResponseChannel;
use libp2p::swarm::ConnectionId;
use libp2p::{kad, Multiaddr, PeerId};

/// What the node remembers about each outstanding request, per protocol. [`super::Net`] keeps the
/// value until the request is answered or fails, then hands it back with the outcome.
pub trait Tags {
    /// A `/btd/membership/1` request.
    type Membership: Send + std::fmt::Debug;
    /// A `/btd/kb/1` request.
    type Kb: Send + std::fmt::Debug;
    /// A `/btd/approval/1` request.
    type Approval: Send + std::fmt::Debug;
    /// A `/btd/blob/1` request.
    type Blob: Send + std::fmt::Debug;
}

/// Where an answer to an inbound request goes: pass it to [`super::Net::respond`] with the
/// response. Dropping it without answering closes the requester's stream.
pub struct Responder<T>(pub(super) ResponseChannel<T>);

impl<T> std::fmt::Debug for Responder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

/// A request a peer sent us, with where its answer goes.
#[derive(Debug)]
pub enum Inbound {
    /// `/btd/membership/1`.
    Membership(MembershipRequest, Responder<MembershipResponse>),
    /// `/btd/kb/1`.
    Kb(KbRequest, Responder<KbResponse>),
    /// `/btd/approval/1`.
    Approval(ApprovalRequest, Responder<ApprovalResponse>),
    /// `/btd/blob/1`.
    Blob(BlobRequest, Responder<BlobResponse>),
}

/// The outcome of one of our requests: the peer's response, or why there is none (timeout, closed
/// connection, unreachable peer), in words.
#[derive(Debug)]
pub struct Answer<Tag, Resp> {
    /// The peer asked.
    pub peer: PeerId,
    /// What the request was for (as given when it was sent).
    pub tag: Tag,
    /// The response, or the transport failure.
    pub result: Result<Resp, String>,
}

/// The gossip topics btd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// `btd/programs/1`: program announcements.
    Programs,
    /// `btd/rungs/1`: rung adverts.
    Rungs,
}

/// A gossip message waiting for the node's verdict ([`super::Net::validate`]): it is forwarded
/// only once accepted.
#[derive(Debug)]
pub struct GossipMessage {
    /// Its id (to report the verdict).
    pub id: MessageId,
    /// The peer that forwarded it to us (to report the verdict).
    pub propagation_source: PeerId,
    /// Its author, per the gossipsub signature.
    pub source: Option<PeerId>,
    /// Its topic (`None`: not one of btd's).
    pub topic: Option<Topic>,
    /// The payload.
    pub data: Vec<u8>,
}

/// What a peer told us about itself (identify).
#[derive(Debug)]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// Its agent string, as sent (remote text: not yet truncated).
    pub agent_version: String,
    /// Its identify protocol version ([`super::behaviour::IDENTIFY_PROTOCOL`] for btd peers).
    pub protocol_version: String,
    /// The addresses it listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Whether it offers circuit relay (speaks the relay v2 hop protocol).
    pub relay: bool,
}

/// One step of a DHT record lookup ([`super::Net::get_record`]).
#[derive(Debug)]
pub enum Lookup {
    /// A peer returned a record; `last` says the query has finished.
    Found {
        /// The record's value.
        value: Vec<u8>,
        /// No further steps follow.
        last: bool,
    },
    /// The query finished without (further) records.
    NotFound,
    /// The query failed, in words.
    Failed(String),
}

/// A record a peer asked this node to keep in its part of the DHT. Nothing is stored unless the node
/// hands it back to [`super::Net::store_record`] (Kademlia runs with filtered inserts).
pub struct OfferedRecord(pub(super) kad::Record);

impl OfferedRecord {
    /// The record's key.
    pub fn key(&self) -> &[u8] {
        self.0.key.as_ref()
    }

    /// The record's value (at most [`super::behaviour::MAX_RECORD_BYTES`]).
    pub fn value(&self) -> &[u8] {
        &self.0.value
    }
}

impl std::fmt::Debug for OfferedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferedRecord")
            .field("bytes", &self.0.value.len())
            .finish()
    }
}

/// What happened on the network that the node cares about.
#[derive(Debug)]
pub enum NetEvent<T: Tags> {
    /// A peer sent a request.
    Inbound {
        /// The (Noise-authenticated) peer.
        peer: PeerId,
        /// The request and its responder.
        request: Inbound,
    },
    /// One of our membership requests was answered or failed.
    Membership(Answer<T::Membership, MembershipResponse>),
    /// One of our KB requests was answered or failed.
    Kb(Answer<T::Kb, KbResponse>),
    /// One of our approval requests was answered or failed.
    Approval(Answer<T::Approval, ApprovalResponse>),
    /// One of our blob requests was answered or failed.
    Blob(Answer<T::Blob, BlobResponse>),
    /// A gossip message to validate.
    Gossip(GossipMessage),
    /// A peer subscribed to one of btd's topics.
    Subscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: Topic,
    },
    /// A peer identified itself.
    Identified(PeerInfo),
    /// A step of a DHT lookup.
    Lookup {
        /// The query.
        query: kad::QueryId,
        /// What it found.
        step: Lookup,
    },
    /// A peer asked us to store a DHT record (the node validates it first).
    RecordOffered {
        /// The peer that sent it (not necessarily its author: records are replicated).
        peer: PeerId,
        /// The record.
        record: OfferedRecord,
    },
    /// One of our DHT record stores finished.
    Stored {
        /// The query ([`super::Net::put_record`]).
        query: kad::QueryId,
        /// Whether a peer stored it, or why not, in words.
        result: Result<(), String>,
    },
    /// LAN discovery found peers.
    Discovered(Vec<(PeerId, Multiaddr)>),
    /// We listen on a new address.
    ListenAddr(Multiaddr),
    /// A connection was established.
    Connected {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// The peer's address on it.
        addr: Multiaddr,
    },
    /// A connection closed.
    Disconnected {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
    },
}

impl Topic {
    /// The topic's name on the wire.
    pub fn name(self) -> &'static str {
        use btd_protocol::wire::protocols;
        match self {
            Topic::Programs => protocols::TOPIC_PROGRAMS,
            Topic::Rungs => protocols::TOPIC_RUNGS,
        }
    }

    /// The btd topic of a gossipsub topic hash, if it is one.
    pub(super) fn of(hash: &TopicHash) -> Option<Topic> {
        [Topic::Programs, Topic::Rungs]
            .into_iter()
            .find(|t| *hash == TopicHash::from_raw(t.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btd_topics_are_recognised_by_their_hash_and_others_are_not() {
        for t in [Topic::Programs, Topic::Rungs] {
            assert_eq!(Topic::of(&TopicHash::from_raw(t.name())), Some(t));
        }
        assert_eq!(Topic::of(&TopicHash::from_raw("someone/else/1")), None);
    }
}
