//! Throughput of btd's core rules. `cargo bench -p btd-protocol` prints one line per operation
//! (about `BTD_BENCH_MS`, default 1000 ms, each). No timing assertions: numbers go to
//! docs/benchmarks.md.
//!
//! Under `cargo test` (no `--bench` argument) it runs its quick mode: every operation for about
//! 1 ms, checking that each ran and gave what it should (a decoded message, an opened seal, a
//! verified credential...), never how fast.
#![allow(clippy::expect_used)] // a benchmark with broken fixtures should stop at once

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use btd_protocol::dispatch::{evaluate_dispatch, DispatchInput};
use btd_protocol::kb::{AcceptRule, Amount, Direction, Kb, Rules, Split};
use btd_protocol::membership::{Credential, MembershipMode, Registry};
use btd_protocol::program::{Program, ProgramId};
use btd_protocol::seal::{self, SealKey};
use btd_protocol::signed::Signed;
use btd_protocol::trace::Output;
use btd_protocol::wire::{decode, encode, KbCall, KbRequest, Submission};
use btd_protocol::{Digest, Timestamp};
use libp2p_identity::Keypair;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EXAMPLE: &str = include_str!("../../examples/program.toml");

/// Runs `f` repeatedly for about `budget` (at least once after 3 warm-up runs) and returns
/// (iterations, ns per iteration).
fn measure(budget: Duration, mut f: impl FnMut()) -> (u64, f64) {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        f();
        n += 1;
        if start.elapsed() >= budget {
            break;
        }
    }
    (n, start.elapsed().as_nanos() as f64 / n as f64)
}

