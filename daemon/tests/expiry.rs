//! Join-code expiry over the mesh: the owner's clock is moved past the code's lifetime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use btd::node::types::JoinEvent;
use btd::store::Store;
use btd::testkit::{spawn_node, wait_known, OffsetClock, TestNodeOptions};

const MANIFEST: &str = r#"name = "expiry-test"
objective = "join codes expire"
required_outputs = ["metrics.json"]
[criteria]
metric = "val_bpb"
direction = "minimize"
accept = "beats-champion"
[reward]
pool = 1
token = "OBOL"
split = "by-impact"
[task]
kind = "shell"
command = "echo val_bpb: 1"
timeout_secs = 10
[[rungs]]
id = "cpu"
spend_class = "local_unmetered"
hardware = "cpu"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unapproved_code_expires_for_the_owner_and_the_worker() {
    let clock = OffsetClock::new();
    let owner = spawn_node(
        Store::open_in_memory().unwrap(),
        TestNodeOptions {
            clock: Some(clock.clock()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let worker = spawn_node(
        Store::open_in_memory().unwrap(),
        TestNodeOptions {
            bootstrap: vec![owner.dial_addr().unwrap()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let program = owner.handle.publish(MANIFEST.into()).await.unwrap();
    wait_known(&worker.handle, program, Duration::from_secs(20))
        .await
        .unwrap();
    let mut rx = worker.handle.join(program).await.unwrap();
    let Some(JoinEvent::Code {
        user_code,
        expires_in,
        ..
    }) = rx.recv().await
    else {
        panic!("expected a code")
    };
    assert_eq!(expires_in, 900);

    // 15 minutes and a second later, the owner can no longer approve the code...
    clock.advance(Duration::from_secs(901));
    let e = owner
        .handle
        .approve(user_code.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("expired"), "{e}");
    // ...and the worker's next poll is answered `expired_token`: the join fails and says so.
    let ev = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the worker hears of the expiry")
        .expect("join stream open");
    match ev {
        JoinEvent::Failed { reason } => assert!(reason.contains("expired"), "{reason}"),
        other => panic!("expected the join to fail, got {other:?}"),
    }
    assert!(worker.handle.credential(program).await.unwrap().is_none());
}
