//! The shell adapter: run one bounded command that dispatch admitted, and parse its metric.
//!
//! [`run_shell`] refuses unless the [`DispatchResult`]'s action is `run_local` or `run_paid`. The
//! command runs as `sh -c COMMAND` in its own process group with stdin closed; stdout and stderr are
//! captured up to [`MAX_CAPTURE_BYTES`] each (truncation is flagged); at the timeout the whole
//! process group is killed (and after a normal exit too, so background jobs do not outlive the run).
//! The metric is the last stdout line matching `^<metric>:\s*<number>` with a finite number;
//! every other `key: number` line of stdout is kept too ([`parse_metrics`]), and a stdout line
//! `FAIL` marks the run failed. Lines break at `\n` and `\r` (progress bars), see [`metrics`].
//!
//! Code from another member runs with [`ShellOptions::clear_env`] and a [`Sandbox`]; [`sandbox`]
//! says exactly what that isolates and what it does not.

pub mod metrics;
mod process;
pub mod sandbox;

pub use metrics::{parse_metric, parse_metrics, MAX_METRICS};
pub(crate) use process::run_bounded;
pub(crate) use process::{signal_of, Capture, Finished, TAIL_BYTES};
pub(crate) use sandbox::Launch;
pub use sandbox::{sandbox_probe, Sandbox};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use btd_protocol::dispatch::{Action, DispatchResult};
use btd_protocol::program::ShellTask;
use btd_protocol::{Digest, Timestamp};
use serde::{Deserialize, Serialize};

/// Bytes of stdout (and, separately, stderr) kept in a receipt.
pub const MAX_CAPTURE_BYTES: usize = 1 << 20;
/// Longest accepted timeout: one week.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// Why a shell task did not run.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// Dispatch did not admit the packet.
    #[error(
        "dispatch says {action:?} for packet {packet_id}, not run_local or run_paid: not running \
         it ({detail})"
    )]
    NotAdmitted {
        /// The dispatch action.
        action: Action,
        /// The packet.
        packet_id: String,
        /// Dispatch's explanation.
        detail: String,
    },
    /// The task or options are unusable.
    #[error("invalid shell task: {0}")]
    Invalid(String),
    /// The options ask for a [`Sandbox`] this machine cannot provide ([`sandbox_probe`]'s
    /// answer).
    #[error("{0}")]
    SandboxUnavailable(String),
    /// The Slurm executor could not run or follow the job.
    #[error("{0}")]
    Slurm(String),
    /// `sh` (or, for a sandbox, `bwrap` or `prlimit`) could not be started.
    #[error("cannot start the command (sh; and prlimit or bwrap for a sandbox): {0}")]
    Spawn(#[from] std::io::Error),
}

/// Options besides the task itself.
#[derive(Debug, Clone)]
pub struct ShellOptions {
    /// The metric to parse, e.g. `val_bpb`.
    pub metric: String,
    /// Working directory (default: the current one).
    pub cwd: Option<PathBuf>,
    /// Bytes of each stream to keep, at most [`MAX_CAPTURE_BYTES`].
    pub max_capture: usize,
    /// Extra environment variables for the command (e.g. a hypothesis as `BTD_PARAM_<NAME>`).
    /// They are set last, over the cleared environment when [`ShellOptions::clear_env`] is set.
    pub env: Vec<(String, String)>,
    /// Start from an empty environment: only `PATH` (the daemon's), `LANG=C.UTF-8`, `HOME` and
    /// `TMPDIR` (both [`ShellOptions::scratch_dir`], which must then be set) and
    /// [`ShellOptions::env`]. Default false: the command inherits the daemon's environment.
    pub clear_env: bool,
    /// The scratch directory for `HOME` and `TMPDIR` when [`ShellOptions::clear_env`] is set; the
    /// caller creates it (fresh per run) and removes it.
    pub scratch_dir: Option<PathBuf>,
    /// Run the command in this sandbox (see [`sandbox`]). Default none.
    pub sandbox: Option<Sandbox>,
    /// Run the command as a Slurm batch job instead of a local process (see [`crate::slurm`]).
    /// Default none.
    pub slurm: Option<SlurmRun>,
    /// When set, the command is killed (a Slurm job cancelled with `scancel`) and the receipt
    /// says [`ShellReceipt::cancelled`]. Default none.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Where and how a shell task runs as a Slurm job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmRun {
    /// The rung's Slurm settings.
    pub config: crate::slurm::SlurmConfig,
    /// The job's name in the queue.
    pub name: String,
    /// The round's directory: `job.sh` and Slurm's output files go here (shared with the nodes).
    pub dir: PathBuf,
}

