//! The Slurm executor: one round as one batch job on a Slurm cluster.
//!
//! A rung whose `config.toml` entry says `executor = "slurm"` runs each round with [`run_batch`]:
//! the round's command line is written to `job.sh` in the round's directory, submitted with
//! `sbatch` (the packet's budget as `--time`, plus the rung's partition, account, QOS, GRES, CPUs
//! and memory), followed with `squeue` until it leaves the queue, and read back with
//! `scontrol show job` (or `sacct` once the controller has forgotten it). Its stdout and stderr
//! are the files Slurm wrote in the round's directory, read back with the same caps as a local run.
//!
//! Every step is bounded: each Slurm command runs with a deadline, a job that stays pending longer
//! than [`SlurmConfig::max_queue_secs`] is cancelled, a job that runs past its time limit plus
//! [`OVERRUN_GRACE`] is cancelled by btd even if Slurm has not killed it, and a controller that
//! stops answering for [`MAX_QUERY_FAILURES`] polls in a row ends the round with its last error.
//! The caller's cancel flag (`btd stop`) runs `scancel`. Slurm's own failures (a rejected
//! submission, a node failure, the time limit) come back as [`SlurmError`] or as the job's
//! [`JobState`], never as a hang.
//!
//! The round's directory must be visible at the same path on the compute nodes (a shared
//! filesystem, as on any cluster where `sbatch --chdir` works): outputs are collected from it.

mod config;
mod query;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::shell::{run_bounded, Capture};
pub use config::{
    describe, SlurmConfig, DEFAULT_MAX_QUEUE_SECS, DEFAULT_POLL_MS, DEFAULT_TIME_MARGIN_SECS,
};
pub use query::JobState;
use query::{parse_sacct, parse_scontrol, parse_squeue, QueueState};

/// Longest a single `sbatch`, `squeue`, `scontrol`, `sacct` or `scancel` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes kept of a Slurm command's own output.
const COMMAND_CAPTURE: usize = 64 * 1024;
/// How long after its time limit a running job is cancelled by btd (Slurm checks limits about
/// every 30 s and then waits `KillWait` before SIGKILL).
pub const OVERRUN_GRACE: Duration = Duration::from_secs(180);
/// Polls in a row that may fail before the round gives up on the controller.
pub const MAX_QUERY_FAILURES: u32 = 30;
/// How long to wait for a cancelled job to leave the queue.
const CANCEL_WAIT: Duration = Duration::from_secs(120);

/// Why a batch job could not be run or followed.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// The job or the settings are unusable (nothing was submitted).
    #[error("{0}")]
    Invalid(String),
    /// A Slurm command could not be started (Slurm's client tools are not installed).
    #[error("cannot run {command}: {error} (is Slurm's client installed and on PATH?)")]
    Missing {
        /// The command.
        command: &'static str,
        /// The error.
        error: std::io::Error,
    },
    /// `sbatch` refused the job.
    #[error("sbatch refused the job: {0}")]
    Rejected(String),
    /// The job waited in the queue too long and was cancelled.
    #[error(
        "Slurm job {job_id} was still pending after {waited_secs} s (reason: {reason}); btd \
         cancelled it (raise slurm.max_queue_secs or use a less busy partition)"
    )]
    QueueTimeout {
        /// The job.
        job_id: u64,
        /// How long it waited.
        waited_secs: u64,
        /// Slurm's pending reason.
        reason: String,
    },
    /// The controller stopped answering about the job.
    #[error("lost track of Slurm job {job_id}: {detail}")]
    Lost {
        /// The job.
        job_id: u64,
        /// What failed.
        detail: String,
    },
    /// A file of the job could not be written or read.
    #[error("{0}")]
    Io(String),
}

/// One batch job to run.
#[derive(Debug, Clone)]
pub struct BatchJob {
    /// `--job-name`.
    pub name: String,
    /// Where `job.sh` and Slurm's `slurm-<id>.out`/`.err` go (the round's directory).
    pub dir: PathBuf,
    /// The script's body (a `sh` script; see [`script`]).
    pub script: String,
    /// The packet's budget in seconds (the time limit before the margin).
    pub budget_secs: u64,
    /// Bytes of stdout and (separately) stderr to keep.
    pub max_capture: usize,
}

