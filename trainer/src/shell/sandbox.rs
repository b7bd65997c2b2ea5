//! The opt-in sandbox for running another member's code, and how a command is launched.
//!
//! # What the sandbox covers
//!
//! With [`Sandbox::isolate`] the command runs under bubblewrap (`bwrap`, Debian's `bubblewrap`
//! package), in new user, network, PID, IPC and UTS namespaces and a new session:
//!
//! * **No network.** The network namespace's only interface, loopback, is down: the command can
//!   reach neither the internet, nor the LAN, nor services listening on the host's `127.0.0.1`.
//! * **A read-only file system.** `/` is bound read-only; `/tmp` is a fresh tmpfs; each of
//!   [`Sandbox::hidden`] (the daemon's home: its identity key, store and holdouts; the user's
//!   home: SSH keys, tokens, shell start-up files) is replaced by an empty tmpfs; only
//!   [`Sandbox::writable`] (the run's tree and scratch directory) can be written, and
//!   [`Sandbox::readable`] (the setup directory, the owner's holdout) are bound back read-only.
//!   Nothing the command writes outside its tree and scratch survives it, so it cannot plant code
//!   for later (a shell start-up file, a cron job, the daemon's binary).
//! * **Its own processes only.** A new PID namespace: it sees and signals only its own
//!   processes; a new session (`setsid`): it cannot inject input into the terminal the daemon
//!   was started from; `--die-with-parent`: it dies with the daemon's kill of the run.
//! * **Resource limits** (rlimits, set with util-linux `prlimit` before `sh` starts, inherited by
//!   every process the command starts): address space ([`Sandbox::max_memory_bytes`],
//!   `RLIMIT_AS`), CPU seconds per process ([`Sandbox::max_cpu_secs`], `RLIMIT_CPU`), largest file
//!   written ([`Sandbox::max_file_bytes`], `RLIMIT_FSIZE`: a write past it fails and the writer gets
//!   `SIGXFSZ`), and processes ([`Sandbox::max_processes`], `RLIMIT_NPROC`). A limit of 0 is not
//!   set.
//! * **A fresh scratch directory and a cleared environment**, when the caller asks for them
//!   ([`super::ShellOptions::clear_env`]): the command sees only `PATH`, `LANG=C.UTF-8`, `HOME` and
//!   `TMPDIR` (both the caller's scratch directory) and the variables the caller adds; the
//!   daemon's own environment (tokens, keys in variables) is not passed on.
//! * The wall-clock timeout and process-group kill of every shell run apply as always.
//!
//! # What it does NOT cover
//!
//! * **Reading outside the hidden directories.** The command can read every file outside them
//!   that the daemon's user can read (as root: `/etc/shadow`, other users' homes). Whatever it
//!   reads can leave only through the numbers it prints (the metric the worker submits, the value
//!   the owner's re-run measures, which the ledger shows): a slow channel, but a channel. Run the
//!   daemon as a dedicated unprivileged user.
//! * **No GPU isolation**: the GPU, its memory and the driver are shared with everything else.
//! * **No system-call filter** (no seccomp): the whole kernel interface is reachable.
//! * `RLIMIT_NPROC` counts *all* processes and threads of the user, not only the command's, and
//!   the kernel does not apply it to real root; `RLIMIT_AS` counts reserved virtual memory, which
//!   CUDA programs reserve generously: give GPU programs `max_memory_bytes = 0` or a large value.
//!
//! [`sandbox_probe`] says whether the machine can run the sandbox at all (some distributions
//! disable unprivileged user namespaces); a daemon should refuse peer code with its message.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The sandbox for one command; see the module docs for what it does and does not cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// Address-space limit, bytes (`RLIMIT_AS`); 0: none. Default 8 GiB.
    pub max_memory_bytes: u64,
    /// CPU-time limit per process, seconds (`RLIMIT_CPU`); 0: none. Default 0: the wall-clock
    /// timeout already bounds the run, and a multi-threaded program spends CPU seconds faster
    /// than wall-clock ones. [`Sandbox::with_timeout`] sets it from the timeout.
    pub max_cpu_secs: u64,
    /// Largest file the command may write, bytes (`RLIMIT_FSIZE`); 0: none. Default 1 GiB.
    pub max_file_bytes: u64,
    /// Processes and threads of the user (`RLIMIT_NPROC`); 0: none. Default 1024 (threads count:
    /// a PyTorch program starts dozens).
    pub max_processes: u64,
    /// Run isolated under bubblewrap: no network, a read-only file system but for `writable`,
    /// `hidden` replaced by empty directories, its own PID namespace and session. Default true.
    /// Off, only the resource limits apply.
    pub isolate: bool,
    /// Directories replaced by an empty tmpfs (the daemon's home, the user's home).
    #[serde(default)]
    pub hidden: Vec<PathBuf>,
    /// Directories the command may write besides its working directory and scratch directory
    /// (which always are); bound after `hidden`, so they may lie inside one.
    #[serde(default)]
    pub writable: Vec<PathBuf>,
    /// Files or directories bound back read-only after `hidden` (the setup directory, a holdout).
    #[serde(default)]
    pub readable: Vec<PathBuf>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            max_memory_bytes: 8 << 30,
            max_cpu_secs: 0,
            max_file_bytes: 1 << 30,
            max_processes: 1024,
            isolate: true,
            hidden: Vec::new(),
            writable: Vec::new(),
            readable: Vec::new(),
        }
    }
}

