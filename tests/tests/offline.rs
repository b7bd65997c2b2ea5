//! End-to-end tests of the offline commands against the real `btd` binary: the semantics.md examples
//! must come out of `btd kb replay --json` and `btd policy explain --json` exactly.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup aborts the test
use std::path::Path;

use btd_tests::{repo_root, run_btd, stderr, stdout};
use serde_json::{json, Value};

/// A program manifest with the given criteria/reward lines (pool 100, minimise).
fn manifest(criteria_extra: &str, accept: &str, baseline: Option<f64>, split: &str) -> String {
    let baseline = baseline
        .map(|b| format!("baseline = {b}\n"))
        .unwrap_or_default();
    format!(
        r#"name = "example"
objective = "semantics example"
required_outputs = ["metrics.json"]
{baseline}
[criteria]
metric = "val_bpb"
direction = "minimize"
accept = "{accept}"
{criteria_extra}
[reward]
pool = 100
token = "OBOL"
split = "{split}"
[task]
kind = "shell"
command = "true"
timeout_secs = 10
[[rungs]]
id = "cpu"
spend_class = "local_unmetered"
hardware = "cpu"
[[rungs]]
id = "paid-h100"
spend_class = "paid_metered"
hardware = "h100"
[[rungs]]
id = "paid-a100"
spend_class = "paid_metered"
hardware = "other_gpu"
[policy.paid]
approved_rungs = ["paid-a100"]
max_spend_per_packet = 10
"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn replay(program: &str, subs: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "p.toml", program);
    let s = write(dir.path(), "s.jsonl", subs);
    let out = run_btd(&["kb", "replay", &m, &s, "--json"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn assert_f64(v: &Value, expected: f64) {
    let got = v.as_f64().unwrap_or(f64::NAN);
    assert!((got - expected).abs() < 1e-9, "{got} != {expected}");
}

#[test]
fn kb_example_1_beats_champion_by_impact() {
    let r = replay(
        &manifest("", "beats-champion", Some(1.20), "by-impact"),
        "{\"worker\":\"A\",\"value\":1.10}\n{\"worker\":\"B\",\"value\":1.05}\n{\"worker\":\"A\",\"value\":1.30}\n",
    );
    let res = r["results"].as_array().unwrap();
    assert_eq!(res.len(), 3);
    let expect = [
        ("A", 1, true, true, 0.10),
        ("B", 2, true, true, 0.05),
        ("A", 3, false, false, 0.0),
    ];
    for (e, (w, seq, acc, champ, impact)) in res.iter().zip(expect) {
        assert_eq!(e["worker"], w);
        assert_eq!(e["seq"], seq);
        assert_eq!(e["accepted"], acc);
        assert_eq!(e["champion"], champ);
        assert_f64(&e["impact"], impact);
    }
    assert_eq!(
        r["champion"],
        json!({"seq": 2, "worker": "B", "value": 1.05})
    );
    assert_eq!(r["payouts"], json!({"A": "66.666667", "B": "33.333333"}));
}

#[test]
fn kb_example_2_no_baseline_first_result_pays_nothing() {
    let r = replay(
        &manifest("", "beats-champion", None, "by-impact"),
        "{\"worker\":\"A\",\"value\":1.10}\n",
    );
    assert_eq!(r["results"][0]["accepted"], true);
    assert_eq!(r["results"][0]["champion"], true);
    assert_f64(&r["results"][0]["impact"], 0.0);
    assert_eq!(r["champion"]["worker"], "A");
    assert_eq!(r["payouts"], json!({}));
}

#[test]
fn kb_example_3_threshold_by_impact() {
    let r = replay(
        &manifest("threshold = 1.0", "threshold", Some(1.0), "by-impact"),
        "{\"worker\":\"A\",\"value\":0.50}\n{\"worker\":\"B\",\"value\":0.40}\n",
    );
    assert_eq!(
        r["champion"],
        json!({"seq": 2, "worker": "B", "value": 0.40})
    );
    assert_eq!(r["payouts"], json!({"A": "45.454545", "B": "54.545455"}));
}

#[test]
fn kb_example_4_champion_takes_all() {
    let r = replay(
        &manifest("", "beats-champion", Some(1.20), "champion-takes-all"),
        "{\"worker\":\"A\",\"value\":1.10}\n{\"worker\":\"B\",\"value\":1.05}\n",
    );
    assert_eq!(r["payouts"], json!({"B": "100.000000"}));
}

#[test]
fn kb_replay_reports_invalid_lines_without_consuming_seq() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "p.toml",
        &manifest("", "beats-champion", Some(1.2), "by-impact"),
    );
    let s = write(
        dir.path(),
        "s.jsonl",
        "{\"worker\":\"A\",\"value\":1.1}\nnot json\n{\"worker\":\"\",\"value\":1.0}\n{\"worker\":\"B\",\"value\":1e999}\n{\"worker\":\"B\",\"value\":1.0}\n",
    );
    let out = run_btd(&["kb", "replay", &m, &s, "--json"]);
    assert!(out.status.success());
    let err = stderr(&out);
    for line in [":2:", ":3:", ":4:"] {
        assert!(err.contains(line), "line {line} not reported: {err}");
    }
    let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let seqs: Vec<u64> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(r["results"][1]["worker"], "B");
    assert_eq!(r["invalid"].as_array().unwrap().len(), 3);
}

fn explain(args: &[&str]) -> Value {
    let out = run_btd(&[&["policy", "explain"], args, &["--json"]].concat());
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn dispatch_known_cases() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "p.toml",
        &manifest("", "beats-champion", Some(1.2), "by-impact"),
    );

    let local = explain(&[&m, "--rung", "cpu"]);
    assert_eq!(local["action"], "run_local");
    assert_eq!(local["spend_class"], "local_unmetered");
    assert_eq!(local["rung_id"], "cpu");
    assert_eq!(local["decision_id"], "example");
    assert_eq!(local["packet_id"], "example:cpu");
    assert_eq!(local["required_outputs"], json!(["metrics.json"]));

    let paid = explain(&[&m, "--rung", "paid-h100"]);
    assert_eq!(paid["action"], "request_paid_approval");
    assert_eq!(paid["spend_class"], "paid_metered");

    let approved = explain(&[&m, "--rung", "paid-a100"]);
    assert_eq!(approved["action"], "run_paid");
    for v in [&local, &paid, &approved] {
        for key in [
            "action",
            "reason",
            "decision_id",
            "packet_id",
            "rung_id",
            "spend_class",
            "required_outputs",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
    }
}

#[test]
fn dispatch_from_a_compute_map() {
    let map = repo_root().join("examples/compute-map.toml");
    let map = map.to_string_lossy();
    let v = explain(&["--map", &map, "--point", "tiny-gpt-sweep"]);
    assert_eq!(v["action"], "run_local");
    assert_eq!(v["rung_id"], "cpu");
    let v = explain(&[
        "--map",
        &map,
        "--point",
        "tiny-gpt-sweep",
        "--rung",
        "paid-h100",
    ]);
    assert_eq!(v["action"], "request_paid_approval");
    let out = run_btd(&[
        "policy", "explain", "--map", &map, "--point", "nope", "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("tiny-gpt-sweep"), "{}", stderr(&out));
}

#[test]
fn program_check_accepts_the_example_and_names_bad_fields() {
    let out = run_btd(&["program", "check", "examples/program.toml", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["program"]["name"], "tiny-gpt-bpb");

    let out = run_btd(&["program", "check", "examples/program.toml"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("valid program"));

    let dir = tempfile::tempdir().unwrap();
    let bad = manifest("", "threshold", None, "by-effort").replace("minimize", "min");
    let m = write(dir.path(), "bad.toml", &bad);
    let out = run_btd(&["program", "check", &m]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("criteria.direction"), "{err}");
    assert!(err.contains("allowed values: minimize, maximize"), "{err}");
    assert!(err.contains("criteria.threshold"), "{err}");
    assert!(err.contains("reward.split"), "{err}");
    assert!(err.contains("line 7: criteria.direction"), "{err}");

    let out = run_btd(&["program", "check", &m, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 3);

    let out = run_btd(&["program", "check", "/no/such/file.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read /no/such/file.toml"));
}

#[test]
fn schema_lists_and_prints() {
    let out = run_btd(&["schema"]);
    assert!(out.status.success());
    for name in [
        "program-manifest",
        "compute-packet",
        "approval-receipt",
        "traceability-record",
    ] {
        assert!(stdout(&out).contains(name), "{name}");
    }
    let out = run_btd(&["schema", "result-bundle"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(v["properties"]["outputs"].is_object(), "{v}");
    let out = run_btd(&["schema", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run_btd(&["policy", "explain"]).status.code(), Some(2));
    assert_eq!(
        run_btd(&["policy", "explain", "examples/program.toml", "--json"])
            .status
            .code(),
        Some(2),
        "a program without --rung"
    );
    assert_eq!(
        run_btd(&["kb", "replay", "only-one-arg"]).status.code(),
        Some(2)
    );
}

#[test]
fn dispatch_with_an_approval_receipt() {
    use btd_protocol::trace::ApprovalReceipt;
    use btd_protocol::Timestamp;

    let dir = tempfile::tempdir().unwrap();
    let m = write(
        dir.path(),
        "p.toml",
        &manifest("", "beats-champion", Some(1.2), "by-impact"),
    );
    let owner = libp2p_identity::Keypair::ed25519_from_bytes([5u8; 32]).unwrap();
    let other = libp2p_identity::Keypair::ed25519_from_bytes([6u8; 32]).unwrap();
    let receipt = ApprovalReceipt::issue(
        &owner,
        "example:paid-h100",
        "paid-h100",
        Timestamp::from_secs(1_000),
        Timestamp::from_secs(2_000),
        10.0,
    )
    .unwrap();
    let r = write(
        dir.path(),
        "receipt.json",
        &serde_json::to_string(&receipt).unwrap(),
    );
    let owner_id = owner.public().to_peer_id().to_base58();
    let other_id = other.public().to_peer_id().to_base58();
    let base = [m.as_str(), "--rung", "paid-h100", "--approval", r.as_str()];

    let v = explain(&[&base[..], &["--approver", &owner_id, "--now-ms", "1500000"]].concat());
    assert_eq!(v["action"], "run_paid");
    assert_eq!(v["reason"], "approval_receipt");

    let v = explain(&[&base[..], &["--approver", &other_id, "--now-ms", "1500000"]].concat());
    assert_eq!(v["action"], "request_paid_approval", "untrusted signer");

    let v = explain(&[&base[..], &["--approver", &owner_id, "--now-ms", "2000000"]].concat());
    assert_eq!(
        v["action"], "request_paid_approval",
        "expired at expires_at"
    );
    assert!(v["detail"].as_str().unwrap().contains("expired"), "{v}");

    let bad = write(dir.path(), "bad.json", "{\"packet_id\": 1}");
    let out = run_btd(&[
        "policy",
        "explain",
        &m,
        "--rung",
        "paid-h100",
        "--approval",
        &bad,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not an approval receipt"),
        "{}",
        stderr(&out)
    );
}
