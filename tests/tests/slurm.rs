//! End to end over real `btd` processes and a real Slurm cluster: a worker whose only rung is
//! backed by Slurm (`executor = "slurm"` in its `config.toml`) runs shell and candle rounds as
//! batch jobs, a job that overruns is killed by Slurm's time limit, and `btd stop` cancels a
//! running job.
//!
//! CI starts a single-node cluster with `.ci/slurm-up.sh` and sets `BTD_REQUIRE_SLURM=1`, so there a
//! missing cluster fails these tests; elsewhere they say plainly that they did not run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use btd_tests::{join_approved, publish_known, repo_root, stderr, wait_until, Daemon};
use serde_json::Value;

/// An owner and a worker whose one CPU rung runs on Slurm (polling fast), with their homes.
struct Cluster {
    owner: Daemon,
    worker: Daemon,
    // Dropped last, after the daemons.
    tmp: tempfile::TempDir,
}

/// [`Cluster`] with `extra_slurm` lines in the rung's `[rungs.slurm]`, or `None` (the test says
/// NOT RUN) where Slurm is not usable and `BTD_REQUIRE_SLURM` is not set.
fn cluster(test: &str, extra_slurm: &str) -> Option<Cluster> {
    if !btd_trainer::slurm::ready_for_test(test) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let owner = Daemon::start(&[]);
    let home = tmp.path().join("worker");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[[rungs]]\nid = \"cluster\"\nhardware = \"cpu\"\nexecutor = \"slurm\"\n\
             [rungs.slurm]\npoll_ms = 200\ntime_margin_secs = 0\n{extra_slurm}\n"
        ),
    )
    .unwrap();
    let worker = Daemon::start_in(&home, &["--bootstrap", &owner.addr()]);
    Some(Cluster { owner, worker, tmp })
}

