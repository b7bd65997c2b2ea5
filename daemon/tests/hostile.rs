//! Hostile peers on real in-process nodes: the test plays the attacker and checks that the honest
//! node keeps serving, with every remote string and number bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use btd::node::types::{JoinEvent, StatusView};
use btd::node::NodeHandle;
use btd::store::Store;
use btd::testkit::{join_approved, spawn_node, wait_known, TestNode, TestNodeOptions};
use btd_protocol::kb::{Check, Verdict, MAX_VERDICT_REASON_BYTES};
use btd_protocol::membership::{DeviceAuthorization, DeviceCode, UserCode};
use btd_protocol::program::ProgramId;
use btd_protocol::signed::Signed;
use btd_protocol::trace::Output;
use btd_protocol::wire::{
    Claim, KbCall, KbRequest, KbResponse, MembershipResponse, PollStatus, Submission,
    MAX_RESULTS_PAGE,
};
use btd_protocol::Digest;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(20);

/// A program whose claims wait for the owner's check (a candle task re-evaluates them).
fn checked_program() -> String {
    btd::testkit::candle_manifest(
        "hostile-test",
        "claims wait for the owner's check",
        &format!(
            "steps = 10\nseed = 3\neval_tokens = 2048\n{}",
            btd::testkit::SYNTHETIC_16K
        ),
        "",
    )
}

/// A program that needs no files on the owner.
fn shell_program(name: &str) -> String {
    btd::testkit::shell_manifest(name, "approval")
}

/// `owner` publishes the shell program.
async fn publish_shell(owner: &TestNode) -> ProgramId {
    owner
        .handle
        .publish(shell_program("hostile-owner-test"))
        .await
        .unwrap()
}

/// After an attack: an honest newcomer still learns the program, gets a code and is approved in.
async fn an_honest_worker_joins(owner: &TestNode, program: ProgramId) {
    let worker = node(Some(owner)).await;
    wait_known(&worker.handle, program, T).await.unwrap();
    join_approved(&owner.handle, &worker.handle, program, T)
        .await
        .unwrap();
}

async fn node(bootstrap: Option<&TestNode>) -> TestNode {
    node_with(bootstrap, TestNodeOptions::default()).await
}

async fn node_with(bootstrap: Option<&TestNode>, opts: TestNodeOptions) -> TestNode {
    spawn_node(
        Store::open_in_memory().unwrap(),
        TestNodeOptions {
            bootstrap: bootstrap
                .map(|b| b.dial_addr().unwrap())
                .into_iter()
                .collect(),
            ..opts
        },
    )
    .await
    .unwrap()
}

async fn next_event(rx: &mut mpsc::Receiver<JoinEvent>) -> JoinEvent {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("a join event in time")
        .expect("the join stream stays open")
}

/// What a huge remote error message looks like once it became a verdict reason: a member that
/// serves its checkpoint with an error of (nearly) a whole message, with terminal escapes in it.
fn poisoned_reason() -> String {
    let mut why = "cannot fetch the checkpoint: \x1b[2J\x1b[31mowned\n".to_string();
    why.push_str(&"A".repeat(1_000_000));
    why
}

