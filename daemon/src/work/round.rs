//! One worker loop over its rounds: [`Loop::prepare`] checks membership, chooses the rung and loads
//! the task; [`Loop::run`] runs the rounds; each round admits its packet, draws a hypothesis near
//! the champion's, runs it, submits it and links the traceability record.

use std::sync::Arc;

use btd_protocol::dispatch::{choose_rung, Action, SpendClass};
use btd_protocol::membership::MemberId;
use btd_protocol::program::search::{hypothesis_seed, Hypothesis};
use btd_protocol::program::{ProgramId, Task};
use btd_protocol::trace::{BundleStatus, ImpactRead, NextAction, ResultBundle, TraceabilityRecord};
use btd_trainer::shell::SlurmRun;
use tokio::sync::mpsc;

use crate::node::types::{NewResult, Submitted};
use crate::node::NodeError;
use crate::store;

use super::dataset::fetch_dataset;
use super::{
    run, Loop, Round, RunRecord, RunState, WorkContext, WorkEvent, WorkOptions, WorkSummary,
};

/// Consecutive failed rounds after which the loop stops (a broken task should not spin). A round
/// whose result is left queued in the outbox (owner offline) counts too.
const MAX_CONSECUTIVE_FAILURES: u32 = 3;

impl Loop {
    /// Checks that this node may run `id` (known, a member, shell allowed when the task is one),
    /// chooses the rung, fetches the dataset when needed, and loads the task.
    pub(super) async fn prepare(
        ctx: &Arc<WorkContext>,
        id: ProgramId,
        opts: &WorkOptions,
        events: &mpsc::Sender<WorkEvent>,
    ) -> Result<Loop, String> {
        let node = &ctx.node;
        let stopped = |e: crate::node::NodeError| e.to_string();
        let view = node.program(id).await.map_err(stopped)?.ok_or_else(|| {
            format!("program {id} is not known to this daemon (see `btd programs`)")
        })?;
        if node.credential(id).await.map_err(stopped)?.is_none() {
            return Err(format!(
                "this node is not a member of {id}; `btd join {id}` first"
            ));
        }
        let program = view.program;
        let (rung, local) =
            choose_rung(&program, &ctx.rungs, opts.rung.as_deref()).map_err(|e| e.to_string())?;
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
        let code = super::code::CodeRuntime::prepare(ctx, id, view.owner, &program, opts).await?;
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
            code,
            slurm: ctx.slurm.get(&local.id).cloned(),
        })
    }

    /// Runs the rounds asked for, stopping early when the daemon stops, a round says stop, or
    /// [`MAX_CONSECUTIVE_FAILURES`] rounds in a row fail.
    pub(super) async fn run(&mut self, events: &mpsc::Sender<WorkEvent>) -> WorkSummary {
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
            let round = self.round(events).await;
            if let Round::Done(r) | Round::Stop(Some(r), _) = &round {
                self.ctx.node.metrics().worker_round(r.state);
            }
            match round {
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

    /// One round: admit the packet, draw the hypothesis, run it, keep the checkpoint for the
    /// owner, submit, and record the verdict's impact and the traceability record.
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
            started_at: self.ctx.node.now(),
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
            outbox: None,
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
        let champion = self.champion().await;
        let base = champion
            .as_ref()
            .map_or_else(|| self.defaults.clone(), |c| c.hypothesis.clone());
        let parent_seq = champion.as_ref().map(|c| c.seq);
        record.parent_seq = parent_seq;
        let seed = hypothesis_seed(&self.id.0, &self.member, round);
        record.hypothesis = if self.program.search.is_empty() {
            Hypothesis::new()
        } else {
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

        // A code program: the tree it builds on, the proposer's change, the round's own copy.
        let round_code = match self
            .code_round(&dispatch, champion.as_ref(), round, seed, &dir, events)
            .await
        {
            Ok(c) => c,
            Err(why) => {
                record.state = RunState::Failed;
                record.note = why;
                return self.finish(record, events).await;
            }
        };
        if let Some(c) = &round_code {
            record.parent_seq = c.code.parent;
        }

        // Run it.
        let outcome = self
            .task
            .run(
                &dispatch,
                &record.hypothesis,
                &dir,
                &self.program.required_outputs,
                round_code.clone(),
                run::Exec {
                    cancel: self.ctx.cancel.clone(),
                    slurm: self.slurm.as_ref().map(|config| SlurmRun {
                        config: config.clone(),
                        name: format!("btd-{}-r{round}", self.program.name),
                        dir: dir.clone(),
                    }),
                },
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
        if let Some(tps) = outcome.metrics.get("tokens_per_sec") {
            self.ctx
                .node
                .metrics()
                .worker_tokens_per_sec(&self.id, *tps);
        }
        let mut metrics = outcome.metrics.clone();
        if let Some(v) = outcome.value {
            metrics.insert(metric.clone(), v);
        }
        let mut outcome = outcome;
        if let Some(c) = &round_code {
            // The code is part of the result: kept beside it (code.json, patch.diff) and named in
            // the bundle, so the traceability record covers what ran.
            if let Err(e) = keep_code(&dir, &c.code) {
                record.state = RunState::Failed;
                record.note = e;
                return self.finish_stop(record, events).await;
            }
            outcome.outputs.push(btd_protocol::trace::Output {
                name: btd_protocol::wire::CODE_OUTPUT.into(),
                sha256: c.code.digest(),
            });
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
            code: round_code.map(|c| c.code),
        };
        let program = self.id;
        let receipt = match self
            .ctx
            .node
            // Waits `submit_wait` for the owner, then records the result as queued (the daemon
            // keeps sending it; `btd runs` shows the receipt once it came).
            .submit_queued(program, result, self.ctx.node.submit_wait())
            .await
        {
            Ok(Submitted::Receipt(r)) => r,
            Ok(Submitted::Queued { queued }) => {
                // Not lost: the outbox sends it when the owner takes it; `btd runs` then shows
                // the receipt (`WorkContext::runs` settles queued rounds).
                record.state = RunState::Queued;
                record.outbox = Some(queued.id);
                record.note = crate::node::queued_words(&queued);
                let _ = events
                    .send(WorkEvent::Queued {
                        round,
                        note: record.note.clone(),
                    })
                    .await;
                return self.finish(record, events).await;
            }
            Err(
                e @ (NodeError::Refused(_) | NodeError::Unreachable(_) | NodeError::Unavailable(_)),
            ) => {
                record.state = RunState::Unsubmitted;
                record.note = format!("the owner did not record the result: {e}");
                return self.finish_stop(record, events).await;
            }
            Err(e @ NodeError::Stopped) => {
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
        let impact =
            ImpactRead::from_receipt(&bundle, &self.program.criteria.metric, value, &receipt);
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

    /// A code program's round: the parent tree (the champion's when it may run here), the
    /// proposer's change (when there is a proposer), the round's fresh tree and its code
    /// hypothesis. `None` for other programs; an error fails the round with the reason.
    async fn code_round(
        &mut self,
        dispatch: &btd_protocol::dispatch::DispatchResult,
        champion: Option<&super::kb::ChampionInfo>,
        round: u64,
        seed: u64,
        dir: &std::path::Path,
        events: &mpsc::Sender<WorkEvent>,
    ) -> Result<Option<super::code::RoundCode>, String> {
        let Some(rt) = self.code.as_mut() else {
            return Ok(None);
        };
        let node = self.ctx.node.clone();
        let parent = rt.parent(&node, champion.map(|c| c.seq)).await;
        if let Some(note) = &parent.note {
            tracing::info!(program = %self.id.short(), round, "{note}");
        }
        let (child, rationale) = if rt.has_proposer() {
            // The proposer sees the champion only when the round builds on it.
            let seen = champion.filter(|c| parent.seq == Some(c.seq));
            rt.propose(&node, &self.program, seen, &parent, round, dir, dispatch)
                .await?
        } else {
            ((*parent.tree).clone(), String::new())
        };
        let mut code = rt.round_code(&parent, child, rationale, seed, dir).await?;
        code.gpu = self.rung.hardware != btd_protocol::dispatch::HardwareClass::Cpu;
        let _ = events
            .send(WorkEvent::Code {
                round,
                parent: code.code.parent,
                patch_bytes: code.code.patch.len() as u64,
                rationale: code.code.rationale.lines().next().unwrap_or("").to_string(),
                sandbox: code.sandbox,
                note: parent.note.clone(),
            })
            .await;
        Ok(Some(code))
    }
}

/// Writes a round's code hypothesis beside its outputs: `code.json` (all of it) and `patch.diff`.
fn keep_code(
    dir: &std::path::Path,
    code: &btd_protocol::wire::CodeHypothesis,
) -> Result<(), String> {
    let json =
        serde_json::to_vec_pretty(code).map_err(|e| format!("cannot encode the code: {e}"))?;
    for (name, bytes) in [
        ("code.json", &json[..]),
        ("patch.diff", code.patch.as_bytes()),
    ] {
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))?;
    }
    Ok(())
}
