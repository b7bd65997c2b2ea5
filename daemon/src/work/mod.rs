//! The worker loop: after `btd join`, bounded rounds of the program's task.
//!
//! Each round: build the program's compute packet for this node's rung; [`evaluate_dispatch`] it
//! with the owner as the only trusted approver; get a receipt from the owner when the rung is paid
//! (automatically for a pre-approved rung, after `btd approve-spend` otherwise); draw a hypothesis
//! from the program's search space around the champion's (seeded by program, member and round);
//! run it (candle training or the shell command) in the round's directory; persist a
//! [`ResultBundle`]; submit value, hypothesis, outputs and metrics to the owner's KB; persist the
//! [`ImpactRead`] of the verdict and the [`TraceabilityRecord`] linking decision, rung, packet,
//! receipt, bundle and impact. `hold_packet` stops the loop and says why.
//!
//! The loop runs in the daemon (not in the CLI): a `btd join --rounds N` that disconnects does not
//! stop it. Records are written to SQLite (durable before the CLI hears of them) and as JSON files
//! next to the round's outputs.

mod run;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btd_protocol::dispatch::{
    evaluate_dispatch, Action, ComputePacket, DispatchInput, DispatchResult, Rung, SpendClass,
};
use btd_protocol::kb::Check;
use btd_protocol::membership::MemberId;
use btd_protocol::program::search::{hypothesis_seed, Hypothesis};
use btd_protocol::program::{Program, ProgramId, Task};
use btd_protocol::trace::{
    ApprovalReceipt, BundleStatus, ImpactRead, NextAction, ResultBundle, TraceabilityRecord,
};
use btd_protocol::wire::{
    AdvertisedRung, ApprovalResponse, KbCall, KbRequest, KbResponse, SubmitReceipt,
};
use btd_protocol::Timestamp;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::node::types::NewResult;
use crate::node::{Command, NodeHandle};
use crate::store::{self, Store};

pub use run::RunOutcome;

/// Most rounds one `btd join --rounds` may ask for.
pub const MAX_ROUNDS: u32 = 10_000;
/// Consecutive failed rounds after which the loop stops (a broken task should not spin).
const MAX_CONSECUTIVE_FAILURES: u32 = 3;
/// Pause between two questions to the owner about a pending spend request.
const APPROVAL_POLL: Duration = Duration::from_secs(2);
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
    rungs: Vec<AdvertisedRung>,
    running: Mutex<HashSet<ProgramId>>,
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
    /// `rungs`.
    pub fn new(
        node: NodeHandle,
        store: Store,
        home: &std::path::Path,
        rungs: Vec<AdvertisedRung>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            store,
            runs_dir: home.join("runs"),
            blobs: crate::blobs::BlobStore::new(home.join("blobs")),
            rungs,
            running: Mutex::new(HashSet::new()),
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Asks every running loop to stop: training stops at its next step, shell commands are
    /// killed, and nothing more is submitted.
    pub fn cancel_all(&self) {
        self.cancel.store(true, Ordering::SeqCst);
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

    /// The records of `program`'s rounds (all programs when `None`), oldest first.
    pub async fn runs(&self, program: Option<ProgramId>) -> Result<Vec<RunRecord>, String> {
        let rows = self
            .store
            .read(move |c| store::load_runs(c, program.as_ref()))
            .await
            .map_err(|e| e.to_string())?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(r)
                    .map_err(|e| format!("unreadable run record in the database: {e}"))
            })
            .collect()
    }
}

