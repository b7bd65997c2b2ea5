use super::query::*;
use super::*;

#[test]
fn squeue_answers() {
    assert_eq!(parse_squeue(""), QueueState::Gone);
    assert_eq!(parse_squeue("\n"), QueueState::Gone);
    assert_eq!(
        parse_squeue("PENDING|Resources\n"),
        QueueState::Pending {
            reason: "Resources".into()
        }
    );
    assert_eq!(parse_squeue("RUNNING|None"), QueueState::Active);
    assert_eq!(parse_squeue("COMPLETING|None"), QueueState::Active);
    assert_eq!(parse_squeue("CONFIGURING|None"), QueueState::Active);
    assert_eq!(parse_squeue("COMPLETED|None"), QueueState::Gone);
    assert_eq!(parse_squeue("TIMEOUT|TimeLimit"), QueueState::Gone);
    assert_eq!(parse_squeue("garbage"), QueueState::Unknown);
}

#[test]
fn scontrol_and_sacct_answers() {
    let line = "JobId=2 JobName=wrap UserId=root(0) JobState=TIMEOUT Reason=TimeLimit \
                Dependency=(null) ExitCode=0:15 RunTime=00:01:20 NodeList=vm BatchHost=vm";
    let s = parse_scontrol(line).unwrap();
    assert_eq!(s.state, JobState::Timeout);
    assert_eq!((s.exit_code, s.signal), (None, Some(15)));
    assert_eq!((s.reason.as_str(), s.nodes.as_str()), ("TimeLimit", "vm"));
    assert_eq!(s.run_secs, Some(80));
    let s = parse_scontrol("JobId=3 JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0").unwrap();
    assert_eq!(
        (s.state, s.exit_code, s.signal),
        (JobState::Failed, Some(3), None)
    );
    let s = parse_scontrol("JobId=4 JobState=COMPLETED Reason=None ExitCode=0:0").unwrap();
    assert_eq!((s.exit_code, s.reason.as_str()), (Some(0), ""));
    assert!(s.state.is_final());
    assert_eq!(
        parse_scontrol("slurm_load_jobs error: Invalid job id specified"),
        None
    );
    let s = parse_sacct("CANCELLED by 0|0:15|node7|None|1-00:00:02\n").unwrap();
    assert_eq!(s.run_secs, Some(86_402));
    assert_eq!((s.state, s.signal), (JobState::Cancelled, Some(15)));
    assert_eq!(s.nodes, "node7");
    let s = parse_sacct("NODE_FAIL|1:0|gpu3|").unwrap();
    assert_eq!((s.state, s.exit_code), (JobState::NodeFail, Some(1)));
    assert!(!JobState::from("COMPLETING".to_string()).is_final());
    assert!(!JobState::Running.is_final());
    assert_eq!(
        serde_json::to_string(&JobState::OutOfMemory).unwrap(),
        "\"OUT_OF_MEMORY\""
    );
}

#[test]
fn settings_are_checked_and_time_limits_rounded_up() {
    let mut c = SlurmConfig::default();
    assert!(c.validate().is_ok());
    c.partition = Some("--uid=0".into());
    assert!(c.validate().unwrap_err().contains("slurm.partition"));
    c.partition = Some("gpu a".into());
    assert!(c.validate().is_err());
    c.partition = Some("gpu".into());
    c.gres = Some("gpu:h100:1".into());
    c.mem = Some("16G".into());
    assert!(c.validate().is_ok());
    c.cpus_per_task = Some(0);
    assert!(c.validate().is_err());
    c.cpus_per_task = Some(4);
    c.poll_ms = 10;
    assert!(c.validate().is_err());
    c.poll_ms = 1000;
    c.time_margin_secs = 0;
    assert_eq!(c.time_limit_minutes(5).unwrap(), 1);
    assert_eq!(c.time_limit_minutes(60).unwrap(), 1);
    assert_eq!(c.time_limit_minutes(61).unwrap(), 2);
    c.time_margin_secs = 60;
    assert_eq!(c.time_limit_minutes(300).unwrap(), 6);
    c.max_time_secs = Some(3600);
    let e = c.time_limit_minutes(3600).unwrap_err().to_string();
    assert!(e.contains("max_time_secs) is 3600 s"), "{e}");
}

#[test]
fn job_scripts_quote_everything() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("BTD_PARAM_LR".to_string(), "0.01".to_string()),
        ("ODD".to_string(), "it's $HOME `x` \"q\"".to_string()),
    ];
    let argv: Vec<String> = [
        "sh",
        "-c",
        "printf '%s|%s|%s' \"$ODD\" \"$BTD_PARAM_LR\" \"$PWD\"",
    ]
    .map(String::from)
    .to_vec();
    let s = script(dir.path(), true, &env, &argv).unwrap();
    std::fs::write(dir.path().join("job.sh"), &s).unwrap();
    let out = std::process::Command::new("sh")
        .arg(dir.path().join("job.sh"))
        .output()
        .unwrap();
    let pwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("it's $HOME `x` \"q\"|0.01|{}", pwd.display())
    );
    assert!(script(dir.path(), false, &[("A=B".into(), "x".into())], &argv).is_err());
    assert!(script(dir.path(), false, &[], &[]).is_err());
    assert_eq!(job_name("p 1/round#2"), "p_1_round_2");
}

