//! ORP export against ORP's published packet schema (`protocol/tests/fixtures/orp/`), validated with
//! a real JSON Schema (draft 2020-12) validator: packets of real rounds on in-process nodes (a round
//! the owner verified, one whose claim the owner's re-run rejected, one dispatch held), and the
//! gate results `btd policy explain --orp` prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use btd::store::Store;
use btd::testkit::owner_and_member;
use btd::work::{run_rounds, RunRecord, RunState, WorkOptions};
use btd_protocol::dispatch::Action;
use btd_protocol::kb::Check;
use btd_protocol::trace::{ResultBundle, TraceabilityRecord};
use btd_protocol::Timestamp;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(60);

/// A shell program the owner re-runs. The command prints its parameter, except on the worker in
/// round 2, where it claims 1: the owner's re-run (no `BTD_RUN_DIR`) prints the parameter, so that
/// claim is rejected. The paid rung is denied, so a round on it is held.
fn manifest(paid_policy: &str) -> String {
    btd::testkit::score_manifest(
        "orp-shell",
        r#"'case "$BTD_RUN_DIR" in *round-00002*) echo "score: 1" ;; *) echo "score: $BTD_PARAM_X" ;; esac'"#,
        20,
        &format!(
            "[verify]\nmode = \"rerun\"\ntolerance = 1e-6\n{}[[rungs]]\nid = \"rented-cpu\"\n\
             spend_class = \"paid_metered\"\nhardware = \"cpu\"\n[policy.paid]\n{paid_policy}\n\
             max_spend_per_packet = 2.0\n",
            btd::testkit::LOCAL_CPU_RUNG
        ),
    )
}

fn schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../protocol/tests/fixtures/orp/packet.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .unwrap()
}

/// The schema of one of the packet schema's `$defs`.
fn def_schema(name: &str) -> Value {
    let s = schema();
    json!({
        "$schema": s["$schema"],
        "$defs": s["$defs"],
        "$ref": format!("#/$defs/{name}"),
    })
}

/// Every error the validator finds in `v`, as text (empty = valid).
fn errors(validator: &jsonschema::Validator, v: &Value) -> Vec<String> {
    validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

async fn rounds(
    work: &std::sync::Arc<btd::work::WorkContext>,
    p: btd_protocol::program::ProgramId,
    n: u32,
    rung: &str,
) {
    let opts = WorkOptions {
        rounds: n,
        rung: Some(rung.to_string()),
        allow_shell: true,
        approval_wait_secs: 10,
        verdict_wait_secs: 60,
        ..WorkOptions::default()
    };
    let (tx, mut rx) = mpsc::channel(64);
    let task = tokio::spawn(run_rounds(work.clone(), p, opts, tx));
    while rx.recv().await.is_some() {}
    task.await.unwrap().unwrap();
}

/// Exports `r` into `dir`, reads the packet back from disk and checks it against the schema.
fn exported(r: &RunRecord, dir: &Path, packet_schema: &jsonschema::Validator) -> Value {
    let e =
        btd::orp::export_round(r, Some(dir), Timestamp::from_millis(1_767_225_600_000)).unwrap();
    let path = &e.packet.artifacts.packet_json_path;
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        errors(packet_schema, &v),
        Vec::<String>::new(),
        "round {}: {v:#}",
        r.round
    );
    // Every file the packet names as evidence exists.
    for p in v["protocol_boundary"]["evidence_paths"].as_array().unwrap() {
        assert!(Path::new(p.as_str().unwrap()).is_file(), "{p} is missing");
    }
    assert!(Path::new(v["artifacts"]["packet_md_path"].as_str().unwrap()).is_file());
    v
}

