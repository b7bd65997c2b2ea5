//! In-process multi-node tests: real btd nodes (the production core) on the memory transport.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use btd::node::types::{JoinEvent, NewResult, StatusView};
use btd::node::{NodeError, NodeHandle};
use btd::store::Store;
use btd::testkit::{spawn_node, wait_for, TestNode, TestNodeOptions};
use btd_protocol::membership::{Credential, DeviceCode};
use btd_protocol::program::ProgramId;
use btd_protocol::signed::Signed;
use btd_protocol::wire::{
    ErrorCode, KbCall, KbRequest, KbResponse, MembershipRequest, MembershipResponse, PollStatus,
    StatusQuery, Submission,
};
use libp2p::PeerId;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(20);

fn manifest(membership: &str) -> String {
    btd::testkit::shell_manifest("mesh-test", membership)
}

async fn node(opts: TestNodeOptions) -> TestNode {
    spawn_node(Store::open_in_memory().unwrap(), opts)
        .await
        .unwrap()
}

async fn node_to(peer: &TestNode) -> TestNode {
    node(TestNodeOptions {
        bootstrap: vec![peer.dial_addr().unwrap()],
        ..Default::default()
    })
    .await
}

async fn publish(owner: &NodeHandle, membership: &str) -> ProgramId {
    owner.publish(manifest(membership)).await.unwrap()
}

/// A node's answer, its refusal in words; panics if the node stopped.
fn words<T>(r: Result<T, NodeError>) -> Result<T, String> {
    match r {
        Err(NodeError::Stopped) => panic!("the node stopped"),
        r => r.map_err(|e| e.to_string()),
    }
}

async fn knows(h: &NodeHandle, id: ProgramId) {
    btd::testkit::wait_known(h, id, T).await.unwrap();
}

/// Starts a join and returns the event stream.
async fn start_join(h: &NodeHandle, program: ProgramId) -> mpsc::Receiver<JoinEvent> {
    h.join(program).await.unwrap()
}

async fn next(rx: &mut mpsc::Receiver<JoinEvent>) -> JoinEvent {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("join event in time")
        .expect("join stream open")
}

async fn decide(owner: &NodeHandle, code: &str, approve: bool) -> Result<String, String> {
    let code = code.to_string();
    words(if approve {
        owner.approve(code).await
    } else {
        owner.deny(code).await
    })
}

/// Joins `worker` to `program` with owner approval; returns the user code used.
async fn join_approved(owner: &NodeHandle, worker: &NodeHandle, program: ProgramId) -> String {
    btd::testkit::join_approved(owner, worker, program, T)
        .await
        .unwrap()
}

async fn submit(
    worker: &NodeHandle,
    program: ProgramId,
    value: f64,
) -> Result<btd_protocol::wire::SubmitReceipt, String> {
    let result = NewResult {
        value,
        rung_id: "cpu".into(),
        outputs: vec![],
        ..Default::default()
    };
    words(worker.submit(program, result).await)
}

async fn status(h: &NodeHandle, program: ProgramId) -> Result<StatusView, String> {
    words(h.status(Some(program)).await)
}

/// `owner` publishes an open program and `member` joins it (the grant comes without an approval).
async fn open_program_joined(owner: &NodeHandle, member: &NodeHandle) -> ProgramId {
    let id = publish(owner, "open").await;
    knows(member, id).await;
    let mut rx = start_join(member, id).await;
    let _code = next(&mut rx).await;
    assert!(matches!(next(&mut rx).await, JoinEvent::Granted { .. }));
    id
}

async fn raw_kb(from: &NodeHandle, to: PeerId, request: KbRequest) -> KbResponse {
    from.raw_kb(to, request).await.unwrap()
}

