//! Reading what `squeue`, `scontrol show job -o` and `sacct -P` print about one job.

use serde::{Deserialize, Serialize};

/// A Slurm job state (`JobState=` in `scontrol`, `%T` in `squeue`, `State` in `sacct`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum JobState {
    /// Waiting for resources.
    Pending,
    /// Running (or being set up, or finishing).
    Running,
    /// Exited 0.
    Completed,
    /// Exited non-zero or was killed by a signal.
    Failed,
    /// Killed at its time limit.
    Timeout,
    /// Cancelled (`scancel`).
    Cancelled,
    /// Its node failed.
    NodeFail,
    /// Killed for using more memory than `--mem`.
    OutOfMemory,
    /// Preempted by a higher-priority job.
    Preempted,
    /// Its node could not boot.
    BootFail,
    /// Any other state, as Slurm spells it.
    Other(String),
}

impl JobState {
    /// Whether the job can change no more.
    pub fn is_final(&self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
            && !matches!(self, JobState::Other(s) if ACTIVE.contains(&s.as_str()))
    }
}

/// States in which a job still runs (or will).
const ACTIVE: &[&str] = &[
    "CONFIGURING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "RESV_DEL_HOLD",
];

impl From<String> for JobState {
    fn from(s: String) -> Self {
        // sacct writes e.g. "CANCELLED by 0".
        let word = s
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match word.as_str() {
            "PENDING" => JobState::Pending,
            "RUNNING" => JobState::Running,
            "COMPLETED" => JobState::Completed,
            "FAILED" => JobState::Failed,
            "TIMEOUT" => JobState::Timeout,
            "CANCELLED" => JobState::Cancelled,
            "NODE_FAIL" => JobState::NodeFail,
            "OUT_OF_MEMORY" => JobState::OutOfMemory,
            "PREEMPTED" => JobState::Preempted,
            "BOOT_FAIL" => JobState::BootFail,
            _ => JobState::Other(word.chars().take(64).collect()),
        }
    }
}

impl From<JobState> for String {
    fn from(s: JobState) -> String {
        s.to_string()
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Timeout => "TIMEOUT",
            JobState::Cancelled => "CANCELLED",
            JobState::NodeFail => "NODE_FAIL",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
            JobState::Preempted => "PREEMPTED",
            JobState::BootFail => "BOOT_FAIL",
            JobState::Other(s) => s,
        })
    }
}

/// Final states without a variant of their own.
const OTHER_FINAL: &[&str] = &["DEADLINE", "SPECIAL_EXIT", "REVOKED"];

/// What `squeue -h -j ID -o '%T|%r'` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueueState {
    /// Not in the queue any more (finished, or never known).
    Gone,
    /// Waiting, with Slurm's reason.
    Pending {
        /// E.g. `Resources`, `Priority`, `QOSMaxJobsPerUserLimit`.
        reason: String,
    },
    /// Running, configuring or completing.
    Active,
    /// The answer could not be read (try again).
    Unknown,
}

pub(crate) fn parse_squeue(out: &str) -> QueueState {
    let Some(line) = out.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return QueueState::Gone;
    };
    let (state, reason) = line.split_once('|').unwrap_or((line, ""));
    match JobState::from(state.to_string()) {
        JobState::Pending => QueueState::Pending {
            reason: reason.chars().take(128).collect(),
        },
        JobState::Running => QueueState::Active,
        JobState::Other(s) if ACTIVE.contains(&s.as_str()) => QueueState::Active,
        JobState::Other(s) if OTHER_FINAL.contains(&s.as_str()) => QueueState::Gone,
        JobState::Other(_) => QueueState::Unknown,
        // A job squeue still lists in a final state is as good as gone.
        _ => QueueState::Gone,
    }
}

/// A job's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FinalState {
    pub(crate) state: JobState,
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) reason: String,
    pub(crate) nodes: String,
    /// Slurm's own run time of the job (`RunTime` / `Elapsed`), whole seconds.
    pub(crate) run_secs: Option<u64>,
}

/// `[D-]HH:MM:SS` (or `MM:SS`) as seconds.
fn duration_secs(v: &str) -> Option<u64> {
    let (days, rest) = match v.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, v),
    };
    let mut secs = 0u64;
    for part in rest.split(':') {
        secs = secs
            .checked_mul(60)?
            .checked_add(part.parse::<u64>().ok()?)?;
    }
    days.checked_mul(86_400)?.checked_add(secs)
}

/// `ExitCode=a:b`: the exit code `a`, or the signal `b` when it is not 0.
fn exit_code(v: &str) -> (Option<i32>, Option<i32>) {
    let (code, sig) = v.split_once(':').unwrap_or((v, "0"));
    match (code.trim().parse::<i32>(), sig.trim().parse::<i32>()) {
        (_, Ok(s)) if s != 0 => (None, Some(s)),
        (Ok(c), _) => (Some(c), None),
        _ => (None, None),
    }
}

fn clean(v: &str) -> String {
    match v {
        "None" | "(null)" => String::new(),
        v => v.chars().take(256).collect(),
    }
}

/// `scontrol show job -o ID`: one line of `Key=Value` fields.
pub(crate) fn parse_scontrol(out: &str) -> Option<FinalState> {
    let line = out.lines().find(|l| l.contains("JobState="))?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    };
    let state = JobState::from(field("JobState")?.to_string());
    let (exit_code, signal) = field("ExitCode").map_or((None, None), exit_code);
    Some(FinalState {
        state,
        exit_code,
        signal,
        reason: clean(field("Reason").unwrap_or("")),
        nodes: clean(field("NodeList").unwrap_or("")),
        run_secs: field("RunTime").and_then(duration_secs),
    })
}

/// `sacct -n -P -X -j ID -o State,ExitCode,NodeList,Reason,Elapsed`.
pub(crate) fn parse_sacct(out: &str) -> Option<FinalState> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut f = line.split('|');
    let state = JobState::from(f.next()?.to_string());
    let (exit_code, signal) = exit_code(f.next().unwrap_or(""));
    Some(FinalState {
        state,
        exit_code,
        signal,
        nodes: clean(f.next().unwrap_or("")),
        reason: clean(f.next().unwrap_or("")),
        run_secs: f.next().and_then(duration_secs),
    })
}
