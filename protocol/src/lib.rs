//! btd's sans-IO core.
//!
//! Every rule btd keeps lives here exactly once, as pure code: no tokio, no sockets, no clocks and no
//! global RNG. Time is passed in as a [`Timestamp`] and randomness as an RNG argument, so the daemon
//! executes these rules and netsim can drive them with virtual time.
//!
//! | module | rule |
//! |---|---|
//! | [`program`] | the research-program manifest, its validation and its content-addressed id |
//! | [`kb`] | the knowledge base: KEEP rule, champion, impact, payouts |
//! | [`membership`] | the device-code handshake (RFC 8628 semantics), credentials, revocation |
//! | [`owner`] | the owner of a program as a state machine: every owner rule, effects to persist and send |
//! | [`discovery`] | which programs a node remembers from the mesh: per-owner and global caps, eviction |
//! | [`dispatch`] | compute governance: rungs, policy, packets, `evaluate_dispatch` |
//! | [`trace`] | result bundles, impact reads, approval receipts, traceability records |
//! | [`orp`] | a round's records as an ORP (open-research-protocol) packet; a dispatch verdict as an ORP gate |
//! | [`signed`] | `Signed<T>`: ed25519 envelopes readable only through verification |
//! | [`seal`] | sealing to an x25519 key (ECDH + HKDF-SHA256 + ChaCha20-Poly1305) |
//! | [`metric`] | the `val_bpb` metric |
//! | [`wire`] | every message the mesh carries and the one codec that frames them |

pub mod discovery;
pub mod dispatch;
pub mod hash;
mod hex32;
pub mod kb;
pub mod membership;
pub mod metric;
pub mod orp;
pub mod owner;
pub mod patch;
pub mod program;
pub mod seal;
pub mod signed;
pub mod time;
pub mod trace;
pub mod wire;

pub use hash::Digest;
pub use time::Timestamp;