fn shell_program(dir: &Path, name: &str, command: &str, timeout_secs: u64) -> PathBuf {
    let text = btd::testkit::score_manifest(
        name,
        &format!("\"{command}\""),
        timeout_secs,
        btd::testkit::LOCAL_CPU_RUNG,
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The Slurm job a round ran as (its `slurm-job.json`, which the bundle names by digest).
fn job_of(run: &Value) -> Value {
    let dir = Path::new(run["dir"].as_str().unwrap());
    let outputs = run["bundle"]["outputs"].as_array().unwrap();
    assert!(
        outputs.iter().any(|o| o["name"] == "slurm-job.json"),
        "the bundle does not name the job: {run}"
    );
    serde_json::from_slice(&std::fs::read(dir.join("slurm-job.json")).unwrap()).unwrap()
}

fn in_queue(job_id: &str) -> bool {
    let o = std::process::Command::new("squeue")
        .args(["-h", "-j", job_id, "-o", "%T"])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&o.stdout).trim().is_empty()
}

#[test]
fn shell_rounds_run_as_slurm_jobs() {
    // Bound tmp first, so it is dropped after the daemons.
    let Some(Cluster { tmp, owner, worker }) = cluster("shell_rounds_run_as_slurm_jobs", "") else {
        return;
    };
    let manifest = shell_program(
        tmp.path(),
        "slurm-shell",
        r#"echo \"node: $SLURM_JOB_NODELIST job: $SLURM_JOB_ID\"; echo \"score: $BTD_PARAM_X\""#,
        30,
    );
    let id = publish_known(&owner, &worker, &manifest);
    let (status, text) = join_approved(&owner, &worker, &id, &["--rounds", "2", "--allow-shell"]);
    assert!(status.success(), "join failed:\n{text}\n{}", worker.log());
    assert!(text.contains("2 of 2 rounds submitted"), "{text}");
    let runs = worker.json(&["runs", &id]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let mut jobs = Vec::new();
    for r in runs {
        assert_eq!(r["state"], "submitted", "{r}");
        let job = job_of(r);
        assert_eq!(job["state"], "COMPLETED", "{job}");
        let job_id = job["job_id"].as_u64().unwrap().to_string();
        assert!(
            r["note"]
                .as_str()
                .unwrap()
                .starts_with(&format!("Slurm job {job_id} (COMPLETED")),
            "{r}"
        );
        // The command ran inside that job: Slurm's own variables reached it.
        let log = std::fs::read_to_string(Path::new(r["dir"].as_str().unwrap()).join("output.log"))
            .unwrap();
        assert!(log.contains(&format!("job: {job_id}")), "{log}");
        assert_eq!(r["value"], r["hypothesis"]["x"], "{r}");
        assert!(!in_queue(&job_id));
        jobs.push(job_id);
    }
    assert_ne!(jobs[0], jobs[1]);
    let s = owner.json(&["status", &id]);
    assert_eq!(s["submissions"], 2, "{s}");
}

#[test]
fn a_round_past_its_time_limit_is_killed_by_slurm() {
    // Bound tmp first, so it is dropped after the daemons.
    let Some(Cluster { tmp, owner, worker }) =
        cluster("a_round_past_its_time_limit_is_killed_by_slurm", "")
    else {
        return;
    };
    // A 5 s budget is a 1-minute Slurm time limit (Slurm's unit); the command wants 10 minutes.
    let manifest = shell_program(tmp.path(), "slurm-overrun", "sleep 600; echo score: 1", 5);
    let id = publish_known(&owner, &worker, &manifest);
    let (status, text) = join_approved(&owner, &worker, &id, &["--rounds", "1", "--allow-shell"]);
    assert!(status.success(), "join failed:\n{text}\n{}", worker.log());
    let runs = worker.json(&["runs", &id]);
    let r = &runs[0];
    assert_eq!(r["state"], "failed", "{r}");
    assert_eq!(r["bundle"]["status"], "timed_out", "{r}");
    let job = job_of(r);
    assert_eq!(job["state"], "TIMEOUT", "{job}");
    assert_eq!(job["reason"], "TimeLimit", "{job}");
    assert_eq!(job["time_limit_minutes"], 1, "{job}");
    assert_eq!(job["cancelled_by_btd"], false, "{job}");
    let note = r["note"].as_str().unwrap();
    assert!(
        note.contains("killed at its Slurm time limit (1 min for a 5 s budget)"),
        "{note}"
    );
}

/// How the worker goes away while its round's job runs.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    /// `btd stop`.
    Stop,
    /// SIGKILL: nobody follows the job until the daemon starts again.
    Kill,
}

/// Starts a 10-minute round on `c`'s Slurm rung, ends the worker `how` while its job runs, starts the
/// worker again, and returns its record of the round, the job's id, and the directory holding both
/// homes.
fn interrupted_round(c: Cluster, name: &str, how: Ending) -> (Value, String, tempfile::TempDir) {
    let Cluster {
        tmp,
        owner,
        mut worker,
    } = c;
    let manifest = shell_program(tmp.path(), name, "sleep 600; echo score: 1", 900);
    let id = publish_known(&owner, &worker, &manifest);
    let job_name = format!("btd-{name}-r1");
    let job_id = std::thread::scope(|scope| {
        let join = scope
            .spawn(|| join_approved(&owner, &worker, &id, &["--rounds", "1", "--allow-shell"]));
        // The job runs under the round's name (it may first wait for a CPU while the other tests'
        // jobs hold the cluster's: the time-limit test holds one for over a minute).
        let job_id = wait_until("the round's job in squeue", 240, || {
            let o = std::process::Command::new("squeue")
                .args(["-h", "-o", "%i %j %T"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3 && f[1] == job_name && f[2] == "RUNNING").then(|| f[0].to_string())
            })
        });
        match how {
            Ending::Stop => {
                let o = worker.btd(&["stop"]);
                assert!(o.status.success(), "{}", stderr(&o));
                wait_until("scancel", 60, || (!in_queue(&job_id)).then_some(()));
            }
            Ending::Kill => {
                let pid = worker.pid().to_string();
                let killed = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
                assert!(killed.unwrap().success());
            }
        }
        let _ = join.join();
        job_id
    });
    worker.wait_exit(90);
    if how == Ending::Kill {
        // Nobody follows the job now: it is still there.
        assert!(in_queue(&job_id), "the job ended with the daemon");
    }
    worker.restart(&["--bootstrap", &owner.addr()]);
    assert!(!in_queue(&job_id), "the job outlived the restart");
    let runs = worker.json(&["runs", &id]);
    (runs[0].clone(), job_id, tmp)
}

