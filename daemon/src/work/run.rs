//! Running one round's task: candle training or the program's shell command, in the round's
//! directory, on a blocking thread.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use btd_protocol::dispatch::{DispatchResult, HardwareClass};
use btd_protocol::program::search::Hypothesis;
use btd_protocol::program::{CandleTask, Program, ShellTask, Task};
use btd_protocol::trace::{BundleStatus, Output};
use btd_protocol::wire::AdvertisedRung;
use btd_protocol::Digest;
use btd_trainer::device::{self, DeviceChoice};
use btd_trainer::shell::{run_shell, Sandbox, ShellOptions, SlurmRun};

use super::code::{code_env, RoundCode};
use btd_trainer::train::StopReason;
use btd_trainer::{Corpus, TrainSpec};

/// Most lines kept in a round's `train.log` (one per logged step).
const MAX_LOG_LINES: usize = 20_000;

/// What one run produced (also what a candle round on Slurm writes as `outcome.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunOutcome {
    /// How it ended.
    pub status: BundleStatus,
    /// The objective metric, when the run produced a finite one.
    pub value: Option<f64>,
    /// Other measurements.
    pub metrics: BTreeMap<String, f64>,
    /// Its files, by digest.
    pub outputs: Vec<Output>,
    /// What happened, in words.
    pub detail: String,
    /// The daemon was stopping and interrupted it.
    pub cancelled: bool,
    /// What the owner needs to check the value (candle runs).
    pub claim: Option<btd_protocol::wire::Claim>,
}

impl RunOutcome {
    pub(super) fn failed(detail: String) -> Self {
        Self {
            status: BundleStatus::Failed,
            value: None,
            metrics: BTreeMap::new(),
            outputs: Vec::new(),
            detail,
            cancelled: false,
            claim: None,
        }
    }
}

/// How a round executes: its cancel flag (`btd stop`) and, on a Slurm rung, the job settings.
pub(super) struct Exec {
    /// Set when the daemon stops: training stops, commands are killed, jobs cancelled.
    pub(super) cancel: Arc<AtomicBool>,
    /// Run as a Slurm batch job (its directory is the round's).
    pub(super) slurm: Option<SlurmRun>,
}

/// A task ready to run rounds: the corpus is loaded and checked once.
pub(super) enum Prepared {
    Candle {
        task: CandleTask,
        corpus: Arc<Corpus>,
        device: DeviceChoice,
        /// The corpus file (`--data` or the fetched dataset), for rounds run elsewhere (Slurm).
        data: Option<PathBuf>,
    },
    Shell {
        task: ShellTask,
        metric: String,
    },
}

impl Prepared {
    pub(super) async fn new(
        program: &Program,
        rung: &AdvertisedRung,
        data: Option<PathBuf>,
    ) -> Result<Prepared, String> {
        match &program.task {
            Task::Candle(task) => {
                let dataset = task.dataset.clone();
                let path = data.clone();
                let corpus = tokio::task::spawn_blocking(move || {
                    Corpus::for_dataset(&dataset, path.as_deref())
                })
                .await
                .map_err(|e| format!("loading the corpus failed: {e}"))?
                .map_err(|e| format!("cannot use the program's corpus: {e}"))?;
                let spec = TrainSpec::from_task(task);
                corpus
                    .check_fits(spec.model.block_size)
                    .map_err(|e| e.to_string())?;
                let device = match rung.hardware {
                    HardwareClass::Cpu => DeviceChoice::Cpu,
                    _ => DeviceChoice::Cuda(0),
                };
                if device != DeviceChoice::Cpu && !device::CUDA_BUILT {
                    return Err(format!(
                        "rung {} is a GPU but this btd was built without CUDA (cargo build \
                         --features cuda); run on a CPU rung with --rung",
                        rung.id
                    ));
                }
                Ok(Prepared::Candle {
                    task: task.clone(),
                    corpus: Arc::new(corpus),
                    device,
                    data,
                })
            }
            Task::Shell(task) => Ok(Prepared::Shell {
                task: task.clone(),
                metric: program.criteria.metric.clone(),
            }),
        }
    }

    /// The task's own values of the searchable parameters (where the search starts).
    pub(super) fn defaults(&self) -> Hypothesis {
        match self {
            Prepared::Candle { task, .. } => TrainSpec::from_task(task).hypothesis(),
            Prepared::Shell { .. } => Hypothesis::new(),
        }
    }