impl ShellOptions {
    /// Parse `metric`, run in the current directory, keep [`MAX_CAPTURE_BYTES`] per stream.
    pub fn new(metric: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            cwd: None,
            max_capture: MAX_CAPTURE_BYTES,
            env: Vec::new(),
            clear_env: false,
            scratch_dir: None,
            sandbox: None,
            slurm: None,
            cancel: None,
        }
    }
}

/// What happened when a shell task ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShellReceipt {
    /// The packet run.
    pub packet_id: String,
    /// The rung it ran on.
    pub rung_id: String,
    /// The dispatch action that admitted it.
    pub action: Action,
    /// The command line.
    pub command: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Whether the timeout was reached (the process group was killed).
    pub timed_out: bool,
    /// Whether it was cancelled (the daemon was stopping) before it ended.
    #[serde(default)]
    pub cancelled: bool,
    /// Captured stdout (lossy UTF-8, at most `max_capture` bytes).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8, at most `max_capture` bytes).
    pub stderr: String,
    /// Whether stdout was cut.
    pub stdout_truncated: bool,
    /// Whether stderr was cut.
    pub stderr_truncated: bool,
    /// Bytes written to stdout in all.
    pub stdout_bytes: u64,
    /// Bytes written to stderr in all.
    pub stderr_bytes: u64,
    /// SHA-256 of the captured stdout bytes followed by the captured stderr bytes (the log digest).
    pub log_sha256: Digest,
    /// The metric looked for.
    pub metric: String,
    /// Its value: the last finite match in stdout.
    pub value: Option<f64>,
    /// Every `key: number` line of stdout ([`parse_metrics`]; at most [`MAX_METRICS`] keys).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Whether stdout has a line `FAIL`: the program says the run failed.
    #[serde(default)]
    pub failed: bool,
    /// The Slurm job it ran as, on a Slurm rung.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<crate::slurm::SlurmJobInfo>,
}

impl ShellReceipt {
    /// Exited 0 within the timeout, reported the metric and did not print `FAIL`.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.value.is_some() && !self.failed
    }
}

