//! Work done by hand for a program: `btd train --program` asks for the program's candle task (and
//! the dataset, fetched from the owner like a round's), and `btd submit --checkpoint` has the
//! checkpoint scored the way the owner's verifier will score it before claiming the value.

use std::path::PathBuf;

use btd_protocol::program::{CandleTask, Dataset, Program, ProgramId, Task};
use btd_protocol::Digest;
use serde::{Deserialize, Serialize};

use super::dataset::fetch_artifact;
use super::WorkContext;

/// A program's candle task as `btd train --program` runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainTaskView {
    /// The program.
    pub program: ProgramId,
    /// Its name.
    pub name: String,
    /// The metric it ranks by.
    pub metric: String,
    /// The task (preset, dataset, budgets, seed, eval budget), as the verified manifest says.
    pub task: CandleTask,
    /// The dataset file on this machine (a `file` dataset this node has, or fetched when asked);
    /// `None` for the synthetic corpus or a file this node does not have.
    pub data: Option<PathBuf>,
    /// Whether this node is a member (it must be to submit).
    pub member: bool,
    /// Whether this node owns the program (owners do not submit to their own programs).
    pub own: bool,
}

/// A checkpoint scored the way the owner will score it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreView {
    /// The program.
    pub program: ProgramId,
    /// The metric.
    pub metric: String,
    /// Its value: what the owner's re-evaluation measures on this platform.
    pub value: f64,
    /// Validation targets scored.
    pub tokens: u64,
    /// The program's evaluation budget.
    pub eval_tokens: u64,
    /// The checkpoint's SHA-256.
    pub checkpoint_sha256: Digest,
}

impl WorkContext {
    /// The candle task of `program` for `btd train --program`, with the path of a `file` dataset
    /// this node has (with `fetch`, fetched from the owner as a round does when it has not). A
    /// shell task is refused with words.
    pub async fn train_task(
        &self,
        program: ProgramId,
        fetch: bool,
    ) -> Result<TrainTaskView, String> {
        let (p, owner) = self.known(program).await?;
        let task = candle_task(program, &p)?.clone();
        let member = self
            .node
            .credential(program)
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        let data = self.dataset(program, owner, &p, &task, fetch).await?;
        Ok(TrainTaskView {
            program,
            name: p.name.clone(),
            metric: p.criteria.metric.clone(),
            task,
            data,
            member,
            own: owner == self.node.peer_id(),
        })
    }

    /// Scores the checkpoint at `path` the way the owner's verifier does
    /// ([`btd_trainer::verify::measure`]: the program's preset and step budget, its validation
    /// split, its eval budget, on the CPU). A `file` dataset this node lacks is fetched from the
    /// owner with `fetch`, else the scoring fails saying so. Blocking work runs on a blocking
    /// thread.
    pub async fn score_checkpoint(
        &self,
        program: ProgramId,
        path: PathBuf,
        fetch: bool,
    ) -> Result<ScoreView, String> {
        let (p, owner) = self.known(program).await?;
        let task = candle_task(program, &p)?.clone();
        let data = self.dataset(program, owner, &p, &task, fetch).await?;
        if let (Dataset::File { sha256 }, None) = (&task.dataset, &data) {
            return Err(format!(
                "this daemon does not have program {program}'s dataset (sha256 {sha256}) yet"
            ));
        }
        let metric = p.criteria.metric.clone();
        tokio::task::spawn_blocking(move || {
            let ckpt = btd_trainer::Checkpoint::read(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let corpus = btd_trainer::Corpus::for_dataset(&task.dataset, data.as_deref())
                .map_err(|e| format!("cannot load the program's corpus: {e}"))?;
            let m = btd_trainer::verify::measure(
                &ckpt,
                &task,
                &corpus,
                None,
                &candle_core::Device::Cpu,
            )
            .map_err(|e| {
                format!(
                    "the owner would reject {}: the checkpoint does not fit the program: {e}",
                    path.display()
                )
            })?;
            Ok(ScoreView {
                program,
                metric,
                value: m.val_bpb,
                tokens: m.tokens,
                eval_tokens: task.eval_tokens,
                checkpoint_sha256: ckpt.sha256(),
            })
        })
        .await
        .map_err(|e| format!("scoring the checkpoint crashed: {e}"))?
    }

    /// The verified program and its owner.
    async fn known(&self, program: ProgramId) -> Result<(Program, libp2p::PeerId), String> {
        let view = self
            .node
            .program(program)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("program {program} is not known to this daemon (see `btd programs`)")
            })?;
        Ok((view.program, view.owner))
    }

    /// The program's dataset file on this machine: already in the blob store (published or
    /// fetched before), else, with `fetch`, fetched from the owner by digest (members only).
    /// `None` for the synthetic corpus, or a file this node lacks when not fetching.
    async fn dataset(
        &self,
        program: ProgramId,
        owner: libp2p::PeerId,
        p: &Program,
        task: &CandleTask,
        fetch: bool,
    ) -> Result<Option<PathBuf>, String> {
        let Dataset::File { sha256 } = task.dataset else {
            return Ok(None);
        };
        if self.blobs.size(&program, &sha256).is_some() {
            return Ok(Some(self.blobs.path(&program, &sha256)));
        }
        if !fetch {
            return Ok(None);
        }
        let (path, _) = fetch_artifact(
            self,
            program,
            owner,
            sha256,
            p.verify.max_artifact_bytes,
            "dataset",
        )
        .await
        .map_err(|e| format!("{e} (`btd join {program}` first, or give the file with --data)"))?;
        Ok(Some(path))
    }
}

/// The program's candle task, or why there is none.
fn candle_task(program: ProgramId, p: &Program) -> Result<&CandleTask, String> {
    match &p.task {
        Task::Candle(t) => Ok(t),
        Task::Shell(_) => Err(format!(
            "program {program} runs a shell task, not btd's trainer: there is nothing to train or \
             score by hand; use `btd join {program} --rounds N --allow-shell`"
        )),
    }
}
