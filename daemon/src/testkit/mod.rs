//! Helpers to run real btd nodes in one process on the memory transport: used by the daemon's
//! multi-node tests, its benches and netsim (the `testkit` feature; not in the product). These are
//! the production node core with a different transport, not a second implementation.

pub mod hostile;

use std::time::Duration;

use anyhow::Result;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

pub use crate::poll::wait_for;

use crate::net::{NetParams, TransportKind};
use btd_protocol::program::ProgramId;

use crate::node::types::JoinEvent;
use crate::node::{self, NodeConfig, NodeHandle};
use crate::store::Store;

/// Network tunables for in-process tests: fast gossip heartbeat, short timeouts, no AutoNAT.
pub fn test_params(relay_server: bool) -> NetParams {
    NetParams {
        relay_server,
        mdns: false,
        gossip_heartbeat: Duration::from_millis(100),
        request_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        autonat: false,
        ..NetParams::default()
    }
}

/// A fresh memory address (`/memory/N`).
pub fn memory_addr() -> Multiaddr {
    let n: u64 = rand::random::<u64>() | 1;
    Multiaddr::empty().with(Protocol::Memory(n))
}

/// A running in-process node.
#[derive(Debug)]
pub struct TestNode {
    /// Its handle.
    pub handle: NodeHandle,
    /// Its task.
    pub task: tokio::task::JoinHandle<()>,
    /// Its identity (to restart it with the same key).
    pub key: Keypair,
    /// Where it listens (empty for a node reachable only through a relay).
    pub addr: Option<Multiaddr>,
    /// Its metrics (a fresh registry per node unless the options gave one).
    pub metrics: crate::metrics::Metrics,
}

/// Options for [`spawn_node`].
#[derive(Debug, Clone, Default)]
pub struct TestNodeOptions {
    /// Reuse this identity (restart).
    pub key: Option<Keypair>,
    /// Do not listen: reachable only through relays.
    pub no_listen: bool,
    /// Offer relay.
    pub relay_server: bool,
    /// Bootstrap addresses (with /p2p/).
    pub bootstrap: Vec<Multiaddr>,
    /// Home directory for artifacts and holdouts (a node with one also runs the owner's verifier).
    pub home: Option<std::path::PathBuf>,
    /// The node's clock (default: the system clock); an [`OffsetClock`] lets a test move it.
    pub clock: Option<crate::clock::Clock>,
    /// Run no verifier even with a home: claims stay pending until the test resolves them itself
    /// (`NodeHandle::resolve`), playing the verifier.
    pub no_verifier: bool,
    /// Count into these metrics (default: a fresh registry for this node).
    pub metrics: Option<crate::metrics::Metrics>,
    /// Network tunables (default: [`test_params`]), e.g. a small request budget or outbox.
    pub params: Option<NetParams>,
}

impl TestNode {
    /// Peer id.
    pub fn peer_id(&self) -> PeerId {
        self.handle.peer_id()
    }

    /// The dialable address with `/p2p/<id>`.
    pub fn dial_addr(&self) -> Option<Multiaddr> {
        self.addr
            .clone()
            .map(|a| a.with(Protocol::P2p(self.peer_id())))
    }

    /// Stops the node and waits for it.
    pub async fn stop(self) {
        let _ = self.handle.shutdown().await;
        let _ = self.task.await;
    }

    /// Drops the node without telling peers (a crash): the task is aborted.
    pub fn crash(self) -> Keypair {
        self.task.abort();
        self.key
    }
}

/// A program that needs no files on the owner: a shell task printing `val_bpb: 1`, CPU rung only,
/// named `name` (a distinct id per name and owner), in `membership` mode (`"approval"` or
/// `"open"`). The attacker and mesh tests publish it.
pub fn shell_manifest(name: &str, membership: &str) -> String {
    format!(
        r#"name = "{name}"
objective = "a test program"
membership = "{membership}"
baseline = 5.0
required_outputs = ["metrics.json"]
[criteria]
metric = "val_bpb"
direction = "minimize"
accept = "beats-champion"
[reward]
pool = 100
token = "OBOL"
split = "by-impact"
[task]
kind = "shell"
command = "echo val_bpb: 1"
timeout_secs = 10
[[rungs]]
id = "cpu"
spend_class = "local_unmetered"
hardware = "cpu"
"#
    )
}

