//! The owner's verifier: checks every pending claim of the programs this node owns, oldest first.
//!
//! For each claim it fetches the claimed checkpoint from the worker over `/btd/blob/1` (always from
//! the claimant, into a directory of that claim's own: a file the owner holds under the same digest
//! from anyone else is never used), checks the
//! checkpoint is the program's model and matches the claim (seed, steps), re-evaluates `val_bpb` on
//! the program's validation split and on the owner-only holdout, re-trains when the program asks for
//! a spot check of claims that large, and hands the numbers to [`btd_protocol::kb::judge`]. The
//! verdict goes back to the node, which stores it before it counts.
//!
//! Evaluation runs on the CPU on a blocking thread; one claim is checked at a time, so a burst of
//! claims queues instead of starving the daemon. Every check is bounded (docs/protocol.md, "Limits
//! and defences against hostile peers"): the claim is first held to the program's step budget and
//! search space ([`check_bounds`]), the fetch has a deadline, and each re-training run (one per seed
//! of `verify.retrain_seeds`) stops after [`RETRAIN_SLACK`] times the program's training seconds or
//! when the node stops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use btd_protocol::kb::{judge, Measurement, Verdict};
use btd_protocol::program::{CandleTask, Dataset, ProgramId, Task};
use btd_protocol::wire::Claim;
use btd_trainer::claim::{check_bounds, check_claim, ClaimMismatch};
use btd_trainer::{Checkpoint, Corpus, TrainSpec};
use candle_core::Device;

use crate::blobs::{fetch, BlobStore, FetchSpec};

pub mod gc;
mod rerun;
use crate::node::types::ClaimJob;
use crate::node::{NodeError, NodeHandle};

/// Longest pause between looks for claims when nothing signals one (a claim restored at start or
/// left pending after an owner-side problem is picked up by then).
const IDLE: Duration = Duration::from_secs(5);

/// Pause before retrying when the owner's own files are unusable.
const OWNER_TROUBLE_PAUSE: Duration = Duration::from_secs(30);

/// Why a claim could not be checked.
enum Problem {
    /// The claim's fault: it is rejected with this reason.
    Claim(String),
    /// The owner's: the claim stays pending.
    Owner(String),
}

/// The btd version claims name.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What checking one claim cost, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CheckCost {
    /// Seconds fetching the checkpoint.
    pub fetch_secs: f64,
    /// Seconds evaluating it (validation split and holdout).
    pub eval_secs: f64,
    /// Seconds re-training (spot checks only).
    pub retrain_secs: f64,
    /// Checkpoint bytes moved.
    pub bytes: u64,
}

/// How many times the program's training seconds (`[task] seconds`) each of the owner's re-training
/// runs of a claim (one per seed of `verify.retrain_seeds`) may take before the check gives up and
/// rejects the claim: a run that has not reached the claimed steps by then cannot confirm it, and
/// the verifier moves on.
pub const RETRAIN_SLACK: u64 = 4;

/// Where the verifier fetches claims to, under the home:
/// `claims/<program>/<seq>/<program>/<digest>` (a [`BlobStore`] per claim).
const CLAIMS_DIR: &str = "claims";

/// Runs until the node stops.
pub async fn run(node: NodeHandle, home: PathBuf) {
    // Set when the node stops (`btd stop`): a running re-training checks it every step.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (node, stop) = (node.clone(), stop.clone());
        tokio::spawn(async move {
            node.stopped().await;
            stop.store(true, Ordering::SeqCst);
        });
    }
    let mut v = Verifier {
        blobs: BlobStore::new(home.join("blobs")),
        home,
        corpora: HashMap::new(),
        stop,
    };
    loop {
        let Ok(jobs) = node.next_claims().await else {
            return;
        };
        // Files of claims that have their verdict (crash leftovers included) go; each program's
        // oldest pending claim stays (a check resumes its fetch).
        gc::sweep_for(v.home.join(CLAIMS_DIR), &jobs).await;
        if jobs.is_empty() {
            let _ = tokio::time::timeout(IDLE, node.claims_ready().notified()).await;
            continue;
        }
        for job in jobs {
            let (program, seq) = (job.program, job.seq);
            let started = Instant::now();
            let (verdict, cost) = v.check(&node, job).await;
            node.metrics().verifier_check(started.elapsed());
            let Some(verdict) = verdict else {
                if v.stop.load(Ordering::SeqCst) {
                    return;
                }
                tokio::time::sleep(OWNER_TROUBLE_PAUSE).await;
                continue;
            };
            tracing::info!(
                program = %program.short(),
                seq,
                fetch_secs = cost.fetch_secs,
                eval_secs = cost.eval_secs,
                retrain_secs = cost.retrain_secs,
                bytes = cost.bytes,
                "checked a claim"
            );
            match node.resolve(program, seq, verdict).await {
                Ok(_) => {}
                Err(NodeError::Stopped) => return,
                Err(e) => {
                    tracing::warn!(program = %program.short(), seq, error = %e, "verdict not applied")
                }
            }
        }
    }
}

