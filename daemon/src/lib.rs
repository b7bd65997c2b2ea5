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
pub mod clock;
mod compute_cmd;
pub mod config;
pub mod control;
mod daemon_cmd;
mod demo;
pub mod harness;
pub mod home;
pub mod metrics;
pub mod net;
pub mod node;
mod offline;
pub mod orp;
mod output;
pub mod poll;
pub mod source;
pub mod start;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod verify;
pub mod web;
pub mod work;
