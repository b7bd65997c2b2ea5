//! The btd daemon and command-line tool, as a library so that end-to-end tests and netsim run the
//! same code as the `btd` binary.
//!
//! - [`cli`]: the command line (offline tools and the control-socket client).
//! - [`home`], [`config`]: the home directory (identity key, config, database, socket).
//! - [`store`]: SQLite behind one actor thread; an acknowledged write is durable.
//! - [`net`]: the libp2p stack; the only module that sees libp2p's swarm events.
//! - [`node`]: the daemon's core: one task owns the swarm and the program state.
//! - [`control`]: the local control socket the CLI talks to.
//! - [`harness`]: child `btd start` processes (for `btd demo` and the end-to-end tests).
//! - `testkit` (feature `testkit`): in-process nodes and attacker probes for tests, benches and
//!   netsim; not part of the product.

pub mod blobs;
pub mod cli;
pub mod client;
mod compute_cmd;
pub mod config;
pub mod control;
mod daemon_cmd;
mod demo;
pub mod harness;
pub mod home;
pub mod net;
pub mod node;
mod offline;
mod output;
pub mod poll;
pub mod start;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod verify;
pub mod work;

/// The current wall-clock time as a protocol [`btd_protocol::Timestamp`]. The daemon reads the clock
/// here and nowhere else.
pub fn now() -> btd_protocol::Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    btd_protocol::Timestamp::from_millis(
        ms.saturating_add(CLOCK_AHEAD_MS.load(std::sync::atomic::Ordering::Relaxed)),
    )
}

/// How far [`now`] runs ahead of the wall clock: always 0 in the daemon; moved only by
/// `testkit::advance_clock` (feature `testkit`), so in-process tests can reach a 15-minute expiry
/// without waiting.
static CLOCK_AHEAD_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
