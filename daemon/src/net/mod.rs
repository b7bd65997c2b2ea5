//! The libp2p stack. This is the only module that imports libp2p's behaviour and swarm event types;
//! the node core sees [`behaviour::Behaviour`] through the methods it needs.

pub mod behaviour;
pub mod codec;

pub use behaviour::{build_swarm, Behaviour, BehaviourEvent, NetParams, TransportKind};
