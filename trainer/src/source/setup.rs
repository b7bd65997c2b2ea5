//! The per-worker cache of unpacked bundles with their setup done.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use btd_protocol::patch::Files;
use btd_protocol::Digest;
use serde::{Deserialize, Serialize};

use super::{write_tree, SourceError};
use crate::shell::{sandbox_probe, Capture, Launch, Sandbox, MAX_TIMEOUT_SECS};

/// Most bytes of output a failed setup's error carries (half stdout, half stderr).
pub const MAX_SETUP_TAIL_BYTES: usize = 2048;
/// Bytes of each stream a setup run keeps in memory (the tail is what matters).
const SETUP_CAPTURE_BYTES: usize = 64 << 10;

/// A program's setup: a command run once per worker and bundle, in the unpacked bundle, before
/// any run (e.g. `uv sync` or `python prepare.py`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupSpec {
    /// The command, run as `sh -c COMMAND` in the bundle's directory.
    pub command: String,
    /// Wall-clock limit, seconds (1..=[`MAX_TIMEOUT_SECS`]); at the limit its process group is
    /// killed and the setup fails.
    pub timeout_secs: u64,
}

/// Unpacked bundles, each with its setup run once: `root/<bundle sha256 hex>/`.
///
/// Next to each directory, `root/<hex>.ready` records that the unpacking and setup succeeded (it
/// is written, atomically, only then, and holds the setup command): a later [`SetupCache::prepare`]
/// for the same bundle and setup returns at once. Anything else (no marker, a different setup
/// command, a failed or interrupted earlier attempt) makes `prepare` wipe the directory, unpack
/// the bundle again and rerun the setup. Calls for one bundle are serialised within the process;
/// two processes must not share a root.
#[derive(Debug)]
pub struct SetupCache {
    root: PathBuf,
    locks: Mutex<BTreeMap<Digest, Arc<Mutex<()>>>>,
}

impl SetupCache {
    /// A cache under `root` (created on first use).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            locks: Mutex::new(BTreeMap::new()),
        }
    }

    /// The directory a bundle is (or will be) prepared in.
    pub fn dir_of(&self, bundle: Digest) -> PathBuf {
        self.root.join(bundle.to_string())
    }

    /// Returns `root/<bundle hex>/` holding `files` (the caller vouches that they are the
    /// bundle's content) after `setup`, if any, ran there successfully: at once when an earlier
    /// call did this, else by unpacking and running the setup now.
    ///
    /// The setup runs as `sh -c COMMAND` in that directory, in its own process group, with its
    /// timeout. With a `sandbox`, it runs in it (see [`crate::shell::sandbox`]), with a cleared
    /// environment whose `HOME` and `TMPDIR` are a fresh `root/<hex>.home/`; note that a sandbox
    /// isolating the network stops a setup that downloads dependencies. Without one it inherits
    /// the daemon's environment.
    ///
    /// A setup that fails (non-zero exit, a signal, the timeout) returns
    /// [`SourceError::SetupFailed`] with the end of its output; the next call tries again.
    pub fn prepare(
        &self,
        bundle: Digest,
        files: &Files,
        setup: Option<&SetupSpec>,
        sandbox: Option<&Sandbox>,
    ) -> Result<PathBuf, SourceError> {
        if let Some(spec) = setup {
            if spec.command.trim().is_empty() {
                return Err(SourceError::InvalidSetup("the command is empty".into()));
            }
            if spec.timeout_secs == 0 || spec.timeout_secs > MAX_TIMEOUT_SECS {
                return Err(SourceError::InvalidSetup(format!(
                    "timeout_secs is {}; use 1..={MAX_TIMEOUT_SECS}",
                    spec.timeout_secs
                )));
            }
        }
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(locks.entry(bundle).or_default())
        };
        let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);

        let dir = self.dir_of(bundle);
        let marker = self.root.join(format!("{bundle}.ready"));
        let want = marker_text(setup);
        if fs::read_to_string(&marker).is_ok_and(|have| have == want) && dir.is_dir() {
            return Ok(dir);
        }
        remove_file_if_any(&marker)?;
        remove_dir_if_any(&dir)?;
        write_tree(files, &dir)?;
        if let Some(spec) = setup {
            let home = self.root.join(format!("{bundle}.home"));
            let scratch = match sandbox {
                Some(_) => {
                    remove_dir_if_any(&home)?;
                    fs::create_dir_all(&home).map_err(|e| SourceError::io(&home, e))?;
                    Some(home.as_path())
                }
                None => None,
            };
            run_setup(spec, &dir, scratch, sandbox)?;
        }
        let tmp = self.root.join(format!("{bundle}.ready.tmp"));
        fs::write(&tmp, want).map_err(|e| SourceError::io(&tmp, e))?;
        fs::rename(&tmp, &marker).map_err(|e| SourceError::io(&marker, e))?;
        Ok(dir)
    }
}

