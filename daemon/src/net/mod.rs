//! The libp2p stack, and the boundary between libp2p and btd. This is the only module that sees
//! libp2p's swarm and behaviour events: [`Net`] owns the swarm and the outstanding requests and
//! turns what happens into btd's [`NetEvent`]s (a peer's request with its [`Responder`], the
//! outcome of one of our requests with the tag it was sent with, gossip, peer info, DHT lookups,
//! connections).

pub mod behaviour;
pub mod codec;
mod conns;
mod events;
#[cfg(feature = "testkit")]
pub mod raw;
mod swarm;

pub use behaviour::{build_swarm, Behaviour, NetParams, TransportKind};
pub use events::{
    Answer, GossipMessage, Inbound, Lookup, NetEvent, OfferedRecord, PeerInfo, Responder, Tags,
    Topic,
};
pub use libp2p::gossipsub::MessageAcceptance;
pub use libp2p::kad::QueryId;
pub use libp2p::swarm::ConnectionId;
pub use swarm::{Net, WireResponse};
