//! What the worker loop reads back from the owner: the champion's hypothesis (from the KB's
//! `Champion` reply, whose signed submission is verified before its hypothesis is used) and the
//! verdicts on this loop's pending claims (from the program's status).

use std::time::Duration;

use btd_protocol::kb::{Check, Entry};
use btd_protocol::program::search::Hypothesis;
use btd_protocol::trace::{ImpactRead, TraceabilityRecord};
use btd_protocol::wire::MAX_RESULTS_PAGE;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::{Loop, RunRecord, WorkEvent};

/// How often the loop asks the owner for verdicts on pending claims.
const VERDICT_POLL: Duration = Duration::from_secs(1);

impl Loop {
    /// Waits (up to `verdict_wait_secs`) for the owner's verdicts on this loop's pending claims,
    /// updating and storing each record as its verdict arrives.
    pub(super) async fn await_verdicts(
        &self,
        runs: &mut [RunRecord],
        events: &mpsc::Sender<WorkEvent>,
    ) {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.opts.verdict_wait_secs);
        let pending = |r: &RunRecord| {
            r.verdict
                .as_ref()
                .is_some_and(|v| v.check == Check::Pending)
        };
        while runs.iter().any(pending) && !self.ctx.cancelled() {
            let program = self.id;
            let seqs: Vec<u64> = runs
                .iter()
                .filter(|r| pending(r))
                .filter_map(|r| r.verdict.as_ref().map(|v| v.seq))
                .collect();
            if let Ok(entries) = self.read_entries(program, &seqs).await {
                for r in runs.iter_mut().filter(|r| pending(r)) {
                    let Some(v) = r.verdict.as_mut() else {
                        continue;
                    };
                    let Some(e) = entries.iter().find(|e| e.seq == v.seq) else {
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
                        let impact =
                            ImpactRead::from_receipt(b, &self.program.criteria.metric, value, v);
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

    /// The KB entries of `seqs` (a few pending claims): one read per window of
    /// [`MAX_RESULTS_PAGE`] seqs that holds any of them, so the cost is the span, not the log.
    async fn read_entries(
        &self,
        program: btd_protocol::program::ProgramId,
        seqs: &[u64],
    ) -> Result<Vec<Entry>, crate::node::NodeError> {
        let mut wanted: Vec<u64> = seqs.to_vec();
        wanted.retain(|&s| s > 0);
        wanted.sort_unstable();
        let mut entries = Vec::new();
        while let (Some(&lo), Some(&hi)) = (wanted.first(), wanted.last()) {
            let after = lo.saturating_sub(1);
            let limit = u32::try_from(hi - after)
                .unwrap_or(MAX_RESULTS_PAGE)
                .min(MAX_RESULTS_PAGE);
            let (mut page, _) = self.ctx.node.results(program, after, limit).await?;
            let end = after.saturating_add(u64::from(limit));
            wanted.retain(|&s| s > end);
            page.retain(|e| seqs.contains(&e.seq));
            entries.append(&mut page);
        }
        Ok(entries)
    }

    /// The champion as its signed submission states it, or `None` when there is none (or it
    /// cannot be read or verified: then the search restarts from the defaults, which is safe).
    /// Read only when a round uses it (a search space or a code program).
    pub(super) async fn champion(&self) -> Option<ChampionInfo> {
        if self.program.search.is_empty() && self.code.is_none() {
            return None;
        }
        let program = self.id;
        let c = self.ctx.node.champion(program).await.ok()??;
        let worker = c.entry.worker.parse::<PeerId>().ok()?;
        match c.submission.verify_from(&worker) {
            Ok(sub) if sub.program == program => Some(ChampionInfo {
                seq: c.entry.seq,
                // What counts: the owner's measurement when it checked the claim.
                value: c.entry.value,
                metrics: sub.metrics,
                hypothesis: sub.hypothesis,
            }),
            _ => {
                tracing::warn!(program = %program, "the champion's submission does not verify; searching from the defaults");
                None
            }
        }
    }
}

/// The champion a round builds on.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ChampionInfo {
    /// Its KB seq.
    pub(super) seq: u64,
    /// Its value (the owner's measurement for a checked claim).
    pub(super) value: f64,
    /// Its other metrics, as its worker signed them.
    pub(super) metrics: std::collections::BTreeMap<String, f64>,
    /// Its numeric hypothesis.
    pub(super) hypothesis: Hypothesis,
}
