//! `btd demo` end to end: real daemons (relay, owner, two workers), device-code joins, candle
//! rounds, the leaderboard and the payouts; then the homes it leaves are checked with the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;

use btd_tests::{btd_bin, stderr, stdout, Daemon};

/// "93.289945" → 93 289 945 micro-units.
fn micro(s: &str) -> u64 {
    let (whole, frac) = s.split_once('.').unwrap();
    whole.parse::<u64>().unwrap() * 1_000_000 + frac.parse::<u64>().unwrap()
}

#[test]
fn demo_runs_the_whole_mission_and_leaves_consistent_homes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let o = Command::new(btd_bin())
        .args(["demo", "--rounds", "2", "--steps", "100", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = stdout(&o);
    assert!(o.status.success(), "demo failed:\n{text}\n{}", stderr(&o));
    for want in [
        "worker-1 shows user code",
        "worker-2 shows user code",
        "(no direct address: reachable through the relay)",
        // Owner and worker-2 both listen only through the relay: their traffic goes through it.
        "worker-2 reaches the owner through the relay",
        "champion: #",
        // The owner's verdicts. A claim shows "pending" first only when the leaderboard reads
        // the owner's status before the check ends (a race the demo does not control), so the
        // verdicts are matched with or without their "->" prefix.
        "verified, new champion",
        "now submits a doctored claim",
        "REJECTED by the owner's check: metric did not reproduce",
        "payouts (pool 100.000000 OBOL",
        "stopping the daemons",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let program = text
        .lines()
        .find_map(|l| l.strip_prefix("owner published "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();

    // The owner's KB, read back from its home after the demo stopped every daemon.
    let owner = Daemon::start_in(&dir.join("owner"), &[]);
    let s = owner.json(&["status", &program]);
    // Four rounds plus the doctored claim.
    assert_eq!(s["submissions"], 5, "{s}");
    assert_eq!(s["rejected"], 1, "{s}");
    assert_eq!(s["pending"], 0, "{s}");
    let results = s["results"].as_array().unwrap();
    let doctored = results
        .iter()
        .find(|e| e["check"].get("failed").is_some())
        .unwrap();
    assert_eq!(doctored["accepted"], false, "{s}");
    assert_ne!(doctored["seq"], s["champion"]["seq"], "{s}");
    // Every accepted result was verified by the owner.
    for e in results.iter().filter(|e| e["accepted"] == true) {
        assert_eq!(e["check"], "verified", "{s}");
    }
    assert!(s["champion"]["value"].is_number(), "{s}");
    let total: u64 = s["payouts"]
        .as_object()
        .unwrap()
        .values()
        .map(|a| micro(a.as_str().unwrap()))
        .sum();
    assert_eq!(total, 100_000_000, "payouts sum to the pool: {s}");
    let accepted: BTreeSet<u64> = s["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["accepted"] == true)
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(!accepted.is_empty());
    drop(owner);

    // Every accepted result has a traceability record on the worker that produced it.
    let mut traced = BTreeSet::new();
    for w in ["worker-1", "worker-2"] {
        let d = Daemon::start_in(&dir.join(w), &[]);
        let runs = d.json(&["runs", &program]);
        for r in runs.as_array().unwrap() {
            assert_eq!(r["state"], "submitted", "{r}");
            if r["verdict"]["accepted"] == true {
                assert!(r["trace"]["id"].is_string(), "{r}");
                traced.insert(r["verdict"]["seq"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(traced, accepted);
}