/// Makes the checkpoint at `path` claimable in `program`: keeps it in `blobs`, where the node
/// serves it to the owner, and returns its output entry and the claim (seed and steps from the
/// checkpoint, this machine's CPU as the platform).
pub async fn claim_checkpoint(
    blobs: crate::blobs::BlobStore,
    program: ProgramId,
    path: PathBuf,
) -> Result<(btd_protocol::trace::Output, btd_protocol::wire::Claim), String> {
    tokio::task::spawn_blocking(move || {
        let ckpt =
            btd_trainer::Checkpoint::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (digest, size) = blobs.add_file(&program, &path, Some(ckpt.sha256()))?;
        let meta = ckpt.meta();
        Ok((
            btd_protocol::trace::Output {
                name: "checkpoint.safetensors".into(),
                sha256: digest,
            },
            btd_protocol::wire::Claim {
                checkpoint: digest,
                checkpoint_bytes: size,
                seed: meta.spec.seed,
                steps: meta.steps,
                device: btd_trainer::verify::platform(&candle_core::Device::Cpu),
                btd_version: crate::verify::VERSION.to_string(),
            },
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
}

/// How often the loop asks the owner for verdicts on pending claims.
const VERDICT_POLL: Duration = Duration::from_secs(1);
/// How long fetching the program's dataset may take.
const DATASET_FETCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Progress of the worker loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkEvent {
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

/// How a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Running (or the daemon stopped while it ran).
    Running,
    /// Dispatch held the packet.
    Held,
    /// The task failed or produced no value.
    Failed,
    /// The daemon was stopping; nothing was submitted.
    Cancelled,
    /// The result ran but the owner did not record it.
    Unsubmitted,
    /// The owner recorded it.
    Submitted,
}

/// Everything one round leaves behind (stored as JSON in the `runs` table and as `run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The program.
    pub program: ProgramId,
    /// Round number (per program, from 1).
    pub round: u64,
    /// This node's member id.
    pub member: String,
    /// How the round ended.
    pub state: RunState,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// The packet.
    pub packet: ComputePacket,
    /// Dispatch's verdict.
    pub dispatch: DispatchResult,
    /// The approval receipt the run was admitted with (paid rungs).
    pub approval: Option<ApprovalReceipt>,
    /// The hypothesis tested.
    pub hypothesis: Hypothesis,
    /// The champion's seq the hypothesis started from.
    pub parent_seq: Option<u64>,
    /// The objective metric's name.
    pub metric: String,
    /// Its value, when the run produced one.
    pub value: Option<f64>,
    /// The round's directory (outputs, `run.json`).
    pub dir: PathBuf,
    /// What the run produced.
    pub bundle: Option<ResultBundle>,
    /// The owner's verdict.
    pub verdict: Option<SubmitReceipt>,
    /// What the verdict means for the next step.
    pub impact: Option<ImpactRead>,
    /// The record linking decision, rung, packet, receipt, bundle and impact.
    pub trace: Option<TraceabilityRecord>,
    /// What happened, in words.
    pub note: String,
}

/// What `btd join --rounds` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkSummary {
    /// The program.
    pub program: ProgramId,
    /// Rounds asked for.
    pub asked: u32,
    /// Rounds whose result the owner recorded.
    pub submitted: u32,
    /// Every round run this time.
    pub runs: Vec<RunRecord>,
    /// Why the loop stopped early, if it did.
    pub stopped: Option<String>,
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
}

impl Loop {
    async fn prepare(
        ctx: &Arc<WorkContext>,
        id: ProgramId,
        opts: &WorkOptions,
        events: &mpsc::Sender<WorkEvent>,
    ) -> Result<Loop, String> {
        let node = &ctx.node;
        let stopped = |e: anyhow::Error| e.to_string();
        let view = node
            .ask(|reply| Command::Program { program: id, reply })
            .await
            .map_err(stopped)?
            .ok_or_else(|| {
                format!("program {id} is not known to this daemon (see `btd programs`)")
            })?;
        if node
            .ask(|reply| Command::Credential { program: id, reply })
            .await
            .map_err(stopped)?
            .is_none()
        {
            return Err(format!(
                "this node is not a member of {id}; `btd join {id}` first"
            ));
        }
        let program = view.program;
        let (rung, local) = choose_rung(&program, &ctx.rungs, opts.rung.as_deref())?;
        if let Task::Shell(t) = &program.task {
            if !opts.allow_shell {
                return Err(format!(
                    "the program's task is a shell command the owner wrote ({:?}); rerun with \
                     --allow-shell to let this daemon run it",
                    t.command
                ));
            }
        }
        let data = match (&program.task, &opts.data) {
            (Task::Candle(t), None) => match t.dataset {
                btd_protocol::program::Dataset::File { sha256 } => {
                    Some(fetch_dataset(ctx, id, view.owner, sha256, &program, events).await?)
                }
                btd_protocol::program::Dataset::Synthetic { .. } => None,
            },
            _ => opts.data.clone(),
        };
        let task = run::Prepared::new(&program, &local, data).await?;
        let defaults = task.defaults();
        let member = MemberId::from_peer(&node.peer_id()).to_string();
        // Paid spend already committed by earlier rounds counts toward max_total_spend.
        let spent_total = ctx
            .runs(Some(id))
            .await?
            .iter()
            .filter(|r| r.approval.is_some() && r.state != RunState::Held)
            .filter_map(|r| r.packet.budget.spend_cap)
            .sum();
        Ok(Loop {
            ctx: ctx.clone(),
            id,
            owner: view.owner,
            program,
            member,
            rung,

            opts: opts.clone(),
            task,
            defaults,
            approval: None,
            spent_total,
        })
    }

    async fn run(&mut self, events: &mpsc::Sender<WorkEvent>) -> WorkSummary {
        let mut summary = WorkSummary {
            program: self.id,
            asked: self.opts.rounds,
            submitted: 0,
            runs: Vec::new(),
            stopped: None,
        };
        let mut failures = 0;
        for _ in 0..self.opts.rounds {
            if self.ctx.cancelled() {
                summary.stopped = Some("the daemon is stopping".into());
                break;
            }
            // Search near the champion as verified: wait for the owner's check of the last claims.
            if self.opts.verdict_wait_secs > 0 {
                self.await_verdicts(&mut summary.runs, events).await;
            }
            match self.round(events).await {
                Round::Done(r) => {
                    if r.state == RunState::Submitted {
                        summary.submitted += 1;
                        failures = 0;
                    } else {
                        failures += 1;
                    }
                    summary.runs.push(*r);
                    if failures >= MAX_CONSECUTIVE_FAILURES {
                        summary.stopped = Some(format!(
                            "{failures} rounds in a row failed; the last: {}",
                            summary.runs.last().map_or("", |r| r.note.as_str())
                        ));
                        break;
                    }
                }
                Round::Stop(r, why) => {
                    summary.runs.extend(r.map(|r| *r));
                    summary.stopped = Some(why);
                    break;
                }
            }
        }
        if self.opts.verdict_wait_secs > 0 {
            self.await_verdicts(&mut summary.runs, events).await;
        }
        summary
    }

    /// Waits (up to `verdict_wait_secs`) for the owner's verdicts on this loop's pending claims,
    /// updating and storing each record as its verdict arrives.
    async fn await_verdicts(&self, runs: &mut [RunRecord], events: &mpsc::Sender<WorkEvent>) {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.opts.verdict_wait_secs);
        let pending = |r: &RunRecord| {
            r.verdict
                .as_ref()
                .is_some_and(|v| v.check == Check::Pending)
        };
        while runs.iter().any(pending) && !self.ctx.cancelled() {
            let program = self.id;
            let status = self
                .ctx
                .node
                .ask(|reply| Command::Status {
                    program: Some(program),
                    reply,
                })
                .await;
            if let Ok(Ok(view)) = status {
                for r in runs.iter_mut().filter(|r| pending(r)) {
                    let Some(v) = r.verdict.as_mut() else {
                        continue;
                    };
                    let Some(e) = view.results.iter().find(|e| e.seq == v.seq) else {
                        continue;
                    };
                    if e.check == Check::Pending {
                        continue;
                    }
                    v.check = e.check.clone();
                    v.accepted = e.accepted;
                    v.champion = e.champion;
                    v.impact = e.impact;
                    if let (Some(b), Some(value)) = (r.bundle.as_ref(), r.value) {
                        let impact = impact_read(&self.program, b, v, value);
                        // The traceability record links the impact read of the final verdict.
                        if let Ok(t) = TraceabilityRecord::link(
                            &self.program.decision(),
                            &self.rung,
                            &r.packet,
                            r.approval.as_ref(),
                            b,
                            &impact,
                        ) {
                            r.trace = Some(t);
                        }
                        r.impact = Some(impact);
                    }
                    let _ = events
                        .send(WorkEvent::Checked {
                            round: r.round,
                            seq: v.seq,
                            check: e.check.clone(),
                            champion: e.champion,
                        })
                        .await;
                    if let Err(err) = self.persist(r).await {
                        tracing::warn!(error = %err, "cannot store a verdict in the run record");
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(VERDICT_POLL).await;
        }
    }

    async fn round(&mut self, events: &mpsc::Sender<WorkEvent>) -> Round {
        let id = self.id;
        let round = match self
            .ctx
            .store
            .read(move |c| store::next_round(c, &id))
            .await
        {
            Ok(n) => n,
            Err(e) => return Round::Stop(None, format!("cannot read the run log: {e}")),
        };
        let packet = match self.program.packet_for_rung(&self.rung.id) {
            Ok(p) => p,
            Err(e) => return Round::Stop(None, e.to_string()),
        };
        let dispatch = match self.admit(round, &packet, events).await {
            Ok(d) => d,
            Err(why) => return Round::Stop(None, why),
        };
        let dir = self
            .ctx
            .runs_dir
            .join(self.id.short())
            .join(format!("round-{round:05}"));
        let mut record = RunRecord {
            program: self.id,
            round,
            member: self.member.clone(),
            state: RunState::Running,
            started_at: crate::now(),
            finished_at: None,
            packet: packet.clone(),
            dispatch: dispatch.clone(),
            approval: None,
            hypothesis: Hypothesis::new(),
            parent_seq: None,
            metric: self.program.criteria.metric.clone(),
            value: None,
            dir: dir.clone(),
            bundle: None,
            verdict: None,
            impact: None,
            trace: None,
            note: String::new(),
        };
        if dispatch.action == Action::HoldPacket {
            record.state = RunState::Held;
            record.note = format!("dispatch held the packet: {}", dispatch.detail);
            return self.finish_stop(record, events).await;
        }
        if self.rung.spend_class == SpendClass::PaidMetered {
            record.approval = self.approval.clone();
        }

        // The hypothesis: near the champion's (or the defaults), seeded by program, member, round.
        let (base, parent_seq) = self.champion_hypothesis().await;
        record.parent_seq = parent_seq;
        record.hypothesis = if self.program.search.is_empty() {
            Hypothesis::new()
        } else {
            let seed = hypothesis_seed(&self.id.0, &self.member, round);
            self.program.search.propose(&base, &self.defaults, seed)
        };
        let _ = events
            .send(WorkEvent::Round {
                round,
                rung_id: self.rung.id.clone(),
                hypothesis: record.hypothesis.clone(),
                parent_seq,
            })
            .await;
        if let Err(e) = std::fs::create_dir_all(&dir) {
            record.state = RunState::Failed;
            record.note = format!("cannot create {}: {e}", dir.display());
            return self.finish_stop(record, events).await;
        }
        if let Err(e) = self.persist(&record).await {
            return Round::Stop(None, e);
        }

        // Run it.
        let outcome = self
            .task
            .run(
                &dispatch,
                &record.hypothesis,
                &dir,
                &self.program.required_outputs,
                self.ctx.cancel.clone(),
            )
            .await;
        let metric = self.program.criteria.metric.clone();
        let _ = events
            .send(WorkEvent::Ran {
                round,
                status: outcome.status,
                metric: metric.clone(),
                value: outcome.value,
                detail: outcome.detail.clone(),
            })
            .await;
        let mut metrics = outcome.metrics.clone();
        if let Some(v) = outcome.value {
            metrics.insert(metric.clone(), v);
        }
        let bundle = ResultBundle::new(
            packet.id.clone(),
            outcome.outputs.clone(),
            outcome.status,
            metrics.clone(),
        );
        record.bundle = Some(bundle.clone());
        record.value = outcome.value;
        record.note = outcome.detail.clone();
        if outcome.cancelled {
            record.state = RunState::Cancelled;
            return self.finish_stop(record, events).await;
        }
        let value = match (outcome.status, outcome.value) {
            (BundleStatus::Completed, Some(v)) => v,
            _ => {
                record.state = RunState::Failed;
                record.impact = Some(ImpactRead::new(
                    bundle.id,
                    NextAction::Rerun,
                    format!("the run produced no {metric}: {}", outcome.detail),
                ));
                return self.finish(record, events).await;
            }
        };
        if let Err(e) = self.persist(&record).await {
            return Round::Stop(None, e);
        }

        // The claimed checkpoint goes where the node serves it to the owner.
        if let Some(claim) = &outcome.claim {
            let (blobs, id, ckpt, digest) = (
                self.ctx.blobs.clone(),
                self.id,
                dir.join("checkpoint.safetensors"),
                claim.checkpoint,
            );
            let added =
                tokio::task::spawn_blocking(move || blobs.add_file(&id, &ckpt, Some(digest)))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
            if let Err(e) = added {
                record.state = RunState::Failed;
                record.note = format!("cannot keep the checkpoint for the owner's check: {e}");
                return self.finish_stop(record, events).await;
            }
        }

        // Submit: value, hypothesis, outputs, metrics and the claim the owner checks.
        let result = NewResult {
            value,
            rung_id: self.rung.id.clone(),
            outputs: bundle.outputs.clone(),
            metrics: outcome.metrics.clone(),
            hypothesis: record.hypothesis.clone(),
            claim: outcome.claim.clone(),
        };
        let program = self.id;
        let receipt = match self
            .ctx
            .node
            .ask(|reply| Command::Submit {
                program,
                result,
                reply,
            })
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                record.state = RunState::Unsubmitted;
                record.note = format!("the owner did not record the result: {e}");
                return self.finish_stop(record, events).await;
            }
            Err(e) => {
                record.state = RunState::Unsubmitted;
                record.note = format!("the daemon is stopping: {e}");
                return self.finish_stop(record, events).await;
            }
        };
        if self.rung.spend_class == SpendClass::PaidMetered {
            self.spent_total += packet.budget.spend_cap.unwrap_or(0.0);
        }
        let _ = events
            .send(WorkEvent::Verdict {
                round,
                receipt: receipt.clone(),
            })
            .await;
        record.state = RunState::Submitted;
        record.verdict = Some(receipt.clone());
        let impact = impact_read(&self.program, &bundle, &receipt, value);
        record.trace = match TraceabilityRecord::link(
            &self.program.decision(),
            &self.rung,
            &packet,
            record.approval.as_ref(),
            &bundle,
            &impact,
        ) {
            Ok(t) => Some(t),
            Err(problems) => {
                record.note = format!(
                    "{}; the traceability record could not be linked: {}",
                    record.note,
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                None
            }
        };
        record.impact = Some(impact);
        self.finish(record, events).await
    }

    /// Dispatch, getting a receipt from the owner when the rung is paid.
    async fn admit(
        &mut self,
        round: u64,
        packet: &ComputePacket,
        events: &mpsc::Sender<WorkEvent>,
    ) -> Result<DispatchResult, String> {
        let mut asked_owner = false;
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.opts.approval_wait_secs.max(1));
        let mut announced = false;
        loop {
            let trusted = [self.owner.to_base58()];
            let verdict = evaluate_dispatch(&DispatchInput {
                decision: &self.program.decision(),
                rung: &self.rung,
                policy: &self.program.policy,
                packet,
                point: None,
                approval: self.approval.as_ref(),
                trusted_approvers: &trusted,
                spent_total: self.spent_total,
                now: crate::now(),
            });
            // A paid run always links a receipt: a pre-approved rung gets one from the owner too.
            let need_receipt = match verdict.action {
                Action::RequestPaidApproval => true,
                Action::RunPaid => !self.receipt_valid(packet),
                _ => false,
            };
            if !need_receipt || (asked_owner && verdict.action == Action::RunPaid) {
                let _ = events
                    .send(WorkEvent::Dispatch {
                        round,
                        packet_id: packet.id.clone(),
                        action: verdict.action,
                        detail: verdict.detail.clone(),
                    })
                    .await;
                return Ok(verdict);
            }
            if self.ctx.cancelled() {
                return Err("the daemon is stopping".into());
            }
            let program = self.id;
            let p = packet.clone();
            let answer = self
                .ctx
                .node
                .ask(|reply| Command::RequestSpend {
                    program,
                    packet: p,
                    reply,
                })
                .await
                .map_err(|e| e.to_string())?;
            asked_owner = true;
            match answer {
                Ok(ApprovalResponse::Granted(r)) => {
                    self.approval = Some(r);
                    continue;
                }
                Ok(ApprovalResponse::Denied { reason }) => {
                    return Err(format!(
                        "the owner denied paid compute for {}: {reason}",
                        packet.id
                    ));
                }
                Ok(ApprovalResponse::Pending) => {
                    if !announced {
                        announced = true;
                        let _ = events
                            .send(WorkEvent::AwaitingApproval {
                                round,
                                packet_id: packet.id.clone(),
                                member: self.member.clone(),
                            })
                            .await;
                    }
                }
                Ok(ApprovalResponse::Error(e)) => {
                    return Err(format!(
                        "the owner refused the spend request: {}",
                        e.message
                    ));
                }
                // The owner may be briefly unreachable: keep asking until the deadline.
                Err(e) => tracing::debug!(error = %e, "spend request failed; retrying"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "no decision on paid compute for {} within {} s; the owner approves with \
                     `btd approve-spend {} {} --member {}`",
                    packet.id, self.opts.approval_wait_secs, self.id, packet.id, self.member
                ));
            }
            tokio::time::sleep(APPROVAL_POLL).await;
        }
    }

    fn receipt_valid(&self, packet: &ComputePacket) -> bool {
        let trusted = [self.owner.to_base58()];
        self.approval.as_ref().is_some_and(|r| {
            r.authorizes(&packet.id, &self.rung.id, &trusted, crate::now())
                .is_ok()
        })
    }

    /// The champion's hypothesis and seq, or the defaults when there is none (or it cannot be read
    /// or verified: then the search restarts from the defaults, which is safe).
    async fn champion_hypothesis(&self) -> (Hypothesis, Option<u64>) {
        let none = (self.defaults.clone(), None);
        if self.program.search.is_empty() {
            return none;
        }
        let program = self.id;
        let Ok(Some((owner, credential))) = self
            .ctx
            .node
            .ask(|reply| Command::Credential { program, reply })
            .await
        else {
            return none;
        };
        let request = KbRequest {
            program,
            credential,
            call: KbCall::Champion,
        };
        let answer = self
            .ctx
            .node
            .ask(|reply| Command::RawKb {
                peer: owner,
                request,
                reply,
            })
            .await;
        let Ok(Ok(KbResponse::Champion(Some(c)))) = answer else {
            return none;
        };
        let Ok(worker) = c.entry.worker.parse::<PeerId>() else {
            return none;
        };
        match c.submission.verify_from(&worker) {
            Ok(sub) if sub.program == program && sub.value == c.entry.value => {
                (sub.hypothesis, Some(c.entry.seq))
            }
            _ => {
                tracing::warn!(program = %program, "the champion's submission does not verify; searching from the defaults");
                none
            }
        }
    }

    async fn persist(&self, record: &RunRecord) -> Result<(), String> {
        let json = serde_json::to_string(record)
            .map_err(|e| format!("cannot encode the run record: {e}"))?;
        let (program, round, started) = (record.program, record.round, record.started_at);
        self.ctx
            .store
            .write(move |tx| store::put_run(tx, &program, round, started, &json))
            .await
            .map_err(|e| format!("cannot store the run record: {e}"))?;
        // A human-readable copy next to the outputs (best effort: the database is the record).
        if let Ok(text) = serde_json::to_string_pretty(record) {
            let _ = std::fs::write(record.dir.join("run.json"), text + "\n");
        }
        Ok(())
    }

    async fn finish(&self, mut record: RunRecord, events: &mpsc::Sender<WorkEvent>) -> Round {
        record.finished_at = Some(crate::now());
        if let Err(e) = self.persist(&record).await {
            return Round::Stop(Some(Box::new(record)), e);
        }
        let _ = events
            .send(WorkEvent::Recorded {
                round: record.round,
                record: record.trace.as_ref().map(|t| t.id),
                dir: record.dir.clone(),
            })
            .await;
        Round::Done(Box::new(record))
    }

    async fn finish_stop(&self, record: RunRecord, events: &mpsc::Sender<WorkEvent>) -> Round {
        let why = record.note.clone();
        match self.finish(record, events).await {
            Round::Done(r) => Round::Stop(Some(r), why),
            stop => stop,
        }
    }
}

/// Fetches the program's dataset from the owner by digest (resuming a partial fetch) and returns
/// its path.
async fn fetch_dataset(
    ctx: &Arc<WorkContext>,
    id: ProgramId,
    owner: PeerId,
    sha256: btd_protocol::Digest,
    program: &Program,
    events: &mpsc::Sender<WorkEvent>,
) -> Result<PathBuf, String> {
    let credential = ctx
        .node
        .ask(|reply| Command::Credential { program: id, reply })
        .await
        .map_err(|e| e.to_string())?
        .map(|(_, c)| c)
        .ok_or_else(|| format!("this node is not a member of {id}"))?;
    let started = std::time::Instant::now();
    let spec = crate::blobs::FetchSpec {
        peer: owner,
        program: id,
        credential: Some(credential),
        digest: sha256,
        max_bytes: program.verify.max_artifact_bytes,
        deadline: tokio::time::Instant::now() + DATASET_FETCH_TIMEOUT,
    };
    let (path, progress) = crate::blobs::fetch(&ctx.node, &ctx.blobs, &spec)
        .await
        .map_err(|e| {
            format!(
                "cannot fetch the program's dataset (sha256 {sha256}) from the owner: {e}; or give                  the file with --data"
            )
        })?;
    let _ = events
        .send(WorkEvent::Dataset {
            sha256,
            bytes: progress.size,
            resumed_from: progress.resumed_from,
            secs: started.elapsed().as_secs_f64(),
        })
        .await;
    Ok(path)
}

/// What the owner's verdict means for the next step.
fn impact_read(
    program: &Program,
    bundle: &ResultBundle,
    receipt: &SubmitReceipt,
    value: f64,
) -> ImpactRead {
    let metric = &program.criteria.metric;
    let (action, summary) = if receipt.check == Check::Pending {
        (
            NextAction::Keep,
            format!(
                "pending: {metric} {value} (seq {}) would count; the owner is checking it (fetching                  the checkpoint and re-evaluating it)",
                receipt.seq
            ),
        )
    } else if let Check::Failed(why) = &receipt.check {
        (
            NextAction::Discard,
            format!(
                "rejected by the owner's check: {metric} {value} (seq {}): {why}",
                receipt.seq
            ),
        )
    } else if receipt.champion {
        (
            NextAction::Keep,
            format!(
                "new champion: {metric} {value} (seq {}, impact {}); the next rounds search around it",
                receipt.seq, receipt.impact
            ),
        )
    } else if receipt.accepted {
        (
            NextAction::Keep,
            format!(
                "accepted: {metric} {value} (seq {}, impact {}) meets the acceptance rule",
                receipt.seq, receipt.impact
            ),
        )
    } else {
        (
            NextAction::Discard,
            format!(
                "not accepted: {metric} {value} (seq {}) does not beat the reference; the search stays around the champion",
                receipt.seq
            ),
        )
    };
    ImpactRead::new(bundle.id, action, summary)
}

/// The program rung to run on and this node's rung that provides it: `wanted` names a program rung
/// (this node must advertise that hardware); otherwise the first of this node's rungs (in config
/// order) that an admitted program rung matches by hardware and spend class, then by hardware.
fn choose_rung(
    program: &Program,
    local: &[AdvertisedRung],
    wanted: Option<&str>,
) -> Result<(Rung, AdvertisedRung), String> {
    if let Some(id) = wanted {
        let rung = program.rung(id).map_err(|e| e.to_string())?.clone();
        let mine = local
            .iter()
            .find(|l| l.hardware == rung.hardware)
            .ok_or_else(|| {
                format!(
                    "program rung {id:?} needs {:?} hardware; this node advertises {}",
                    rung.hardware,
                    describe(local)
                )
            })?;
        return Ok((rung, mine.clone()));
    }
    let exact = local.iter().find_map(|l| {
        program
            .rungs
            .iter()
            .find(|r| r.admitted && r.hardware == l.hardware && r.spend_class == l.spend_class)
            .map(|r| (r.clone(), l.clone()))
    });
    let loose = || {
        local.iter().find_map(|l| {
            program
                .rungs
                .iter()
                .find(|r| r.admitted && r.hardware == l.hardware)
                .map(|r| (r.clone(), l.clone()))
        })
    };
    exact.or_else(loose).ok_or_else(|| {
        format!(
            "no admitted rung of the program matches this node's hardware ({}); the program admits {}",
            describe(local),
            program
                .rungs
                .iter()
                .filter(|r| r.admitted)
                .map(|r| format!("{} ({:?})", r.id, r.hardware))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn describe(local: &[AdvertisedRung]) -> String {
    local
        .iter()
        .map(|l| format!("{} ({:?}, {:?})", l.id, l.hardware, l.spend_class))
        .collect::<Vec<_>>()
        .join(", ")
}
