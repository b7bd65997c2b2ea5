//! Helpers for btd's end-to-end tests, which run the real `btd` binary.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: a failed setup should abort the test

use std::path::PathBuf;
use std::process::{Command, Output};

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