    /// Runs the task once in `dir`; never panics, never fails: every problem is in the outcome.
    pub(super) async fn run(
        &self,
        dispatch: &DispatchResult,
        hypothesis: &Hypothesis,
        dir: &Path,
        required: &[String],
        code: Option<RoundCode>,
        exec: Exec,
    ) -> RunOutcome {
        let Exec { cancel, slurm } = exec;
        let dir = dir.to_path_buf();
        // A code round's outputs are where its command ran: its fresh tree.
        let outputs_dir = code
            .as_ref()
            .map_or_else(|| dir.clone(), |c| c.tree_dir.clone());
        let hypothesis = hypothesis.clone();
        let joined = match self {
            Prepared::Candle {
                task,
                corpus,
                device,
                data,
            } => {
                let (task, corpus, device) = (task.clone(), corpus.clone(), *device);
                let (dir, data) = (dir.clone(), data.clone());
                tokio::task::spawn_blocking(move || match slurm {
                    None => train(&task, &corpus, device, &hypothesis, &dir, &cancel),
                    Some(s) => super::slurm::candle_on_slurm(
                        &s,
                        &super::slurm::CandleJob {
                            task,
                            data,
                            device,
                            hypothesis,
                            dir,
                        },
                        &cancel,
                    ),
                })
                .await
            }
            Prepared::Shell { task, metric } => {
                let (task, metric, dispatch) = (task.clone(), metric.clone(), dispatch.clone());
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    let exec = Exec { cancel, slurm };
                    shell(
                        &task,
                        &metric,
                        &dispatch,
                        &hypothesis,
                        &dir,
                        code.as_ref(),
                        exec,
                    )
                })
                .await
            }
        };
        let mut outcome =
            joined.unwrap_or_else(|e| RunOutcome::failed(format!("the run crashed: {e}")));
        collect_required(&mut outcome, &outputs_dir, required);
        outcome
    }
}

/// What a round of `task` trains with `hypothesis`: the task's spec (preset, budget, seed, eval
/// budget) with the hypothesis applied. `btd train --program` trains with the same spec (the empty
/// hypothesis), so a checkpoint trained by hand is what a round would have produced.
pub(crate) fn round_spec(
    task: &CandleTask,
    hypothesis: &Hypothesis,
) -> Result<TrainSpec, btd_trainer::TrainError> {
    let mut spec = TrainSpec::from_task(task);
    spec.apply_hypothesis(hypothesis)?;
    Ok(spec)
}

