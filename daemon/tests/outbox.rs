//! The member's outbox, played against a stingy, an absent and a refusing owner: real btd nodes
//! (the production core) on the memory transport. A submission over the owner's request budget or
//! to an owner that is offline is queued, paced and resent with the same nonce until the owner
//! answers; nothing is lost and nothing counts twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use btd::net::NetParams;
use btd::node::types::{NewResult, OutboxList, Submitted};
use btd::node::{NodeError, NodeHandle};
use btd::store::Store;
use btd::testkit::{
    join_approved, spawn_node, test_params, wait_for, wait_known, TestNode, TestNodeOptions,
};
use btd_protocol::program::ProgramId;
use btd_protocol::wire::{StatusQuery, MAX_RESULTS_PAGE};
use libp2p::identity::Keypair;

const T: Duration = Duration::from_secs(20);

/// Test tunables with `f` applied.
fn params(f: impl FnOnce(&mut NetParams)) -> NetParams {
    let mut p = test_params(false);
    f(&mut p);
    p
}

/// A member that resends quickly and waits briefly for the owner's answer.
fn member_params() -> NetParams {
    params(|p| {
        p.outbox.retry_max = Duration::from_millis(500);
        p.outbox.submit_wait = Duration::from_secs(2);
    })
}

fn result(value: f64) -> NewResult {
    NewResult {
        value,
        rung_id: "cpu".into(),
        ..Default::default()
    }
}

