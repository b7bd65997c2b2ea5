//! Smoke test of the built binary. (Also makes `cargo test --workspace` build `btd` for the
//! end-to-end tests in `tests/`.)

use std::process::Command;

#[test]
fn version_and_usage_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_btd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("btd "));

    let out = Command::new(env!("CARGO_BIN_EXE_btd"))
        .arg("no-such-command")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}