/// A program whose shell task's metric `score` is its searched parameter `x` (2 to 50, from 10):
/// minimised against a baseline of 100, champion takes all, `output.log` required. `command` is
/// the TOML value of `task.command` (quoted as the caller needs); `rest` is appended: the rungs,
/// and `[policy]` or `[verify]` tables. The worker-loop, ORP and Slurm tests publish it.
pub fn score_manifest(name: &str, command: &str, timeout_secs: u64, rest: &str) -> String {
    format!(
        r#"name = "{name}"
objective = "a shell task whose metric is its parameter"
baseline = 100.0
required_outputs = ["output.log"]
[criteria]
metric = "score"
direction = "minimize"
accept = "beats-champion"
[reward]
pool = 10
token = "OBOL"
split = "champion-takes-all"
[task]
kind = "shell"
command = {command}
timeout_secs = {timeout_secs}
[task.search]
x = {{ min = 2.0, max = 50.0, start = 10.0 }}
{rest}
"#
    )
}

/// A candle program on the tiny preset: baseline 8, `val_bpb` minimised, beats-champion, pool 100
/// OBOL split by impact, one local CPU rung, claims checked by re-evaluation (the default). `task`
/// is the rest of its `[task]` table (e.g. `steps`, `seed`, `eval_tokens`, then a
/// `[task.dataset]` table such as [`SYNTHETIC_16K`]); `rest` is appended (`[verify]`, `[stop]`).
pub fn candle_manifest(name: &str, objective: &str, task: &str, rest: &str) -> String {
    format!(
        r#"name = "{name}"
objective = "{objective}"
baseline = 8.0
required_outputs = ["checkpoint.safetensors"]
[criteria]
metric = "val_bpb"
direction = "minimize"
accept = "beats-champion"
[reward]
pool = 100
token = "OBOL"
split = "by-impact"
[task]
kind = "candle"
preset = "tiny"
{task}{LOCAL_CPU_RUNG}{rest}"#
    )
}

/// `[task.dataset]` on the built-in synthetic corpus (seed 5, 16 KiB), for [`candle_manifest`].
pub const SYNTHETIC_16K: &str = "[task.dataset]\nkind = \"synthetic\"\nseed = 5\nbytes = 16384\n";

/// `[[rungs]]` for one local CPU rung, for [`score_manifest`].
pub const LOCAL_CPU_RUNG: &str =
    "[[rungs]]\nid = \"cpu\"\nspend_class = \"local_unmetered\"\nhardware = \"cpu\"\n";

/// Spawns a node on the memory transport with `store`.
pub async fn spawn_node(store: Store, opts: TestNodeOptions) -> Result<TestNode> {
    let key = opts.key.unwrap_or_else(Keypair::generate_ed25519);
    let addr = (!opts.no_listen).then(memory_addr);
    let metrics = opts.metrics.clone().unwrap_or_default();
    let cfg = NodeConfig {
        key: key.clone(),
        transport: TransportKind::Memory,
        net: opts
            .params
            .clone()
            .unwrap_or_else(|| test_params(opts.relay_server)),
        listen: addr.clone().into_iter().collect(),
        bootstrap: opts.bootstrap,
        rungs: crate::config::Config::default_rungs(),
        home: opts.home.clone(),
        clock: opts.clock.clone().unwrap_or_default(),
        rng_seed: None,
        metrics: metrics.clone(),
    };
    let (handle, task) = if opts.no_verifier {
        node::spawn_without_verifier(cfg, store).await?
    } else {
        node::spawn(cfg, store).await?
    };
    Ok(TestNode {
        handle,
        task,
        key,
        addr,
        metrics,
    })
}