#[test]
fn btd_stop_cancels_the_running_job() {
    let Some(c) = cluster("btd_stop_cancels_the_running_job", "") else {
        return;
    };
    let (r, job_id, _tmp) = interrupted_round(c, "slurm-stop", Ending::Stop);
    // The round is on record as cancelled, with its job.
    assert_eq!(r["state"], "cancelled", "{r}");
    let job = job_of(&r);
    assert_eq!(job["job_id"].as_u64().unwrap().to_string(), job_id);
    assert_eq!(job["state"], "CANCELLED", "{job}");
    assert_eq!(job["cancelled_by_btd"], true, "{job}");
}

#[test]
fn a_job_orphaned_by_a_killed_daemon_is_cancelled_at_restart() {
    let Some(c) = cluster(
        "a_job_orphaned_by_a_killed_daemon_is_cancelled_at_restart",
        "",
    ) else {
        return;
    };
    let (r, job_id, _tmp) = interrupted_round(c, "slurm-kill", Ending::Kill);
    assert_eq!(r["state"], "cancelled", "{r}");
    assert_eq!(
        r["note"],
        format!("the daemon stopped while this round ran; cancelled its Slurm job {job_id}, still queued"),
        "{r}"
    );
}

#[test]
fn candle_rounds_run_on_the_compute_node() {
    // A step budget has no wall-clock bound of its own: the rung's max_time_secs is the limit.
    // Bound tmp first, so it is dropped after the daemons.
    let Some(Cluster { tmp, owner, worker }) = cluster(
        "candle_rounds_run_on_the_compute_node",
        "max_time_secs = 600",
    ) else {
        return;
    };
    let text = std::fs::read_to_string(repo_root().join("examples/program.toml"))
        .unwrap()
        .replace("seconds = 20 ", "# no wall-clock budget ")
        .replace("steps = 400 ", "steps = 25 ")
        .replace("eval_tokens = 65536", "eval_tokens = 4096")
        // Whether 25 steps on this round's hypothesis (drawn from the worker's fresh key) beat
        // 4.5 is chance; an untrained model scores 8.0, so every round beats this baseline and
        // the owner must check it. The holdout at 4,096 tokens is as noisy; widen its gap too.
        .replace("baseline = 4.5", "baseline = 8.0")
        .replace("max_holdout_gap = 0.25", "max_holdout_gap = 0.5");
    assert!(text.contains("baseline = 8.0") && text.contains("max_holdout_gap = 0.5"));
    let manifest = tmp.path().join("quick.toml");
    std::fs::write(&manifest, text).unwrap();
    let id = publish_known(&owner, &worker, &manifest);
    let (status, text) = join_approved(&owner, &worker, &id, &["--rounds", "1"]);
    assert!(status.success(), "join failed:\n{text}\n{}", worker.log());
    assert!(text.contains("1 of 1 rounds submitted"), "{text}");
    let runs = worker.json(&["runs", &id]);
    let r = &runs[0];
    assert_eq!(r["state"], "submitted", "{r}");
    let job = job_of(r);
    assert_eq!(job["state"], "COMPLETED", "{job}");
    assert_eq!(job["time_limit_minutes"], 10, "{job}");
    let dir = Path::new(r["dir"].as_str().unwrap());
    // The compute node trained it: its outcome and the checkpoint it claims are in the round's
    // directory, and `btd eval` reproduces the value from that checkpoint.
    assert!(dir.join("outcome.json").exists());
    let ckpt = dir.join("checkpoint.safetensors");
    let e = worker.json(&["eval", ckpt.to_str().unwrap()]);
    assert_eq!(e["val_bpb"], r["value"], "{e}");
    // The owner checks the claim as for a local round: wait until it has decided, then say what.
    let s = wait_until("the owner's check", 120, || {
        let s = owner.json(&["status", &id]);
        (s["submissions"] == 1 && s["pending"] == 0).then_some(s)
    });
    assert_eq!(s["verified"], 1, "{s}\n{}", owner.log());
}