pub(super) fn train(
    task: &CandleTask,
    corpus: &Corpus,
    device: DeviceChoice,
    hypothesis: &Hypothesis,
    dir: &Path,
    cancel: &AtomicBool,
) -> RunOutcome {
    let spec = match round_spec(task, hypothesis) {
        Ok(s) => s,
        Err(e) => return RunOutcome::failed(format!("the hypothesis is not a usable config: {e}")),
    };
    // The thread count is fixed at daemon start (see `btd start`): the environment must not change
    // while the daemon's threads run.
    let dev = match device::open(device) {
        Ok(d) => d,
        Err(e) => return RunOutcome::failed(e.to_string()),
    };
    let mut log = String::new();
    let mut lines = 0usize;
    let trained = btd_trainer::train(&spec, corpus, &dev, &mut |s| {
        if lines < MAX_LOG_LINES && (s.step <= 10 || s.step % 10 == 0) {
            lines += 1;
            log.push_str(&format!(
                "step {} loss {:.5} lr {:.6e} grad_norm {:.4} tokens/s {:.0}\n",
                s.step, s.loss, s.lr, s.grad_norm, s.tokens_per_sec
            ));
        }
        if cancel.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    let trained = match trained {
        Ok(t) => t,
        Err(e) => return RunOutcome::failed(format!("training failed: {e}")),
    };
    let r = &trained.report;
    let mut outputs = Vec::new();
    let ckpt = dir.join("checkpoint.safetensors");
    if let Err(e) = trained.checkpoint.write(&ckpt) {
        return RunOutcome::failed(format!("cannot write the checkpoint: {e}"));
    }
    outputs.push(Output {
        name: "checkpoint.safetensors".into(),
        sha256: r.checkpoint_sha256,
    });
    let report = match serde_json::to_vec_pretty(r) {
        Ok(b) => b,
        Err(e) => return RunOutcome::failed(format!("cannot encode the report: {e}")),
    };
    for (name, bytes) in [("metrics.json", &report[..]), ("train.log", log.as_bytes())] {
        if let Err(e) = std::fs::write(dir.join(name), bytes) {
            return RunOutcome::failed(format!("cannot write {name}: {e}"));
        }
        outputs.push(Output::of(name, bytes));
    }
    let metrics = BTreeMap::from([
        ("steps".to_string(), r.steps as f64),
        ("tokens".to_string(), r.tokens as f64),
        ("tokens_per_sec".to_string(), r.tokens_per_sec),
        ("train_secs".to_string(), r.train_secs),
        ("params".to_string(), r.params as f64),
        ("final_train_loss".to_string(), r.final_train_loss),
    ]);
    let finite = r.val_bpb.is_finite();
    let detail = format!(
        "{} steps in {:.1} s ({:.0} tokens/s) on {}, val_bpb {:.4}, checkpoint {}",
        r.steps,
        r.train_secs,
        r.tokens_per_sec,
        r.device,
        r.val_bpb,
        r.checkpoint_sha256.short()
    );
    RunOutcome {
        status: if finite {
            BundleStatus::Completed
        } else {
            BundleStatus::Failed
        },
        value: finite.then_some(r.val_bpb),
        metrics: metrics.into_iter().filter(|(_, v)| v.is_finite()).collect(),
        outputs,
        detail,
        cancelled: r.stopped_by == StopReason::Cancelled,
        claim: Some(btd_trainer::claim::claim(
            &trained.checkpoint,
            &dev,
            crate::verify::VERSION,
        )),
    }
}

fn shell(
    task: &ShellTask,
    metric: &str,
    dispatch: &DispatchResult,
    hypothesis: &Hypothesis,
    dir: &Path,
    code: Option<&RoundCode>,
    exec: Exec,
) -> RunOutcome {
    let mut env = param_env(hypothesis);
    let mut opts = ShellOptions::new(metric);
    opts.slurm = exec.slurm;
    opts.cancel = Some(exec.cancel);
    match code {
        None => {
            env.push(("BTD_RUN_DIR".into(), dir.display().to_string()));
            opts.cwd = Some(dir.to_path_buf());
        }
        Some(c) => {
            env.extend(code_env(c, dir));
            opts.cwd = Some(c.tree_dir.clone());
            if c.sandbox {
                // Other members' code: no network, bounded resources, a cleared environment
                // with a fresh scratch HOME and TMPDIR.
                let scratch = dir.join("scratch");
                if let Err(e) = std::fs::create_dir_all(&scratch) {
                    return RunOutcome::failed(format!("cannot create {}: {e}", scratch.display()));
                }
                opts.clear_env = true;
                opts.scratch_dir = Some(scratch);
                let limits = Sandbox {
                    hidden: c.hidden.clone(),
                    readable: c.setup_dir.iter().cloned().collect(),
                    ..Sandbox::with_timeout(task.timeout_secs)
                };
                opts.sandbox = Some(if c.gpu {
                    Sandbox {
                        max_memory_bytes: 0,
                        ..limits
                    }
                } else {
                    limits
                });
            }
        }
    }
    opts.env = env;
    let receipt = match run_shell(task, dispatch, &opts) {
        Ok(r) => r,
        Err(e) => return RunOutcome::failed(e.to_string()),
    };
    let mut outputs = Vec::new();
    let mut log = receipt.stdout.clone().into_bytes();
    log.extend_from_slice(receipt.stderr.as_bytes());
    let receipt_json = serde_json::to_vec_pretty(&receipt).unwrap_or_default();
    for (name, bytes) in [
        ("output.log", &log[..]),
        ("shell-receipt.json", &receipt_json[..]),
    ] {
        if let Err(e) = std::fs::write(dir.join(name), bytes) {
            return RunOutcome::failed(format!("cannot write {name}: {e}"));
        }
        outputs.push(Output::of(name, bytes));
    }
    if let Some(job) = &receipt.slurm {
        if let Err(e) = super::slurm::keep_job(dir, job, &mut outputs) {
            return RunOutcome::failed(e);
        }
    }
    let status = if receipt.timed_out {
        BundleStatus::TimedOut
    } else if receipt.succeeded() {
        BundleStatus::Completed
    } else {
        BundleStatus::Failed
    };
    let detail = if let Some(job) = receipt.slurm.as_ref().filter(|_| receipt.timed_out) {
        format!(
            "killed at its Slurm time limit ({} min for a {} s budget)",
            job.time_limit_minutes, task.timeout_secs
        )
    } else if receipt.cancelled {
        "stopped: the daemon is stopping".to_string()
    } else if receipt.timed_out {
        format!("killed after the {} s timeout", task.timeout_secs)
    } else if receipt.exit_code != Some(0) {
        format!(
            "exited with {} after {} ms",
            receipt.exit_code.map_or_else(
                || format!("signal {:?}", receipt.signal),
                |c| format!("status {c}")
            ),
            receipt.duration_ms
        )
    } else if receipt.failed {
        "printed FAIL".to_string()
    } else if receipt.value.is_none() {
        format!("printed no `{metric}: <number>` line")
    } else {
        format!(
            "{metric} {} in {} ms",
            receipt.value.unwrap_or(f64::NAN),
            receipt.duration_ms
        )
    };
    // The run's own `key: value` lines (e.g. autoresearch's summary), then btd's.
    let mut metrics: BTreeMap<String, f64> = receipt
        .metrics
        .iter()
        .filter(|(k, _)| k.as_str() != metric)
        // Room for btd's own two within the submission's item bound.
        .take(btd_protocol::wire::MAX_SUBMISSION_ITEMS - 2)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    metrics.insert("duration_ms".to_string(), receipt.duration_ms as f64);
    if let Some(c) = receipt.exit_code {
        metrics.insert("exit_code".into(), f64::from(c));
    }
    let detail = match &receipt.slurm {
        Some(job) => format!("{}: {detail}", super::slurm::describe_job(job)),
        None => detail,
    };
    let cancelled = receipt.cancelled;
    RunOutcome {
        status,
        value: if status == BundleStatus::Completed {
            receipt.value
        } else {
            None
        },
        metrics,
        outputs,
        detail,
        cancelled,
        claim: None,
    }
}

/// A numeric hypothesis as the environment a shell command reads: `BTD_PARAM_<NAME>=<value>`.
pub(crate) fn param_env(hypothesis: &Hypothesis) -> Vec<(String, String)> {
    hypothesis
        .iter()
        .map(|(k, v)| {
            (
                format!("BTD_PARAM_{}", k.to_ascii_uppercase()),
                v.to_string(),
            )
        })
        .collect()
}

/// Adds every required output the run left in `dir` that is not in the outcome yet; a completed
/// run that lacks one becomes failed (a bundle without its required outputs does not count).
fn collect_required(outcome: &mut RunOutcome, dir: &Path, required: &[String]) {
    let mut missing = Vec::new();
    for name in required {
        if outcome.outputs.iter().any(|o| &o.name == name) {
            continue;
        }
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains('/');
        match plain.then(|| file_digest(&dir.join(name))).flatten() {
            Some(sha256) => outcome.outputs.push(Output {
                name: name.clone(),
                sha256,
            }),
            None => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() && outcome.status == BundleStatus::Completed {
        outcome.status = BundleStatus::Failed;
        outcome.value = None;
        outcome.detail = format!(
            "{}; missing required outputs: {}",
            outcome.detail,
            missing.join(", ")
        );
    }
}

/// SHA-256 of a regular file (not a link or a directory).
pub(super) fn file_digest(path: &Path) -> Option<Digest> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    Digest::of_reader(std::fs::File::open(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_outputs_are_collected_from_the_directory_or_fail_the_run() {
        let dir = std::env::temp_dir().join(format!("btd-work-outputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.bin"), b"weights").unwrap();
        let mut o = RunOutcome {
            status: BundleStatus::Completed,
            value: Some(1.0),
            metrics: BTreeMap::new(),
            outputs: vec![Output::of("metrics.json", b"{}")],
            detail: "ran".into(),
            cancelled: false,
            claim: None,
        };
        collect_required(&mut o, &dir, &["metrics.json".into(), "model.bin".into()]);
        assert_eq!(o.status, BundleStatus::Completed);
        assert_eq!(o.outputs[1], Output::of("model.bin", b"weights"));
        collect_required(&mut o, &dir, &["report.md".into(), "..".into()]);
        assert_eq!(o.status, BundleStatus::Failed);
        assert_eq!(o.value, None);
        assert!(
            o.detail.contains("missing required outputs: report.md, .."),
            "{}",
            o.detail
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