/// Runs `task` if `dispatch` admits it; see the module docs.
pub fn run_shell(
    task: &ShellTask,
    dispatch: &DispatchResult,
    opts: &ShellOptions,
) -> Result<ShellReceipt, ShellError> {
    if !matches!(dispatch.action, Action::RunLocal | Action::RunPaid) {
        return Err(ShellError::NotAdmitted {
            action: dispatch.action,
            packet_id: dispatch.packet_id.clone(),
            detail: dispatch.detail.clone(),
        });
    }
    if task.command.trim().is_empty() {
        return Err(ShellError::Invalid("the command is empty".into()));
    }
    if task.timeout_secs == 0 || task.timeout_secs > MAX_TIMEOUT_SECS {
        return Err(ShellError::Invalid(format!(
            "timeout_secs is {}; use 1..={MAX_TIMEOUT_SECS}",
            task.timeout_secs
        )));
    }
    if opts.metric.is_empty() || opts.metric.contains(['\n', ':']) {
        return Err(ShellError::Invalid(format!(
            "metric name {:?} must be non-empty, without ':' or newlines",
            opts.metric
        )));
    }
    let scratch = match (opts.clear_env, &opts.scratch_dir) {
        (false, _) => None,
        (true, Some(dir)) => Some(dir.as_path()),
        (true, None) => {
            return Err(ShellError::Invalid(
                "clear_env needs a scratch_dir for HOME and TMPDIR".into(),
            ))
        }
    };
    if opts.sandbox.as_ref().is_some_and(|s| s.isolate) {
        sandbox_probe().map_err(ShellError::SandboxUnavailable)?;
    }
    let launch = Launch {
        command: &task.command,
        cwd: opts.cwd.as_deref(),
        env: &opts.env,
        clean_env_scratch: scratch,
        sandbox: opts.sandbox.as_ref(),
    };
    let started_at = Timestamp::from_millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    );
    let max_capture = opts.max_capture.min(MAX_CAPTURE_BYTES);
    let (done, slurm) = match &opts.slurm {
        None => (
            process::run_cancellable(
                launch.command(),
                Duration::from_secs(task.timeout_secs),
                max_capture,
                opts.cancel.as_deref(),
            )?,
            None,
        ),
        Some(run) => {
            let (done, info) = run_on_slurm(&launch, opts, run, task.timeout_secs, max_capture)?;
            (done, Some(info))
        }
    };
    let mut log = done.stdout.bytes.clone();
    log.extend_from_slice(&done.stderr.bytes);
    let stdout = String::from_utf8_lossy(&done.stdout.bytes).into_owned();
    let value = parse_metric(&stdout, &opts.metric);
    let metrics = parse_metrics(&stdout);
    let failed = metrics::saw_fail(&stdout);
    Ok(ShellReceipt {
        packet_id: dispatch.packet_id.clone(),
        rung_id: dispatch.rung_id.clone(),
        action: dispatch.action,
        command: task.command.clone(),
        started_at,
        duration_ms: u64::try_from(done.duration.as_millis()).unwrap_or(u64::MAX),
        exit_code: done.status.and_then(|s| s.code()),
        signal: done.status.as_ref().and_then(process::signal_of),
        timed_out: done.timed_out,
        cancelled: done.cancelled,
        stdout,
        stderr: String::from_utf8_lossy(&done.stderr.bytes).into_owned(),
        stdout_truncated: done.stdout.truncated,
        stderr_truncated: done.stderr.truncated,
        stdout_bytes: done.stdout.total,
        stderr_bytes: done.stderr.total,
        log_sha256: Digest::of(&log),
        metric: opts.metric.clone(),
        value,
        metrics,
        failed,
        slurm,
    })
}

/// Runs `launch` as a Slurm batch job with `timeout_secs` as its budget.
fn run_on_slurm(
    launch: &Launch<'_>,
    opts: &ShellOptions,
    run: &SlurmRun,
    timeout_secs: u64,
    max_capture: usize,
) -> Result<(Finished, crate::slurm::SlurmJobInfo), ShellError> {
    use std::os::unix::process::ExitStatusExt;
    let plan = launch.plan();
    let text = |s: std::ffi::OsString| {
        s.into_string().map_err(|s| {
            ShellError::Invalid(format!("{s:?} is not UTF-8; a Slurm job script needs text"))
        })
    };
    let argv = plan
        .argv
        .into_iter()
        .map(text)
        .collect::<Result<Vec<_>, _>>()?;
    let env = plan
        .env
        .into_iter()
        .map(|(k, v)| Ok((text(k)?, text(v)?)))
        .collect::<Result<Vec<_>, ShellError>>()?;
    let cwd = opts.cwd.clone().unwrap_or_else(|| run.dir.clone());
    let script = crate::slurm::script(&cwd, plan.clear_env, &env, &argv)
        .map_err(|e| ShellError::Slurm(e.to_string()))?;
    let job = crate::slurm::BatchJob {
        name: run.name.clone(),
        dir: run.dir.clone(),
        script,
        budget_secs: timeout_secs,
        max_capture,
    };
    let never = AtomicBool::new(false);
    let cancel = opts.cancel.as_deref().unwrap_or(&never);
    let end = crate::slurm::run_batch(&run.config, &job, cancel)
        .map_err(|e| ShellError::Slurm(e.to_string()))?;
    let status = match (end.exit_code, end.signal) {
        (_, Some(sig)) => Some(std::process::ExitStatus::from_raw(sig & 0x7f)),
        (Some(code), None) => Some(std::process::ExitStatus::from_raw((code & 0xff) << 8)),
        (None, None) => None,
    };
    Ok((
        Finished {
            status,
            timed_out: end.timed_out,
            cancelled: end.info.cancelled_by_btd && !end.timed_out,
            duration: end.duration,
            stdout: end.stdout,
            stderr: end.stderr,
        },
        end.info,
    ))
}

#[cfg(test)]
mod sandbox_tests;
#[cfg(test)]
pub(crate) mod tests;