struct Verifier {
    home: PathBuf,
    blobs: BlobStore,
    corpora: HashMap<ProgramId, Arc<Corpus>>,
    /// Set when the node stops.
    stop: Arc<AtomicBool>,
}

impl Verifier {
    /// The verdict, or `None` when the owner itself cannot check right now (its corpus or holdout
    /// is unreadable): the claim then stays pending rather than be blamed on the worker.
    async fn check(&mut self, node: &NodeHandle, job: ClaimJob) -> (Option<Verdict>, CheckCost) {
        let mut cost = CheckCost::default();
        let verdict = match self.try_check(node, &job, &mut cost).await {
            Ok(v) => Some(v),
            Err(Problem::Claim(why)) => Some(Verdict::failed(why)),
            Err(Problem::Owner(why)) => {
                tracing::error!(program = %job.program.short(), seq = job.seq, problem = %why, "cannot check a claim; it stays pending");
                None
            }
        };
        if verdict.is_some() {
            // Checked: the claim's copy has served its purpose (a pending claim keeps it, so a
            // later try resumes the fetch).
            let _ = tokio::fs::remove_dir_all(self.claim_dir(&job)).await;
        }
        (verdict, cost)
    }

    /// Where claim `job`'s checkpoint is fetched to: a store of its own, so the bytes checked are
    /// the ones fetched from the claimant and nothing the owner holds under that digest from
    /// another source (the program's dataset, another member's checkpoint).
    fn claim_dir(&self, job: &ClaimJob) -> PathBuf {
        self.home
            .join(CLAIMS_DIR)
            .join(job.program.to_string())
            .join(job.seq.to_string())
    }

