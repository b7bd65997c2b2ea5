//! Rounds on a Slurm rung (`executor = "slurm"` in `config.toml`).
//!
//! A shell round is the program's command as a batch job (see `btd_trainer::slurm` and the shell
//! adapter's `SlurmRun`). A candle round runs this same `btd` binary on the compute node:
//! `btd slurm-round SPEC` (hidden) reads the round's `slurm-round.json` (task, hypothesis, corpus
//! file, device), trains exactly as a local round does, and writes `outcome.json` beside the
//! checkpoint; the daemon reads it back and checks every output's digest against the file before
//! the round counts. Either way the job's id, state, node and `sbatch` arguments are kept as the
//! round's `slurm-job.json`, an output of the result bundle, so the traceability record names the
//! job.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use btd_protocol::program::search::Hypothesis;
use btd_protocol::program::CandleTask;
use btd_protocol::trace::{BundleStatus, Output};
use btd_trainer::device::{self, DeviceChoice};
use btd_trainer::slurm::{run_batch, BatchJob, JobState, SlurmJobInfo};
use btd_trainer::{Corpus, TrainSpec};
use serde::{Deserialize, Serialize};

use btd_trainer::shell::SlurmRun;

use super::run::{file_digest, train, RunOutcome};

/// The spec a candle round's job reads.
const SPEC_FILE: &str = "slurm-round.json";
/// What the job writes back.
const OUTCOME_FILE: &str = "outcome.json";
/// The job's record kept with the round.
const JOB_FILE: &str = "slurm-job.json";
/// Largest spec or outcome file read.
const MAX_JSON_BYTES: u64 = 4 << 20;
/// Bytes of a job's stdout/stderr kept (candle rounds log to `train.log` themselves).
const CAPTURE: usize = 64 * 1024;

/// One candle round to run on a compute node.
pub(super) struct CandleJob {
    pub(super) task: CandleTask,
    pub(super) data: Option<PathBuf>,
    pub(super) device: DeviceChoice,
    pub(super) hypothesis: Hypothesis,
    pub(super) dir: PathBuf,
}

/// [`CandleJob`] as the job reads it.
#[derive(Serialize, Deserialize)]
struct Spec {
    task: CandleTask,
    data: Option<PathBuf>,
    /// `cpu` or `cuda:N`.
    device: String,
    hypothesis: Hypothesis,
    dir: PathBuf,
}

/// Runs a candle round as a Slurm job; never fails: every problem is in the outcome.
pub(super) fn candle_on_slurm(s: &SlurmRun, job: &CandleJob, cancel: &AtomicBool) -> RunOutcome {
    candle_job(s, job, cancel).unwrap_or_else(RunOutcome::failed)
}

fn candle_job(s: &SlurmRun, job: &CandleJob, cancel: &AtomicBool) -> Result<RunOutcome, String> {
    let budget = job.task.seconds.or(s.config.max_time_secs).ok_or_else(|| {
        "the task has a step budget and no time budget; on a Slurm rung set \
         slurm.max_time_secs in config.toml to bound the job"
            .to_string()
    })?;
    let btd = match &s.config.btd_path {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this btd executable for the job: {e}"))?,
    };
    let spec = Spec {
        task: job.task.clone(),
        data: job.data.clone(),
        device: match job.device {
            DeviceChoice::Cpu => "cpu".into(),
            DeviceChoice::Cuda(n) => format!("cuda:{n}"),
        },
        hypothesis: job.hypothesis.clone(),
        dir: job.dir.clone(),
    };
    let spec_path = job.dir.join(SPEC_FILE);
    let text =
        serde_json::to_vec_pretty(&spec).map_err(|e| format!("cannot encode {SPEC_FILE}: {e}"))?;
    std::fs::write(&spec_path, text)
        .map_err(|e| format!("cannot write {}: {e}", spec_path.display()))?;
    let argv = [
        btd.display().to_string(),
        "slurm-round".into(),
        spec_path.display().to_string(),
    ];
    let script =
        btd_trainer::slurm::script(&job.dir, false, &[], &argv).map_err(|e| e.to_string())?;
    let end = run_batch(
        &s.config,
        &BatchJob {
            name: s.name.clone(),
            dir: job.dir.clone(),
            script,
            budget_secs: budget,
            max_capture: CAPTURE,
        },
        cancel,
    )
    .map_err(|e| e.to_string())?;
    let mut outcome = if end.info.state == JobState::Completed && end.exit_code == Some(0) {
        read_outcome(&job.dir).unwrap_or_else(RunOutcome::failed)
    } else {
        let mut o = RunOutcome::failed(String::new());
        o.status = if end.timed_out {
            BundleStatus::TimedOut
        } else {
            BundleStatus::Failed
        };
        o.cancelled = end.info.cancelled_by_btd && !end.timed_out;
        let tail = String::from_utf8_lossy(&end.stderr_tail())
            .trim()
            .to_string();
        o.detail = match (end.timed_out, tail.is_empty()) {
            (true, _) => format!(
                "killed at its Slurm time limit ({} min)",
                end.info.time_limit_minutes
            ),
            (false, true) => "the job did not finish".into(),
            (false, false) => format!("the job failed: {tail}"),
        };
        o
    };
    keep_job(&job.dir, &end.info, &mut outcome.outputs)?;
    outcome.detail = format!("{}: {}", describe_job(&end.info), outcome.detail);
    Ok(outcome)
}