fn gate<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate_id"] == id)
        .unwrap_or_else(|| panic!("no gate {id} in {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_of_passed_rejected_and_held_rounds_validate_against_orps_schema() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let p = owner_and_member(
        dirs[0].path(),
        Store::open_in_memory().unwrap(),
        dirs[1].path(),
        &manifest("default_action = \"deny\""),
        T,
    )
    .await
    .unwrap();
    // Rounds 1 and 2 on the local rung (the owner re-runs both claims), round 3 on the denied one.
    rounds(&p.work, p.program, 2, "cpu").await;
    rounds(&p.work, p.program, 1, "rented-cpu").await;
    let runs = p.work.runs(Some(p.program)).await.unwrap();
    assert_eq!(runs.len(), 3, "{runs:#?}");
    let (passed, rejected, held) = (&runs[0], &runs[1], &runs[2]);
    assert_eq!(
        passed.verdict.as_ref().unwrap().check,
        Check::Verified,
        "{passed:#?}"
    );
    assert!(
        matches!(&rejected.verdict.as_ref().unwrap().check, Check::Failed(why) if why.contains("did not reproduce")),
        "{rejected:#?}"
    );
    assert_eq!(held.state, RunState::Held);
    assert_eq!(held.dispatch.action, Action::HoldPacket);

    let packet_schema = validator(&schema());
    let out = tempfile::tempdir().unwrap();

    // Verified and accepted: every gate passes; the evidence files hold the records themselves.
    let v = exported(passed, out.path(), &packet_schema);
    assert_eq!(v["summary"]["overall_result"], "PASS", "{v:#}");
    assert_eq!(v["lifecycle"]["workflow_state"], "accepted");
    assert_eq!(v["lifecycle"]["claim_status"], "Verified");
    assert_eq!(gate(&v, "cpu")["status"], "pass");
    assert_eq!(gate(&v, "run")["status"], "pass");
    assert_eq!(gate(&v, "owner-check")["status"], "pass");
    assert_eq!(v["atomic_context"]["board_id"], p.program.to_string());
    assert_eq!(v["atomic_context"]["atom_id"], "round-00001");
    assert_eq!(
        v["run"]["deterministic_input_hash"],
        format!("sha256:{}", passed.packet.content_digest())
    );
    let file = |gate: &Value, suffix: &str| -> String {
        let paths = gate["evidence_paths"].as_array().unwrap();
        let p = paths
            .iter()
            .find(|p| p.as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in {gate:#}"));
        std::fs::read_to_string(p.as_str().unwrap()).unwrap()
    };
    let bundle: ResultBundle =
        serde_json::from_str(&file(gate(&v, "run"), ".result-bundle.json")).unwrap();
    assert_eq!(Some(&bundle), passed.bundle.as_ref());
    let trace: TraceabilityRecord =
        serde_json::from_str(&file(gate(&v, "owner-check"), ".traceability-record.json")).unwrap();
    assert_eq!(Some(&trace), passed.trace.as_ref());
    assert_eq!(trace.bundle, bundle.id);

    // Rejected by the owner's re-run: the verification gate fails with the owner's reason.
    let v = exported(rejected, out.path(), &packet_schema);
    assert_eq!(v["summary"]["overall_result"], "FAIL", "{v:#}");
    assert_eq!(v["lifecycle"]["workflow_state"], "blocked");
    assert_eq!(v["lifecycle"]["claim_status"], "Blocked");
    let check = gate(&v, "owner-check");
    assert_eq!(
        (check["status"].as_str(), check["phase"].as_str()),
        (Some("fail"), Some("verification"))
    );
    let note = check["evidence_note"].as_str().unwrap();
    assert!(
        note.contains("metric did not reproduce: claimed 1.000000"),
        "{note}"
    );
    assert_eq!(gate(&v, "run")["status"], "pass");

    // Held by dispatch: the dispatch gate fails, nothing ran, no evidence objects.
    let v = exported(held, out.path(), &packet_schema);
    assert_eq!(v["summary"]["overall_result"], "FAIL", "{v:#}");
    assert_eq!(v["lifecycle"]["workflow_state"], "blocked");
    let dispatch = gate(&v, "rented-cpu");
    assert_eq!(dispatch["status"], "fail");
    assert!(
        dispatch["evidence_note"]
            .as_str()
            .unwrap()
            .starts_with("hold_packet (paid_denied)"),
        "{dispatch:#}"
    );
    assert_eq!(gate(&v, "run")["status"], "skipped");
    assert_eq!(gate(&v, "owner-check")["status"], "skipped");

    // The validation is not vacuous: ORP's wrapper's "hold" status, a missing run, an id outside
    // ORP's alphabet and a non-date time are each refused.
    let good = exported(passed, out.path(), &packet_schema);
    type Break = fn(&mut Value);
    let broken: [(&str, Break); 4] = [
        ("hold status", |v| v["gates"][0]["status"] = json!("hold")),
        ("no run", |v| {
            v.as_object_mut().unwrap().remove("run");
        }),
        ("bad packet id", |v| v["packet_id"] = json!("pkt btd/1")),
        ("bad time", |v| v["created_at_utc"] = json!("yesterday")),
    ];
    for (what, breaks) in broken {
        let mut v = good.clone();
        breaks(&mut v);
        assert!(
            !errors(&packet_schema, &v).is_empty(),
            "{what} was accepted"
        );
    }
    p.worker.stop().await;
    p.owner.stop().await;
}

/// Runs `btd` with `args` and returns its stdout, which must be exactly one JSON document.
fn btd_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_btd"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "btd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "btd {args:?} printed no single JSON document ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn policy_explain_orp_prints_one_gate_result_that_validates() {
    let dir = tempfile::tempdir().unwrap();
    let deny = dir.path().join("deny.toml");
    std::fs::write(&deny, manifest("default_action = \"deny\"")).unwrap();
    let ask = dir.path().join("ask.toml");
    std::fs::write(
        &ask,
        manifest("default_action = \"require_explicit_approval\""),
    )
    .unwrap();
    let gate_schema = validator(&def_schema("gate_result"));
    let cases = [
        (&deny, "cpu", "pass", 0),
        (&deny, "rented-cpu", "fail", 1),
        (&ask, "rented-cpu", "skipped", 0),
    ];
    for (manifest, rung, status, code) in cases {
        let m = manifest.to_str().unwrap();
        for json_flag in [false, true] {
            let mut args = vec!["policy", "explain", m, "--rung", rung, "--orp"];
            if json_flag {
                args.push("--json");
            }
            let g = btd_json(&args);
            assert_eq!(errors(&gate_schema, &g), Vec::<String>::new(), "{g:#}");
            assert_eq!(g["status"], status, "{g:#}");
            assert_eq!(g["exit_code"], code);
            assert_eq!(g["gate_id"], rung);
            assert_eq!(g["phase"], "scope_lock");
            assert!(
                g["command"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("--rung {rung}")),
                "{g:#}"
            );
        }
    }
    let g = btd_json(&[
        "policy",
        "explain",
        ask.to_str().unwrap(),
        "--rung",
        "rented-cpu",
        "--orp",
    ]);
    let note = g["evidence_note"].as_str().unwrap();
    assert!(note.contains("waits for paid approval"), "{note}");
    // The subschema check is not vacuous either.
    let mut bad = g.clone();
    bad["status"] = json!("hold");
    assert!(!errors(&gate_schema, &bad).is_empty());
}
