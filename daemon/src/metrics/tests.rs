//! `/metrics` on real in-process nodes: they do real work (publish, join, submit, the owner's
//! verifier fetches and checks a claim, a peer floods requests, a worker loop runs rounds), then the
//! scrape is parsed by a Prometheus text-format parser (`prometheus-parse`) and the numbers are
//! checked against what happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use btd_protocol::kb::Check;
use btd_protocol::membership::Credential;
use btd_protocol::program::ProgramId;
use btd_protocol::signed::Signed;
use btd_protocol::trace::Output;
use btd_protocol::wire::{Claim, ErrorCode, KbCall, KbRequest, KbResponse, Submission};
use libp2p::identity::Keypair;
use prometheus_parse::{Scrape, Value};

use super::scrape;
use crate::store::Store;
use crate::testkit::{
    candle_manifest, join_approved, owner_and_member, score_manifest, spawn_node, wait_for,
    wait_known, TestNode, TestNodeOptions, LOCAL_CPU_RUNG, SYNTHETIC_16K,
};

const T: Duration = Duration::from_secs(30);

/// A candle program: an accepted claim waits for the owner's check (it fetches the checkpoint).
fn checked() -> String {
    candle_manifest(
        "metrics-test",
        "claims wait for the owner's check",
        &format!("steps = 10\nseed = 3\neval_tokens = 2048\n{SYNTHETIC_16K}"),
        "",
    )
}

/// The scrape of `node`, checked for the OpenMetrics end marker, and parsed.
async fn scraped(node: &TestNode) -> (String, Parsed) {
    let text = scrape(&node.metrics, &node.handle).await;
    assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    (text, Parsed(parsed))
}

struct Parsed(Scrape);

impl Parsed {
    /// The sum of the samples named `name` whose labels include `labels` (`None`: no such sample).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in self.0.samples.iter().filter(|s| s.metric == name) {
            if labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)) {
                let v = match &s.value {
                    Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                    other => panic!("{name} is not a number: {other:?}"),
                };
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    }

    /// Every label value of the btd samples, by label name.
    fn btd_labels(&self) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for s in self
            .0
            .samples
            .iter()
            .filter(|s| s.metric.starts_with("btd_"))
        {
            for (k, v) in s.labels.iter() {
                out.entry(k.clone()).or_default().push(v.clone());
            }
        }
        out
    }
}

