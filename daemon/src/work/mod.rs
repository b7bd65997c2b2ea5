//! The worker loop: after `btd join`, bounded rounds of the program's task.
//!
//! Each round: build the program's compute packet for this node's rung (chosen by
//! [`btd_protocol::dispatch::choose_rung`]); [`evaluate_dispatch`] it with the owner as the only
//! trusted approver; get a receipt from the owner when the rung is paid (automatically for a
//! pre-approved rung, after `btd approve-spend` otherwise); draw a hypothesis from the program's
//! search space around the champion's (seeded by program, member and round); run it (candle
//! training or the shell command) in the round's directory; persist a [`ResultBundle`]; submit
//! value, hypothesis, outputs, metrics and the claim to the owner's KB; persist the [`ImpactRead`]
//! of the verdict ([`ImpactRead::from_receipt`]) and the [`TraceabilityRecord`] linking decision,
//! rung, packet, receipt, bundle and impact. `hold_packet` stops the loop and says why.
//!
//! The loop runs in the daemon (not in the CLI): a `btd join --rounds N` that disconnects does not
//! stop it. Records are written to SQLite (durable before the CLI hears of them) and as JSON files
//! next to the round's outputs.
//!
//! This file holds the public types and [`run_rounds`]; the steps live beside it:
//! - `round.rs`: preparing the loop (membership, rung, dataset, task) and running its rounds;
//! - `dispatch.rs`: admitting a packet, with the owner's approval receipt for paid rungs;
//! - `kb.rs`: what the loop reads back from the owner (champion hypothesis, verdicts);
//! - `dataset.rs`: fetching the program's dataset from the owner;
//! - `hand.rs`: the task and the owner's scoring for work done by hand (`btd train --program`,
//!   `btd submit --checkpoint`);
//! - `records.rs`: [`RunRecord`], [`WorkSummary`] and their persistence;
//! - `run.rs`: running the task itself on a blocking thread.
//!
//! [`evaluate_dispatch`]: btd_protocol::dispatch::evaluate_dispatch
//! [`ResultBundle`]: btd_protocol::trace::ResultBundle
//! [`ImpactRead`]: btd_protocol::trace::ImpactRead
//! [`ImpactRead::from_receipt`]: btd_protocol::trace::ImpactRead::from_receipt
//! [`TraceabilityRecord`]: btd_protocol::trace::TraceabilityRecord

mod checkout;
mod code;
mod dataset;
mod dispatch;
mod hand;
mod kb;
mod records;
mod round;
mod run;
mod slurm;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use btd_protocol::dispatch::{Action, Rung};
use btd_protocol::kb::Check;
use btd_protocol::program::search::Hypothesis;
use btd_protocol::program::{Program, ProgramId};
use btd_protocol::trace::{ApprovalReceipt, BundleStatus};
use btd_protocol::wire::{AdvertisedRung, SubmitReceipt};
use btd_trainer::slurm::SlurmConfig;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::node::NodeHandle;
use crate::store::Store;

pub use checkout::{ChainLink, CheckoutView};
pub use hand::{ScoreView, TrainTaskView};
pub use records::{RunRecord, RunState, WorkSummary};
pub use run::RunOutcome;
pub(crate) use run::{param_env, round_spec};
pub use slurm::slurm_round_main;

/// Most rounds one `btd join --rounds` may ask for.
pub const MAX_ROUNDS: u32 = 10_000;
/// Default wait for a person to approve paid compute.
pub const DEFAULT_APPROVAL_WAIT_SECS: u64 = 3600;
/// Default wait for the owner's verdicts after the last round, seconds.
pub const DEFAULT_VERDICT_WAIT_SECS: u64 = 300;

/// What the daemon gives the worker loop.
pub struct WorkContext {
    node: NodeHandle,
    store: Store,
    runs_dir: PathBuf,
    blobs: crate::blobs::BlobStore,
    /// Bundles unpacked with their setup run (`HOME/source`): one cache for every loop, so two
    /// loops on the same bundle never run its setup at once.
    setup: Arc<btd_trainer::source::SetupCache>,
    rungs: Vec<AdvertisedRung>,
    /// The rungs that run rounds as Slurm jobs, by id.
    slurm: BTreeMap<String, SlurmConfig>,
    running: Mutex<HashSet<ProgramId>>,
    /// How many loops run now (for [`WorkContext::drain`]).
    loops: tokio::sync::watch::Sender<usize>,
    cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for WorkContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkContext")
            .field("runs_dir", &self.runs_dir)
            .finish_non_exhaustive()
    }
}