    async fn try_check(
        &mut self,
        node: &NodeHandle,
        job: &ClaimJob,
        cost: &mut CheckCost,
    ) -> Result<Verdict, Problem> {
        let view = node
            .program(job.program)
            .await
            .map_err(|e| Problem::Owner(e.to_string()))?
            .ok_or(Problem::Owner("the program is not loaded".into()))?;
        let program = view.program;
        let task = match &program.task {
            Task::Candle(t) => t,
            Task::Shell(t) => return self.check_rerun(job, &program, t, cost).await,
        };
        let claim = job.submission.claim.clone().ok_or(Problem::Claim(
            "the submission carries no claim (checkpoint, seed, steps), so it cannot be checked"
                .into(),
        ))?;
        if claim.checkpoint_bytes > program.verify.max_artifact_bytes {
            return Err(Problem::Claim(format!(
                "the checkpoint is {} bytes, over the program's {}-byte artifact limit",
                claim.checkpoint_bytes, program.verify.max_artifact_bytes
            )));
        }

        // The pure check against the program's budget and search space, before anything is
        // fetched, evaluated or re-trained.
        check_bounds(
            &claim,
            &job.submission.hypothesis,
            task.steps,
            &program.search,
        )
        .map_err(|e| Problem::Claim(e.to_string()))?;

        // Fetch the checkpoint from the worker.
        let started = Instant::now();
        let spec = FetchSpec {
            peer: job.worker,
            program: job.program,
            credential: None,
            digest: claim.checkpoint,
            max_bytes: program.verify.max_artifact_bytes,
            deadline: tokio::time::Instant::now()
                + Duration::from_secs(program.verify.fetch_timeout_secs),
        };
        let (path, progress) = fetch(node, &BlobStore::new(self.claim_dir(job)), &spec)
            .await
            .map_err(|e| {
                Problem::Claim(format!(
                    "the checkpoint could not be fetched from the worker: {e}"
                ))
            })?;
        cost.fetch_secs = started.elapsed().as_secs_f64();
        cost.bytes = progress.size.saturating_sub(progress.resumed_from);

        let corpus = self
            .corpus(job.program, task)
            .await
            .map_err(Problem::Owner)?;
        let holdout = match program.verify.max_holdout_gap {
            Some(_) => {
                let p = crate::node::holdout_path(&self.home, &job.program);
                Some(tokio::fs::read(&p).await.map_err(|e| {
                    Problem::Owner(format!("the holdout {} cannot be read: {e}", p.display()))
                })?)
            }
            None => None,
        };
        let same_platform = btd_trainer::claim::same_platform(&claim, &Device::Cpu, VERSION);
        let retrain = program
            .verify
            .retrain_share
            .is_some_and(|s| job.share_if_verified >= s);
        let task = task.clone();
        let hypothesis = job.submission.hypothesis.clone();
        let claimed = job.submission.value;
        let verify = program.verify.clone();
        let direction = program.criteria.direction;
        let limits = RetrainLimits {
            seeds: verify.retrain_seed_list(claim.seed),
            seconds: task
                .seconds
                .map(|s| Duration::from_secs(s.saturating_mul(RETRAIN_SLACK))),
            stop: self.stop.clone(),
        };
        let (verdict, eval_secs, retrain_secs) = tokio::task::spawn_blocking(move || {
            measure_and_judge(
                &path,
                &claim,
                &task,
                &corpus,
                holdout.as_deref(),
                &hypothesis,
                retrain.then_some(&limits),
                same_platform,
                |m| judge(&verify, direction, claimed, m),
            )
        })
        .await
        .map_err(|e| Problem::Owner(format!("the check crashed: {e}")))?
        .map_err(|e| match e {
            CheckError::Claim(why) => Problem::Claim(why),
            CheckError::Stopped => Problem::Owner("the node is stopping".into()),
        })?;
        cost.eval_secs = eval_secs;
        cost.retrain_secs = retrain_secs;
        Ok(verdict)
    }

    /// The program's corpus, loaded once.
    async fn corpus(&mut self, id: ProgramId, task: &CandleTask) -> Result<Arc<Corpus>, String> {
        if let Some(c) = self.corpora.get(&id) {
            return Ok(c.clone());
        }
        let dataset = task.dataset.clone();
        let file = match dataset {
            Dataset::File { sha256 } => Some(self.blobs.path(&id, &sha256)),
            Dataset::Synthetic { .. } => None,
        };
        let corpus =
            tokio::task::spawn_blocking(move || Corpus::for_dataset(&dataset, file.as_deref()))
                .await
                .map_err(|e| format!("loading the corpus crashed: {e}"))?
                .map_err(|e| format!("the owner cannot load the program's corpus: {e}"))?;
        let corpus = Arc::new(corpus);
        self.corpora.insert(id, corpus.clone());
        Ok(corpus)
    }
}

/// What the owner's re-training of a claim runs and what bounds it.
#[derive(Debug, Clone, Default)]
pub struct RetrainLimits {
    /// The seeds to re-train with, one run each ([`btd_protocol::program::Verify::retrain_seed_list`]:
    /// the claim's first); empty: the claim's seed alone. The judge compares their mean.
    pub seeds: Vec<u64>,
    /// Longest each run may take ([`RETRAIN_SLACK`] × the program's training seconds, so all of
    /// them together at most `verify.retrain_seeds` times that; `None` when the program has only a
    /// step budget, which [`check_bounds`] already holds the claim to).
    pub seconds: Option<Duration>,
    /// Set when the node stops; checked every step.
    pub stop: Arc<AtomicBool>,
}

/// Why [`measure_and_judge`] returned no verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckError {
    /// The claim's fault: reject it with this reason.
    Claim(String),
    /// The node is stopping: the claim stays pending and is checked after a restart.
    Stopped,
}

impl From<String> for CheckError {
    fn from(why: String) -> Self {
        Self::Claim(why)
    }
}

