//! Child `btd start` processes, driven through their control sockets: what `btd demo` runs its mesh
//! with, and what the end-to-end tests (`tests/`) start real daemons with.
//!
//! A [`Daemon`] is one child process with its own home; its stderr (the daemon's log) goes to
//! `HOME.log` beside the home. [`Daemon::ready`] waits until its control socket answers and the node
//! listens; [`Daemon::call`] sends one control request. Dropping it stops the child as its
//! [`Launch::on_drop`] says.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;

use crate::control::Request;
use crate::node::types::NodeInfo;

/// The default `--listen`: TCP on loopback, a port the OS picks.
pub const LOOPBACK_TCP: &str = "/ip4/127.0.0.1/tcp/0";
/// How long a daemon may take to answer on its control socket and listen (a cold start opens the
/// database and binds the transports: well under a second; 30 s leaves room for a loaded machine).
pub const READY_WITHIN: Duration = Duration::from_secs(30);
/// Pause between two looks at a starting daemon.
const READY_POLL: Duration = Duration::from_millis(50);
/// How long a daemon asked to stop gets (to stop training and close its database) before it is
/// killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What dropping a [`Daemon`] does to its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrop {
    /// SIGKILL at once: tests have nothing to save (and restart-safety tests kill on purpose).
    Kill,
    /// `btd stop` first, so the daemon stops training and closes its database; SIGKILL after a
    /// grace period if it is still running.
    Stop,
}

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `btd` executable.
    pub exe: PathBuf,
    /// The `--listen` address.
    pub listen: String,
    /// More `btd start` arguments (they come after `--listen`, so another `--listen` adds one).
    pub extra: Vec<String>,
    /// Truncate the log at start (a fresh run) instead of appending to it (a restart).
    pub fresh_log: bool,
    /// What dropping the [`Daemon`] does.
    pub on_drop: OnDrop,
}

impl Launch {
    /// `exe start` on [`LOOPBACK_TCP`] with no other arguments, appending to the log, killed when
    /// dropped.
    pub fn new(exe: impl Into<PathBuf>) -> Launch {
        Launch {
            exe: exe.into(),
            listen: LOOPBACK_TCP.to_string(),
            extra: Vec::new(),
            fresh_log: false,
            on_drop: OnDrop::Kill,
        }
    }
}

/// A `btd start` child process with its own home.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    home: PathBuf,
    launch: Launch,
    child: Child,
}

impl Daemon {
    /// Starts `EXE start --home HOME --listen LISTEN EXTRA...` (creating `home`), stdin and stdout
    /// closed, stderr to [`Daemon::log_path`]. Its name (in messages) is the home's last component.
    pub fn spawn(home: &Path, launch: Launch) -> Result<Daemon> {
        let name = home
            .file_name()
            .map_or_else(|| "btd".to_string(), |n| n.to_string_lossy().into_owned());
        let child = spawn_child(&name, home, &launch, launch.fresh_log)?;
        Ok(Daemon {
            name,
            home: home.to_path_buf(),
            launch,
            child,
        })
    }

    /// The name used in messages (the home's last component).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `HOME.log`: the daemon's stderr.
    pub fn log_path(&self) -> PathBuf {
        log_path(&self.home)
    }

    /// The daemon's log so far (empty when unreadable).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        crate::home::Home::at(self.home.clone()).socket_path()
    }

    /// Sends `req` on the control socket and decodes the answer.
    pub async fn call<T: DeserializeOwned>(&self, req: Request) -> Result<T> {
        let v = crate::client::call(&self.socket(), &req, |_| {}).await?;
        serde_json::from_value(v).map_err(|e| anyhow!("unexpected reply from {}: {e}", self.name))
    }

    /// Waits (up to `within`) until the control socket answers and the node listens; fails at once
    /// if the process exits.
    pub async fn ready(&mut self, within: Duration) -> Result<NodeInfo> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(info) = self.call::<NodeInfo>(Request::Id).await {
                if !info.listen.is_empty() {
                    return Ok(info);
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "the {} daemon exited ({status}); see {}",
                    self.name,
                    self.log_path().display()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the {} daemon did not start within {} s",
                    self.name,
                    within.as_secs()
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// [`Daemon::ready`] for callers without an async runtime (it runs one of its own; do not call
    /// it from inside one).
    pub fn ready_blocking(&mut self, within: Duration) -> Result<NodeInfo> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start an async runtime")?
            .block_on(self.ready(within))
    }

    /// `/ip4/127.0.0.1/tcp/N/p2p/ID`: the node's first direct TCP listen address, with its peer id.
    pub async fn tcp_addr(&self) -> Result<String> {
        let info: NodeInfo = self.call(Request::Id).await?;
        let a = info
            .listen
            .iter()
            .find(|a| a.contains("/tcp/") && !a.contains("p2p-circuit"))
            .ok_or_else(|| anyhow!("{} has no TCP listen address", self.name))?;
        Ok(if a.contains("/p2p/") {
            a.clone()
        } else {
            format!("{a}/p2p/{}", info.peer_id)
        })
    }

    /// SIGKILL, no clean shutdown; waits for the process to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for the process to exit by itself (after `btd stop`); whether it did.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(READY_POLL);
        }
        false
    }

    /// Starts the daemon again on the same home (after [`Daemon::kill`]), listening as first
    /// launched, with `extra` as its other arguments; the log is appended to.
    pub fn respawn(&mut self, extra: &[String]) -> Result<()> {
        self.launch.extra = extra.to_vec();
        self.child = spawn_child(&self.name, &self.home, &self.launch, false)?;
        Ok(())
    }

    /// Asks the daemon to stop (`btd stop`) and waits up to [`STOP_GRACE`] for it to exit.
    fn stop_politely(&mut self) -> bool {
        let _ = Command::new(&self.launch.exe)
            .arg("stop")
            .arg("--home")
            .arg(&self.home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.wait_exit(STOP_GRACE)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.launch.on_drop == OnDrop::Stop && self.stop_politely() {
            return;
        }
        self.kill();
    }
}

/// `HOME.log` for a daemon with `home`.
fn log_path(home: &Path) -> PathBuf {
    home.with_extension("log")
}

/// `EXE start --home HOME --listen LISTEN EXTRA...`, stderr to the log (truncated when `fresh_log`).
fn spawn_child(name: &str, home: &Path, launch: &Launch, fresh_log: bool) -> Result<Child> {
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    let path = log_path(home);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!fresh_log)
        .truncate(fresh_log)
        .open(&path)
        .with_context(|| format!("cannot create the log of {name} ({})", path.display()))?;
    Command::new(&launch.exe)
        .arg("start")
        .arg("--home")
        .arg(home)
        .args(["--listen", launch.listen.as_str()])
        .args(&launch.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start the {name} daemon"))
}
