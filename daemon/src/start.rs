//! `btd start`: run the daemon in the foreground until SIGINT, SIGTERM or `btd stop`.

use anyhow::{Context, Result};
use libp2p::Multiaddr;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::home::Home;
use crate::net::{NetParams, TransportKind};
use crate::node::{self, NodeConfig};
use crate::store::Store;
use crate::work::WorkContext;

/// Command-line overrides for `btd start`.
#[derive(Debug, Clone, Default)]
pub struct StartFlags {
    /// `--listen` (replaces the config's list when given).
    pub listen: Vec<Multiaddr>,
    /// `--bootstrap` (added to the config's list).
    pub bootstrap: Vec<Multiaddr>,
    /// `--relay-server`.
    pub relay_server: bool,
    /// `--mdns`.
    pub mdns: bool,
}

/// Runs the daemon until it is told to stop.
pub async fn run(home: Home, flags: StartFlags) -> Result<()> {
    home.ensure_dir()?;
    let _lock = home.lock()?;
    let mut cfg = Config::load(&home.config_path())?;
    if !flags.listen.is_empty() {
        cfg.listen = flags.listen;
    }
    cfg.bootstrap.extend(flags.bootstrap);
    cfg.relay_server |= flags.relay_server;
    cfg.mdns |= flags.mdns;
    let key = home.load_or_create_identity()?;
    // Records name their directories absolutely: a relative --home must not make them ambiguous.
    let home_dir = std::fs::canonicalize(home.dir()).unwrap_or_else(|_| home.dir().to_path_buf());
    let store = Store::open(&home.db_path())
        .with_context(|| format!("cannot open the database {}", home.db_path().display()))?;
    let net = NetParams {
        relay_server: cfg.relay_server,
        mdns: cfg.mdns,
        ..NetParams::default()
    };
    let (handle, task) = node::spawn(
        NodeConfig {
            key,
            transport: TransportKind::Production,
            net,
            listen: cfg.listen,
            bootstrap: cfg.bootstrap,
            rungs: cfg.rungs.clone(),
            home: Some(home_dir.clone()),
            clock: crate::clock::Clock::system(),
            rng_seed: None,
        },
        store.clone(),
    )
    .await?;
    let work = WorkContext::new(handle.clone(), store, &home_dir, cfg.rungs);
    let (stop_tx, mut stop_rx) = mpsc::channel(1);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let control = tokio::spawn(crate::control::serve(
        home.socket_path(),
        handle.clone(),
        work.clone(),
        stop_tx,
        shutdown_rx,
    ));
    eprintln!(
        "btd: daemon started: peer id {}, home {}",
        handle.peer_id(),
        home.dir().display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("btd: interrupted, stopping"),
        _ = term.recv() => eprintln!("btd: terminated, stopping"),
        _ = stop_rx.recv() => eprintln!("btd: stop requested, stopping"),
    }
    let _ = shutdown_tx.send(true);
    work.cancel_all();
    let _ = handle.shutdown().await;
    let _ = task.await;
    let _ = control.await;
    eprintln!("btd: stopped");
    Ok(())
}

/// Logs to stderr; `RUST_LOG` overrides the default (`info` for btd, `warn` for libraries).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,btd=info"));
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