impl WorkContext {
    /// A context whose rounds write under `home/runs`, whose artifacts (claimed checkpoints,
    /// fetched datasets) go to `home/blobs` (where the node serves them), and which runs on one of
    /// `rungs` (those in `slurm` as Slurm batch jobs).
    pub fn new(
        node: NodeHandle,
        store: Store,
        home: &std::path::Path,
        rungs: Vec<AdvertisedRung>,
        slurm: BTreeMap<String, SlurmConfig>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            store,
            runs_dir: home.join("runs"),
            blobs: crate::blobs::BlobStore::new(home.join("blobs")),
            setup: Arc::new(btd_trainer::source::SetupCache::new(
                crate::source::setup_root(home),
            )),
            rungs,
            slurm,
            running: Mutex::new(HashSet::new()),
            loops: tokio::sync::watch::Sender::new(0),
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Asks every running loop to stop: training stops at its next step, shell commands are
    /// killed, and nothing more is submitted.
    pub fn cancel_all(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Waits up to `within` for every loop to end (after [`WorkContext::cancel_all`], so that
    /// the rounds they were running are recorded as cancelled and Slurm jobs are cancelled);
    /// whether they all did.
    pub async fn drain(&self, within: std::time::Duration) -> bool {
        let mut rx = self.loops.subscribe();
        tokio::time::timeout(within, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Makes a checkpoint trained outside the loop (`btd train`) claimable in `program` (see
    /// [`claim_checkpoint`]).
    pub async fn claim_checkpoint(
        &self,
        program: ProgramId,
        path: PathBuf,
    ) -> Result<(btd_protocol::trace::Output, btd_protocol::wire::Claim), String> {
        claim_checkpoint(self.blobs.clone(), program, path).await
    }
}

/// Makes the checkpoint at `path` claimable in `program`: keeps it in `blobs`, where the node
/// serves it to the owner, and returns its output entry and the claim
/// ([`btd_trainer::claim::claim`]: seed and steps from the checkpoint, this machine's CPU as the
/// platform).
pub async fn claim_checkpoint(
    blobs: crate::blobs::BlobStore,
    program: ProgramId,
    path: PathBuf,
) -> Result<(btd_protocol::trace::Output, btd_protocol::wire::Claim), String> {
    tokio::task::spawn_blocking(move || {
        let ckpt =
            btd_trainer::Checkpoint::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (digest, _) = blobs.add_file(&program, &path, Some(ckpt.sha256()))?;
        Ok((
            btd_protocol::trace::Output {
                name: "checkpoint.safetensors".into(),
                sha256: digest,
            },
            btd_trainer::claim::claim(&ckpt, &candle_core::Device::Cpu, crate::verify::VERSION),
        ))
    })
    .await
    .map_err(|e| format!("reading the checkpoint crashed: {e}"))?
}

/// How `btd join --rounds` asks for work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOptions {
    /// Rounds to run, 1..=[`MAX_ROUNDS`].
    pub rounds: u32,
    /// The program rung to run on (default: the first program rung this node's hardware fits).
    pub rung: Option<String>,
    /// The data file of a `file` dataset (absolute path; its SHA-256 must match the program's).
    pub data: Option<PathBuf>,
    /// Run the program's shell command (it is the owner's code: off unless asked).
    pub allow_shell: bool,
    /// How long to wait for a paid-compute approval, seconds.
    pub approval_wait_secs: u64,
    /// After the last round, how long to wait for the owner's verdicts on pending claims, seconds
    /// (0: do not wait; `btd runs` shows them once known).
    #[serde(default)]
    pub verdict_wait_secs: u64,
    /// A proposer command (programs with a source bundle): run each round in a workspace holding
    /// the parent tree and `context/`; what it changes in the editable files is the round's code
    /// hypothesis. `None`: the round runs the parent's tree (with the numeric search, if any).
    #[serde(default)]
    pub proposer: Option<String>,
    /// How long one proposer run may take, seconds.
    #[serde(default = "default_proposer_timeout")]
    pub proposer_timeout_secs: u64,
    /// Run code other members wrote (patches in the champion's chain), in the sandbox. Off: the
    /// loop builds on the bundle or on its own patches only.
    #[serde(default)]
    pub allow_peer_code: bool,
}

impl Default for WorkOptions {
    /// One round on the default rung, the owner's shell code not allowed, no proposer, the default
    /// waits.
    fn default() -> Self {
        WorkOptions {
            rounds: 1,
            rung: None,
            data: None,
            allow_shell: false,
            approval_wait_secs: DEFAULT_APPROVAL_WAIT_SECS,
            verdict_wait_secs: DEFAULT_VERDICT_WAIT_SECS,
            proposer: None,
            proposer_timeout_secs: DEFAULT_PROPOSER_TIMEOUT_SECS,
            allow_peer_code: false,
        }
    }
}

/// Default `--proposer-timeout`: ten minutes (an agent reads, thinks and edits).
pub const DEFAULT_PROPOSER_TIMEOUT_SECS: u64 = 600;

fn default_proposer_timeout() -> u64 {
    DEFAULT_PROPOSER_TIMEOUT_SECS
}

/// Progress of the worker loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkEvent {
    /// A code program's round: what it builds on and what it changes.
    Code {
        /// Round.
        round: u64,
        /// The result whose tree it edits (`None`: the bundle).
        parent: Option<u64>,
        /// Patch size in bytes (0: the parent's tree as is).
        patch_bytes: u64,
        /// The first line of the rationale.
        rationale: String,
        /// Whether it runs in the sandbox (the tree holds other members' code).
        sandbox: bool,
        /// Why it builds on something other than the champion, if it does.
        note: Option<String>,
    },
    /// Dispatch's verdict for the round's packet.
    Dispatch {
        /// Round number (per program, from 1, across `btd join` calls).
        round: u64,
        /// The packet.
        packet_id: String,
        /// The verdict.
        action: Action,
        /// Why.
        detail: String,
    },
    /// Waiting for the owner to run `btd approve-spend`.
    AwaitingApproval {
        /// Round.
        round: u64,
        /// The packet.
        packet_id: String,
        /// This node's member id (what the owner approves).
        member: String,
    },
    /// A round starts.
    Round {
        /// Round.
        round: u64,
        /// The rung.
        rung_id: String,
        /// The hypothesis it tests.
        hypothesis: Hypothesis,
        /// The champion's seq it starts from (none: the task's defaults).
        parent_seq: Option<u64>,
    },
    /// The task ran.
    Ran {
        /// Round.
        round: u64,
        /// How it ended.
        status: BundleStatus,
        /// The metric's name.
        metric: String,
        /// Its value, if the run produced one.
        value: Option<f64>,
        /// What happened, in words.
        detail: String,
    },
    /// The owner's KB verdict.
    Verdict {
        /// Round.
        round: u64,
        /// The receipt.
        receipt: SubmitReceipt,
    },
    /// The program's dataset was fetched from the owner over the mesh.
    Dataset {
        /// Its SHA-256.
        sha256: btd_protocol::Digest,
        /// Its size.
        bytes: u64,
        /// Bytes that were already on disk (a resumed fetch).
        resumed_from: u64,
        /// Seconds the fetch took.
        secs: f64,
    },
    /// The owner checked a claim.
    Checked {
        /// Round.
        round: u64,
        /// The claim's seq.
        seq: u64,
        /// Where the check stands.
        check: Check,
        /// Whether it is now the champion.
        champion: bool,
    },
    /// The owner did not answer the round's submission in time: it waits in the outbox.
    Queued {
        /// Round.
        round: u64,
        /// Where it waits and why, in words.
        note: String,
    },
    /// The round's traceability record is durable.
    Recorded {
        /// Round.
        round: u64,
        /// The record's id (none when the round failed before a result existed).
        record: Option<btd_protocol::Digest>,
        /// Where its files are.
        dir: PathBuf,
    },
}

/// The verdict of one attempt to run a round.
enum Round {
    /// The round produced a record; go on.
    Done(Box<RunRecord>),
    /// Stop the loop (the record, if any, is already stored).
    Stop(Option<Box<RunRecord>>, String),
}

/// Runs `opts.rounds` rounds of `program` (this node must be a member). Only one loop per program
/// runs at a time.
pub async fn run_rounds(
    ctx: Arc<WorkContext>,
    program: ProgramId,
    opts: WorkOptions,
    events: mpsc::Sender<WorkEvent>,
) -> Result<WorkSummary, String> {
    if opts.rounds == 0 || opts.rounds > MAX_ROUNDS {
        return Err(format!(
            "rounds must be 1 to {MAX_ROUNDS}, got {}",
            opts.rounds
        ));
    }
    {
        let mut running = ctx
            .running
            .lock()
            .map_err(|_| "the worker registry is unusable".to_string())?;
        if !running.insert(program) {
            return Err(format!(
                "a worker loop for {program} is already running on this daemon; wait for it to finish"
            ));
        }
        ctx.loops.send_modify(|n| *n += 1);
    }
    let result = Loop::prepare(&ctx, program, &opts, &events)
        .await
        .map(|l| (l, events));
    let out = match result {
        Ok((mut l, events)) => Ok(l.run(&events).await),
        Err(e) => Err(e),
    };
    if let Ok(mut running) = ctx.running.lock() {
        running.remove(&program);
    }
    ctx.loops.send_modify(|n| *n = n.saturating_sub(1));
    out
}

/// One worker loop's state.
struct Loop {
    ctx: Arc<WorkContext>,
    id: ProgramId,
    program: Program,
    owner: PeerId,
    member: String,
    rung: Rung,
    opts: WorkOptions,
    task: run::Prepared,
    defaults: Hypothesis,
    approval: Option<ApprovalReceipt>,
    spent_total: f64,
    /// A code program's bundle, setup, proposer and ledger cache.
    code: Option<code::CodeRuntime>,
    /// The rung's Slurm settings, when its rounds run as batch jobs.
    slurm: Option<SlurmConfig>,
}
