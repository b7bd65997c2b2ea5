//! The shell adapter: run one bounded command that dispatch admitted, and parse its metric.
//!
//! [`run_shell`] refuses unless the [`DispatchResult`]'s action is `run_local` or `run_paid`. The
//! command runs as `sh -c COMMAND` in its own process group with stdin closed; stdout and stderr are
//! captured up to [`MAX_CAPTURE_BYTES`] each (truncation is flagged); at the timeout the whole
//! process group is killed (and after a normal exit too, so background jobs do not outlive the run).
//! The metric is the last stdout line matching `^<metric>:\s*<number>` with a finite number.

mod process;

pub(crate) use process::run_bounded;

use std::path::PathBuf;
use std::process::Command;
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
    /// `sh` could not be started.
    #[error("cannot start sh: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Options besides the task itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellOptions {
    /// The metric to parse, e.g. `val_bpb`.
    pub metric: String,
    /// Working directory (default: the current one).
    pub cwd: Option<PathBuf>,
    /// Bytes of each stream to keep, at most [`MAX_CAPTURE_BYTES`].
    pub max_capture: usize,
    /// Extra environment variables for the command (e.g. a hypothesis as `BTD_PARAM_<NAME>`).
    pub env: Vec<(String, String)>,
}

impl ShellOptions {
    /// Parse `metric`, run in the current directory, keep [`MAX_CAPTURE_BYTES`] per stream.
    pub fn new(metric: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            cwd: None,
            max_capture: MAX_CAPTURE_BYTES,
            env: Vec::new(),
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
}

impl ShellReceipt {
    /// Exited 0 within the timeout and reported the metric.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.value.is_some()
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
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(&task.command);
    if let Some(dir) = &opts.cwd {
        cmd.current_dir(dir);
    }
    cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
    let started_at = Timestamp::from_millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    );
    let done = process::run_bounded(
        cmd,
        Duration::from_secs(task.timeout_secs),
        opts.max_capture.min(MAX_CAPTURE_BYTES),
    )?;
    let mut log = done.stdout.bytes.clone();
    log.extend_from_slice(&done.stderr.bytes);
    let stdout = String::from_utf8_lossy(&done.stdout.bytes).into_owned();
    let value = parse_metric(&stdout, &opts.metric);
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
        stdout,
        stderr: String::from_utf8_lossy(&done.stderr.bytes).into_owned(),
        stdout_truncated: done.stdout.truncated,
        stderr_truncated: done.stderr.truncated,
        stdout_bytes: done.stdout.total,
        stderr_bytes: done.stderr.total,
        log_sha256: Digest::of(&log),
        metric: opts.metric.clone(),
        value,
    })
}

/// The value of the last line of `output` matching `^<metric>:\s*<number>` whose number is finite.
/// `<number>` is a decimal with optional sign, fraction and exponent (`-1.5e-3`); text after it on
/// the line is ignored.
pub fn parse_metric(output: &str, metric: &str) -> Option<f64> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?.strip_prefix(':')?;
            let number = leading_number(rest.trim_start())?;
            number.parse::<f64>().ok().filter(|v| v.is_finite())
        })
        .next_back()
}

/// The longest prefix of `s` of the form `[+-]?(digits[.digits?]|.digits)([eE][+-]?digits)?`.
fn leading_number(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_end = digits(i);
    let mut end = int_end;
    let mut mantissa_digits = int_end - i;
    if b.get(end) == Some(&b'.') {
        let frac_end = digits(end + 1);
        mantissa_digits += frac_end - (end + 1);
        if mantissa_digits > 0 {
            end = frac_end;
        }
    }
    if mantissa_digits == 0 {
        return None;
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        i = end + 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_end = digits(i);
        if exp_end > i {
            end = exp_end;
        }
    }
    Some(&s[..end])
}

#[cfg(test)]
mod tests;