impl Sandbox {
    /// The defaults, with the CPU limit set to `timeout_secs` times the number of CPUs (a process
    /// busy on every core for the whole timeout, and no more).
    pub fn with_timeout(timeout_secs: u64) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Self {
            max_cpu_secs: timeout_secs.saturating_mul(cpus),
            ..Self::default()
        }
    }

    /// The bubblewrap options: namespaces, the read-only root, then hidden, writable and readable
    /// paths in that order (later binds land inside earlier tmpfs mounts).
    fn bwrap_args(&self, cwd: Option<&Path>) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = [
            "--die-with-parent",
            "--new-session",
            "--unshare-user",
            "--unshare-net",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ]
        .into_iter()
        .map(Into::into)
        .collect();
        for h in &self.hidden {
            a.extend(["--tmpfs".into(), h.into()]);
        }
        for w in &self.writable {
            a.extend(["--bind".into(), w.into(), w.into()]);
        }
        for r in &self.readable {
            a.extend(["--ro-bind".into(), r.into(), r.into()]);
        }
        if let Some(dir) = cwd {
            a.extend(["--chdir".into(), dir.into()]);
        }
        a
    }

    /// The `prlimit` options for the limits that are set.
    fn prlimit_args(&self) -> Vec<String> {
        [
            ("--as", self.max_memory_bytes),
            ("--cpu", self.max_cpu_secs),
            ("--fsize", self.max_file_bytes),
            ("--nproc", self.max_processes),
        ]
        .into_iter()
        .filter(|&(_, v)| v > 0)
        .map(|(flag, v)| format!("{flag}={v}"))
        .collect()
    }
}

/// How long the probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether this machine can run [`Sandbox`]ed commands: runs `true` in an isolated sandbox
/// (`bwrap … -- prlimit --fsize=… -- true`) once per process and caches the answer. The error
/// says, in words for the operator, why not (bubblewrap or util-linux missing, unprivileged user
/// namespaces disabled, …).
pub fn sandbox_probe() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe_now).clone()
}