async fn raw_membership(
    from: &NodeHandle,
    to: PeerId,
    request: MembershipRequest,
) -> MembershipResponse {
    from.raw_membership(to, request).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_discover_through_a_middle_node_join_submit_status() {
    let owner = node(TestNodeOptions::default()).await;
    let middle = node_to(&owner).await;
    let worker = node_to(&middle).await; // never directly connected to the owner
    let id = publish(&owner.handle, "approval").await;
    knows(&worker.handle, id).await;

    join_approved(&owner.handle, &worker.handle, id).await;
    let r = submit(&worker.handle, id, 4.0).await.unwrap();
    assert_eq!((r.seq, r.accepted, r.champion), (1, true, true));
    let r = submit(&worker.handle, id, 4.5).await.unwrap();
    assert_eq!((r.seq, r.accepted), (2, false));

    let s = status(&worker.handle, id).await.unwrap();
    assert_eq!(s.source, "owner over the mesh");
    assert_eq!(s.submissions, 2);
    assert_eq!(s.members, 1);
    assert_eq!(s.champion.as_ref().map(|c| c.value), Some(4.0));
    assert_eq!(s.payouts.total().micros(), 100_000_000);
    assert_eq!(s.results.len(), 2);
    let own = status(&owner.handle, id).await.unwrap();
    assert_eq!(own.source, "own store");
    assert_eq!(own.champion, s.champion);
    // The same pages from the owner's store and, in one request, over the mesh.
    for v in [4.4, 4.3, 4.2] {
        submit(&worker.handle, id, v).await.unwrap();
    }
    for h in [&worker.handle, &owner.handle] {
        let page = |page, limit, oldest_first| async move {
            let q = StatusQuery {
                page,
                limit,
                oldest_first,
            };
            let s = h.status_page(Some(id), q).await.unwrap();
            assert_eq!(s.submissions, 5);
            assert_eq!(
                (s.page, s.limit, s.oldest_first),
                (page, limit, oldest_first)
            );
            (s.results.iter().map(|e| e.seq).collect::<Vec<_>>(), s.more)
        };
        assert_eq!(page(1, 2, false).await, (vec![5, 4], true));
        assert_eq!(page(3, 2, false).await, (vec![1], false));
        assert_eq!(page(2, 3, true).await, (vec![4, 5], false));
        assert_eq!(page(1, 0, false).await, (vec![], false));
        // The default: the newest first.
        let s = status(h, id).await.unwrap();
        assert_eq!(s.results.first().map(|e| e.seq), Some(5));
        // A page out of bounds is refused in words, not sent.
        let bad = StatusQuery {
            page: 0,
            ..StatusQuery::default()
        };
        let e = words(h.status_page(Some(id), bad).await).unwrap_err();
        assert!(e.contains("pages count from 1"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_consumed_code_and_foreign_poll() {
    let owner = node(TestNodeOptions::default()).await;
    let a = node_to(&owner).await;
    let b = node_to(&owner).await;
    let id = publish(&owner.handle, "approval").await;
    knows(&a.handle, id).await;

    // Deny: the worker is told, and a second decision on the same code says "already used".
    let mut rx = start_join(&a.handle, id).await;
    let JoinEvent::Code { user_code, .. } = next(&mut rx).await else {
        panic!()
    };
    decide(&owner.handle, &user_code, false).await.unwrap();
    match next(&mut rx).await {
        JoinEvent::Failed { reason } => assert!(reason.contains("denied"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let again = decide(&owner.handle, &user_code, true).await.unwrap_err();
    assert!(again.contains("already"), "{again}");
    let unknown = decide(&owner.handle, "ZZZZ-ZZZZ", true).await.unwrap_err();
    assert!(unknown.contains("ZZZZ-ZZZZ"), "{unknown}");

    // A raw flow from B: authorize, a poll from A with B's device code is not found, B's own poll
    // is pending, then slow_down for polling too fast.
    let seal = btd_protocol::seal::SealKey::generate(&mut rand::thread_rng()).public();
    let MembershipResponse::Authorization(auth) = raw_membership(
        &b.handle,
        owner.peer_id(),
        MembershipRequest::Authorize {
            program: id,
            seal_key: seal,
        },
    )
    .await
    else {
        panic!()
    };
    let poll = |code: DeviceCode| MembershipRequest::Poll {
        program: id,
        device_code: code,
    };
    let foreign = raw_membership(&a.handle, owner.peer_id(), poll(auth.device_code)).await;
    assert_eq!(foreign, MembershipResponse::Poll(PollStatus::NotFound));
    let first = raw_membership(&b.handle, owner.peer_id(), poll(auth.device_code)).await;
    assert_eq!(
        first,
        MembershipResponse::Poll(PollStatus::AuthorizationPending)
    );
    let fast = raw_membership(&b.handle, owner.peer_id(), poll(auth.device_code)).await;
    assert_eq!(
        fast,
        MembershipResponse::Poll(PollStatus::SlowDown { interval: 10 })
    );

    // Approve B's code: the grant is pushed (no daemon-side join in progress on B, so B refuses
    // the push), and the poll fallback delivers it to B only.
    decide(&owner.handle, &auth.user_code.to_string(), true)
        .await
        .unwrap();
    let granted = wait_for(T, "grant by poll", || async {
        match raw_membership(&b.handle, owner.peer_id(), poll(auth.device_code)).await {
            MembershipResponse::Granted(g) => Some(g),
            _ => None,
        }
    })
    .await;
    let g = granted.unwrap();
    assert_eq!(g.device_code, auth.device_code);
    // The reply carrying it may be lost: a repeat poll of the same peer gets the same sealed grant
    // (until the code's grace period ends); another peer replaying the code gets nothing.
    let again = raw_membership(&b.handle, owner.peer_id(), poll(auth.device_code)).await;
    assert_eq!(again, MembershipResponse::Granted(g.clone()));
    let replay = raw_membership(&a.handle, owner.peer_id(), poll(auth.device_code)).await;
    assert_eq!(replay, MembershipResponse::Poll(PollStatus::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kb_is_gated_and_resubmission_is_idempotent() {
    let owner = node(TestNodeOptions::default()).await;
    let member = node_to(&owner).await;
    let stranger = node_to(&owner).await;
    let id = open_program_joined(&owner.handle, &member.handle).await;

    // A non-member gets "membership required" and no content.
    let fake = KbRequest {
        program: id,
        credential: Credential::from_bytes([7; 32]),
        call: KbCall::Results {
            after_seq: 0,
            limit: 10,
        },
    };
    match raw_kb(&stranger.handle, owner.peer_id(), fake).await {
        KbResponse::Error(e) => assert_eq!(e.code, ErrorCode::MembershipRequired),
        other => panic!("{other:?}"),
    }

    // The member's own credential used from another peer is refused too (bound to the peer id).
    let (_, cred) = member.handle.credential(id).await.unwrap().unwrap();
    let stolen = KbRequest {
        program: id,
        credential: cred.clone(),
        call: KbCall::Champion,
    };
    match raw_kb(&stranger.handle, owner.peer_id(), stolen).await {
        KbResponse::Error(e) => assert_eq!(e.code, ErrorCode::MembershipRequired),
        other => panic!("{other:?}"),
    }

    // Idempotent resubmission: the same signed submission twice gives one entry.
    let sub = Submission {
        program: id,
        nonce: [42; 16],
        value: 3.0,
        rung_id: "cpu".into(),
        outputs: vec![],
        metrics: Default::default(),
        hypothesis: [("lr".to_string(), 2e-3)].into_iter().collect(),
        created_at: owner.handle.now(),
        claim: None,
    };
    let signed = Signed::sign(&member.key, &sub).unwrap();
    let req = KbRequest {
        program: id,
        credential: cred.clone(),
        call: KbCall::Submit(signed),
    };
    let KbResponse::Submitted(first) = raw_kb(&member.handle, owner.peer_id(), req.clone()).await
    else {
        panic!()
    };
    let KbResponse::Submitted(second) = raw_kb(&member.handle, owner.peer_id(), req).await else {
        panic!()
    };
    assert_eq!(first.seq, second.seq);
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(status(&owner.handle, id).await.unwrap().submissions, 1);

    // The champion comes with the signed submission that made it: its hypothesis is where the
    // next workers search.
    assert!(first.champion, "{first:?}");
    let champion = KbRequest {
        program: id,
        credential: cred.clone(),
        call: KbCall::Champion,
    };
    match raw_kb(&member.handle, owner.peer_id(), champion).await {
        KbResponse::Champion(Some(c)) => {
            assert_eq!(c.entry.seq, first.seq);
            let back = c.submission.verify_from(&member.peer_id()).unwrap();
            assert_eq!(back, sub);
        }
        other => panic!("{other:?}"),
    }

    // A submission signed by someone else is refused.
    let forged = Signed::sign(
        &stranger.key,
        &Submission {
            nonce: [1; 16],
            ..sub.clone()
        },
    )
    .unwrap();
    match raw_kb(
        &member.handle,
        owner.peer_id(),
        KbRequest {
            program: id,
            credential: cred.clone(),
            call: KbCall::Submit(forged),
        },
    )
    .await
    {
        KbResponse::Error(e) => assert_eq!(e.code, ErrorCode::Invalid),
        other => panic!("{other:?}"),
    }

    // Revocation takes effect on the next request.
    let member_id = member.peer_id().to_string();
    owner.handle.revoke(id, member_id).await.unwrap();
    match raw_kb(
        &member.handle,
        owner.peer_id(),
        KbRequest {
            program: id,
            credential: cred,
            call: KbCall::Status,
        },
    )
    .await
    {
        KbResponse::Error(e) => assert_eq!(e.code, ErrorCode::Revoked),
        other => panic!("{other:?}"),
    }
    let err = submit(&member.handle, id, 1.0).await.unwrap_err();
    assert!(err.contains("revoked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_through_a_relay_when_the_owner_has_no_direct_address() {
    let relay = node(TestNodeOptions {
        relay_server: true,
        ..Default::default()
    })
    .await;
    let owner = node(TestNodeOptions {
        no_listen: true,
        bootstrap: vec![relay.dial_addr().unwrap()],
        ..Default::default()
    })
    .await;
    // The owner listens only on a relay circuit: wait for it.
    wait_for(T, "relay reservation", || async {
        let info = owner.handle.info().await.ok()?;
        info.listen
            .iter()
            .any(|a| a.contains("p2p-circuit"))
            .then_some(())
    })
    .await
    .unwrap();
    let worker = node_to(&relay).await;
    let id = publish(&owner.handle, "approval").await;
    knows(&worker.handle, id).await;
    join_approved(&owner.handle, &worker.handle, id).await;
    let r = submit(&worker.handle, id, 2.0).await.unwrap();
    assert!(r.accepted);
    assert_eq!(status(&worker.handle, id).await.unwrap().submissions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_crash_and_restart_loses_nothing() {
    let store_dir = tempfile::tempdir().unwrap();
    let db = store_dir.path().join("owner.sqlite");
    let owner = spawn_node(Store::open(&db).unwrap(), TestNodeOptions::default())
        .await
        .unwrap();
    let worker = node_to(&owner).await;
    let id = publish(&owner.handle, "approval").await;
    knows(&worker.handle, id).await;
    join_approved(&owner.handle, &worker.handle, id).await;
    for v in [4.0, 3.0, 3.5] {
        submit(&worker.handle, id, v).await.unwrap();
    }
    let before = status(&owner.handle, id).await.unwrap();
    let addr = owner.addr.clone();
    let key = owner.crash();

    let owner = spawn_node(
        Store::open(&db).unwrap(),
        TestNodeOptions {
            key: Some(key),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let after = status(&owner.handle, id).await.unwrap();
    assert_eq!(after.submissions, before.submissions);
    assert_eq!(after.champion, before.champion);
    assert_eq!(after.payouts, before.payouts);
    assert_eq!(after.members, 1);
    let _ = addr;
    // The worker continues without re-joining (it re-dials the owner by its announced address).
    worker
        .handle
        .dial(owner.dial_addr().unwrap())
        .await
        .unwrap();
    let r = wait_for(T, "submission after restart", || async {
        submit(&worker.handle, id, 2.0).await.ok()
    })
    .await
    .unwrap();
    assert_eq!(r.seq, 4);
    assert!(r.champion);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_compute_needs_the_owners_signed_receipt() {
    use btd_protocol::dispatch::{evaluate_dispatch, Action, DispatchInput};
    use btd_protocol::wire::ApprovalResponse;

    let owner = node(TestNodeOptions::default()).await;
    let worker = node_to(&owner).await;
    let m = manifest("open").replace(
        "[[rungs]]\nid = \"cpu\"",
        "[policy.paid]\nmax_spend_per_packet = 3.0\n[[rungs]]\nid = \"h100\"\nspend_class = \"paid_metered\"\nhardware = \"h100\"\n[[rungs]]\nid = \"cpu\"",
    );
    let id = owner.handle.publish(m.clone()).await.unwrap();
    knows(&worker.handle, id).await;
    let mut rx = start_join(&worker.handle, id).await;
    let _ = next(&mut rx).await;
    assert!(matches!(next(&mut rx).await, JoinEvent::Granted { .. }));

    let program = btd_protocol::program::Program::from_toml(&m).unwrap();
    let packet = program.packet_for_rung("h100").unwrap();
    let ask = || {
        let packet = packet.clone();
        let h = worker.handle.clone();
        async move { h.request_spend(id, packet).await.unwrap() }
    };
    assert_eq!(ask().await, ApprovalResponse::Pending);
    let pending = owner.handle.spend_requests().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, "pending");
    let msg = owner
        .handle
        .decide_spend(
            id,
            worker.peer_id().to_string(),
            packet.id.clone(),
            true,
            10,
        )
        .await
        .unwrap();
    assert!(msg.contains("approved"), "{msg}");
    let ApprovalResponse::Granted(receipt) = ask().await else {
        panic!("expected a receipt")
    };
    // The receipt makes dispatch say run_paid when the owner is the trusted approver.
    let decision = program.decision();
    let owner_id = owner.peer_id().to_base58();
    let r = evaluate_dispatch(&DispatchInput {
        decision: &decision,
        rung: program.rung("h100").unwrap(),
        policy: &program.policy,
        packet: &packet,
        point: None,
        approval: Some(&receipt),
        trusted_approvers: std::slice::from_ref(&owner_id),
        spent_total: 0.0,
        now: owner.handle.now(),
    });
    assert_eq!(r.action, Action::RunPaid, "{}", r.detail);
    // A tampered packet is refused.
    let mut other = packet.clone();
    other.budget.spend_cap = Some(1000.0);
    let h = worker.handle.clone();
    let resp = h.request_spend(id, other).await.unwrap();
    assert!(matches!(resp, ApprovalResponse::Error(_)), "{resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_started_again_takes_its_own_grant_not_the_late_grant_of_the_first() {
    let owner = node(TestNodeOptions::default()).await;
    let worker = node_to(&owner).await;
    let id = publish(&owner.handle, "approval").await;
    knows(&worker.handle, id).await;
    // `btd join`, then `btd join` again before the owner decides (a user who gave up waiting).
    let mut first = start_join(&worker.handle, id).await;
    let JoinEvent::Code { user_code: a, .. } = next(&mut first).await else {
        panic!("no code")
    };
    let mut second = start_join(&worker.handle, id).await;
    let JoinEvent::Code { user_code: b, .. } = next(&mut second).await else {
        panic!("no code")
    };
    assert_ne!(a, b);
    // The owner approves both, the stale code first. Each approval issues the member a new
    // credential and retires the one before: the first grant, pushed to the worker first, is
    // dead by the time the second is issued. The join must wait for its own code's grant.
    decide(&owner.handle, &a, true).await.unwrap();
    decide(&owner.handle, &b, true).await.unwrap();
    assert!(matches!(next(&mut second).await, JoinEvent::Granted { .. }));
    // The credential the worker kept is the one the owner holds.
    let s = status(&worker.handle, id)
        .await
        .expect("the owner knows the worker's credential");
    assert_eq!(s.members, 1);
    submit(&worker.handle, id, 1.0)
        .await
        .expect("a member's result counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_batch_is_bounded_paid_for_and_counts_only_its_honest_results() {
    // The owner's budget: 40 requests at once, 1 per second after that.
    let owner = node(TestNodeOptions {
        params: Some({
            let mut p = btd::testkit::test_params(false);
            p.rate_burst = 40.0;
            p.rate_per_sec = 1.0;
            p
        }),
        ..Default::default()
    })
    .await;
    let member = node_to(&owner).await;
    let id = open_program_joined(&owner.handle, &member.handle).await;
    let (_, cred) = member.handle.credential(id).await.unwrap().unwrap();
    let signed_by = |key: &libp2p::identity::Keypair, n: u8| {
        let sub = Submission {
            program: id,
            nonce: [n; 16],
            value: 3.0 - f64::from(n) * 0.01,
            rung_id: "cpu".into(),
            outputs: vec![],
            metrics: Default::default(),
            hypothesis: Default::default(),
            created_at: owner.handle.now(),
            claim: None,
        };
        Signed::sign(key, &sub).unwrap()
    };
    let batch = |list: Vec<Signed<Submission>>| KbRequest {
        program: id,
        credential: cred.clone(),
        call: KbCall::SubmitBatch(list),
    };
    // Over the bound: refused whole, in words, nothing recorded.
    let too_many: Vec<_> = (0..33).map(|n| signed_by(&member.key, n)).collect();
    match raw_kb(&member.handle, owner.peer_id(), batch(too_many)).await {
        KbResponse::Error(e) => {
            assert_eq!(e.code, ErrorCode::Invalid);
            assert!(e.message.contains("1 to 32"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // A forged result (signed by another key) among honest ones: only it is refused.
    let forger = libp2p::identity::Keypair::generate_ed25519();
    let mixed = vec![
        signed_by(&member.key, 100),
        signed_by(&forger, 101),
        signed_by(&member.key, 102),
    ];
    let KbResponse::SubmittedBatch(out) =
        raw_kb(&member.handle, owner.peer_id(), batch(mixed)).await
    else {
        panic!("no batch answer")
    };
    let counted: Vec<bool> = out
        .iter()
        .map(|o| matches!(o, btd_protocol::wire::SubmitOutcome::Submitted(_)))
        .collect();
    assert_eq!(counted, vec![true, false, true]);
    assert_eq!(status(&owner.handle, id).await.unwrap().submissions, 2);
    // A batch costs one request per result: 33 + 3 of 40 spent, so 32 more are refused whole.
    let next_batch: Vec<_> = (200..232).map(|n| signed_by(&member.key, n)).collect();
    match raw_kb(&member.handle, owner.peer_id(), batch(next_batch)).await {
        KbResponse::Error(e) => assert_eq!(e.code, ErrorCode::RateLimited, "{}", e.message),
        other => panic!("expected the budget to refuse it: {other:?}"),
    }
    assert_eq!(status(&owner.handle, id).await.unwrap().submissions, 2);
}
