//! End to end over real `btd` processes: a worker joins with `btd join --rounds`, trains the
//! example program's task on hypotheses near the champion, submits, and leaves records that
//! `btd runs` lists (and exports as ORP packets) and `btd eval` verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use btd_tests::{repo_root, stderr, Daemon};

/// The example program with a step budget small enough for a test.
fn quick_program(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("examples/program.toml"))
        .unwrap()
        .replace("seconds = 20 ", "# no wall-clock budget ")
        .replace("steps = 400 ", "steps = 25 ")
        .replace("eval_tokens = 65536", "eval_tokens = 4096");
    assert!(text.contains("steps = 25 ") && !text.contains("seconds = 20 "));
    let path = dir.join("quick.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn join_with_rounds_trains_submits_and_records_verifiable_results() {
    let owner = Daemon::start(&[]);
    let worker = Daemon::start(&["--bootstrap", &owner.addr()]);
    let manifest = quick_program(owner.home.parent().unwrap());
    let id = btd_tests::publish_known(&owner, &worker, &manifest);

    let (status, text) = btd_tests::join_approved(&owner, &worker, &id, &["--rounds", "2"]);
    assert!(
        status.success(),
        "join --rounds failed:\n{text}\n{}",
        worker.log()
    );
    assert!(text.contains("round 1: dispatch run_local"), "{text}");
    assert!(text.contains("round 2: on cpu: batch_size="), "{text}");
    assert!(text.contains("2 of 2 rounds submitted"), "{text}");

    // The worker's records: submitted, linked, with a checkpoint `btd eval` reproduces exactly.
    let runs = worker.json(&["runs", &id]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        assert_eq!(r["state"], "submitted", "{r}");
        assert!(r["trace"]["id"].is_string(), "{r}");
        let ckpt = std::path::Path::new(r["dir"].as_str().unwrap()).join("checkpoint.safetensors");
        let e = worker.json(&["eval", ckpt.to_str().unwrap()]);
        assert_eq!(e["val_bpb"], r["value"], "{e}");
        assert_eq!(e["matches_claim"], true, "{e}");
    }
    // `btd runs --orp`: round 1 as an ORP packet (one JSON document with --json), written with its
    // evidence into the round's orp/ directory; the text form prints the packet's path; a round
    // this node does not have is refused with the rounds it has.
    let packet = worker.json(&["runs", &id, "--orp", "1"]);
    assert_eq!(packet["schema_version"], "1.0.0", "{packet}");
    assert_eq!(packet["atomic_context"]["board_id"], id.as_str());
    assert_eq!(packet["gates"][0]["status"], "pass", "{packet}");
    assert_eq!(packet["gates"][1]["status"], "pass", "{packet}");
    let path = packet["artifacts"]["packet_json_path"].as_str().unwrap();
    assert!(path.starts_with(runs[0]["dir"].as_str().unwrap()), "{path}");
    for p in packet["protocol_boundary"]["evidence_paths"]
        .as_array()
        .unwrap()
    {
        assert!(std::path::Path::new(p.as_str().unwrap()).is_file(), "{p}");
    }
    let out_dir = owner.home.parent().unwrap().join("orp-out");
    let o = worker.btd(&[
        "runs",
        &id,
        "--orp",
        "2",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(printed.starts_with(out_dir.to_str().unwrap()), "{printed}");
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&printed).unwrap()).unwrap();
    assert_eq!(on_disk["atomic_context"]["atom_id"], "round-00002");
    let o = worker.btd(&["runs", &id, "--orp", "9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("its rounds are 1 to 2"),
        "{}",
        stderr(&o)
    );

    // The owner's KB holds both; its champion is the last round that became champion, if any
    // (hypotheses depend on the worker's random key, so a short run may not beat the baseline).
    let s = owner.json(&["status", &id]);
    assert_eq!(s["submissions"], 2, "{s}");
    match runs.iter().rfind(|r| r["verdict"]["champion"] == true) {
        Some(best) => assert_eq!(s["champion"]["value"], best["value"], "{s}"),
        None => assert!(s["champion"].is_null(), "{s}"),
    }
}
