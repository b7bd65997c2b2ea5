//! `btd start`: run the daemon in the foreground until SIGINT, SIGTERM or `btd stop`, or until the
//! node task dies (then it exits non-zero with the reason).

use anyhow::{anyhow, Context, Result};
use libp2p::Multiaddr;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};

use crate::config::Config;
use crate::home::Home;
use crate::net::{NetParams, TransportKind};
use crate::node::{self, NodeConfig};
use crate::store::Store;
use crate::work::WorkContext;

/// How long `btd stop` waits for worker loops to record their cancelled rounds.
const STOP_DRAIN: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// `--http`: serve the dashboard here.
    pub http: Option<std::net::SocketAddr>,
    /// `--http-token`.
    pub http_token: Option<String>,
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
    // The dashboard's settings and port are checked before anything starts.
    let web = match flags.http {
        Some(addr) => {
            let access = crate::web::check_settings(addr, flags.http_token.as_deref())?;
            Some((crate::web::bind(addr).await?, access))
        }
        None => None,
    };
    let key = home.load_or_create_identity()?;
    // Records name their directories absolutely: a relative --home must not make them ambiguous.
    let home_dir = std::fs::canonicalize(home.dir()).unwrap_or_else(|_| home.dir().to_path_buf());
    let store = Store::open(&home.db_path())
        .with_context(|| format!("cannot open the database {}", home.db_path().display()))?;
    // Served at `/metrics` by the web server (`btd start --http`).
    let metrics = crate::metrics::Metrics::new();
    let net = NetParams {
        relay_server: cfg.relay_server,
        mdns: cfg.mdns,
        max_peers: cfg.max_peers,
        ..NetParams::default()
    };
    let (handle, mut task) = node::spawn(
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
            metrics: metrics.clone(),
        },
        store.clone(),
    )
    .await?;
    let work = WorkContext::new(handle.clone(), store, &home_dir, cfg.rungs, cfg.slurm);
    match work.recover_interrupted().await {
        Ok(notes) => notes.iter().for_each(|n| eprintln!("btd: {n}")),
        Err(e) => eprintln!("btd: cannot check rounds interrupted by the last stop: {e}"),
    }
    let (stop_tx, mut stop_rx) = mpsc::channel(1);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let control = tokio::spawn(crate::control::serve(
        home.socket_path(),
        handle.clone(),
        work.clone(),
        stop_tx,
        shutdown_rx.clone(),
    ));
    eprintln!(
        "btd: daemon started: peer id {}, home {}",
        handle.peer_id(),
        home.dir().display()
    );
    let web = web.map(|(listener, access)| {
        if let Ok(addr) = listener.local_addr() {
            eprintln!("btd: dashboard at {}", access.url(addr));
        }
        tokio::spawn(crate::web::serve(
            listener,
            access,
            handle.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
        ))
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let stop = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted",
            _ = term.recv() => "terminated",
            _ = stop_rx.recv() => "stop requested",
        }
    };
    let outcome = supervise(&mut task, stop).await;
    let _ = shutdown_tx.send(true);
    work.cancel_all();
    // Rounds in flight stop (training at its next step, commands and Slurm jobs are killed) and
    // are recorded before the node goes.
    if !work.drain(STOP_DRAIN).await {
        eprintln!(
            "btd: worker loops did not stop within {} s; their rounds stay `running` in btd runs",
            STOP_DRAIN.as_secs()
        );
    }
    match outcome {
        Ok(why) => {
            eprintln!("btd: {why}, stopping");
            let _ = handle.shutdown().await;
            let _ = task.await;
        }
        Err(e) => {
            // No zombie: the control socket closes and the home lock is released on return.
            let _ = control.await;
            return Err(e);
        }
    }
    let _ = control.await;
    if let Some(web) = web {
        if let Ok(Err(e)) = web.await {
            eprintln!("btd: {e:#}");
        }
    }
    eprintln!("btd: stopped");
    Ok(())
}

/// Serves until `stop` says why (`Ok`), unless the node task ends first: then the daemon cannot
/// serve anything, so it returns the reason as an error (`btd start` exits non-zero) instead of
/// answering "node has stopped" to every command.
async fn supervise<S>(task: &mut JoinHandle<()>, stop: S) -> Result<&'static str>
where
    S: std::future::Future<Output = &'static str>,
{
    tokio::select! {
        biased;
        ended = &mut *task => Err(node_death(ended)),
        why = stop => Ok(why),
    }
}

/// The node task's end, in words.
fn node_death(ended: Result<(), JoinError>) -> anyhow::Error {
    match ended {
        Ok(()) => anyhow!("the node task stopped unexpectedly; restart with `btd start`"),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            anyhow!("the node task panicked: {msg}; this is a bug in btd (please report it), restart with `btd start`")
        }
        Err(e) => anyhow!("the node task was cancelled: {e}"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_node_task_ends_start_with_the_panic_message() {
        let mut task: JoinHandle<()> = tokio::spawn(async { panic!("overflow when adding") });
        let never = std::future::pending::<&'static str>();
        let err = supervise(&mut task, never).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("the node task panicked: overflow when adding"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_node_task_that_returns_early_ends_start_with_an_error() {
        let mut task: JoinHandle<()> = tokio::spawn(async {});
        let never = std::future::pending::<&'static str>();
        let err = supervise(&mut task, never).await.unwrap_err();
        assert!(format!("{err:#}").contains("stopped unexpectedly"));
    }

    #[tokio::test]
    async fn a_stop_request_while_the_node_serves_is_a_clean_stop() {
        let mut task: JoinHandle<()> = tokio::spawn(std::future::pending());
        let why = supervise(&mut task, async { "stop requested" })
            .await
            .unwrap();
        assert_eq!(why, "stop requested");
        task.abort();
    }
}