#[test]
fn files_are_read_back_with_the_caps() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("slurm-1.out");
    std::fs::write(&p, vec![b'x'; 5000]).unwrap();
    let c = read_capture(&p, 100);
    assert_eq!((c.bytes.len(), c.total, c.truncated), (100, 5000, true));
    assert_eq!(c.tail.len(), crate::shell::TAIL_BYTES);
    let c = read_capture(&dir.path().join("none"), 100);
    assert_eq!((c.total, c.truncated), (0, false));
}

#[test]
fn a_shell_task_runs_as_a_real_slurm_job() {
    use btd_protocol::dispatch::Action;
    use btd_protocol::program::ShellTask;
    if !ready_for_test("a_shell_task_runs_as_a_real_slurm_job") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let task = ShellTask {
        command: "echo \"node $(hostname)\"; echo 'val_bpb: 1.25'; echo oops >&2; exit 0".into(),
        timeout_secs: 30,
        source: None,
    };
    let dispatch = crate::shell::tests::admitted(Action::RunLocal);
    let mut opts = crate::shell::ShellOptions::new("val_bpb");
    opts.cwd = Some(dir.path().to_path_buf());
    opts.slurm = Some(crate::shell::SlurmRun {
        config: SlurmConfig {
            poll_ms: 200,
            time_margin_secs: 0,
            ..SlurmConfig::default()
        },
        name: "btd-test".into(),
        dir: dir.path().to_path_buf(),
    });
    let cancel = std::sync::Arc::new(AtomicBool::new(false));
    opts.cancel = Some(cancel.clone());
    let r = crate::shell::run_shell(&task, &dispatch, &opts).unwrap();
    let info = r.slurm.clone().unwrap();
    assert_eq!(info.state, JobState::Completed, "{r:?}");
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.value, Some(1.25));
    assert!(r.stdout.starts_with("node "), "{}", r.stdout);
    assert_eq!(r.stderr, "oops\n");
    assert!(dir
        .path()
        .join(format!("slurm-{}.out", info.job_id))
        .exists());
    assert_eq!(info.time_limit_minutes, 1);

    // A failing command is a failed job with its exit code.
    let failing = ShellTask {
        command: "echo 'val_bpb: 1.0'; exit 3".into(),
        timeout_secs: 30,
        source: None,
    };
    let r = crate::shell::run_shell(&failing, &dispatch, &opts).unwrap();
    assert_eq!(r.slurm.clone().unwrap().state, JobState::Failed);
    assert_eq!(r.exit_code, Some(3));
    assert!(!r.succeeded());

    // Cancelling (btd stop) runs scancel and does not wait for the job's end.
    let sleeper = ShellTask {
        command: "sleep 300".into(),
        timeout_secs: 600,
        source: None,
    };
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        cancel.store(true, Ordering::SeqCst);
    });
    let started = Instant::now();
    let r = crate::shell::run_shell(&sleeper, &dispatch, &opts).unwrap();
    t.join().unwrap();
    assert!(r.cancelled);
    let info = r.slurm.unwrap();
    assert_eq!(info.state, JobState::Cancelled);
    assert!(info.cancelled_by_btd);
    assert!(started.elapsed() < std::time::Duration::from_secs(120));

    // A submission Slurm refuses is a clear error, not a hang.
    let mut bad = opts.clone();
    bad.cancel = None;
    if let Some(s) = bad.slurm.as_mut() {
        s.config.partition = Some("no_such_partition".into());
    }
    let e = crate::shell::run_shell(&task, &dispatch, &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sbatch refused the job"), "{e}");
    assert!(e.contains("partition"), "{e}");
    // A job that cannot start is cancelled after max_queue_secs, with Slurm's reason: first a job
    // takes every CPU of the cluster.
    let cpus = std::process::Command::new("sinfo")
        .args(["-h", "-o", "%C"])
        .output()
        .unwrap();
    // %C is allocated/idle/other/total.
    let total = String::from_utf8_lossy(&cpus.stdout)
        .trim()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let o = std::process::Command::new("sbatch")
        .args(["--parsable", "-n", "1", "-c", &total, "-o", "/dev/null"])
        .args(["--job-name=btd-test-hog", "--wrap", "sleep 300"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hog = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let mut queued = opts.clone();
    queued.cancel = None;
    if let Some(s) = queued.slurm.as_mut() {
        s.config.max_queue_secs = 2;
    }
    let r = crate::shell::run_shell(&task, &dispatch, &queued);
    let _ = std::process::Command::new("scancel").arg(&hog).status();
    let e = r.unwrap_err().to_string();
    assert!(e.contains("was still pending after"), "{e}");
    assert!(e.contains("btd cancelled it"), "{e}");
}
