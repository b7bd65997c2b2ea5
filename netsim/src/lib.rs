//! netsim: many real btd nodes in one process, with faults, invariants and mesh metrics.
//!
//! Every node is the daemon's production core (`btd::node::spawn`: behaviour, event loop,
//! membership, KB, SQLite store in a temp dir). Only the transport differs: an in-memory byte
//! transport under Noise and Yamux whose connections run through a fault layer driven by one shared
//! [`World`] (partitions, black holes, latency, jitter, bandwidth, silent or loud crashes, resets).
//! A [`Scenario`] (TOML under `netsim/scenarios/`) says who the nodes are, what the program is, how
//! members join and produce results, and when faults happen; [`run`] plays it and returns a
//! [`Report`] with metrics and the invariants' verdicts. See `docs/netsim.md`.

mod actors;
mod check;
mod hostile;
pub mod records;
pub mod report;
pub mod roles;
mod run;
pub mod scenario;
mod sim;
mod timeline;
mod train;
pub mod transport;
pub mod world;

pub use check::Invariant;
pub use report::Report;
pub use run::{effective_seed, run};
pub use scenario::Scenario;
pub use world::World;

/// Directory of the shipped scenarios (in the source tree).
pub fn scenarios_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}