/// A clock that runs with the system clock, ahead by an offset the test moves: expiries (join
/// codes, receipts) can be reached without waiting. It moves only the nodes it was handed to.
#[derive(Debug, Clone, Default)]
pub struct OffsetClock {
    ahead_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl OffsetClock {
    /// A clock in step with the system clock.
    pub fn new() -> OffsetClock {
        OffsetClock::default()
    }

    /// Moves the clock ahead by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ahead_ms
            .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The node clock reading this one.
    pub fn clock(&self) -> crate::clock::Clock {
        crate::clock::Clock::new(self.clone())
    }
}

impl crate::clock::TimeSource for OffsetClock {
    fn now(&self) -> btd_protocol::Timestamp {
        let ahead = self.ahead_ms.load(std::sync::atomic::Ordering::Relaxed);
        btd_protocol::Timestamp::from_millis(
            crate::clock::system_now().as_millis().saturating_add(ahead),
        )
    }
}

/// Waits (at most `limit`) until `node` knows `program`.
pub async fn wait_known(node: &NodeHandle, program: ProgramId, limit: Duration) -> Result<()> {
    wait_for(limit, "program discovery", || async {
        let list = node.programs().await.ok()?;
        list.iter().any(|p| p.id == program).then_some(())
    })
    .await
}

/// Joins `worker` to `program`, the owner approving the code it shows; returns that user code.
pub async fn join_approved(
    owner: &NodeHandle,
    worker: &NodeHandle,
    program: ProgramId,
    limit: Duration,
) -> Result<String> {
    let mut rx = worker.join(program).await?;
    async fn next(
        rx: &mut tokio::sync::mpsc::Receiver<JoinEvent>,
        limit: Duration,
    ) -> Result<JoinEvent> {
        tokio::time::timeout(limit, rx.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no join event within {limit:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the join stream closed"))
    }
    let user_code = match next(&mut rx, limit).await? {
        JoinEvent::Code { user_code, .. } => user_code,
        other => anyhow::bail!("expected a code, got {other:?}"),
    };
    owner.approve(user_code.clone()).await?;
    match next(&mut rx, limit).await? {
        JoinEvent::Granted { .. } => Ok(user_code),
        other => anyhow::bail!("expected a grant, got {other:?}"),
    }
}

/// An owner that published a program and a member of it, each with its own home (artifacts,
/// holdouts, the owner's verifier), on the memory transport; plus the member's worker-loop context.
#[derive(Debug)]
pub struct OwnerAndMember {
    /// The owner.
    pub owner: TestNode,
    /// The member.
    pub worker: TestNode,
    /// The member's worker loop.
    pub work: std::sync::Arc<crate::work::WorkContext>,
    /// The program.
    pub program: ProgramId,
}

/// Starts an owner on `owner_store` in `owner_home`, publishes `manifest`, starts a member in
/// `worker_home` (in-memory store) and joins it, approved.
pub async fn owner_and_member(
    owner_home: &std::path::Path,
    owner_store: Store,
    worker_home: &std::path::Path,
    manifest: &str,
    limit: Duration,
) -> Result<OwnerAndMember> {
    let owner = spawn_node(
        owner_store,
        TestNodeOptions {
            home: Some(owner_home.to_path_buf()),
            ..Default::default()
        },
    )
    .await?;
    let store = Store::open_in_memory()?;
    let worker = spawn_node(
        store.clone(),
        TestNodeOptions {
            bootstrap: owner.dial_addr().into_iter().collect(),
            home: Some(worker_home.to_path_buf()),
            ..Default::default()
        },
    )
    .await?;
    let program = owner.handle.publish(manifest.to_string()).await?;
    wait_known(&worker.handle, program, limit).await?;
    join_approved(&owner.handle, &worker.handle, program, limit).await?;
    let work = crate::work::WorkContext::new(
        worker.handle.clone(),
        store,
        worker_home,
        crate::config::Config::default_rungs(),
        Default::default(),
    );
    Ok(OwnerAndMember {
        owner,
        worker,
        work,
        program,
    })
}

/// A shell round's result as a worker sends it, unsigned: its score as `output.log`, hypothesis
/// `x` (the score) and `lr`. For benches that fill an owner's log with realistic submissions.
pub fn scored_submission(
    program: ProgramId,
    nonce: [u8; 16],
    value: f64,
    lr: f64,
    created_at: btd_protocol::Timestamp,
) -> btd_protocol::wire::Submission {
    btd_protocol::wire::Submission {
        program,
        nonce,
        value,
        rung_id: "local-cpu".into(),
        outputs: vec![btd_protocol::trace::Output::of(
            "output.log",
            format!("score: {value}").as_bytes(),
        )],
        metrics: Default::default(),
        hypothesis: [("x".to_string(), value), ("lr".to_string(), lr)].into(),
        created_at,
        claim: None,
    }
}
