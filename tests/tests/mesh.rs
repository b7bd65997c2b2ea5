//! End to end over real `btd` processes on loopback: publish → join → approve → submit → status,
//! kill -9 of the owner with nothing lost (the worker's outbox holds what the owner missed), and
//! gating of non-members and revoked members.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use btd_tests::{btd_bin, repo_root, stderr, stdout, wait_known, wait_until, Daemon};

fn publish(owner: &Daemon, membership: &str) -> String {
    // This test submits bare values (no checkpoints) to exercise the mesh and the store, so the
    // owner takes claims as received; tests/tests/verify.rs covers the owner's checks.
    let text = std::fs::read_to_string(repo_root().join("examples/program.toml"))
        .unwrap()
        .replace(
            "membership = \"approval\"",
            &format!("membership = \"{membership}\""),
        )
        .replace("mode = \"reevaluate\"", "mode = \"none\"");
    let path = owner.home.with_extension("program.toml");
    std::fs::write(&path, text).unwrap();
    let o = owner.btd(&["publish", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_string()
}

fn join_approved(owner: &Daemon, worker: &Daemon, id: &str) {
    let (status, _) = btd_tests::join_approved(owner, worker, id, &[]);
    assert!(status.success(), "join failed:\n{}", worker.log());
}

#[test]
fn publish_join_approve_submit_status_and_owner_kill_9() {
    let mut owner = Daemon::start(&[]);
    let worker = Daemon::start(&["--bootstrap", &owner.addr()]);
    let id = publish(&owner, "approval");
    assert_eq!(id.len(), 64, "publish prints the program id: {id}");
    wait_known(&worker, &id);
    join_approved(&owner, &worker, &id);

    for v in ["4.2", "3.9", "4.0"] {
        let o = worker.btd(&["submit", &id, "--value", v]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let s = worker.json(&["status", &id]);
    assert_eq!(s["submissions"], 3);
    assert_eq!(s["accepted"], 2);
    assert_eq!(s["champion"]["value"], 3.9);
    assert_eq!(s["payouts"][worker.peer_id()], "100.000000");

    // kill -9 the owner and start it again on the same home: nothing lost.
    let addr = owner.addr();
    let port = addr.split('/').nth(4).unwrap().to_string();
    owner.kill9();
    owner.restart(&["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")]);
    let s2 = owner.json(&["status", &id]);
    assert_eq!(s2["submissions"], 3);
    assert_eq!(s2["champion"], s["champion"]);
    assert_eq!(s2["payouts"], s["payouts"]);
    assert_eq!(s2["members"], 1);

    // The member continues without re-joining.
    let o = wait_until("a submission after the restart", 30, || {
        let o = worker.btd(&["submit", &id, "--value", "3.1", "--json"]);
        o.status.success().then_some(o)
    });
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["seq"], 4);
    assert_eq!(r["champion"], true);

    // A second daemon on the same home is refused with a clear message.
    let o = Command::new(btd_bin())
        .args(["start", "--home"])
        .arg(&owner.home)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already running"), "{}", stderr(&o));
}

#[test]
fn non_members_and_revoked_members_are_refused_while_the_owner_keeps_serving() {
    let owner = Daemon::start(&[]);
    let member = Daemon::start(&["--bootstrap", &owner.addr()]);
    let outsider = Daemon::start(&["--bootstrap", &owner.addr()]);
    let id = publish(&owner, "approval");
    wait_known(&member, &id);
    wait_known(&outsider, &id);
    join_approved(&owner, &member, &id);

    let o = outsider.btd(&["submit", &id, "--value", "1.0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("membership required"), "{}", stderr(&o));
    let o = outsider.btd(&["status", &id]);
    assert_eq!(o.status.code(), Some(1));

    // A bad manifest is refused by the daemon with the field and line.
    let bad = owner.home.with_extension("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(repo_root().join("examples/program.toml"))
            .unwrap()
            .replace("direction = \"minimize\"", "direction = \"lower\""),
    )
    .unwrap();
    let o = owner.btd(&["publish", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("criteria.direction") && stderr(&o).contains("minimize"),
        "{}",
        stderr(&o)
    );

    // A wrong user code is a clear error.
    let o = owner.btd(&["approve", "ABCD-EFGH"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ABCD-EFGH"), "{}", stderr(&o));
    let o = owner.btd(&["approve", "not-a-code!"]);
    assert_eq!(o.status.code(), Some(1));

    let o = member.btd(&["submit", &id, "--value", "2.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = owner.json(&["members", &id]);
    assert_eq!(m["members"].as_array().unwrap().len(), 1);
    let o = owner.btd(&["revoke", &id, &member.peer_id()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = member.btd(&["submit", &id, "--value", "1.5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("revoked"), "{}", stderr(&o));

    // The owner still serves.
    let s = owner.json(&["status", &id]);
    assert_eq!(s["submissions"], 1);
    assert_eq!(s["members"], 0);
}

#[test]
fn join_through_a_relay() {
    let relay = Daemon::start(&["--relay-server"]);
    let raddr = relay.addr();
    // The owner announces a relay-circuit address; the worker only knows the relay.
    let owner = Daemon::start(&["--bootstrap", &raddr]);
    wait_until("relay reservation", 30, || {
        let v = owner.json(&["id"]);
        v["listen"]
            .as_array()?
            .iter()
            .any(|a| a.as_str().is_some_and(|s| s.contains("p2p-circuit")))
            .then_some(())
    });
    let worker = Daemon::start(&["--bootstrap", &raddr]);
    let id = publish(&owner, "open");
    wait_known(&worker, &id);
    let o = worker.btd(&["join", &id]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), worker.log());
    let o = worker.btd(&["submit", &id, "--value", "3.3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(owner.json(&["status", &id])["submissions"], 1);
}

#[test]
fn owner_kill_9_during_a_stream_of_submissions_loses_and_duplicates_nothing() {
    let mut owner = Daemon::start(&[]);
    let mut worker = Daemon::start(&["--bootstrap", &owner.addr()]);
    let id = publish(&owner, "approval");
    wait_known(&worker, &id);
    join_approved(&owner, &worker, &id);
    let addr = owner.addr();
    let port = addr.split('/').nth(4).unwrap().to_string();

    // Submissions stream from another thread while the owner is killed and restarted. None fails:
    // each gets its receipt, or is queued in the worker's outbox while the owner is away.
    let home = worker.home.clone();
    let id2 = id.clone();
    let submitter = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..60u32 {
            let value = format!("{}", 5.0 - f64::from(i) * 0.01);
            let o = Command::new(btd_bin())
                .args(["submit", &id2, "--value", &value, "--json", "--home"])
                .arg(&home)
                .output()
                .unwrap();
            assert!(o.status.success(), "submit {value}: {}", stderr(&o));
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            match r["seq"].as_u64() {
                Some(seq) => acked.push((seq, value)),
                None => assert!(r["queued"]["id"].is_u64(), "{r}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        acked
    });
    wait_until("a few acknowledged submissions", 30, || {
        let s = owner.json(&["status", &id]);
        (s["submissions"].as_u64()? >= 5).then_some(())
    });
    owner.kill9();
    owner.restart(&["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")]);
    let acked = submitter.join().unwrap();
    assert!(
        acked.len() >= 10,
        "only {} submissions were acknowledged",
        acked.len()
    );

    // The queued ones follow once the owner is back.
    wait_until("an empty outbox", 90, || {
        let v = worker.json(&["outbox"]);
        v["queued"].as_array()?.is_empty().then_some(())
    });

    // Every submission is in the owner's log, an acknowledged one at its seq; none appears twice.
    // The whole log in one page, in seq order.
    let s = owner.json(&["status", &id, "--limit", "1000", "--oldest-first"]);
    assert_eq!(s["more"], false, "{s}");
    let results = s["results"].as_array().unwrap();
    let logged: Vec<(u64, String)> = results
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["value"].to_string()))
        .collect();
    for (seq, value) in &acked {
        let at = logged.iter().find(|(s, _)| s == seq);
        assert_eq!(
            at.map(|(_, v)| v.parse::<f64>().unwrap()),
            Some(value.parse::<f64>().unwrap()),
            "acknowledged seq {seq} ({value}) is not in the owner's log"
        );
    }
    let distinct: std::collections::BTreeSet<&String> = logged.iter().map(|(_, v)| v).collect();
    assert_eq!(
        distinct.len(),
        logged.len(),
        "a submission was counted twice: {logged:?}"
    );
    assert_eq!(logged.len(), 60, "a submission was lost: {logged:?}");
    let seqs: Vec<u64> = logged.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=logged.len() as u64).collect::<Vec<_>>());

    // The worker's daemon restarts (kill -9 too) and goes on without re-joining.
    worker.kill9();
    worker.restart(&["--bootstrap", &addr]);
    let v = worker.json(&["programs"]);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == id.as_str() && p["member"] == true),
        "{v}"
    );
    let o = wait_until("a submission after the worker's restart", 30, || {
        let o = worker.btd(&["submit", &id, "--value", "1.0", "--json"]);
        o.status.success().then_some(o)
    });
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["seq"].as_u64().unwrap(), logged.len() as u64 + 1);
}

/// `--json` output is one JSON document per line, each event once: `btd join --no-wait --json`
/// printed the code event twice (a compact line, then the same object pretty-printed).
#[test]
fn join_json_prints_each_event_once_one_object_per_line() {
    let owner = Daemon::start(&[]);
    let worker = Daemon::start(&["--bootstrap", &owner.addr()]);
    let id = publish(&owner, "approval");
    wait_known(&worker, &id);
    let lines = |o: &std::process::Output| -> Vec<serde_json::Value> {
        stdout(o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    };
    let o = worker.btd(&["join", &id, "--no-wait", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let events = lines(&o);
    assert_eq!(events.len(), 1, "{}", stdout(&o));
    assert_eq!(events[0]["event"], "code", "{}", stdout(&o));
    let code = events[0]["user_code"].as_str().unwrap();
    assert!(owner.btd(&["approve", code]).status.success());
    wait_until("membership", 30, || {
        let v = worker.json(&["programs"]);
        v.as_array()?
            .iter()
            .any(|p| p["id"] == id && p["member"] == true)
            .then_some(())
    });
    let o = worker.btd(&["join", &id, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let events = lines(&o);
    assert_eq!(events.len(), 1, "{}", stdout(&o));
    assert_eq!(events[0]["event"], "already_member");
}