/// Reads the job's `outcome.json` and checks each output it names against the file in `dir`.
fn read_outcome(dir: &Path) -> Result<RunOutcome, String> {
    let path = dir.join(OUTCOME_FILE);
    let outcome: RunOutcome = read_json(&path)?;
    for o in &outcome.outputs {
        let plain = !o.name.is_empty() && !o.name.contains('/') && o.name != "..";
        if !plain || file_digest(&dir.join(&o.name)) != Some(o.sha256) {
            return Err(format!(
                "the job's output {} does not match the digest in {OUTCOME_FILE}",
                o.name
            ));
        }
    }
    Ok(outcome)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, String> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| format!("the job left no {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(format!("{} is over {MAX_JSON_BYTES} bytes", path.display()));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is unreadable: {e}", path.display()))
}

/// Writes the job's record as `slurm-job.json` and names it among the round's outputs.
pub(super) fn keep_job(
    dir: &Path,
    job: &SlurmJobInfo,
    outputs: &mut Vec<Output>,
) -> Result<(), String> {
    let bytes =
        serde_json::to_vec_pretty(job).map_err(|e| format!("cannot encode {JOB_FILE}: {e}"))?;
    std::fs::write(dir.join(JOB_FILE), &bytes)
        .map_err(|e| format!("cannot write {JOB_FILE}: {e}"))?;
    outputs.retain(|o| o.name != JOB_FILE);
    outputs.push(Output::of(JOB_FILE, &bytes));
    Ok(())
}

/// `Slurm job 42 (TIMEOUT, TimeLimit, on node7)`.
pub(super) fn describe_job(job: &SlurmJobInfo) -> String {
    let mut parts = vec![job.state.to_string()];
    if !job.reason.is_empty() {
        parts.push(job.reason.clone());
    }
    if !job.nodes.is_empty() {
        parts.push(format!("on {}", job.nodes));
    }
    if job.cancelled_by_btd {
        parts.push("cancelled by btd".into());
    }
    format!("Slurm job {} ({})", job.job_id, parts.join(", "))
}

/// `btd slurm-round SPEC`: the candle round a Slurm job runs on its compute node. Writes
/// `outcome.json` in the round's directory; fails only when it cannot.
pub fn slurm_round_main(spec_path: &Path) -> Result<(), String> {
    let spec: Spec = read_json(spec_path)?;
    let device = match spec.device.as_str() {
        "cpu" => DeviceChoice::Cpu,
        d => d
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceChoice::Cuda)
            .ok_or_else(|| {
                format!(
                    "device {d:?} in {} is not cpu or cuda:N",
                    spec_path.display()
                )
            })?,
    };
    // The CPUs Slurm gave the job, else what suits the model.
    let threads = device::threads_from_env("SLURM_CPUS_PER_TASK").unwrap_or_else(|| {
        device::recommended_cpu_threads(&TrainSpec::from_task(&spec.task).model)
    });
    device::set_cpu_threads(threads);
    let outcome = match Corpus::for_dataset(&spec.task.dataset, spec.data.as_deref()) {
        Ok(corpus) => train(
            &spec.task,
            &corpus,
            device,
            &spec.hypothesis,
            &spec.dir,
            &AtomicBool::new(false),
        ),
        Err(e) => RunOutcome::failed(format!(
            "the compute node cannot use the program's corpus: {e}"
        )),
    };
    let bytes = serde_json::to_vec_pretty(&outcome)
        .map_err(|e| format!("cannot encode {OUTCOME_FILE}: {e}"))?;
    let path = spec.dir.join(OUTCOME_FILE);
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("{}", outcome.detail);
    Ok(())
}
