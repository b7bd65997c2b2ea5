//! `btd submit` and `btd outbox` over real `btd` processes: an owner that is stopped gets the
//! member's results when it starts again; a revoked member's submission leaves the outbox with the
//! owner's words.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use btd_tests::{repo_root, stderr, stdout, wait_known, wait_until, Daemon};

fn publish(owner: &Daemon) -> String {
    // Bare values (no checkpoints): the owner takes claims as received.
    let text = std::fs::read_to_string(repo_root().join("examples/program.toml"))
        .unwrap()
        .replace("mode = \"reevaluate\"", "mode = \"none\"");
    let path = owner.home.with_extension("program.toml");
    std::fs::write(&path, text).unwrap();
    let o = owner.btd(&["publish", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_string()
}

#[test]
fn submissions_to_a_stopped_owner_wait_in_the_outbox_and_arrive_when_it_returns() {
    let mut owner = Daemon::start(&[]);
    let worker = Daemon::start(&["--bootstrap", &owner.addr()]);
    let id = publish(&owner);
    wait_known(&worker, &id);
    let (status, _) = btd_tests::join_approved(&owner, &worker, &id, &[]);
    assert!(status.success(), "join failed:\n{}", worker.log());
    let port = owner.addr().split('/').nth(4).unwrap().to_string();
    let o = owner.btd(&["stop"]);
    assert!(o.status.success(), "{}", stderr(&o));
    owner.wait_exit(30);

    // The owner is gone: `btd submit` waits its --wait, then says the result is queued (exit 0).
    let o = worker.btd(&["submit", &id, "--value", "2.5", "--wait", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("queued in the outbox as #1") && text.contains("btd outbox"),
        "{text}"
    );
    // --no-wait --json: one JSON document naming the entry.
    let o = worker.btd(&["submit", &id, "--value", "2.25", "--no-wait", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["queued"]["id"], 2, "{v}");
    assert_eq!(v["queued"]["nonce"].as_str().unwrap().len(), 32, "{v}");

    // `btd outbox` lists both, with the reason they wait.
    let list = wait_until("a failed send of each entry", 30, || {
        let v = worker.json(&["outbox", &id]);
        let q = v["queued"].as_array()?.clone();
        (q.len() == 2 && q.iter().all(|e| e["attempts"].as_u64() >= Some(1))).then_some(q)
    });
    assert_eq!(list[0]["value"], 2.5);
    assert!(
        list[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the owner"),
        "{list:?}"
    );
    let o = worker.btd(&["outbox"]);
    assert!(
        stdout(&o).contains("#1") && stdout(&o).contains("cannot reach the owner"),
        "{}",
        stdout(&o)
    );

    // The owner starts again on its port: both arrive, once each, and the outbox empties.
    owner.restart(&["--listen", &format!("/ip4/127.0.0.1/tcp/{port}")]);
    wait_until("an empty outbox", 90, || {
        let v = worker.json(&["outbox"]);
        v["queued"].as_array()?.is_empty().then_some(())
    });
    let s = owner.json(&["status", &id]);
    assert_eq!(s["submissions"], 2, "{s}");

    // A revoked member's submission is refused for good: exit 1 with the owner's words, and the
    // outbox keeps the refusal.
    let o = owner.btd(&["revoke", &id, &worker.peer_id()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = worker.btd(&["submit", &id, "--value", "1.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("revoked"), "{}", stderr(&o));
    let v = worker.json(&["outbox"]);
    assert_eq!(v["queued"].as_array().unwrap().len(), 0, "{v}");
    assert!(
        v["refused"][0]["refused"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{v}"
    );
    assert_eq!(owner.json(&["status", &id])["submissions"], 2);
}
