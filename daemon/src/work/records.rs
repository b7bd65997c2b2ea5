//! What a round leaves behind: the [`RunRecord`] (stored as JSON in the SQLite `runs` table, durable
//! before the CLI hears of it, and as `run.json` next to the round's outputs) and the
//! [`WorkSummary`] of one `btd join --rounds`.

use std::path::PathBuf;

use btd_protocol::dispatch::{ComputePacket, DispatchResult};
use btd_protocol::program::search::Hypothesis;
use btd_protocol::program::ProgramId;
pub use btd_protocol::trace::RunState;
use btd_protocol::trace::{ApprovalReceipt, ImpactRead, ResultBundle, TraceabilityRecord};
use btd_protocol::wire::SubmitReceipt;
use btd_protocol::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::store;

use super::{Loop, Round, WorkContext, WorkEvent};

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
    /// The outbox entry its result waits in (state `queued`), until the owner answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<u64>,
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

impl WorkContext {
    /// The records of `program`'s rounds (all programs when `None`), oldest first.
    /// Rounds whose result was queued in the outbox are settled first: the owner's receipt or
    /// refusal, once it came, is written into the record.
    pub async fn runs(&self, program: Option<ProgramId>) -> Result<Vec<RunRecord>, String> {
        let rows = self
            .store
            .read(move |c| store::load_runs(c, program.as_ref()))
            .await
            .map_err(|e| e.to_string())?;
        let mut records = rows
            .iter()
            .map(|r| {
                serde_json::from_str(r)
                    .map_err(|e| format!("unreadable run record in the database: {e}"))
            })
            .collect::<Result<Vec<RunRecord>, String>>()?;
        for r in records.iter_mut().filter(|r| r.state == RunState::Queued) {
            self.settle_queued(r).await?;
        }
        Ok(records)
    }

    /// A round whose result waited in the outbox: once the owner answered, the record takes its
    /// receipt (`submitted`, with the impact read) or its refusal (`unsubmitted`).
    async fn settle_queued(&self, r: &mut RunRecord) -> Result<(), String> {
        let Some(id) = r.outbox else {
            return Ok(());
        };
        let outcome = self
            .store
            .read(move |c| store::outbox_outcome(c, id))
            .await
            .map_err(|e| e.to_string())?;
        match outcome {
            Some(store::OutboxOutcome::Delivered(receipt)) => {
                r.note = format!("sent from the outbox (#{id}) after the round ended");
                if let (Some(b), Some(value)) = (r.bundle.as_ref(), r.value) {
                    let impact = ImpactRead::from_receipt(b, &r.metric, value, &receipt);
                    // The traceability record links the program's decision and the rung too.
                    let program = self.node.program(r.program).await.ok().flatten();
                    let linked = program.as_ref().and_then(|p| {
                        let rung = p.program.rungs.iter().find(|g| g.id == r.packet.rung_id)?;
                        let decision = p.program.decision();
                        TraceabilityRecord::link(
                            &decision,
                            rung,
                            &r.packet,
                            r.approval.as_ref(),
                            b,
                            &impact,
                        )
                        .ok()
                    });
                    if linked.is_none() {
                        r.note
                            .push_str("; its traceability record could not be linked");
                    }
                    r.trace = linked;
                    r.impact = Some(impact);
                }
                r.state = RunState::Submitted;
                r.verdict = Some(receipt);
            }
            Some(store::OutboxOutcome::Refused(why)) => {
                r.state = RunState::Unsubmitted;
                r.note = format!("the owner did not record the result: {why}");
            }
            Some(store::OutboxOutcome::Queued) => return Ok(()),
            None => {
                r.state = RunState::Unsubmitted;
                r.note = format!("its outbox entry #{id} is gone; the owner's answer is unknown");
            }
        }
        r.outbox = None;
        self.persist_run(r).await
    }

    /// Stores `record` (replacing the round's earlier state) and writes its `run.json`.
    async fn persist_run(&self, record: &RunRecord) -> Result<(), String> {
        let json = serde_json::to_string(record)
            .map_err(|e| format!("cannot encode the run record: {e}"))?;
        let (program, round, started) = (record.program, record.round, record.started_at);
        self.store
            .write(move |tx| store::put_run(tx, &program, round, started, &json))
            .await
            .map_err(|e| format!("cannot store the run record: {e}"))?;
        // A human-readable copy next to the outputs (best effort: the database is the record).
        if let Ok(text) = serde_json::to_string_pretty(record) {
            let _ = std::fs::write(record.dir.join("run.json"), text + "\n");
        }
        Ok(())
    }

    /// At start: rounds still `running` in the store were interrupted by a daemon that died. Each
    /// becomes `cancelled`, with what happened in its note; a Slurm job such a round had submitted
    /// and that is still in the queue is cancelled first (nobody follows it any more). Returns the
    /// notes, one per round.
    pub async fn recover_interrupted(&self) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        for mut record in self.runs(None).await? {
            if record.state != RunState::Running {
                continue;
            }
            let dir = record.dir.clone();
            let slurm =
                tokio::task::spawn_blocking(move || btd_trainer::slurm::cancel_orphan(&dir))
                    .await
                    .map_err(|e| format!("cancelling an orphaned Slurm job failed: {e}"))?;
            let what = match slurm {
                Ok(Some(job)) => format!("; cancelled its Slurm job {job}, still queued"),
                Ok(None) => String::new(),
                Err(e) => format!("; its Slurm job may still run: {e}"),
            };
            record.state = RunState::Cancelled;
            record.finished_at = Some(self.node.now());
            record.note = format!("the daemon stopped while this round ran{what}");
            self.persist_run(&record).await?;
            notes.push(format!(
                "program {} round {}: {}",
                record.program, record.round, record.note
            ));
        }
        Ok(notes)
    }
}

impl Loop {
    /// Stores `record` (replacing the round's earlier state) and writes its `run.json`.
    pub(super) async fn persist(&self, record: &RunRecord) -> Result<(), String> {
        self.ctx.persist_run(record).await
    }

    /// Stamps the end time, stores the record and reports it: the round is done.
    pub(super) async fn finish(
        &self,
        mut record: RunRecord,
        events: &mpsc::Sender<WorkEvent>,
    ) -> Round {
        record.finished_at = Some(self.ctx.node.now());
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

    /// Like [`Loop::finish`], then stops the loop with the record's note as the reason.
    pub(super) async fn finish_stop(
        &self,
        record: RunRecord,
        events: &mpsc::Sender<WorkEvent>,
    ) -> Round {
        let why = record.note.clone();
        match self.finish(record, events).await {
            Round::Done(r) => Round::Stop(Some(r), why),
            stop => stop,
        }
    }
}
