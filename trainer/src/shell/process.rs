//! Running one child process with a deadline, bounded output capture and process-group cleanup.
//!
//! The child runs in its own process group. When it exits, or when the deadline passes, the whole
//! group gets SIGKILL, so neither a timed-out command nor a background job it left behind outlives
//! the run. Output is read by two threads into buffers capped at `max_capture` bytes each; bytes
//! beyond the cap are read and dropped (so the child never blocks on a full pipe) and the capture
//! is marked truncated.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How long to wait for the direct child to be reaped after its group was killed.
const REAP_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for the output pipes to close after the group was killed. A process that left
/// the group (`setsid`) can hold them open; its output after this point is not captured.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// One captured stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capture {
    /// The first `max_capture` bytes.
    pub(crate) bytes: Vec<u8>,
    /// Bytes the stream produced in all.
    pub(crate) total: u64,
    /// Whether bytes were dropped (beyond the cap, or still unread when the pipe was abandoned).
    pub(crate) truncated: bool,
    /// The last [`TAIL_BYTES`] bytes of the stream (whatever the cap).
    pub(crate) tail: Vec<u8>,
}

/// Bytes kept in [`Capture::tail`].
pub(crate) const TAIL_BYTES: usize = 2048;

/// How the process ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: Option<ExitStatus>,
    pub(crate) timed_out: bool,
    /// The caller's cancel flag was set and the process group was killed.
    pub(crate) cancelled: bool,
    pub(crate) duration: Duration,
    pub(crate) stdout: Capture,
    pub(crate) stderr: Capture,
}

/// How often a running command checks its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Spawns `cmd` in a new process group with piped output and runs it to completion or `timeout`.
pub(crate) fn run_bounded(
    cmd: Command,
    timeout: Duration,
    max_capture: usize,
) -> std::io::Result<Finished> {
    run_cancellable(cmd, timeout, max_capture, None)
}

/// [`run_bounded`], also killing the process group as soon as `cancel` is set.
pub(crate) fn run_cancellable(
    mut cmd: Command,
    timeout: Duration,
    max_capture: usize,
    cancel: Option<&AtomicBool>,
) -> std::io::Result<Finished> {
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let pgid = i32::try_from(child.id()).map(Pid::from_raw).ok();
    let out = child.stdout.take().map(|s| reader(s, max_capture));
    let err = child.stderr.take().map(|s| reader(s, max_capture));

    let (status_tx, status_rx) = sync_channel(1);
    thread::spawn(move || {
        let _ = status_tx.send(child.wait());
    });
    let deadline = start + timeout;
    let mut cancelled = false;
    let (status, timed_out) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let slice = if cancel.is_some() {
            left.min(CANCEL_POLL)
        } else {
            left
        };
        match status_rx.recv_timeout(slice) {
            Ok(status) => break (status.ok(), false),
            Err(RecvTimeoutError::Timeout) => {
                cancelled = cancel.is_some_and(|c| c.load(Ordering::SeqCst));
                if cancelled || Instant::now() >= deadline {
                    kill_group(pgid);
                    break (
                        status_rx.recv_timeout(REAP_GRACE).ok().and_then(Result::ok),
                        !cancelled,
                    );
                }
            }
            Err(RecvTimeoutError::Disconnected) => break (None, false),
        }
    };
    let duration = start.elapsed();
    // Background jobs the command left in its group go too.
    kill_group(pgid);
    Ok(Finished {
        status,
        timed_out,
        cancelled,
        duration,
        stdout: out.map(Reader::finish).unwrap_or_default(),
        stderr: err.map(Reader::finish).unwrap_or_default(),
    })
}

fn kill_group(pgid: Option<Pid>) {
    if let Some(pgid) = pgid {
        // ESRCH (the group is already gone) is the normal case after a clean exit.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// A thread draining one pipe into a shared, capped buffer.
struct Reader {
    capture: Arc<Mutex<Capture>>,
    done: Receiver<()>,
}

fn reader(mut pipe: impl Read + Send + 'static, max: usize) -> Reader {
    let capture = Arc::new(Mutex::new(Capture::default()));
    let (done_tx, done) = sync_channel(1);
    let shared = Arc::clone(&capture);
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let Ok(mut c) = shared.lock() else { break };
                    c.total += n as u64;
                    let room = max.saturating_sub(c.bytes.len());
                    if n > room {
                        c.truncated = true;
                    }
                    c.bytes.extend_from_slice(&buf[..n.min(room)]);
                    c.tail.extend_from_slice(&buf[..n]);
                    let excess = c.tail.len().saturating_sub(TAIL_BYTES);
                    c.tail.drain(..excess);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = done_tx.send(());
    });
    Reader { capture, done }
}

impl Reader {
    fn finish(self) -> Capture {
        let drained = self.done.recv_timeout(DRAIN_GRACE).is_ok();
        let mut c = match self.capture.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if !drained {
            c.truncated = true;
        }
        c
    }
}

/// The signal that ended the process, if any.
pub(crate) fn signal_of(status: &ExitStatus) -> Option<i32> {
    status.signal()
}