fn probe_now() -> Result<(), String> {
    let mut cmd = Command::new("bwrap");
    cmd.args(Sandbox::default().bwrap_args(None))
        .args(["--", "prlimit"])
        .arg(format!("--fsize={}", 1u64 << 30))
        .args(["--", "true"]);
    let done = match super::process::run_bounded(cmd, PROBE_TIMEOUT, 4096) {
        Ok(done) => done,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                "the sandbox needs bubblewrap (`bwrap`: apt install bubblewrap) and `prlimit` \
                 (util-linux), and `bwrap` is not installed"
                    .into(),
            )
        }
        Err(e) => return Err(format!("the sandbox cannot start `bwrap`: {e}")),
    };
    if done.status.is_some_and(|s| s.success()) {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&done.stderr.bytes)
        .trim()
        .to_owned();
    let how = if done.timed_out {
        "did not finish".to_owned()
    } else {
        match done.status {
            Some(s) => format!("failed ({s})"),
            None => "failed".to_owned(),
        }
    };
    Err(format!(
        "the sandbox is unavailable: `bwrap … -- prlimit -- true` {how}: {said}; unprivileged \
         user namespaces may be disabled (check the sysctls kernel.unprivileged_userns_clone, \
         user.max_user_namespaces and, on Ubuntu, kernel.apparmor_restrict_unprivileged_userns), \
         or `prlimit` (util-linux) is missing"
    ))
}

/// What to launch: `sh -c command`, optionally sandboxed, in a directory, with an environment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Launch<'a> {
    /// The command line for `sh -c`.
    pub(crate) command: &'a str,
    /// Working directory.
    pub(crate) cwd: Option<&'a Path>,
    /// Extra variables, set last.
    pub(crate) env: &'a [(String, String)],
    /// Clear the environment and use this as `HOME` and `TMPDIR`.
    pub(crate) clean_env_scratch: Option<&'a Path>,
    /// The sandbox, if any.
    pub(crate) sandbox: Option<&'a Sandbox>,
}

/// Fallback `PATH` when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What a [`Launch`] runs, before it becomes a [`Command`] (local) or a job script (Slurm).
pub(crate) struct Plan {
    /// The program and its arguments.
    pub(crate) argv: Vec<std::ffi::OsString>,
    /// Start from an empty environment.
    pub(crate) clear_env: bool,
    /// Variables to set (over the cleared environment when `clear_env`).
    pub(crate) env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl Launch<'_> {
    /// The program, arguments and environment to run.
    pub(crate) fn plan(&self) -> Plan {
        let limits = self.sandbox.map(Sandbox::prlimit_args).unwrap_or_default();
        let isolated = self.sandbox.filter(|s| s.isolate);
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(s) = isolated {
            // The command's own directory and its scratch (HOME, TMPDIR) are always writable.
            let mut s = s.clone();
            s.writable.extend(
                self.cwd
                    .into_iter()
                    .chain(self.clean_env_scratch)
                    .map(Path::to_path_buf),
            );
            argv.push("bwrap".into());
            argv.extend(s.bwrap_args(self.cwd));
            argv.extend(["--".into(), "prlimit".into()]);
            argv.extend(limits.iter().map(Into::into));
            argv.push("--".into());
        } else if !limits.is_empty() {
            argv.push("prlimit".into());
            argv.extend(limits.iter().map(Into::into));
            argv.push("--".into());
        }
        argv.extend(["sh".into(), "-c".into(), self.command.into()]);
        let mut env = Vec::new();
        if let Some(scratch) = self.clean_env_scratch {
            let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
            env.push(("PATH".into(), path));
            env.push(("LANG".into(), "C.UTF-8".into()));
            env.push(("HOME".into(), scratch.into()));
            env.push(("TMPDIR".into(), scratch.into()));
        }
        env.extend(self.env.iter().map(|(k, v)| (k.into(), v.into())));
        Plan {
            argv,
            clear_env: self.clean_env_scratch.is_some(),
            env,
        }
    }

    /// The [`Command`] to spawn.
    pub(crate) fn command(&self) -> Command {
        let plan = self.plan();
        let mut cmd = Command::new(&plan.argv[0]);
        cmd.args(&plan.argv[1..]);
        if let Some(dir) = self.cwd {
            cmd.current_dir(dir);
        }
        if plan.clear_env {
            cmd.env_clear();
        }
        cmd.envs(plan.env);
        cmd
    }
}