fn bounded(why: &str) -> bool {
    why.len() <= MAX_VERDICT_REASON_BYTES && !why.chars().any(char::is_control)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_verdict_reason_is_bounded_and_status_pages_still_fit() {
    // The owner runs no verifier: the test plays it, applying the verdict the verifier makes of a
    // hostile member's fetch error (the error message quoted in the reason).
    let home = tempfile::tempdir().unwrap();
    let owner = node_with(
        None,
        TestNodeOptions {
            home: Some(home.path().to_path_buf()),
            no_verifier: true,
            ..Default::default()
        },
    )
    .await;
    let member = node(Some(&owner)).await;
    let program = owner.handle.publish(checked_program()).await.unwrap();
    wait_known(&member.handle, program, T).await.unwrap();
    join_approved(&owner.handle, &member.handle, program, T)
        .await
        .unwrap();
    let (_, credential) = member.handle.credential(program).await.unwrap().unwrap();

    let checkpoint = Digest::of(b"a checkpoint the member will not serve");
    let sub = Submission {
        program,
        nonce: [9; 16],
        value: 1.0,
        rung_id: "cpu".into(),
        outputs: vec![Output {
            name: "checkpoint.safetensors".into(),
            sha256: checkpoint,
        }],
        metrics: Default::default(),
        hypothesis: Default::default(),
        created_at: owner.handle.now(),
        claim: Some(Claim {
            checkpoint,
            checkpoint_bytes: 1024,
            seed: 3,
            steps: 10,
            device: "cpu: test".into(),
            btd_version: "0.1.0".into(),
        }),
    };
    let call = KbCall::Submit(Signed::sign(&member.key, &sub).unwrap());
    let req = |call| KbRequest {
        program,
        credential: credential.clone(),
        call,
    };
    let receipt = match member
        .handle
        .raw_kb(owner.peer_id(), req(call))
        .await
        .unwrap()
    {
        KbResponse::Submitted(r) => r,
        other => panic!("expected a receipt, got {other:?}"),
    };
    assert_eq!(receipt.check, Check::Pending);

    let entry = owner
        .handle
        .resolve(program, receipt.seq, Verdict::Failed(poisoned_reason()))
        .await
        .unwrap();
    let Check::Failed(stored) = &entry.check else {
        panic!("expected a rejection, got {:?}", entry.check)
    };
    assert!(bounded(stored), "stored reason of {} bytes", stored.len());
    assert!(stored.starts_with("cannot fetch the checkpoint:"));

    // A full results page and the member's status still travel, with the bounded reason.
    let page = KbCall::Results {
        after_seq: 0,
        limit: MAX_RESULTS_PAGE,
    };
    match member
        .handle
        .raw_kb(owner.peer_id(), req(page))
        .await
        .unwrap()
    {
        KbResponse::Results { entries, .. } => {
            let Check::Failed(why) = &entries[0].check else {
                panic!("{:?}", entries[0].check)
            };
            assert!(bounded(why));
        }
        other => panic!("expected a results page, got {other:?}"),
    }
    let rejected = |s: &StatusView| {
        s.results
            .iter()
            .any(|e| matches!(&e.check, Check::Failed(why) if bounded(why)))
    };
    let seen_by_member = member.handle.status(Some(program)).await.unwrap();
    assert!(rejected(&seen_by_member), "{seen_by_member:?}");
    let seen_by_owner = owner.handle.status(Some(program)).await.unwrap();
    assert!(rejected(&seen_by_owner), "{seen_by_owner:?}");
}

/// Starts a join of `worker` to `program` and waits for the honest owner's code.
async fn join_until_code(worker: &NodeHandle, program: ProgramId) -> mpsc::Receiver<JoinEvent> {
    let mut rx = worker.join(program).await.unwrap();
    match next_event(&mut rx).await {
        JoinEvent::Code { .. } => rx,
        other => panic!("expected a code, got {other:?}"),
    }
}

fn hostile_authorization(expires_in: u64, interval: u64) -> MembershipResponse {
    MembershipResponse::Authorization(DeviceAuthorization {
        device_code: DeviceCode([7; 32]),
        user_code: "ABCD-EFGH".parse::<UserCode>().unwrap(),
        expires_in,
        interval,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_owners_huge_numbers_fail_the_join_in_words_and_the_worker_keeps_serving() {
    let owner = node(None).await;
    let worker = node(Some(&owner)).await;
    let program = publish_shell(&owner).await;
    wait_known(&worker.handle, program, T).await.unwrap();
    let from = owner.peer_id();

    // An authorization whose code "lives" u64::MAX seconds, polled every u64::MAX seconds.
    let mut rx = join_until_code(&worker.handle, program).await;
    worker
        .handle
        .inject_membership_answer(
            from,
            program,
            false,
            hostile_authorization(u64::MAX, u64::MAX),
        )
        .await
        .unwrap();
    match next_event(&mut rx).await {
        JoinEvent::Failed { reason } => {
            assert!(reason.contains("broken or hostile"), "{reason}")
        }
        other => panic!("expected the join to fail, got {other:?}"),
    }
    worker.handle.info().await.unwrap();

    // A sane lifetime with an absurd interval is cut to the bound; the join goes on.
    let _rx = join_until_code(&worker.handle, program).await;
    worker
        .handle
        .inject_membership_answer(from, program, false, hostile_authorization(60, u64::MAX))
        .await
        .unwrap();
    worker.handle.info().await.unwrap();

    // `slow_down` to u64::MAX seconds: the worker slows to its bound and keeps serving; the
    // pushed grant still completes the join.
    let worker2 = node(Some(&owner)).await;
    wait_known(&worker2.handle, program, T).await.unwrap();
    let mut rx = worker2.handle.join(program).await.unwrap();
    let JoinEvent::Code { user_code, .. } = next_event(&mut rx).await else {
        panic!("expected a code")
    };
    worker2
        .handle
        .inject_membership_answer(
            from,
            program,
            true,
            MembershipResponse::Poll(PollStatus::SlowDown { interval: u64::MAX }),
        )
        .await
        .unwrap();
    worker2.handle.info().await.unwrap();
    owner.handle.approve(user_code).await.unwrap();
    match next_event(&mut rx).await {
        JoinEvent::Granted { .. } => {}
        other => panic!("expected the grant, got {other:?}"),
    }
    worker2.handle.info().await.unwrap();
}

/// An owner whose store is on disk at `db` (so it can restart), its shell program, and a worker
/// that knows the program.
async fn owner_on_disk_and_worker(db: &std::path::Path) -> (TestNode, TestNode, ProgramId) {
    let owner = spawn_node(Store::open(db).unwrap(), TestNodeOptions::default())
        .await
        .unwrap();
    let worker = node(Some(&owner)).await;
    let program = publish_shell(&owner).await;
    wait_known(&worker.handle, program, T).await.unwrap();
    (owner, worker, program)
}

/// The owner of [`owner_on_disk_and_worker`] started again with its key (at a new address).
async fn restart_owner(db: &std::path::Path, key: libp2p::identity::Keypair) -> TestNode {
    spawn_node(
        Store::open(db).unwrap(),
        TestNodeOptions {
            key: Some(key),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Hostile peers item 9: a join request waiting for the owner's decision used to be lost when the
/// owner restarted (the worker's code answered "not found" and `btd approve` "no join request has
/// the code"). The undecided code is stored before the worker sees it: after a crash and restart
/// the owner still lists it, approves it, and the grant reaches the worker that asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_code_waiting_for_the_owner_survives_an_owner_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("owner.sqlite");
    let (owner, worker, program) = owner_on_disk_and_worker(&db).await;
    let mut rx = worker.handle.join(program).await.unwrap();
    let JoinEvent::Code { user_code, .. } = next_event(&mut rx).await else {
        panic!("expected a code")
    };

    let key = owner.crash();
    let owner = restart_owner(&db, key).await;
    let listed = owner.handle.members(program).await.unwrap();
    assert!(
        listed.pending.iter().any(|p| p.user_code == user_code),
        "the code waits for the owner after the restart: {listed:?}"
    );
    worker
        .handle
        .dial(owner.dial_addr().unwrap())
        .await
        .unwrap();
    owner.handle.approve(user_code).await.unwrap();
    match next_event(&mut rx).await {
        JoinEvent::Granted { .. } => {}
        other => panic!("expected the grant, got {other:?}"),
    }
    let members = owner.handle.members(program).await.unwrap();
    assert_eq!(members.members.len(), 1);
    assert!(members.pending.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_asks_again_while_the_owner_is_briefly_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("owner.sqlite");
    let (owner, worker, program) = owner_on_disk_and_worker(&db).await;
    // The owner is gone when the worker asks (a dial to a dead memory address fails at once).
    let key = owner.crash();
    let mut rx = worker.handle.join(program).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(700), rx.recv()).await;
    assert!(
        early.is_err(),
        "the join gave up on the first failure: {early:?}"
    );
    // The owner comes back (same key, new address) before the join's attempts run out.
    let owner = restart_owner(&db, key).await;
    worker
        .handle
        .dial(owner.dial_addr().unwrap())
        .await
        .unwrap();
    let JoinEvent::Code { user_code, .. } = next_event(&mut rx).await else {
        panic!("expected a code once the owner is back")
    };
    owner.handle.approve(user_code).await.unwrap();
    match next_event(&mut rx).await {
        JoinEvent::Granted { .. } => {}
        other => panic!("expected the grant, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The hostile-peer harness (`btd::testkit::hostile`): a client of its own that sends anything.

use btd::net::{Topic, TransportKind};
use btd::testkit::hostile::{malformed_frames, sign_as, Hostile, Proto, RawPeer};
use btd::testkit::wait_for;
use btd_protocol::membership::{Credential, MAX_PENDING_PER_PEER, MAX_PENDING_TOTAL};
use btd_protocol::wire::{MembershipRequest, ProgramAnnouncement, MAX_MESSAGE_BYTES};
use libp2p::identity::Keypair;

fn raw_peer() -> RawPeer {
    RawPeer::spawn(
        Keypair::generate_ed25519(),
        &TransportKind::Memory,
        Duration::from_secs(5),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_on_every_protocol_are_dropped_and_the_owner_keeps_serving() {
    let owner = node(None).await;
    let program = publish_shell(&owner).await;
    let raw = raw_peer();
    let (to, addr) = (owner.peer_id(), owner.dial_addr());
    let valid = btd_protocol::wire::encode(&KbRequest {
        program,
        credential: Credential::from_bytes([1; 32]),
        call: KbCall::Status,
    })
    .unwrap();
    let attacks = malformed_frames(&valid);
    for proto in Proto::ALL {
        for (what, bytes) in &attacks {
            let got = raw.send_frame(to, addr.clone(), proto, bytes.clone()).await;
            assert!(
                got.is_err(),
                "{proto:?}, {what}: the owner answered {got:?}"
            );
        }
    }
    // The same peer, well-formed: an answer (a refusal for a made-up credential), so the refusals
    // above were the decoder's, and the owner still serves.
    let answer: KbResponse = raw
        .request(
            to,
            addr.clone(),
            Proto::Kb,
            &KbRequest {
                program,
                credential: Credential::from_bytes([1; 32]),
                call: KbCall::Status,
            },
        )
        .await
        .unwrap();
    assert!(matches!(answer, KbResponse::Error(_)), "{answer:?}");
    an_honest_worker_joins(&owner, program).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_flood_from_throwaway_identities_does_not_lock_out_an_honest_joiner() {
    let owner = node(None).await;
    let program = publish_shell(&owner).await;
    let (to, addr) = (owner.peer_id(), owner.dial_addr());
    // Enough throwaway identities, each asking its most, to fill the global table and then some.
    let identities = MAX_PENDING_TOTAL / MAX_PENDING_PER_PEER + 8;
    let asks = (0..identities).map(|_| {
        let addr = addr.clone();
        async move {
            let key = Keypair::generate_ed25519();
            let raw = RawPeer::spawn(key.clone(), &TransportKind::Memory, T).unwrap();
            let mut codes = 0;
            for _ in 0..MAX_PENDING_PER_PEER + 2 {
                match raw.ask_to_join(&key, to, addr.clone(), program).await {
                    Ok(MembershipResponse::Authorization(_)) => codes += 1,
                    Ok(_) => {}
                    Err(e) => panic!("the owner stopped answering the flood: {e}"),
                }
            }
            codes
        }
    });
    let issued: usize = futures::future::join_all(asks).await.into_iter().sum();
    assert!(
        issued >= MAX_PENDING_TOTAL,
        "the flood got only {issued} codes: it never filled the table"
    );
    let pending = owner.handle.members(program).await.unwrap().pending.len();
    assert!(pending <= MAX_PENDING_TOTAL, "{pending} pending codes");
    // An honest newcomer still gets a code, and the owner's approval lets it in.
    an_honest_worker_joins(&owner, program).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_garbage_and_forged_announcements_are_dropped_and_discovery_goes_on() {
    let owner = node(None).await;
    let observer = node(Some(&owner)).await;
    let hostile = Hostile::new(node(Some(&owner)).await, &TransportKind::Memory).unwrap();
    let h = &hostile.node.handle;
    // Gossip needs a subscribed peer first.
    wait_for(T, "a gossip peer", || async {
        h.raw_gossip(Topic::Rungs, b"hello".to_vec()).await.ok()
    })
    .await
    .unwrap();
    for topic in [Topic::Programs, Topic::Rungs] {
        for bytes in [vec![], vec![0xfd; 64], vec![0; MAX_MESSAGE_BYTES / 2]] {
            let _ = h.raw_gossip(topic, bytes).await;
        }
    }
    // Validly signed by a key that is not the gossip author: someone else's "program".
    let stranger = Keypair::generate_ed25519();
    let forged = sign_as(
        &stranger,
        &ProgramAnnouncement {
            manifest: shell_program("forged"),
            addresses: Vec::new(),
            published_at: h.now(),
        },
    )
    .unwrap();
    h.raw_gossip(
        Topic::Programs,
        btd_protocol::wire::encode(&forged).unwrap(),
    )
    .await
    .unwrap();
    let forged_id = btd_protocol::wire::verify_announcement(&forged, h.now())
        .unwrap()
        .id;
    // Its own programs, validly signed, with a broken manifest among them.
    let sent = hostile
        .flood_announcements(20, |i| {
            if i == 0 {
                "name = 1".into()
            } else {
                shell_program(&format!("flood-{i}"))
            }
        })
        .await;
    assert_eq!(sent, 20);
    // The honest owner's next program still reaches the observer, who joins it.
    let program = owner
        .handle
        .publish(shell_program("published-after-the-attack"))
        .await
        .unwrap();
    wait_known(&observer.handle, program, T).await.unwrap();
    join_approved(&owner.handle, &observer.handle, program, T)
        .await
        .unwrap();
    let known = observer.handle.programs().await.unwrap();
    assert!(
        !known.iter().any(|p| p.id == forged_id),
        "a forged program was accepted"
    );
    assert!(
        !known.iter().any(|p| p.name == "1"),
        "a broken manifest was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_membership_request_from_a_raw_peer_gets_a_code() {
    // The harness itself: a bare peer speaking btd's protocol gets the same answers a node would
    // (the refusals in the tests above are the defences', not the harness's).
    let owner = node(None).await;
    let program = publish_shell(&owner).await;
    let key = Keypair::generate_ed25519();
    let raw = RawPeer::spawn(key.clone(), &TransportKind::Memory, T).unwrap();
    let got = raw
        .ask_to_join(&key, owner.peer_id(), owner.dial_addr(), program)
        .await
        .unwrap();
    assert!(
        matches!(got, MembershipResponse::Authorization(_)),
        "{got:?}"
    );
    let poll: MembershipResponse = raw
        .request(
            owner.peer_id(),
            None,
            Proto::Membership,
            &MembershipRequest::Poll {
                program,
                device_code: DeviceCode([0; 32]),
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        poll,
        MembershipResponse::Poll(_) | MembershipResponse::Error(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_throwaway_identities_stays_within_a_workers_bound() {
    const BOUND: usize = 8;
    let owner = node(None).await;
    let program = publish_shell(&owner).await;
    let params = btd::net::NetParams {
        max_peers: BOUND,
        ..btd::testkit::test_params(false)
    };
    let worker = node_with(
        Some(&owner),
        TestNodeOptions {
            params: Some(params),
            ..Default::default()
        },
    )
    .await;
    wait_known(&worker.handle, program, T).await.unwrap();
    join_approved(&owner.handle, &worker.handle, program, T)
        .await
        .unwrap();
    // Five times the bound of throwaway identities, each connecting and asking the worker
    // something; each keeps its connection open (the raw peer lives until the end).
    let (to, addr) = (worker.peer_id(), worker.dial_addr());
    let flood = (0..5 * BOUND).map(|_| {
        let addr = addr.clone();
        async move {
            let raw = raw_peer();
            let request = KbRequest {
                program,
                credential: Credential::from_bytes([7; 32]),
                call: KbCall::Status,
            };
            let got = raw
                .request::<KbRequest, KbResponse>(to, addr, Proto::Kb, &request)
                .await;
            (raw, got.is_ok())
        }
    });
    let held = futures::future::join_all(flood).await;
    let answered = held.iter().filter(|(_, ok)| *ok).count();
    assert!(
        answered < BOUND,
        "{answered} throwaway identities got in; the bound is {BOUND} with the owner connected"
    );
    assert!(answered > 0, "nobody got in: the flood proves nothing");
    let peers = worker.handle.peers().await.unwrap();
    assert!(
        peers.len() <= BOUND,
        "the worker holds {} peers (bound {BOUND})",
        peers.len()
    );
    // The worker still works with its owner, which stays connected whatever the count.
    assert!(peers
        .iter()
        .any(|p| p.peer_id == owner.peer_id().to_string()));
    let status = worker.handle.status(Some(program)).await.unwrap();
    assert_eq!(status.program, program);
    drop(held);
}