/// What Slurm says about a job, kept with the round (`slurm-job.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlurmJobInfo {
    /// The job id.
    pub job_id: u64,
    /// Its final state (`COMPLETED`, `FAILED`, `TIMEOUT`, `CANCELLED`, `NODE_FAIL`, ...).
    pub state: JobState,
    /// Slurm's reason (`TimeLimit`, `NonZeroExitCode`, ...), when it gave one.
    pub reason: String,
    /// The node(s) it ran on.
    pub nodes: String,
    /// The `--time` asked for, in minutes.
    pub time_limit_minutes: u64,
    /// Milliseconds from `sbatch` until btd first saw the job running (a job that ends between two
    /// polls was never seen running: then this is all of it).
    pub queued_ms: u64,
    /// Milliseconds from then until btd saw the job leave the queue.
    pub ran_ms: u64,
    /// The job's run time as Slurm reports it (whole seconds).
    pub run_secs: Option<u64>,
    /// btd cancelled the job (the daemon was stopping, or it overran its time limit).
    pub cancelled_by_btd: bool,
    /// The `sbatch` arguments used.
    pub sbatch_args: Vec<String>,
}

/// How a batch job ended.
#[derive(Debug)]
pub struct BatchEnd {
    /// What Slurm says about it.
    pub info: SlurmJobInfo,
    /// The job's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// It was killed at its time limit.
    pub timed_out: bool,
    /// Its stdout (Slurm's output file).
    pub(crate) stdout: Capture,
    /// Its stderr (Slurm's error file).
    pub(crate) stderr: Capture,
    /// Wall-clock from submission to the end.
    pub duration: Duration,
}

impl BatchEnd {
    /// The last bytes the job wrote to stderr.
    pub fn stderr_tail(&self) -> Vec<u8> {
        self.stderr.tail.clone()
    }
}

/// The file in a round's directory that names its job once `sbatch` accepted it.
pub const SUBMITTED_FILE: &str = "slurm-submitted.json";

/// [`SUBMITTED_FILE`]'s content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The job id.
    pub job_id: u64,
    /// Its name in the queue.
    pub name: String,
}