fn report(name: &str, (n, ns): (u64, f64)) {
    assert!(n > 0, "{name}: no iteration");
    assert!(ns.is_finite() && ns >= 0.0, "{name}: {ns} ns/op");
    let per_s = 1e9 / ns;
    println!("{name:<44} {ns:>12.0} ns/op {per_s:>14.0} op/s  ({n} iterations)");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` runs the quick mode.
    let full = std::env::args().any(|a| a == "--bench");
    let budget = Duration::from_millis(if full {
        std::env::var("BTD_BENCH_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000)
    } else {
        1
    });
    let mut rng = StdRng::seed_from_u64(1);
    let kp = Keypair::ed25519_from_bytes([1u8; 32]).expect("key");

    report(
        "program: parse + validate example manifest",
        measure(budget, || {
            black_box(Program::from_toml(black_box(EXAMPLE)).ok());
        }),
    );
    let program = Program::from_toml(EXAMPLE).expect("example is valid");
    assert_eq!(
        ProgramId::compute(&program, &kp.public()),
        ProgramId::compute(&program, &kp.public()),
        "a program's id is deterministic"
    );
    report(
        "program: id (canonical encoding + SHA-256)",
        measure(budget, || {
            black_box(ProgramId::compute(black_box(&program), &kp.public()));
        }),
    );

    let rules = Rules {
        direction: Direction::Minimize,
        accept: AcceptRule::BeatsChampion,
        baseline: Some(4.0),
        pool: Amount(100_000_000),
        split: Split::ByImpact,
        min_improvement: btd_protocol::kb::MinImprovement::NONE,
    };
    let workers: Vec<String> = (0..1000).map(|i| format!("worker-{i:04}")).collect();
    let values: Vec<f64> = (0..100_000)
        .map(|i| 4.0 - (i as f64) * 1e-5 + rng.gen_range(-0.01..0.01))
        .collect();
    report("kb: submit (100k log, 1000 workers) per submit", {
        let (n, ns) = measure(budget, || {
            let mut kb = Kb::new(rules.clone()).expect("rules");
            for (i, v) in values.iter().enumerate() {
                let _ = kb.submit(&workers[i % workers.len()], *v);
            }
            black_box(kb.next_seq());
        });
        (n * values.len() as u64, ns / values.len() as f64)
    });
    let mut kb = Kb::new(rules.clone()).expect("rules");
    for (i, v) in values.iter().enumerate() {
        kb.submit(&workers[i % workers.len()], *v)
            .expect("a valid submission");
    }
    assert_eq!(kb.entries().len(), values.len(), "every submission logged");
    assert!(
        kb.entries().iter().any(|e| e.accepted),
        "the KEEP rule accepted none of a mostly improving series"
    );
    assert!(!kb.payouts().is_empty(), "no payouts");
    report(
        "kb: payouts over 100k entries, 1000 workers",
        measure(budget, || {
            black_box(kb.payouts());
        }),
    );

    let submission = Submission {
        program: ProgramId(Digest([1; 32])),
        nonce: [2; 16],
        value: 2.84,
        rung_id: "cpu".into(),
        outputs: vec![
            Output::of("checkpoint.safetensors", b"x"),
            Output::of("metrics.json", b"{}"),
        ],
        metrics: BTreeMap::from([("tokens_per_s".to_string(), 50_000.0)]),
        hypothesis: BTreeMap::from([("lr".to_string(), 3e-3), ("warmup_frac".to_string(), 0.05)]),
        created_at: Timestamp(1),
        claim: None,
    };
    report(
        "signed: sign a submission (ed25519)",
        measure(budget, || {
            black_box(Signed::sign(&kp, black_box(&submission)).ok());
        }),
    );
    let signed = Signed::sign(&kp, &submission).expect("sign");
    assert!(signed.verify().is_ok(), "own signature does not verify");
    report(
        "signed: verify + decode a submission",
        measure(budget, || {
            black_box(signed.verify().ok());
        }),
    );
    let req = KbRequest {
        program: ProgramId(Digest([1; 32])),
        credential: Credential::from_bytes([3; 32]),
        call: KbCall::Submit(signed.clone()),
    };
    let bytes = encode(&req).expect("encode");
    assert!(!bytes.is_empty());
    assert_eq!(
        encode(&decode::<KbRequest>(&bytes).expect("decode")).expect("re-encode"),
        bytes,
        "KbRequest round trip"
    );
    report(
        &format!("wire: encode KbRequest::Submit ({} B)", bytes.len()),
        measure(budget, || {
            black_box(encode(black_box(&req)).ok());
        }),
    );
    report(
        "wire: decode KbRequest::Submit",
        measure(budget, || {
            black_box(decode::<KbRequest>(black_box(&bytes)).ok());
        }),
    );

    let worker = SealKey::generate(&mut rng);
    let public = worker.public();
    report(
        "seal: seal a credential (x25519+HKDF+ChaCha20Poly1305)",
        measure(budget, || {
            black_box(seal::seal(&public, b"ctx", &[7; 32], &mut rng).ok());
        }),
    );
    let sealed = seal::seal(&public, b"ctx", &[7; 32], &mut rng).expect("seal");
    assert_eq!(
        seal::open(&worker, b"ctx", &sealed).expect("open"),
        [7; 32],
        "a sealed credential does not open to itself"
    );
    report(
        "seal: open a credential",
        measure(budget, || {
            black_box(seal::open(&worker, b"ctx", &sealed).ok());
        }),
    );

    let mut registry = Registry::new(MembershipMode::Open);
    let mut credentials = Vec::new();
    let mut now = Timestamp::from_secs(1_000);
    for i in 0..1000u32 {
        let peer = Keypair::ed25519_from_bytes({
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            b
        })
        .expect("key")
        .public()
        .to_peer_id();
        let auth = registry.request(peer, now, &mut rng).expect("request");
        let grant = registry
            .poll(&auth.device_code, &peer, now)
            .expect("open mode grants at once");
        credentials.push((grant.credential, peer));
        now = now.plus_millis(1);
    }
    assert_eq!(credentials.len(), 1000);
    assert!(
        credentials
            .iter()
            .all(|(c, p)| registry.verify(c, p).is_ok()),
        "a granted credential does not verify"
    );
    let mut i = 0;
    report(
        "membership: verify a credential (1000 members)",
        measure(budget, || {
            let (c, p) = &credentials[i % credentials.len()];
            black_box(registry.verify(c, p).ok());
            i += 1;
        }),
    );

    let packet = program.packet_for_rung("paid-h100").expect("rung");
    let decision = program.decision();
    let rung = program.rung("paid-h100").expect("rung");
    report(
        "dispatch: evaluate_dispatch (paid rung)",
        measure(budget, || {
            black_box(evaluate_dispatch(&DispatchInput {
                decision: &decision,
                rung,
                policy: &program.policy,
                packet: &packet,
                point: None,
                approval: None,
                trusted_approvers: &[],
                spent_total: 0.0,
                now,
            }));
        }),
    );
}