async fn node(home: Option<&std::path::Path>, bootstrap: Option<&TestNode>) -> TestNode {
    spawn_node(
        Store::open_in_memory().unwrap(),
        TestNodeOptions {
            home: home.map(std::path::Path::to_path_buf),
            bootstrap: bootstrap
                .and_then(TestNode::dial_addr)
                .into_iter()
                .collect(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn submission(program: ProgramId, nonce: u8, value: f64, checkpoint: Claim) -> Submission {
    Submission {
        program,
        nonce: [nonce; 16],
        value,
        rung_id: "cpu".into(),
        outputs: vec![Output {
            name: "checkpoint.safetensors".into(),
            sha256: checkpoint.checkpoint,
        }],
        metrics: Default::default(),
        hypothesis: Default::default(),
        created_at: crate::clock::system_now(),
        claim: Some(checkpoint),
    }
}

async fn submit(
    from: &TestNode,
    key: &Keypair,
    owner: &TestNode,
    credential: &Credential,
    sub: &Submission,
) -> KbResponse {
    let call = KbCall::Submit(Signed::sign(key, sub).unwrap());
    let req = KbRequest {
        program: sub.program,
        credential: credential.clone(),
        call,
    };
    from.handle.raw_kb(owner.peer_id(), req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_scrape_counts_submissions_claims_artifacts_refusals_and_libp2p() {
    let owner_home = tempfile::tempdir().unwrap();
    let member_home = tempfile::tempdir().unwrap();
    let owner = node(Some(owner_home.path()), None).await;
    let member = node(Some(member_home.path()), Some(&owner)).await;
    let stranger = node(None, Some(&owner)).await;
    let program = owner.handle.publish(checked()).await.unwrap();
    wait_known(&member.handle, program, T).await.unwrap();
    join_approved(&owner.handle, &member.handle, program, T)
        .await
        .unwrap();
    let (_, credential) = member.handle.credential(program).await.unwrap().unwrap();

    // The member keeps a 4000-byte "checkpoint" for the owner to fetch (not a real one: the
    // owner's check fetches it, then rejects it).
    let ckpt = member_home.path().join("claimed.bin");
    let bytes: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&ckpt, &bytes).unwrap();
    let blobs = crate::blobs::BlobStore::new(member_home.path().join("blobs"));
    let (digest, size) = blobs.add_file(&program, &ckpt, None).unwrap();
    let claim = Claim {
        checkpoint: digest,
        checkpoint_bytes: size,
        seed: 3,
        steps: 10,
        device: "cpu: test".into(),
        btd_version: crate::verify::VERSION.into(),
    };

    // One that beats the baseline (pending: its claim waits for the check), its retry (a
    // duplicate), a worse one (rejected), a stranger's (refused: not a member).
    let good = submission(program, 1, 1.0, claim.clone());
    let bad = submission(program, 2, 9.0, claim.clone());
    let mk = &member.key;
    let first = submit(&member, mk, &owner, &credential, &good).await;
    let KbResponse::Submitted(first) = first else {
        panic!("{first:?}")
    };
    assert!(
        !first.duplicate && first.check == Check::Pending,
        "{first:?}"
    );
    let again = submit(&member, mk, &owner, &credential, &good).await;
    assert!(matches!(again, KbResponse::Submitted(r) if r.duplicate));
    let worse = submit(&member, mk, &owner, &credential, &bad).await;
    assert!(matches!(worse, KbResponse::Submitted(r) if !r.accepted && !r.duplicate));
    let fake = Credential::from_bytes([7; 32]);
    let theirs = submit(&stranger, &stranger.key, &owner, &fake, &bad).await;
    assert!(matches!(theirs, KbResponse::Error(_)), "{theirs:?}");

    // The owner's verifier fetches the claimed bytes from the member and rejects the claim.
    wait_for(T, "the owner's check", || async {
        let s = owner.handle.status(Some(program)).await.ok()?;
        (s.pending == 0 && s.rejected == 1).then_some(())
    })
    .await
    .unwrap();

    // A stranger floods the owner with KB requests: beyond its budget they are refused.
    let read = KbRequest {
        program,
        credential: fake,
        call: KbCall::Champion,
    };
    let flood = (0..120).map(|_| stranger.handle.raw_kb(owner.peer_id(), read.clone()));
    let limited = futures::future::join_all(flood)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(KbResponse::Error(e)) if e.code == ErrorCode::RateLimited))
        .count();
    assert!(limited > 0, "no request of the flood was rate limited");

    let (text, m) = scraped(&owner).await;
    let verdict = |v: &str| m.value("btd_submissions_total", &[("verdict", v)]);
    assert_eq!(
        m.get("btd_submissions_total", &[("verdict", "accepted")]),
        None
    );
    assert_eq!(verdict("pending"), 1.0);
    assert_eq!(verdict("duplicate"), 1.0);
    assert_eq!(verdict("rejected"), 1.0);
    assert_eq!(verdict("refused"), 1.0);
    let id = program.to_string();
    assert_eq!(m.value("btd_programs_owned", &[]), 1.0);
    assert_eq!(m.value("btd_programs_joined", &[]), 0.0);
    assert!(m.value("btd_programs_known", &[]) >= 1.0);
    assert_eq!(m.value("btd_program_members", &[("program", &id)]), 1.0);
    let claims = |state: &str| m.value("btd_claims", &[("program", &id), ("state", state)]);
    assert_eq!(
        (claims("pending"), claims("verified"), claims("rejected")),
        (0.0, 0.0, 1.0)
    );
    assert_eq!(m.value("btd_verifier_queue", &[]), 0.0);
    assert_eq!(m.value("btd_verifier_check_seconds_count", &[]), 1.0);
    assert_eq!(m.value("btd_blob_fetched_bytes_total", &[]), 4000.0);
    assert_eq!(m.value("btd_blob_served_bytes_total", &[]), 0.0);
    let refused = &[("limit", "requests"), ("protocol", "kb")];
    assert_eq!(m.value("btd_rate_limited_total", refused), limited as f64);
    assert!(m.value("btd_store_commit_seconds_count", &[]) > 0.0);

    // libp2p's own metrics, from the same registry.
    assert!(m.value("libp2p_swarm_connections_established_total", &[]) >= 2.0);
    assert!(m.value("libp2p_bandwidth_bytes_total", &[("direction", "Inbound")]) > 4000.0);
    assert!(m.value("libp2p_identify_received_total", &[]) >= 2.0);
    // (Families with no sample yet are left out: this node relays nothing, so no relay family.)
    for family in ["libp2p_gossipsub_", "libp2p_kad_", "libp2p_ping_"] {
        assert!(text.contains(&format!("# TYPE {family}")), "no {family}*");
    }
    // Every btd family is documented (HELP), and label values are bounded: the owned program's
    // id and fixed words, never text or ids from peers.
    for name in [
        "btd_submissions",
        "btd_claims",
        "btd_verifier_check_seconds",
    ] {
        assert!(m.0.docs.contains_key(name), "no HELP for {name}");
    }
    let words = [
        "accepted",
        "rejected",
        "duplicate",
        "refused",
        "pending",
        "verified",
        "requests",
        "artifacts",
        "kb",
        "membership",
        "approval",
        "blob",
        "dht_record",
    ];
    for (label, values) in m.btd_labels() {
        for v in values {
            let ok = match label.as_str() {
                "program" => v == id,
                "le" => v.parse::<f64>().is_ok() || v == "+Inf",
                _ => words.contains(&v.as_str()),
            };
            assert!(ok, "unbounded label {label}={v}");
        }
    }
    for peer in [member.peer_id(), stranger.peer_id()] {
        assert!(!text.contains(&peer.to_string()), "a peer id in the scrape");
    }

    // The member served the bytes the owner fetched.
    let (_, mm) = scraped(&member).await;
    assert_eq!(mm.value("btd_blob_served_bytes_total", &[]), 4000.0);
    assert_eq!(mm.value("btd_programs_joined", &[]), 1.0);
    assert_eq!(
        mm.get("btd_claims", &[]),
        None,
        "the member owns no program"
    );
    for n in [owner, member, stranger] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_rounds_and_their_throughput_are_counted() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let manifest = score_manifest(
        "metrics-rounds",
        r#""echo \"score: $BTD_PARAM_X\"; echo \"tokens_per_sec: 1234.5\"""#,
        20,
        LOCAL_CPU_RUNG,
    );
    let p = owner_and_member(
        dirs[0].path(),
        Store::open_in_memory().unwrap(),
        dirs[1].path(),
        &manifest,
        T,
    )
    .await
    .unwrap();
    let opts = crate::work::WorkOptions {
        rounds: 2,
        allow_shell: true,
        ..Default::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(crate::work::run_rounds(p.work.clone(), p.program, opts, tx));
    while rx.recv().await.is_some() {}
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.submitted, 2, "{summary:?}");

    let (_, w) = scraped(&p.worker).await;
    let outcome = |o: &str| w.get("btd_worker_rounds_total", &[("outcome", o)]);
    assert_eq!(outcome("submitted"), Some(2.0));
    assert_eq!(outcome("failed"), None);
    let id = p.program.to_string();
    let tps = w.value("btd_worker_tokens_per_second", &[("program", &id)]);
    assert_eq!(tps, 1234.5);
    // The owner received both: every submission has a verdict.
    let (_, o) = scraped(&p.owner).await;
    let received: f64 = ["accepted", "rejected"]
        .iter()
        .map(|v| {
            o.get("btd_submissions_total", &[("verdict", v)])
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(received, 2.0);
    assert_eq!(o.value("btd_program_members", &[("program", &id)]), 1.0);
    p.owner.stop().await;
    p.worker.stop().await;
}