/// Cancels the job a round directory's [`SUBMITTED_FILE`] names, if it is still in the queue
/// under that name (a daemon that was killed while the job ran cannot follow it any more). Returns
/// the job id when it cancelled one.
pub fn cancel_orphan(dir: &Path) -> Result<Option<u64>, String> {
    let path = dir.join(SUBMITTED_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) if b.len() <= 4096 => b,
        Ok(_) => return Err(format!("{} is too large", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let s: Submitted = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is unreadable: {e}", path.display()))?;
    let id = s.job_id.to_string();
    let out = slurm_command("squeue", &["-h", "-j", &id, "-o", "%j"]).map_err(|e| e.to_string())?;
    // Gone, or the id now belongs to another job (a controller that lost its state): leave it.
    if !out.ok || out.stdout.trim() != s.name {
        return Ok(None);
    }
    scancel(s.job_id).map_err(|e| e.to_string())?;
    wait_gone(s.job_id);
    Ok(Some(s.job_id))
}

/// Quotes `s` for `sh` (single quotes; a quote inside becomes `'\''`).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A job script that changes to `cwd`, sets `env` (over a cleared environment when `clear_env`)
/// and execs `argv`.
pub fn script(
    cwd: &Path,
    clear_env: bool,
    env: &[(String, String)],
    argv: &[String],
) -> Result<String, SlurmError> {
    let cwd = cwd
        .to_str()
        .ok_or_else(|| SlurmError::Invalid(format!("{} is not UTF-8", cwd.display())))?;
    let mut s = String::from("#!/bin/sh\n# Written by btd: one round of a research program.\n");
    s.push_str(&format!("cd {} || exit 97\n", sh_quote(cwd)));
    s.push_str("exec env");
    if clear_env {
        s.push_str(" -i");
    }
    for (k, v) in env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(SlurmError::Invalid(format!(
                "environment variable {k:?} cannot be passed to a job"
            )));
        }
        s.push(' ');
        s.push_str(&sh_quote(&format!("{k}={v}")));
    }
    if argv.is_empty() {
        return Err(SlurmError::Invalid("the job has no command".into()));
    }
    for a in argv {
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    s.push('\n');
    Ok(s)
}

/// Submits `job`, follows it to its end (or cancels it when `cancel` is set), and reads back its
/// outputs. See the module docs.
pub fn run_batch(
    cfg: &SlurmConfig,
    job: &BatchJob,
    cancel: &AtomicBool,
) -> Result<BatchEnd, SlurmError> {
    cfg.validate().map_err(SlurmError::Invalid)?;
    let dir = job
        .dir
        .to_str()
        .ok_or_else(|| SlurmError::Invalid(format!("{} is not UTF-8", job.dir.display())))?;
    if dir.contains('%') || dir.contains('\\') {
        // sbatch reads % and \ in --output as patterns.
        return Err(SlurmError::Invalid(format!(
            "the round directory {dir} has % or \\ in it, which sbatch reads as a pattern; \
             choose a btd home without them"
        )));
    }
    let minutes = cfg.time_limit_minutes(job.budget_secs)?;
    let script_path = job.dir.join("job.sh");
    std::fs::write(&script_path, &job.script)
        .map_err(|e| SlurmError::Io(format!("cannot write {}: {e}", script_path.display())))?;
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name={}", job_name(&job.name)),
        format!("--chdir={dir}"),
        format!("--output={dir}/slurm-%j.out"),
        format!("--error={dir}/slurm-%j.err"),
        format!("--time={minutes}"),
        "--nodes=1".into(),
        "--ntasks=1".into(),
    ];
    args.extend(cfg.text_settings().map(|(flag, v)| format!("--{flag}={v}")));
    if let Some(c) = cfg.cpus_per_task {
        args.push(format!("--cpus-per-task={c}"));
    }
    let submitted = Instant::now();
    let mut sbatch_args = args.clone();
    sbatch_args.push(script_path.display().to_string());
    let out = slurm_command("sbatch", &sbatch_args)?;
    if !out.ok {
        return Err(SlurmError::Rejected(out.message()));
    }
    let job_id = out
        .stdout
        .trim()
        .split(';')
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            SlurmError::Rejected(format!("sbatch printed {:?}, not a job id", out.stdout))
        })?;
    // Written before following the job, so that a daemon killed meanwhile can cancel it when it
    // starts again ([`cancel_orphan`]).
    let marker = Submitted {
        job_id,
        name: job_name(&job.name),
    };
    let marker_path = job.dir.join(SUBMITTED_FILE);
    if let Err(e) = serde_json::to_vec(&marker)
        .map_err(|e| e.to_string())
        .and_then(|b| std::fs::write(&marker_path, b).map_err(|e| e.to_string()))
    {
        let _ = scancel(job_id);
        return Err(SlurmError::Io(format!(
            "cannot write {}: {e}; cancelled job {job_id}",
            marker_path.display()
        )));
    }
    let follow = follow(cfg, job_id, minutes, submitted, cancel)?;
    let end = final_state(job_id)?;
    let duration = submitted.elapsed();
    let queued = follow.started.map_or(duration, |s| s - submitted);
    let ran = follow.started.map_or(Duration::ZERO, |s| s.elapsed());
    let read = |ext: &str| {
        read_capture(
            &job.dir.join(format!("slurm-{job_id}.{ext}")),
            job.max_capture,
        )
    };
    let timed_out = end.state == JobState::Timeout || follow.overran;
    Ok(BatchEnd {
        info: SlurmJobInfo {
            job_id,
            state: end.state,
            reason: end.reason,
            nodes: end.nodes,
            time_limit_minutes: minutes,
            queued_ms: millis(queued),
            ran_ms: millis(ran),
            run_secs: end.run_secs,
            cancelled_by_btd: follow.cancelled,
            sbatch_args,
        },
        exit_code: end.exit_code,
        signal: end.signal,
        timed_out,
        stdout: read("out"),
        stderr: read("err"),
        duration,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A job name Slurm shows in `squeue`: printable ASCII without spaces, at most 64 bytes.
fn job_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if n.is_empty() {
        "btd".into()
    } else {
        n
    }
}

/// How following the job went.
struct Followed {
    /// When btd first saw it running.
    started: Option<Instant>,
    /// btd cancelled it.
    cancelled: bool,
    /// btd cancelled it for running past its time limit.
    overran: bool,
}

fn follow(
    cfg: &SlurmConfig,
    job_id: u64,
    minutes: u64,
    submitted: Instant,
    cancel: &AtomicBool,
) -> Result<Followed, SlurmError> {
    let poll = Duration::from_millis(cfg.poll_ms);
    let limit = Duration::from_secs(minutes.saturating_mul(60)) + OVERRUN_GRACE;
    let mut f = Followed {
        started: None,
        cancelled: false,
        overran: false,
    };
    let mut failures = 0u32;
    let id = job_id.to_string();
    loop {
        if cancel.load(Ordering::SeqCst) {
            f.cancelled = true;
            scancel(job_id)?;
            wait_gone(job_id);
            return Ok(f);
        }
        let out = slurm_command("squeue", &["-h", "-j", &id, "-o", "%T|%r"])?;
        let state = if out.ok {
            failures = 0;
            parse_squeue(&out.stdout)
        } else if out.stderr.contains("Invalid job id") {
            QueueState::Gone
        } else {
            failures += 1;
            if failures >= MAX_QUERY_FAILURES {
                let _ = scancel(job_id);
                return Err(SlurmError::Lost {
                    job_id,
                    detail: format!(
                        "squeue failed {failures} times in a row; last: {}",
                        out.message()
                    ),
                });
            }
            QueueState::Unknown
        };
        match state {
            QueueState::Gone => return Ok(f),
            QueueState::Pending { reason } => {
                let waited = submitted.elapsed();
                if waited > Duration::from_secs(cfg.max_queue_secs) {
                    let _ = scancel(job_id);
                    wait_gone(job_id);
                    return Err(SlurmError::QueueTimeout {
                        job_id,
                        waited_secs: waited.as_secs(),
                        reason,
                    });
                }
            }
            QueueState::Active => {
                let started = *f.started.get_or_insert_with(Instant::now);
                if started.elapsed() > limit {
                    f.overran = true;
                    f.cancelled = true;
                    scancel(job_id)?;
                    wait_gone(job_id);
                    return Ok(f);
                }
            }
            QueueState::Unknown => {}
        }
        std::thread::sleep(poll);
    }
}

fn scancel(job_id: u64) -> Result<(), SlurmError> {
    let out = slurm_command("scancel", &[job_id.to_string()])?;
    if out.ok {
        Ok(())
    } else {
        Err(SlurmError::Lost {
            job_id,
            detail: format!("scancel failed: {}", out.message()),
        })
    }
}

/// Waits (bounded) until a cancelled job has left the queue, so its output files are complete.
fn wait_gone(job_id: u64) {
    let until = Instant::now() + CANCEL_WAIT;
    let id = job_id.to_string();
    while Instant::now() < until {
        match slurm_command("squeue", &["-h", "-j", &id, "-o", "%T|%r"]) {
            Ok(out) if out.ok && parse_squeue(&out.stdout) == QueueState::Gone => return,
            Ok(out) if !out.ok && out.stderr.contains("Invalid job id") => return,
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The job's end as the controller (or, once it has forgotten the job, accounting) reports it.
fn final_state(job_id: u64) -> Result<query::FinalState, SlurmError> {
    let id = job_id.to_string();
    let mut last = String::new();
    // The controller can take a moment to move a job from COMPLETING to its final state.
    for _ in 0..60 {
        let out = slurm_command("scontrol", &["show", "job", "-o", &id])?;
        if out.ok {
            match parse_scontrol(&out.stdout) {
                Some(s) if s.state.is_final() => return Ok(s),
                Some(s) => last = format!("job still {}", s.state),
                None => last = format!("unreadable scontrol output {:?}", out.stdout),
            }
        } else {
            let acct = slurm_command(
                "sacct",
                &[
                    "-n",
                    "-P",
                    "-X",
                    "-j",
                    &id,
                    "-o",
                    "State,ExitCode,NodeList,Reason,Elapsed",
                ],
            );
            if let Ok(a) = acct {
                if let Some(s) = a.ok.then(|| parse_sacct(&a.stdout)).flatten() {
                    return Ok(s);
                }
            }
            last = out.message();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(SlurmError::Lost {
        job_id,
        detail: format!("no final state from scontrol or sacct: {last}"),
    })
}

/// A finished Slurm client command.
struct CommandOut {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl CommandOut {
    fn message(&self) -> String {
        let s = self.stderr.trim();
        if s.is_empty() {
            self.stdout.trim().to_string()
        } else {
            s.to_string()
        }
    }
}

fn slurm_command<S: AsRef<str>>(
    program: &'static str,
    args: &[S],
) -> Result<CommandOut, SlurmError> {
    let mut cmd = Command::new(program);
    cmd.args(args.iter().map(AsRef::as_ref));
    let done = run_bounded(cmd, COMMAND_TIMEOUT, COMMAND_CAPTURE).map_err(|error| {
        SlurmError::Missing {
            command: program,
            error,
        }
    })?;
    let stderr = String::from_utf8_lossy(&done.stderr.bytes).into_owned();
    Ok(CommandOut {
        ok: done.status.is_some_and(|s| s.success()) && !done.timed_out,
        stdout: String::from_utf8_lossy(&done.stdout.bytes).into_owned(),
        stderr: if done.timed_out {
            format!(
                "{program} did not answer within {} s",
                COMMAND_TIMEOUT.as_secs()
            )
        } else {
            stderr
        },
    })
}

/// The first `max` bytes of a file, its size, and its last bytes (a missing file is empty).
fn read_capture(path: &Path, max: usize) -> Capture {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Capture::default();
    };
    let total = f.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::new();
    let _ = (&mut f).take(max as u64).read_to_end(&mut bytes);
    let tail_len = total.min(crate::shell::TAIL_BYTES as u64);
    let mut tail = Vec::new();
    if f.seek(SeekFrom::Start(total - tail_len)).is_ok() {
        let _ = f.take(tail_len).read_to_end(&mut tail);
    }
    Capture {
        truncated: total > bytes.len() as u64,
        bytes,
        total,
        tail,
    }
}

/// Whether a Slurm controller answers here with a node that can run jobs (`sinfo`): the node
/// states it lists, or why not.
pub fn cluster_ready() -> Result<String, String> {
    let out = slurm_command("sinfo", &["-h", "-o", "%T"]).map_err(|e| e.to_string())?;
    if !out.ok {
        return Err(format!("sinfo failed: {}", out.message()));
    }
    let states = out.stdout.split_whitespace().collect::<Vec<_>>().join(", ");
    let usable = ["idle", "mix", "alloc", "completing"];
    if out
        .stdout
        .lines()
        .any(|l| usable.iter().any(|u| l.trim().starts_with(u)))
    {
        Ok(states)
    } else {
        Err(format!("no node can take jobs (node states: {states})"))
    }
}

/// Test helper: whether tests can use a real Slurm cluster here. CI starts one
/// (`.ci/slurm-up.sh`) and sets `BTD_REQUIRE_SLURM=1`, so there a missing cluster fails the
/// test instead of skipping it; elsewhere the test says plainly that it did not run.
#[doc(hidden)]
pub fn ready_for_test(test: &str) -> bool {
    match cluster_ready() {
        Ok(_) => true,
        Err(why) => {
            assert!(
                std::env::var_os("BTD_REQUIRE_SLURM").is_none(),
                "{test}: BTD_REQUIRE_SLURM is set but Slurm is not usable here: {why}"
            );
            eprintln!(
                "{test}: NOT RUN — Slurm is not usable on this machine ({why}); start a \
                 single-node cluster with .ci/slurm-up.sh"
            );
            false
        }
    }
}
