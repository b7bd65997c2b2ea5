//! Helpers for btd's end-to-end tests, which run the real `btd` binary.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: a failed setup should abort the test

use std::path::PathBuf;
use std::process::{Command, Output};

use btd::harness;

pub mod web;

/// Path of the `btd` binary built by this `cargo test` run.
///
/// `cargo test --workspace` builds the `btd` binary (the `btd` package has integration tests of its
/// own), next to this test executable's `deps/` directory.
pub fn btd_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join(format!("btd{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the suite with `cargo test --workspace` so the btd binary is built",
        bin.display()
    );
    bin
}

/// The repository root (for `examples/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// Runs `btd ARGS` from the repository root and returns its output.
pub fn run_btd(args: &[&str]) -> Output {
    Command::new(btd_bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("spawn btd")
}

/// stdout as UTF-8.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as UTF-8.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A `btd start` process with its own temporary home, killed when dropped: the daemon harness of
/// the `btd` library ([`btd::harness`], shared with `btd demo`) plus the CLI helpers these tests
/// drive it with.
#[derive(Debug)]
pub struct Daemon {
    /// The home directory.
    pub home: PathBuf,
    // Dropped (killed) before the temporary home is removed.
    process: harness::Daemon,
    _tmp: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts a daemon on loopback with a fresh temporary home.
    pub fn start(extra: &[&str]) -> Daemon {
        let tmp = tempfile::tempdir().expect("temp home");
        let home = tmp.path().join("home");
        let mut d = Self::start_in(&home, extra);
        d._tmp = Some(tmp);
        d
    }

    /// Starts a daemon with `home`, logging to `HOME.log`.
    pub fn start_in(home: &std::path::Path, extra: &[&str]) -> Daemon {
        let launch = harness::Launch {
            extra: strings(extra),
            ..harness::Launch::new(btd_bin())
        };
        let mut d = Daemon {
            home: home.to_path_buf(),
            process: harness::Daemon::spawn(home, launch).expect("spawn btd start"),
            _tmp: None,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        if let Err(e) = self.process.ready_blocking(harness::READY_WITHIN) {
            panic!(
                "daemon in {} did not become ready: {e:#}\n{}",
                self.home.display(),
                self.log()
            );
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Runs `btd ARGS --home HOME`.
    pub fn btd(&self, args: &[&str]) -> Output {
        Command::new(btd_bin())
            .args(args)
            .arg("--home")
            .arg(&self.home)
            .output()
            .expect("spawn btd")
    }

    /// Runs a command that must succeed and returns its JSON output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let o = self.btd(&a);
        assert!(
            o.status.success(),
            "btd {args:?} failed: {}\n--- daemon log ---\n{}",
            stderr(&o),
            self.log()
        );
        serde_json::from_slice(&o.stdout).expect("JSON output")
    }

    /// `/ip4/127.0.0.1/tcp/N/p2p/ID` for `--bootstrap`.
    pub fn addr(&self) -> String {
        let v = self.json(&["id"]);
        format!(
            "{}/p2p/{}",
            v["listen"][0].as_str().expect("listen address"),
            v["peer_id"].as_str().expect("peer id")
        )
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> String {
        self.json(&["id"])["peer_id"]
            .as_str()
            .expect("peer id")
            .to_string()
    }

    /// SIGKILL, no clean shutdown.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Waits (bounded) until the process has exited by itself, e.g. after `btd stop`.
    pub fn wait_exit(&mut self, secs: u64) {
        assert!(
            self.process.wait_exit(std::time::Duration::from_secs(secs)),
            "daemon in {} did not exit within {secs} s\n{}",
            self.home.display(),
            self.log()
        );
    }

    /// Starts the daemon again on the same home (after [`Daemon::kill9`] or
    /// [`Daemon::wait_exit`]).
    pub fn restart(&mut self, extra: &[&str]) {
        self.process
            .respawn(&strings(extra))
            .expect("spawn btd start");
        self.wait_ready();
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Waits (bounded, 30 s) until `d` lists program `id` in `btd programs`.
pub fn wait_known(d: &Daemon, id: &str) {
    wait_until("program discovery", 30, || {
        let v = d.json(&["programs"]);
        v.as_array()?.iter().any(|p| p["id"] == id).then_some(())
    });
}

/// `btd publish MANIFEST` on `owner` (it must succeed), then waits until `worker` knows the
/// program; returns its id.
pub fn publish_known(owner: &Daemon, worker: &Daemon, manifest: &std::path::Path) -> String {
    let o = owner.btd(&["publish", &manifest.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    wait_known(worker, &id);
    id
}

/// Waits (bounded) until `f` returns `Some`, re-checking every 100 ms.
pub fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs `btd join ID ARGS...` on `worker`'s home, has `owner` approve the user code it prints, and
/// waits for the command. Returns its exit status and everything it printed after the code.
pub fn join_approved(
    owner: &Daemon,
    worker: &Daemon,
    id: &str,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(btd_bin())
        .args(["join", id])
        .args(args)
        .arg("--home")
        .arg(&worker.home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("btd join starts");
    let out = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(out).lines();
    let code = loop {
        let line = lines
            .next()
            .expect("join printed a code")
            .expect("readable output");
        if let Some(c) = line.strip_prefix("user code: ") {
            break c.trim().to_string();
        }
    };
    let o = owner.btd(&["approve", &code]);
    assert!(o.status.success(), "approve failed: {}", stderr(&o));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("btd join ends");
    (status, rest.join("\n"))
}

/// Deterministic text with word structure (a tiny stand-in for a real corpus), `n` bytes.
pub fn word_text(seed: u64, n: usize) -> String {
    const WORDS: &[&str] = &[
        "the", "owner", "checks", "every", "claim", "before", "it", "counts", "workers", "train",
        "small", "models", "and", "submit", "their", "results", "over", "mesh", "a", "holdout",
    ];
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = String::new();
    while out.len() < n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(WORDS[(x >> 33) as usize % WORDS.len()]);
        out.push(if (x >> 20).is_multiple_of(9) {
            '\n'
        } else {
            ' '
        });
    }
    out.truncate(n);
    out
}

/// The SHA-256 of a file, in hex.
pub fn sha256_hex(path: &std::path::Path) -> String {
    btd_protocol::Digest::of(&std::fs::read(path).expect("read the file")).to_string()
}

/// A candle program (tiny preset, 25 steps, 2048 eval tokens) on the corpus file with SHA-256
/// `sha`, by approval, claims checked by re-evaluation with a holdout gap of 0.5; `task_extra`
/// is added to its `[task]` table (e.g. `"seed = 3\n"`).
pub fn candle_file_manifest(name: &str, objective: &str, sha: &str, task_extra: &str) -> String {
    format!(
        r#"name = "{name}"
objective = "{objective}"
membership = "approval"
baseline = 8.0
required_outputs = ["checkpoint.safetensors"]
[criteria]
metric = "val_bpb"
direction = "minimize"
accept = "beats-champion"
[reward]
pool = 100
token = "OBOL"
split = "by-impact"
[task]
kind = "candle"
preset = "tiny"
steps = 25
eval_tokens = 2048
{task_extra}[task.dataset]
kind = "file"
sha256 = "{sha}"
[[rungs]]
id = "cpu"
spend_class = "local_unmetered"
hardware = "cpu"
[verify]
max_holdout_gap = 0.5
"#
    )
}

/// Writes at `path` the benches' shell program: each round echoes its hypothesis `x` as its score
/// (30 s rounds on the local CPU rung).
pub fn write_echo_manifest(path: &std::path::Path, name: &str) {
    let manifest = btd::testkit::score_manifest(
        name,
        r#""echo \"score: $BTD_PARAM_X\"""#,
        30,
        btd::testkit::LOCAL_CPU_RUNG,
    );
    std::fs::write(path, manifest).unwrap();
}

/// Resident set size of process `pid`, MiB (from `/proc/PID/status`).
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status");
    kb / 1024.0
}