async fn start(
    store: Store,
    key: Option<Keypair>,
    params: NetParams,
    to: Option<&TestNode>,
) -> TestNode {
    spawn_node(
        store,
        TestNodeOptions {
            key,
            params: Some(params),
            bootstrap: to.and_then(TestNode::dial_addr).into_iter().collect(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// An owner (on `owner_store`, with `owner_params`) that published a program, and a member (on
/// `member_store`, with `member`'s parameters) that joined it.
async fn owner_and_member(
    owner_store: Store,
    owner_params: NetParams,
    member_store: Store,
    member: NetParams,
) -> (TestNode, TestNode, ProgramId) {
    let owner = start(owner_store, None, owner_params, None).await;
    let member = start(member_store, None, member, Some(&owner)).await;
    let program = owner
        .handle
        .publish(btd::testkit::shell_manifest("outbox-test", "approval"))
        .await
        .unwrap();
    wait_known(&member.handle, program, T).await.unwrap();
    join_approved(&owner.handle, &member.handle, program, T)
        .await
        .unwrap();
    (owner, member, program)
}

/// The values the owner's KB recorded, in seq order.
async fn recorded(owner: &NodeHandle, program: ProgramId) -> Vec<f64> {
    let all = StatusQuery {
        page: 1,
        limit: MAX_RESULTS_PAGE,
        oldest_first: true,
    };
    let s = owner.status_page(Some(program), all).await.unwrap();
    s.results.iter().map(|e| e.value).collect()
}

/// Waits until the owner's KB holds `n` results.
async fn await_recorded(owner: &NodeHandle, program: ProgramId, n: usize) -> Vec<f64> {
    wait_for(T, &format!("{n} results in the owner's KB"), || async {
        let v = recorded(owner, program).await;
        (v.len() >= n).then_some(v)
    })
    .await
    .unwrap()
}

/// Waits until the member's outbox holds no queued submission.
async fn await_empty_outbox(member: &NodeHandle) -> OutboxList {
    wait_for(T, "an empty outbox", || async {
        let l = member.outbox(None).await.ok()?;
        l.queued.is_empty().then_some(l)
    })
    .await
    .unwrap()
}

async fn queued(member: &NodeHandle, program: ProgramId, value: f64) -> u64 {
    match member
        .submit_queued(program, result(value), Duration::from_millis(500))
        .await
        .unwrap()
    {
        Submitted::Queued { queued } => queued.id,
        Submitted::Receipt(r) => panic!("an offline owner answered: {r:?}"),
    }
}

/// Every value once, sorted.
fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_over_the_owners_budget_loses_nothing_and_counts_nothing_twice() {
    // The owner grants this member 4 requests at once and 4 per second; the member believes in
    // btd's default budget (and paces to half of that), so the owner rate-limits it.
    let stingy = params(|p| {
        p.rate_burst = 4.0;
        p.rate_per_sec = 4.0;
    });
    let (owner, member, program) = owner_and_member(
        Store::open_in_memory().unwrap(),
        stingy,
        Store::open_in_memory().unwrap(),
        member_params(),
    )
    .await;

    // Three times the owner's burst, all at once.
    let values: Vec<f64> = (0..12).map(|i| 3.0 + f64::from(i) * 0.01).collect();
    let calls: Vec<_> = values
        .iter()
        .map(|v| {
            let h = member.handle.clone();
            let v = *v;
            tokio::spawn(async move { h.submit_queued(program, result(v), T).await })
        })
        .collect();
    // The owner refuses some sends ("rate limited"): the outbox shows it and sends them again.
    let limited = wait_for(T, "a rate-limited send in the outbox", || async {
        let l = member.handle.outbox(Some(program)).await.ok()?;
        l.queued.into_iter().find(|v| {
            v.last_error
                .as_deref()
                .is_some_and(|e| e.contains("rate limiting"))
        })
    })
    .await
    .unwrap();
    assert!(limited.attempts >= 1, "{limited:?}");
    for c in calls {
        match c.await.unwrap() {
            Ok(Submitted::Receipt(r)) => assert!(!r.duplicate, "{r:?}"),
            Ok(Submitted::Queued { .. }) => {}
            Err(e) => panic!("a submission failed: {e}"),
        }
    }

    // Every result reaches the owner's KB, each exactly once.
    let got = await_recorded(&owner.handle, program, values.len()).await;
    assert_eq!(sorted(got), sorted(values.clone()));
    let list = await_empty_outbox(&member.handle).await;
    assert!(list.refused.is_empty(), "{list:?}");
    assert_eq!(recorded(&owner.handle, program).await.len(), values.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_owner_gets_the_queued_result_when_it_returns() {
    let owner_store = Store::open_in_memory().unwrap();
    let (owner, member, program) = owner_and_member(
        owner_store.clone(),
        test_params(false),
        Store::open_in_memory().unwrap(),
        member_params(),
    )
    .await;
    let owner_key = owner.key.clone();
    owner.stop().await;

    // The owner is gone: the result is queued, and the outbox says why.
    let id = queued(&member.handle, program, 2.5).await;
    let list = wait_for(T, "a failed send in the outbox", || async {
        let l = member.handle.outbox(Some(program)).await.ok()?;
        l.queued
            .iter()
            .any(|v| v.id == id && v.attempts >= 1 && v.last_error.is_some())
            .then_some(l)
    })
    .await
    .unwrap();
    let v = &list.queued[0];
    assert_eq!((v.program, v.value, v.rung.as_str()), (program, 2.5, "cpu"));
    assert_eq!(v.nonce.len(), 32);
    assert!(
        v.last_error
            .as_deref()
            .unwrap()
            .contains("cannot reach the owner"),
        "{v:?}"
    );
    // `NodeHandle::submit` says it is queued, in words.
    match member.handle.submit(program, result(2.4)).await {
        Err(NodeError::Unreachable(words)) => {
            assert!(words.contains("queued in the outbox"), "{words}")
        }
        other => panic!("expected a queued answer, got {other:?}"),
    }

    // The owner comes back (same identity and KB, a new address it tells the member by dialing it).
    let owner = start(
        owner_store,
        Some(owner_key),
        test_params(false),
        Some(&member),
    )
    .await;
    let got = await_recorded(&owner.handle, program, 2).await;
    assert_eq!(sorted(got), vec![2.4, 2.5]);
    await_empty_outbox(&member.handle).await;
    assert_eq!(recorded(&owner.handle, program).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_sends_its_queue_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("member.sqlite");
    let owner_store = Store::open_in_memory().unwrap();
    let (owner, member, program) = owner_and_member(
        owner_store.clone(),
        test_params(false),
        Store::open(&db).unwrap(),
        member_params(),
    )
    .await;
    let (owner_key, member_key) = (owner.key.clone(), member.key.clone());
    owner.stop().await;
    queued(&member.handle, program, 1.25).await;
    queued(&member.handle, program, 1.5).await;
    member.stop().await;

    // Both come back; the member's daemon finds its queue in the database and sends it.
    let owner = start(owner_store, Some(owner_key), test_params(false), None).await;
    let member = start(
        Store::open(&db).unwrap(),
        Some(member_key),
        member_params(),
        Some(&owner),
    )
    .await;
    let got = await_recorded(&owner.handle, program, 2).await;
    assert_eq!(sorted(got), vec![1.25, 1.5]);
    await_empty_outbox(&member.handle).await;
    // A new submission gets an id after the stored ones.
    match member
        .handle
        .submit_queued(program, result(1.0), T)
        .await
        .unwrap()
    {
        Submitted::Receipt(r) => assert_eq!((r.seq, r.duplicate), (3, false)),
        Submitted::Queued { queued } => panic!("the owner is back, yet queued: {queued:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_for_good_leaves_the_outbox_with_the_owners_words() {
    let (owner, member, program) = owner_and_member(
        Store::open_in_memory().unwrap(),
        test_params(false),
        Store::open_in_memory().unwrap(),
        member_params(),
    )
    .await;
    owner
        .handle
        .revoke(program, member.peer_id().to_string())
        .await
        .unwrap();
    let e = member
        .handle
        .submit_queued(program, result(2.0), T)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, NodeError::Refused(w) if w.contains("revoked")),
        "{e:?}"
    );
    let list = member.handle.outbox(Some(program)).await.unwrap();
    assert!(list.queued.is_empty(), "{list:?}");
    assert_eq!(list.refused.len(), 1, "{list:?}");
    let r = &list.refused[0];
    assert_eq!(r.value, 2.0);
    assert!(r.refused.as_deref().unwrap().contains("revoked"), "{r:?}");
    assert!(recorded(&owner.handle, program).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_bound_refuses_beyond_it_in_words() {
    let owner_store = Store::open_in_memory().unwrap();
    let small = params(|p| {
        p.outbox.max_per_program = 3;
        p.outbox.retry_max = Duration::from_millis(500);
    });
    let (owner, member, program) = owner_and_member(
        owner_store.clone(),
        test_params(false),
        Store::open_in_memory().unwrap(),
        small,
    )
    .await;
    let owner_key = owner.key.clone();
    owner.stop().await;
    for v in [1.0, 2.0, 3.0] {
        queued(&member.handle, program, v).await;
    }
    let e = member
        .handle
        .submit_queued(program, result(4.0), Duration::ZERO)
        .await
        .unwrap_err();
    let words = e.to_string();
    assert!(
        words.contains("outbox is full")
            && words.contains("limit 3")
            && words.contains("btd outbox"),
        "{words}"
    );
    assert_eq!(member.handle.outbox(None).await.unwrap().queued.len(), 3);

    // Once the owner took them, there is room again.
    let owner = start(
        owner_store,
        Some(owner_key),
        test_params(false),
        Some(&member),
    )
    .await;
    await_recorded(&owner.handle, program, 3).await;
    await_empty_outbox(&member.handle).await;
    match member
        .handle
        .submit_queued(program, result(4.0), T)
        .await
        .unwrap()
    {
        Submitted::Receipt(r) => assert_eq!(r.seq, 4),
        Submitted::Queued { queued } => panic!("queued: {queued:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_round_with_an_offline_owner_is_queued_then_settled_with_the_receipt() {
    use btd::work::{run_rounds, RunState, WorkContext, WorkOptions};
    let home = tempfile::tempdir().unwrap();
    let owner_store = Store::open_in_memory().unwrap();
    let owner = start(owner_store.clone(), None, test_params(false), None).await;
    let member_store = Store::open_in_memory().unwrap();
    let member = start(member_store.clone(), None, member_params(), Some(&owner)).await;
    let manifest = btd::testkit::score_manifest(
        "outbox-round",
        r#""echo \"score: $BTD_PARAM_X\" > output.log; cat output.log""#,
        20,
        btd::testkit::LOCAL_CPU_RUNG,
    );
    let program = owner.handle.publish(manifest).await.unwrap();
    wait_known(&member.handle, program, T).await.unwrap();
    join_approved(&owner.handle, &member.handle, program, T)
        .await
        .unwrap();
    let owner_key = owner.key.clone();
    owner.stop().await;

    let work = WorkContext::new(
        member.handle.clone(),
        member_store,
        home.path(),
        btd::config::Config::default_rungs(),
        Default::default(),
    );
    let opts = WorkOptions {
        rounds: 1,
        allow_shell: true,
        verdict_wait_secs: 0,
        ..WorkOptions::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(run_rounds(work.clone(), program, opts, tx));
    let mut queued_event = None;
    while let Some(e) = rx.recv().await {
        if let btd::work::WorkEvent::Queued { round, note } = e {
            queued_event = Some((round, note));
        }
    }
    let summary = task.await.unwrap().unwrap();
    let (round, note) = queued_event.expect("a queued event");
    assert!(
        round == 1 && note.contains("queued in the outbox as #1"),
        "{note}"
    );
    assert_eq!(summary.submitted, 0, "{summary:?}");
    let r = &summary.runs[0];
    assert_eq!(r.state, RunState::Queued, "{r:?}");
    assert!(
        r.outbox.is_some() && r.note.contains("queued in the outbox"),
        "{r:?}"
    );
    assert_eq!(
        work.runs(Some(program)).await.unwrap()[0].state,
        RunState::Queued
    );

    // The owner returns: the result is delivered, and the round's record takes the receipt.
    let owner = start(
        owner_store,
        Some(owner_key),
        test_params(false),
        Some(&member),
    )
    .await;
    await_recorded(&owner.handle, program, 1).await;
    await_empty_outbox(&member.handle).await;
    let r = work.runs(Some(program)).await.unwrap().remove(0);
    assert_eq!(r.state, RunState::Submitted, "{r:?}");
    assert_eq!(r.verdict.as_ref().map(|v| v.seq), Some(1), "{r:?}");
    assert!(
        r.impact.is_some() && r.trace.is_some() && r.outbox.is_none(),
        "{r:?}"
    );
    // Settled once: the stored record says so too.
    assert_eq!(work.runs(Some(program)).await.unwrap()[0], r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_queued_behind_a_busy_request_go_as_one_batch_each_acknowledged_once() {
    // One request to the owner at a time: whatever is queued meanwhile goes in the next request.
    let one_slot = params(|p| {
        p.outbox.requests_per_owner = 1;
        p.outbox.submit_wait = T;
    });
    let (owner, member, program) = owner_and_member(
        Store::open_in_memory().unwrap(),
        test_params(false),
        Store::open_in_memory().unwrap(),
        one_slot,
    )
    .await;
    let n: u32 = 24;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let h = member.handle.clone();
        tasks.spawn(async move { h.submit(program, result(10.0 + f64::from(i))).await });
    }
    let mut seqs = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let receipt = done.unwrap().expect("every result acknowledged");
        assert!(!receipt.duplicate);
        seqs.push(receipt.seq);
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=u64::from(n)).collect::<Vec<_>>(),
        "one entry each"
    );
    let want: Vec<f64> = (0..n).map(|i| 10.0 + f64::from(i)).collect();
    assert_eq!(sorted(recorded(&owner.handle, program).await), want);
    // Fewer requests than results: the results that waited went together.
    let text = btd::metrics::scrape(&member.metrics, &member.handle).await;
    let count = |kind: &str| -> u64 {
        let key = format!("btd_outbox_requests_total{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let (single, batch) = (count("single"), count("batch"));
    assert!(
        batch >= 1,
        "no batch was sent ({single} single requests)\n{text}"
    );
    assert!(
        single + batch < u64::from(n),
        "{single} single + {batch} batches for {n}"
    );
    await_empty_outbox(&member.handle).await;
}