/// Reads the checkpoint, checks it against the claim (digest, seed, steps, the hypothesis it was
/// trained with), evaluates it (and, when `retrain` is given, re-trains with the program's task and
/// the claim's hypothesis, once per seed of `retrain.seeds`, for the claimed steps — which
/// [`check_bounds`] holds to the program's step budget — each run under `retrain.seconds`), and
/// judges. Returns the verdict with the
/// evaluation and re-training seconds. Blocking.
#[allow(clippy::too_many_arguments)]
pub fn measure_and_judge(
    path: &std::path::Path,
    claim: &Claim,
    task: &CandleTask,
    corpus: &Corpus,
    holdout: Option<&[u8]>,
    hypothesis: &btd_protocol::program::search::Hypothesis,
    retrain: Option<&RetrainLimits>,
    same_platform: bool,
    judge: impl Fn(&Measurement) -> Verdict,
) -> Result<(Verdict, f64, f64), CheckError> {
    let ckpt = Checkpoint::read(path).map_err(|e| format!("the checkpoint is unusable: {e}"))?;
    match check_claim(&ckpt, claim, hypothesis) {
        Ok(()) => {}
        // Other bytes than the claimed ones: the fetch failed (the caller rejects the claim).
        Err(e @ ClaimMismatch::Digest) => return Err(CheckError::Claim(e.to_string())),
        Err(e) => return Ok((Verdict::failed(e.to_string()), 0.0, 0.0)),
    }
    let dev = Device::Cpu;
    let m = match btd_trainer::verify::measure(&ckpt, task, corpus, holdout, &dev) {
        Ok(m) => m,
        Err(e) => {
            return Ok((
                Verdict::failed(format!("the checkpoint does not fit the program: {e}")),
                0.0,
                0.0,
            ))
        }
    };
    let mut measurement = Measurement {
        value: m.val_bpb,
        holdout: m.holdout_bpb,
        same_platform,
        retrained: Vec::new(),
    };
    let mut retrain_secs = 0.0;
    // Re-train only when the claim reproduces otherwise: a failing claim is rejected without it.
    let retrain = retrain.filter(|_| matches!(judge(&measurement), Verdict::Measured { .. }));
    if let Some(limits) = retrain {
        let started = Instant::now();
        let mut spec = TrainSpec::from_task(task);
        spec.apply_hypothesis(hypothesis)
            .map_err(|e| format!("the claim's hypothesis is not a usable config: {e}"))?;
        spec.steps = Some(task.steps.map_or(claim.steps, |b| b.min(claim.steps)));
        spec.seconds = None;
        let seeds = if limits.seeds.is_empty() {
            vec![claim.seed]
        } else {
            limits.seeds.clone()
        };
        for seed in seeds {
            // Each run has its own deadline, so k runs take at most k times it.
            let run_started = Instant::now();
            spec.seed = seed;
            let mut timed_out = false;
            let trained = btd_trainer::train(&spec, corpus, &dev, &mut |_| {
                if limits.stop.load(Ordering::SeqCst) {
                    return std::ops::ControlFlow::Break(());
                }
                if limits.seconds.is_some_and(|s| run_started.elapsed() > s) {
                    timed_out = true;
                    return std::ops::ControlFlow::Break(());
                }
                std::ops::ControlFlow::Continue(())
            })
            .map_err(|e| format!("the owner's re-training failed: {e}"))?;
            if limits.stop.load(Ordering::SeqCst)
                && !timed_out
                && trained.report.steps < claim.steps
            {
                return Err(CheckError::Stopped);
            }
            if trained.report.steps < claim.steps {
                return Ok((
                    Verdict::failed(format!(
                        "the owner's re-training (seed {seed}) reached {} of the claimed {} steps \
                         within {RETRAIN_SLACK} times the program's training seconds",
                        trained.report.steps, claim.steps
                    )),
                    m.eval_secs,
                    started.elapsed().as_secs_f64(),
                ));
            }
            measurement.retrained.push(trained.report.val_bpb);
        }
        retrain_secs = started.elapsed().as_secs_f64();
    }
    Ok((judge(&measurement), m.eval_secs, retrain_secs))
}
