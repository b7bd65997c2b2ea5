//! What a Slurm rung adds to a round, against the same round run locally:
//! `cargo bench -p btd-tests --bench slurm_round` (10 rounds per worker; docs/benchmarks.md).
//!
//! One owner and two or three real workers (`btd start`, loopback TCP, SQLite with fsync): one with
//! the default local CPU rung, one whose rung runs on Slurm polling every 200 ms, and (full mode)
//! one with the default poll interval (2 s). Each joins a trivial shell program
//! (`echo score: $BTD_PARAM_X`) for N rounds. For every round it reports the round's wall time from
//! the worker's record (`finished_at - started_at`: dispatch, run, record, submit to the owner) and,
//! on Slurm, the job's time from `sbatch` until btd saw it leave the queue (`slurm-job.json`).
//!
//! Under `cargo test` (no `--bench` argument) it runs its quick mode: 2 rounds per worker, checking
//! the shape of the records, no timing assertions. It needs a Slurm cluster (`.ci/slurm-up.sh`);
//! without one it says NOT RUN, unless `BTD_REQUIRE_SLURM` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use btd_tests::{join_approved, stderr, wait_known, Daemon};
use serde_json::Value;

fn worker(tmp: &Path, name: &str, owner: &Daemon, slurm: Option<u64>) -> Daemon {
    let home = tmp.join(name);
    std::fs::create_dir_all(&home).unwrap();
    if let Some(poll_ms) = slurm {
        std::fs::write(
            home.join("config.toml"),
            format!(
                "[[rungs]]\nid = \"cluster\"\nhardware = \"cpu\"\nexecutor = \"slurm\"\n\
                 [rungs.slurm]\npoll_ms = {poll_ms}\ntime_margin_secs = 0\n"
            ),
        )
        .unwrap();
    }
    Daemon::start_in(&home, &["--bootstrap", &owner.addr()])
}

fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn stats(xs: &mut [f64]) -> String {
    xs.sort_by(f64::total_cmp);
    let median = if xs.len() % 2 == 1 {
        xs[xs.len() / 2]
    } else {
        (xs[xs.len() / 2 - 1] + xs[xs.len() / 2]) / 2.0
    };
    format!(
        "median {median:>7.0}  min {:>7.0}  max {:>7.0}",
        xs[0],
        xs[xs.len() - 1]
    )
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !btd_trainer::slurm::ready_for_test("slurm_round bench") {
        return;
    }
    let rounds = if full { 10 } else { 2 };
    let tmp = tempfile::tempdir().unwrap();
    let owner = Daemon::start(&[]);
    let mut workers = vec![
        ("local", worker(tmp.path(), "local", &owner, None)),
        (
            "slurm, poll 200 ms",
            worker(tmp.path(), "slurm200", &owner, Some(200)),
        ),
    ];
    if full {
        workers.push((
            "slurm, poll 2 s",
            worker(tmp.path(), "slurm2000", &owner, Some(2000)),
        ));
    }
    let manifest = tmp.path().join("bench.toml");
    let program = btd::testkit::score_manifest(
        "slurm-bench",
        r#""echo \"score: $BTD_PARAM_X\"""#,
        30,
        btd::testkit::LOCAL_CPU_RUNG,
    );
    std::fs::write(&manifest, program).unwrap();
    let o = owner.btd(&["publish", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    println!("{rounds} rounds of `echo score: $BTD_PARAM_X` per worker; times in ms");
    println!(
        "{:<20} {:>40}   {:>40}",
        "worker", "round wall (dispatch → submitted)", "Slurm job: sbatch → left the queue"
    );
    for (label, w) in &workers {
        wait_known(w, &id);
        let n = rounds.to_string();
        let (status, text) = join_approved(&owner, w, &id, &["--rounds", &n, "--allow-shell"]);
        assert!(
            status.success(),
            "{label}: join failed:\n{text}\n{}",
            w.log()
        );
        let runs = w.json(&["runs", &id]);
        let runs = runs.as_array().unwrap();
        assert_eq!(runs.len(), rounds, "{label}: {runs:?}");
        let (mut wall, mut job_ms) = (Vec::new(), Vec::new());
        for r in runs {
            assert_eq!(r["state"], "submitted", "{label}: {r}");
            wall.push(ms(&r["finished_at"]) - ms(&r["started_at"]));
            let job = Path::new(r["dir"].as_str().unwrap()).join("slurm-job.json");
            if label.starts_with("slurm") {
                let job: Value = serde_json::from_slice(&std::fs::read(job).unwrap()).unwrap();
                assert_eq!(job["state"], "COMPLETED", "{label}: {job}");
                job_ms.push(ms(&job["queued_ms"]) + ms(&job["ran_ms"]));
                assert!(job["run_secs"].as_u64().is_some(), "{label}: {job}");
            } else {
                assert!(!job.exists(), "a local round wrote {}", job.display());
            }
        }
        let slurm = |xs: &mut Vec<f64>| {
            if xs.is_empty() {
                "-".to_string()
            } else {
                stats(xs)
            }
        };
        println!(
            "{label:<20} {:>40}   {:>40}",
            stats(&mut wall),
            slurm(&mut job_ms)
        );
    }
}
