use btd_protocol::dispatch::{Reason, SpendClass};

use super::*;

pub(crate) fn admitted(action: Action) -> DispatchResult {
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
fn cancelling_kills_the_command_at_once() {
    // `btd stop` sets the flag; the command is killed well before its timeout.
    let cancel = std::sync::Arc::new(AtomicBool::new(false));
    let mut opts = ShellOptions::new("child");
    opts.cancel = Some(cancel.clone());
    let flag = cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let started = std::time::Instant::now();
    let r = run_shell(
        &task("sleep 300 & echo \"child: $!\"; wait", 600),
        &admitted(Action::RunLocal),
        &opts,
    )
    .unwrap();
    t.join().unwrap();
    assert!(r.cancelled && !r.timed_out, "{r:?}");
    assert_eq!(r.signal, Some(9));
    assert!(started.elapsed() < Duration::from_secs(60));
    let pid = r.value.unwrap() as i32;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !dead(pid) && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(
        dead(pid),
        "the background sleeper {pid} survived the cancel"
    );
    // Without the flag set, the same options run to the end.
    cancel.store(false, std::sync::atomic::Ordering::SeqCst);
    let r = run_shell(
        &task("echo 'child: 1'", 10),
        &admitted(Action::RunLocal),
        &opts,
    )
    .unwrap();
    assert!(!r.cancelled && r.succeeded());
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

/// karpathy/autoresearch's summary, exactly as `train.py` prints it.
const AUTORESEARCH_SUMMARY: &str = "---\nval_bpb:          0.997900\ntraining_seconds: 300.1\n\
peak_vram_mb:     45060.2\nmfu_percent:      39.80\ntotal_tokens_M:   499.6\nnum_steps:        953\n\
num_params_M:     50.3\ndepth:            8\n";

#[test]
fn parses_the_autoresearch_summary() {
    let m = parse_metrics(AUTORESEARCH_SUMMARY);
    let want = [
        ("val_bpb", 0.9979),
        ("training_seconds", 300.1),
        ("peak_vram_mb", 45060.2),
        ("mfu_percent", 39.8),
        ("total_tokens_M", 499.6),
        ("num_steps", 953.0),
        ("num_params_M", 50.3),
        ("depth", 8.0),
    ];
    assert_eq!(
        m,
        want.map(|(k, v)| (k.to_owned(), v)).into_iter().collect()
    );
    assert_eq!(parse_metric(AUTORESEARCH_SUMMARY, "val_bpb"), Some(0.9979));
    assert!(!metrics::saw_fail(AUTORESEARCH_SUMMARY));
}

#[test]
fn carriage_return_progress_lines_are_separate_lines() {
    // Progress redrawn with `\r` and no newline before the summary: the `---` and the first
    // metric would otherwise share one line with the progress.
    let progress = "step 00951 (99.8%) | loss: 3.101 | dt: 310ms\rstep 00952 (99.9%) | loss: \
                    3.100 | dt: 311ms\rstep 00953 (100.0%) | loss: 3.099 | dt: 309ms\r";
    let out = format!("warming up\n{progress}{AUTORESEARCH_SUMMARY}");
    let m = parse_metrics(&out);
    assert_eq!(m.get("val_bpb"), Some(&0.9979));
    assert_eq!(m.get("depth"), Some(&8.0));
    // Progress lines are not `key: number` lines: no `loss`, no `step 00953 (100.0%) | loss`.
    assert_eq!(m.len(), 8, "{m:?}");
    assert_eq!(parse_metric(&out, "val_bpb"), Some(0.9979));
    assert_eq!(parse_metric("x\rval_bpb: 2.5\r", "val_bpb"), Some(2.5));
}

#[test]
fn metrics_lines_are_strict_and_bounded() {
    let out = "a: 1\na: 2\n_b.c-d: -3e2\n1x: 4\nsp ace: 5\ntrail: 6 units\nnan: nan\n\
               inf: 1e999\nblank:   7  \n x: 8\nempty:\n";
    let m = parse_metrics(out);
    let want = [("a", 2.0), ("_b.c-d", -300.0), ("blank", 7.0)];
    assert_eq!(
        m,
        want.map(|(k, v)| (k.to_owned(), v)).into_iter().collect()
    );
    let long_key = format!("{}: 1\n{}: 1\n", "k".repeat(64), "k".repeat(65));
    assert_eq!(parse_metrics(&long_key).len(), 1);
    // At most MAX_METRICS keys: the first ones seen; their later values still win.
    let mut many: String = (0..100).map(|i| format!("k{i:03}: {i}\n")).collect();
    many.push_str("k000: 42\n");
    let m = parse_metrics(&many);
    assert_eq!(m.len(), MAX_METRICS);
    assert_eq!(m.get("k000"), Some(&42.0));
    assert_eq!(m.get("k063"), Some(&63.0));
    assert_eq!(m.get("k064"), None);
}

#[test]
fn fail_marks_the_run_failed() {
    assert!(metrics::saw_fail("step 1\r  FAIL  \nmore"));
    assert!(!metrics::saw_fail("FAILED\nno FAIL here\n"));
    let cmd = "echo 'val_bpb: 0.5'; echo FAIL";
    let r = run_shell(
        &task(cmd, 30),
        &admitted(Action::RunLocal),
        &ShellOptions::new("val_bpb"),
    )
    .unwrap();
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.value, Some(0.5));
    assert!(r.failed);
    assert!(!r.succeeded());
    let ok = run_shell(
        &task(
            "printf 'step 1\\rstep 2\\r---\\nval_bpb: 0.5\\ndepth: 8\\n'",
            30,
        ),
        &admitted(Action::RunLocal),
        &ShellOptions::new("val_bpb"),
    )
    .unwrap();
    assert!(!ok.failed);
    assert!(ok.succeeded(), "{ok:?}");
    assert_eq!(ok.metrics.get("depth"), Some(&8.0));
}

#[test]
fn receipts_without_the_new_fields_still_read() {
    let r = run_shell(
        &task("echo 'm: 1'", 30),
        &admitted(Action::RunLocal),
        &ShellOptions::new("m"),
    )
    .unwrap();
    let mut json = serde_json::to_value(&r).unwrap();
    let obj = json.as_object_mut().unwrap();
    obj.remove("metrics");
    obj.remove("failed");
    let back: ShellReceipt = serde_json::from_value(json).unwrap();
    assert!(!back.failed);
    assert!(back.metrics.is_empty());
}
