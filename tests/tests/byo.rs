//! Bring your own training code, end to end: `btd demo --byo` (real daemons, a python3 trainer as
//! the program's source bundle, scripted proposers, the owner re-running claims in the sandbox),
//! then the owner's home read back with `btd ledger` and `btd checkout`; and the example's
//! manifest kept equal to its bundle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

use btd_tests::{btd_bin, repo_root, run_btd, stderr, stdout, Daemon};

#[test]
fn the_example_manifest_names_its_bundle_and_both_example_manifests_check() {
    let root = repo_root();
    let o = run_btd(&[
        "--json",
        "source",
        "pack",
        root.join("examples/byo/bundle").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let packed: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let manifest = std::fs::read_to_string(root.join("examples/byo/program.toml")).unwrap();
    let sha = packed["sha256"].as_str().unwrap();
    assert!(
        manifest.contains(&format!("sha256 = \"{sha}\"")),
        "examples/byo/program.toml must name the bundle's digest {sha} (btd source pack \
         examples/byo/bundle prints it)"
    );
    // Packing is canonical: the same directory gives the same bytes.
    let again = run_btd(&[
        "--json",
        "source",
        "pack",
        root.join("examples/byo/bundle").to_str().unwrap(),
    ]);
    assert_eq!(stdout(&again), stdout(&o));
    for m in [
        "examples/byo/program.toml",
        "examples/autoresearch/program.toml",
    ] {
        let o = run_btd(&["program", "check", root.join(m).to_str().unwrap()]);
        assert!(o.status.success(), "{m}: {}{}", stdout(&o), stderr(&o));
    }
}

#[test]
fn demo_byo_verifies_code_by_rerun_and_leaves_a_ledger_with_lineage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let o = Command::new(btd_bin())
        .args(["demo", "--byo", "--rounds", "2", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = stdout(&o);
    assert!(
        o.status.success(),
        "demo --byo failed:\n{text}\n{}",
        stderr(&o)
    );
    // A verdict shows as "-> ..." after a "pending" line, or inline when the owner's check ended
    // before the leaderboard read its status (the re-run of this example takes milliseconds).
    for want in [
        "worker-1 joins with a proposer",
        "worker-2 joins with a proposer",
        "verified, new champion",
        "now submits a doctored claim",
        "REJECTED by the owner's check: metric did not reproduce",
        "not editable: prepare.py",
        "results built on another member's code",
        "payouts (pool 100.000000 OBOL",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let program = text
        .lines()
        .find_map(|l| l.strip_prefix("owner published "))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_string();

    // The owner's ledger, read back from its home after the demo stopped every daemon.
    let owner = Daemon::start_in(&dir.join("owner"), &[]);
    let ledger = owner.json(&["ledger", &program]);
    let items = ledger.as_array().unwrap();
    let worker: BTreeMap<u64, String> = items
        .iter()
        .map(|i| {
            (
                i["entry"]["seq"].as_u64().unwrap(),
                i["entry"]["worker"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Every result carries code; some build on another member's result.
    assert!(items.iter().all(|i| i["code"].is_object()), "{ledger}");
    let crossed = items
        .iter()
        .filter(|i| {
            let parent = i["code"]["parent"].as_u64();
            parent.is_some_and(|p| worker[&p] != i["entry"]["worker"].as_str().unwrap())
        })
        .count();
    assert!(crossed >= 1, "no cross-member lineage: {ledger}");
    // The doctored claim is rejected and never counts; the champion was verified by re-run.
    let s = owner.json(&["status", &program]);
    assert_eq!(s["rejected"], 1, "{s}");
    for e in s["results"].as_array().unwrap() {
        if e["accepted"] == true {
            assert_eq!(e["check"], "verified", "{s}");
        }
    }

    // The champion's tree, rebuilt from the bundle and its patch chain: train.py changed, the
    // evaluation did not.
    let out = tmp.path().join("champion");
    let o = owner.btd(&["checkout", &program, out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = repo_root().join("examples/byo/bundle");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    assert_ne!(read(&out.join("train.py")), read(&root.join("train.py")));
    assert_eq!(
        read(&out.join("prepare.py")),
        read(&root.join("prepare.py"))
    );
    // Checking out into a directory that is not empty is refused.
    let o = owner.btd(&["checkout", &program, "1", out.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", stdout(&o));
}