fn marker_text(setup: Option<&SetupSpec>) -> String {
    match setup {
        Some(spec) => format!("setup: {}\n", spec.command),
        None => "no setup\n".into(),
    }
}

fn remove_file_if_any(path: &Path) -> Result<(), SourceError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SourceError::io(path, e)),
        _ => Ok(()),
    }
}

fn remove_dir_if_any(path: &Path) -> Result<(), SourceError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SourceError::io(path, e)),
        _ => Ok(()),
    }
}

fn run_setup(
    spec: &SetupSpec,
    dir: &Path,
    scratch: Option<&Path>,
    sandbox: Option<&Sandbox>,
) -> Result<(), SourceError> {
    if sandbox.is_some_and(|s| s.isolate) {
        sandbox_probe().map_err(SourceError::SandboxUnavailable)?;
    }
    let cmd = Launch {
        command: &spec.command,
        cwd: Some(dir),
        env: &[],
        clean_env_scratch: scratch,
        sandbox,
    }
    .command();
    let timeout = Duration::from_secs(spec.timeout_secs);
    let done = crate::shell::run_bounded(cmd, timeout, SETUP_CAPTURE_BYTES).map_err(|e| {
        SourceError::SetupFailed {
            command: spec.command.clone(),
            outcome: format!("could not start: {e}"),
            tail: String::new(),
        }
    })?;
    let outcome = if done.timed_out {
        format!("timed out after {} s", spec.timeout_secs)
    } else {
        match done.status {
            Some(s) if s.success() => return Ok(()),
            Some(s) => match (s.code(), crate::shell::signal_of(&s)) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                (None, None) => format!("failed ({s})"),
            },
            None => "ended without an exit status".into(),
        }
    };
    Err(SourceError::SetupFailed {
        command: spec.command.clone(),
        outcome,
        tail: tail_text(&done.stdout, &done.stderr),
    })
}

/// The last bytes of both streams, labelled, at most [`MAX_SETUP_TAIL_BYTES`] in all: each gets
/// half, and a stream that needs less leaves the rest to the other.
fn tail_text(stdout: &Capture, stderr: &Capture) -> String {
    // Room for the labels and for replacement characters of invalid UTF-8.
    const BYTES: usize = MAX_SETUP_TAIL_BYTES - 64;
    let half = BYTES / 2;
    let budget_out = (BYTES - stderr.tail.len().min(half)).min(stdout.tail.len());
    let budget_err = (BYTES - budget_out).min(stderr.tail.len());
    let last = |b: &[u8], n: usize| String::from_utf8_lossy(&b[b.len() - n..]).into_owned();
    let mut out = String::new();
    if budget_out > 0 {
        out.push_str("[stdout] ");
        out.push_str(&last(&stdout.tail, budget_out));
    }
    if budget_err > 0 {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("[stderr] ");
        out.push_str(&last(&stderr.tail, budget_err));
    }
    if out.len() > MAX_SETUP_TAIL_BYTES {
        // Only invalid UTF-8 (each byte shown as a 3-byte U+FFFD) gets here.
        let cut = (out.len() - MAX_SETUP_TAIL_BYTES..out.len())
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(out.len());
        out.drain(..cut);
    }
    out
}
