use btd_protocol::dispatch::{Reason, SpendClass};

use super::*;

fn admitted(action: Action) -> DispatchResult {
    DispatchResult {
        action,
        reason: Reason::LocalAllowed,
        detail: "local rung, local policy allows".into(),
        decision_id: "d".into(),
        packet_id: "p1".into(),
        rung_id: "local-cpu".into(),
        spend_class: SpendClass::LocalUnmetered,
        required_outputs: vec![],
    }
}

fn task(command: &str, timeout_secs: u64) -> ShellTask {
    ShellTask {
        command: command.into(),
        timeout_secs,
        source: None,
    }
}

#[test]
fn parses_the_last_finite_metric() {
    let out = "val_bpb: 3.5\nnoise val_bpb: 1.0\nval_bpb:2.25 (best)\nval_bpb: nan\nval_bpb: inf\n\
               val_bpbx: 0.1\nval_bpb: 1e999\n";
    assert_eq!(parse_metric(out, "val_bpb"), Some(2.25));
    assert_eq!(
        parse_metric("val_bpb:\t-1.5e-3\r\n", "val_bpb"),
        Some(-1.5e-3)
    );
    assert_eq!(parse_metric("val_bpb: .5", "val_bpb"), Some(0.5));
    assert_eq!(parse_metric("val_bpb: 7.", "val_bpb"), Some(7.0));
    assert_eq!(parse_metric("val_bpb: 2e", "val_bpb"), Some(2.0));
    assert_eq!(parse_metric("val_bpb: -", "val_bpb"), None);
    assert_eq!(parse_metric("val_bpb: .", "val_bpb"), None);
    assert_eq!(parse_metric(" val_bpb: 1", "val_bpb"), None);
    assert_eq!(parse_metric("", "val_bpb"), None);
}

#[test]
fn refuses_unless_dispatch_admits() {
    for action in [Action::HoldPacket, Action::RequestPaidApproval] {
        let e = run_shell(
            &task("echo hi", 5),
            &admitted(action),
            &ShellOptions::new("m"),
        )
        .unwrap_err();
        assert!(matches!(e, ShellError::NotAdmitted { .. }), "{e}");
    }
    let e = run_shell(
        &task("echo", 0),
        &admitted(Action::RunLocal),
        &ShellOptions::new("m"),
    )
    .unwrap_err();
    assert!(matches!(e, ShellError::Invalid(_)), "{e}");
}

#[test]
fn captures_exit_code_output_and_metric() {
    let cmd = "echo 'val_bpb: 1.25'; echo oops >&2; echo 'val_bpb: 0.75'; exit 3";
    let r = run_shell(
        &task(cmd, 30),
        &admitted(Action::RunPaid),
        &ShellOptions::new("val_bpb"),
    )
    .unwrap();
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.signal, None);
    assert!(!r.timed_out);
    assert_eq!(r.value, Some(0.75));
    assert_eq!(r.stdout, "val_bpb: 1.25\nval_bpb: 0.75\n");
    assert_eq!(r.stderr, "oops\n");
    assert_eq!(
        r.log_sha256,
        Digest::of(b"val_bpb: 1.25\nval_bpb: 0.75\noops\n")
    );
    assert!(!r.succeeded());
    assert_eq!(r.packet_id, "p1");
    let json = serde_json::to_string(&r).unwrap();
    let back: ShellReceipt = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn output_is_bounded_and_truncation_flagged() {
    let opts = ShellOptions {
        max_capture: 1000,
        ..ShellOptions::new("m")
    };
    // 200 000 bytes on stdout; the child must not block on a full pipe.
    let cmd = "head -c 200000 /dev/zero | tr '\\0' x; echo; echo 'm: 4'";
    let r = run_shell(&task(cmd, 60), &admitted(Action::RunLocal), &opts).unwrap();
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.stdout.len(), 1000);
    assert!(r.stdout_truncated);
    assert!(!r.stderr_truncated);
    assert_eq!(r.stdout_bytes, 200_000 + 1 + 5);
    // The metric line was past the cap: not seen.
    assert_eq!(r.value, None);
}

/// Whether process `pid` is gone (or a zombie: dead, waiting to be reaped by whoever adopted it).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

#[test]
fn timeout_kills_the_whole_process_group() {
    // The shell starts a background sleeper, reports its pid, then waits on it: only a group kill
    // stops both.
    let cmd = "sleep 300 & echo \"child: $!\"; wait";
    let r = run_shell(
        &task(cmd, 1),
        &admitted(Action::RunLocal),
        &ShellOptions::new("child"),
    )
    .unwrap();
    assert!(r.timed_out);
    assert_eq!(r.exit_code, None);
    assert_eq!(r.signal, Some(9));
    let pid = r.value.unwrap() as i32;
    assert!(pid > 1);
    // SIGKILL is delivered asynchronously: wait (bounded) for the kernel to finish the sleeper.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !dead(pid) && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(
        dead(pid),
        "the background sleeper {pid} survived the timeout"
    );
}

#[test]
fn background_jobs_do_not_outlive_a_clean_exit() {
    let cmd = "sleep 300 & echo \"child: $!\"";
    let r = run_shell(
        &task(cmd, 30),
        &admitted(Action::RunLocal),
        &ShellOptions::new("child"),
    )
    .unwrap();
    assert_eq!(r.exit_code, Some(0));
    assert!(!r.timed_out);
    let pid = r.value.unwrap() as i32;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !dead(pid) && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(dead(pid), "the background sleeper {pid} survived");
}

#[test]
fn the_command_sees_its_environment_and_working_directory() {
    let dir = std::env::temp_dir().join(format!("btd-shell-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = ShellOptions {
        cwd: Some(dir.clone()),
        env: vec![("BTD_PARAM_LR".into(), "0.25".into())],
        ..ShellOptions::new("m")
    };
    let cmd = "echo \"m: $BTD_PARAM_LR\"; pwd > where.txt";
    let r = run_shell(&task(cmd, 60), &admitted(Action::RunLocal), &opts).unwrap();
    assert_eq!(r.value, Some(0.25), "{r:?}");
    let wrote = std::fs::read_to_string(dir.join("where.txt")).unwrap();
    assert_eq!(
        std::path::Path::new(wrote.trim()).canonicalize().unwrap(),
        dir.canonicalize().unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
