//! A mutation fuzzer for everything a peer can hand a node: every wire message type (decoded as a
//! node decodes it, then checked, verified and sanitised as a node does) and program manifests
//! (`Program::from_toml`, which every announcement runs through). cargo-fuzz needs a nightly
//! compiler; this runs on stable, as a plain test.
//!
//! Inputs are random bytes, or valid encodings of every message type (and the shipped manifests)
//! mutated: bit flips, interesting bytes (varint markers, 0, 0xff), truncations, inserted and
//! deleted runs, huge varint lengths, and splices of two inputs. An input that decodes joins the
//! corpus (bounded), so mutations reach deeper into valid structures. For each input that decodes:
//! no panic anywhere, and decode → encode → decode is stable (same bytes again).
//!
//! Quick mode (a few seconds) runs with the test suite. Long mode, to report executions:
//!
//! ```text
//! BTD_FUZZ_SECS=150 cargo test -p btd-protocol --release --locked --test fuzz -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use btd_protocol::dispatch::{Budget, ComputePacket, HardwareClass, SpendClass};
use btd_protocol::kb::{Amount, Check, Entry};
use btd_protocol::membership::{Credential, DeviceAuthorization, DeviceCode, UserCode};
use btd_protocol::program::{Program, ProgramId};
use btd_protocol::seal::{self, SealKey};
use btd_protocol::signed::Signed;
use btd_protocol::trace::{ApprovalReceipt, Output};
use btd_protocol::wire::{
    self, AdvertisedRung, ApprovalRequest, ApprovalResponse, BlobRequest, BlobResponse,
    ChampionView, Claim, CodeHypothesis, CodeSummary, CodeView, ErrorCode, ErrorReply,
    GrantDelivery, KbCall, KbRequest, KbResponse, KbStatus, LedgerItem, MembershipRequest,
    MembershipResponse, PollStatus, ProgramAnnouncement, RungAdvert, Sanitize, Submission,
    SubmitReceipt,
};
use btd_protocol::{Digest, Timestamp};
use libp2p_identity::Keypair;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;

const PROGRAM: &str = include_str!("../../examples/program.toml");
const COMPUTE_MAP: &str = include_str!("../../examples/compute-map.toml");
/// Most inputs kept per target: memory stays bounded however long the run.
const MAX_CORPUS: usize = 2048;
/// Longest input the mutators grow (nodes refuse frames over 1 MiB before decoding anyway).
const MAX_INPUT: usize = 64 * 1024;

fn key(n: u8) -> Keypair {
    Keypair::ed25519_from_bytes([n; 32]).unwrap()
}

fn pid() -> ProgramId {
    ProgramId(Digest([1; 32]))
}

fn now() -> Timestamp {
    Timestamp(2_000_000_000_000)
}

fn error() -> ErrorReply {
    ErrorReply {
        code: ErrorCode::RateLimited,
        message: "slow down \u{1b}[2J".into(),
    }
}

fn entry(seq: u64) -> Entry {
    Entry {
        seq,
        worker: "12D3KooWworker".into(),
        value: 1.25,
        accepted: true,
        champion: seq == 1,
        impact: 0.5,
        check: if seq == 2 {
            Check::Failed("did not reproduce".into())
        } else {
            Check::Verified
        },
    }
}

fn submission() -> Submission {
    Submission {
        program: pid(),
        nonce: [9; 16],
        value: 2.84,
        rung_id: "cpu".into(),
        outputs: vec![Output::of("checkpoint.safetensors", b"x")],
        metrics: BTreeMap::from([("tokens_per_s".to_string(), 12345.0)]),
        hypothesis: BTreeMap::from([("lr".to_string(), 3e-3)]),
        created_at: Timestamp(1_000),
        claim: Some(Claim {
            checkpoint: Digest::of(b"x"),
            checkpoint_bytes: 1,
            seed: 7,
            steps: 150,
            device: "cpu".into(),
            btd_version: "0.1.0".into(),
        }),
    }
}

fn grant() -> GrantDelivery {
    let worker = SealKey::from_identity(&key(2)).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    GrantDelivery {
        program: pid(),
        device_code: DeviceCode([2; 32]),
        sealed: seal::seal(&worker.public(), b"ctx", &[5; 32], &mut rng).unwrap(),
    }
}

fn announcement(manifest: &str) -> Signed<ProgramAnnouncement> {
    Signed::sign(
        &key(1),
        &ProgramAnnouncement {
            manifest: manifest.into(),
            addresses: vec!["/ip4/127.0.0.1/tcp/4801".into()],
            published_at: Timestamp(5),
        },
    )
    .unwrap()
}

/// What a node does with a decoded message of this type: check, verify, sanitise.
trait Target: Serialize + DeserializeOwned {
    fn exercise(self);
}

impl Target for MembershipRequest {
    fn exercise(self) {
        if let MembershipRequest::PushGrant(g) = self {
            let k = SealKey::from_identity(&key(2)).unwrap();
            let _ = seal::open(&k, b"ctx", &g.sealed);
        }
    }
}
impl Target for MembershipResponse {
    fn exercise(mut self) {
        self.sanitize();
        if let MembershipResponse::Authorization(a) = &self {
            let _ = btd_protocol::membership::check_authorization(a);
            let _ = btd_protocol::membership::poll_interval_secs(a.interval);
        }
    }
}
impl Target for KbRequest {
    fn exercise(self) {
        let _ = self.call.check();
        match self.call {
            KbCall::Submit(s) => {
                if let Ok(v) = s.verify() {
                    let _ = v.value.check(now());
                }
            }
            KbCall::SubmitCode { submission, code } => {
                // What the owner does with a code claim: bounds, the patch parsed and held to
                // the editable files, the binding, then applied to a small tree.
                if let Ok(e) = btd_protocol::patch::Editable::new(&["train.py".into()]) {
                    let _ = code.check_editable(&e);
                }
                if let Ok(v) = submission.verify() {
                    let _ = code.bound_by(&v.value);
                }
                if let Ok(Some(p)) = code.check() {
                    let _ = p.apply(&fuzz_tree());
                }
            }
            _ => {}
        }
    }
}
/// A small source tree that fuzzed patches are applied to.
fn fuzz_tree() -> btd_protocol::patch::Files {
    let f = |t: &str| btd_protocol::patch::File {
        data: t.as_bytes().to_vec(),
        executable: false,
    };
    btd_protocol::patch::Files::from([
        ("train.py".to_string(), f("ORDER = 2\nLR = 0.1\nprint(1)\n")),
        ("prepare.py".to_string(), f("x = 1\n")),
    ])
}

/// A code hypothesis editing one line of [`fuzz_tree`]'s train.py.
fn code_sample() -> CodeHypothesis {
    CodeHypothesis {
        parent: Some(1),
        patch: "--- a/train.py\n+++ b/train.py\n@@ -1,3 +1,3 @@\n-ORDER = 2\n+ORDER = 3\n LR = 0.1\n print(1)\n"
            .into(),
        rationale: "ORDER = 3 (was 2)\nmore context".into(),
        seed: 7,
        tree: Digest([4; 32]),
    }
}

impl Target for KbResponse {
    fn exercise(mut self) {
        self.sanitize();
        match self {
            KbResponse::Program(a) => {
                let _ = wire::verify_announcement(&a, now());
            }
            KbResponse::Champion(Some(c)) => {
                let _ = c.submission.verify();
            }
            _ => {}
        }
    }
}
impl Target for ApprovalRequest {
    fn exercise(self) {}
}
impl Target for ApprovalResponse {
    fn exercise(mut self) {
        self.sanitize();
        if let ApprovalResponse::Granted(r) = self {
            let _ = r.verify();
        }
    }
}
impl Target for BlobRequest {
    fn exercise(self) {
        let _ = self.check();
    }
}
impl Target for BlobResponse {
    fn exercise(mut self) {
        self.sanitize();
    }
}
impl Target for Signed<ProgramAnnouncement> {
    fn exercise(self) {
        let _ = wire::verify_announcement(&self, now());
        // The manifest is parsed even when the signature fails: the parser sees every string.
        let _ = wire::decode::<Signed<ProgramAnnouncement>>(&wire::encode(&self).unwrap());
    }
}
impl Target for Signed<RungAdvert> {
    fn exercise(self) {
        if let Ok(v) = self.verify() {
            let _ = v.value.check(now());
        }
    }
}
impl Target for Signed<Submission> {
    fn exercise(self) {
        if let Ok(v) = self.verify() {
            let _ = v.value.check(now());
        }
    }
}

/// Decodes `bytes` as `T`; if it decodes, exercises it and checks that the encoding is stable.
/// Returns whether it decoded.
fn run_one<T: Target>(bytes: &[u8]) -> bool {
    let Ok(v) = wire::decode::<T>(bytes) else {
        return false;
    };
    let once = wire::encode(&v).expect("a decoded message re-encodes");
    let back: T = wire::decode(&once).expect("a re-encoded message decodes");
    let twice = wire::encode(&back).expect("it re-encodes again");
    assert_eq!(once, twice, "decode → encode is not stable");
    v.exercise();
    true
}

type Runner = fn(&[u8]) -> bool;

/// Every wire message type, with its valid seed encodings.
fn targets() -> Vec<(&'static str, Runner, Vec<Vec<u8>>)> {
    let kp = key(1);
    let enc = |v: &dyn erased::Enc| v.bytes();
    let sub = Signed::sign(&kp, &submission()).unwrap();
    let cred = Credential::from_bytes([4; 32]);
    let packet = ComputePacket {
        id: "p:paid-h100".into(),
        decision_id: "p".into(),
        rung_id: "paid-h100".into(),
        question: "q".into(),
        success_bar: BTreeMap::from([("val_bpb".to_string(), 1.0)]),
        stop_condition: "20 s".into(),
        required_outputs: vec!["metrics.json".into()],
        budget: Budget {
            wall_clock_secs: Some(20),
            steps: Some(10),
            spend_cap: Some(2.0),
        },
    };
    let receipt = ApprovalReceipt::issue(
        &kp,
        "p:paid-h100",
        "paid-h100",
        Timestamp(0),
        Timestamp(60_000),
        2.0,
    )
    .unwrap();
    let advert = Signed::sign(
        &kp,
        &RungAdvert {
            rungs: vec![AdvertisedRung {
                id: "gpu0".into(),
                hardware: HardwareClass::H100,
                spend_class: SpendClass::PaidMetered,
                detail: "NVIDIA H100".into(),
            }],
            programs: vec![pid()],
            advertised_at: Timestamp(9),
        },
    )
    .unwrap();
    let kb_req = |call| KbRequest {
        program: pid(),
        credential: cred.clone(),
        call,
    };
    vec![
        (
            "MembershipRequest",
            run_one::<MembershipRequest> as Runner,
            vec![
                enc(&MembershipRequest::Authorize {
                    program: pid(),
                    seal_key: SealKey::from_identity(&kp).unwrap().public(),
                }),
                enc(&MembershipRequest::Poll {
                    program: pid(),
                    device_code: DeviceCode([2; 32]),
                }),
                enc(&MembershipRequest::PushGrant(grant())),
            ],
        ),
        (
            "MembershipResponse",
            run_one::<MembershipResponse>,
            vec![
                enc(&MembershipResponse::Authorization(DeviceAuthorization {
                    device_code: DeviceCode([3; 32]),
                    user_code: UserCode::parse("ABCD-EFGH").unwrap(),
                    expires_in: 900,
                    interval: 5,
                })),
                enc(&MembershipResponse::Granted(grant())),
                enc(&MembershipResponse::Poll(PollStatus::SlowDown {
                    interval: 10,
                })),
                enc(&MembershipResponse::Ack),
                enc(&MembershipResponse::Error(error())),
            ],
        ),
        (
            "KbRequest",
            run_one::<KbRequest>,
            vec![
                enc(&kb_req(KbCall::Program)),
                enc(&kb_req(KbCall::Results {
                    after_seq: 3,
                    limit: 100,
                })),
                enc(&kb_req(KbCall::Submit(sub.clone()))),
                enc(&kb_req(KbCall::SubmitCode {
                    submission: sub.clone(),
                    code: Box::new(code_sample()),
                })),
                enc(&kb_req(KbCall::Ledger {
                    after_seq: 1,
                    limit: 10,
                })),
                enc(&kb_req(KbCall::Code { seq: 2 })),
                enc(&kb_req(KbCall::LedgerTail { limit: 50 })),
            ],
        ),
        (
            "KbResponse",
            run_one::<KbResponse>,
            vec![
                enc(&KbResponse::Program(announcement(PROGRAM))),
                enc(&KbResponse::Champion(Some(Box::new(ChampionView {
                    entry: entry(1),
                    submission: sub.clone(),
                })))),
                enc(&KbResponse::Results {
                    entries: vec![entry(1), entry(2)],
                    more: true,
                }),
                enc(&KbResponse::Status(KbStatus {
                    program: pid(),
                    name: "p".into(),
                    members: 2,
                    submissions: 1,
                    accepted: 1,
                    pending: 1,
                    verified: 1,
                    rejected: 1,
                    champion: Some(entry(1)),
                    payouts: Default::default(),
                    pool: Amount(100),
                    token: "OBOL".into(),
                })),
                enc(&KbResponse::Submitted(SubmitReceipt {
                    seq: 4,
                    accepted: false,
                    champion: false,
                    impact: 0.0,
                    check: Check::Pending,
                    duplicate: true,
                })),
                enc(&KbResponse::Error(error())),
                enc(&KbResponse::Ledger {
                    items: vec![LedgerItem {
                        entry: entry(1),
                        created_at: Timestamp(1),
                        rung_id: "cpu".to_string(),
                        hypothesis: [("lr".to_string(), 0.1)].into(),
                        code: Some(CodeSummary::of(&code_sample())),
                    }],
                    more: false,
                }),
                enc(&KbResponse::Code(Some(Box::new(CodeView {
                    entry: entry(2),
                    code: code_sample(),
                })))),
            ],
        ),
        (
            "ApprovalRequest",
            run_one::<ApprovalRequest>,
            vec![enc(&ApprovalRequest {
                program: pid(),
                credential: cred.clone(),
                packet,
            })],
        ),
        (
            "ApprovalResponse",
            run_one::<ApprovalResponse>,
            vec![
                enc(&ApprovalResponse::Granted(receipt)),
                enc(&ApprovalResponse::Denied {
                    reason: "over budget".into(),
                }),
                enc(&ApprovalResponse::Pending),
            ],
        ),
        (
            "BlobRequest",
            run_one::<BlobRequest>,
            vec![enc(&BlobRequest {
                program: pid(),
                credential: Some(cred),
                digest: Digest::of(b"x"),
                offset: 0,
                len: 4096,
            })],
        ),
        (
            "BlobResponse",
            run_one::<BlobResponse>,
            vec![
                enc(&BlobResponse::Chunk {
                    size: 3,
                    offset: 0,
                    data: b"abc".to_vec(),
                }),
                enc(&BlobResponse::Error(error())),
            ],
        ),
        (
            "Signed<ProgramAnnouncement>",
            run_one::<Signed<ProgramAnnouncement>>,
            vec![enc(&announcement(PROGRAM))],
        ),
        (
            "Signed<RungAdvert>",
            run_one::<Signed<RungAdvert>>,
            vec![enc(&advert)],
        ),
        (
            "Signed<Submission>",
            run_one::<Signed<Submission>>,
            vec![enc(&sub)],
        ),
    ]
}

/// Object-safe encoding for the seed table.
mod erased {
    pub(super) trait Enc {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Enc for T {
        fn bytes(&self) -> Vec<u8> {
            btd_protocol::wire::encode(self).unwrap()
        }
    }
}

/// Bytes that break parsers: varint markers (bincode: 251 = u16, 252 = u32, 253 = u64, 254 = u128
/// follow), zero, all-ones, sign bits.
const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff];

fn mutate(rng: &mut ChaCha8Rng, input: &mut Vec<u8>, other: &[u8]) {
    let rounds = 1 + rng.gen_range(0..4);
    for _ in 0..rounds {
        let len = input.len();
        match rng.gen_range(0..10) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            2 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = rng.gen();
            }
            3 if len > 0 => input.truncate(rng.gen_range(0..len)),
            4 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 64));
                input.drain(a..b);
            }
            5 => {
                let at = rng.gen_range(0..=len);
                let n = rng.gen_range(1..32);
                let mut run = vec![0u8; n];
                rng.fill_bytes(&mut run);
                input.splice(at..at, run);
            }
            6 => {
                // A huge varint where a length or number sits.
                let at = rng.gen_range(0..=len);
                let huge: &[u8] = match rng.gen_range(0..3) {
                    0 => &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                    1 => &[0xfc, 0xff, 0xff, 0xff, 0x7f],
                    _ => &[0xfb, 0xff, 0xff],
                };
                if at < len && rng.gen_bool(0.5) {
                    let end = (at + huge.len()).min(len);
                    input.splice(at..end, huge.iter().copied());
                } else {
                    input.splice(at..at, huge.iter().copied());
                }
            }
            7 if !other.is_empty() => {
                // Splice: a prefix of this input, a suffix of another.
                let a = rng.gen_range(0..=len);
                let b = rng.gen_range(0..other.len());
                input.truncate(a);
                input.extend_from_slice(&other[b..]);
            }
            8 if len > 1 => {
                // Duplicate a run (repeated fields, longer sequences).
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 128));
                let run: Vec<u8> = input[a..b].to_vec();
                let at = rng.gen_range(0..=input.len());
                input.splice(at..at, run);
            }
            _ => {
                let n = rng.gen_range(0..256);
                input.resize(n, 0);
                rng.fill_bytes(input);
            }
        }
        input.truncate(MAX_INPUT);
    }
}

/// Manifest mutations: text-level (values swapped for hostile ones, lines deleted, duplicated or
/// shuffled) as well as byte-level (then made valid UTF-8 lossily, as a decoded `String` is).
fn mutate_manifest(rng: &mut ChaCha8Rng, text: &str, other: &str) -> String {
    const VALUES: [&str; 16] = [
        "0",
        "-1",
        "1e308",
        "-1e308",
        "nan",
        "inf",
        "-inf",
        "18446744073709551615",
        "9223372036854775807",
        "-9223372036854775808",
        "\"\"",
        "\"\u{1b}[2J\u{0}\"",
        "[]",
        "{}",
        "true",
        "1979-05-27T07:32:00Z",
    ];
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let rounds = 1 + rng.gen_range(0..4);
    for _ in 0..rounds {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = rng.gen_range(0..lines.len());
        match rng.gen_range(0..7) {
            0 => {
                if let Some(eq) = lines[i].find('=') {
                    let v = VALUES[rng.gen_range(0..VALUES.len())];
                    lines[i] = format!("{}= {v}", &lines[i][..eq]);
                }
            }
            1 => {
                lines.remove(i);
            }
            2 => {
                let l = lines[i].clone();
                lines.insert(rng.gen_range(0..=lines.len()), l);
            }
            3 => {
                let j = rng.gen_range(0..lines.len());
                lines.swap(i, j);
            }
            4 => {
                let theirs: Vec<&str> = other.lines().collect();
                if !theirs.is_empty() {
                    let l = theirs[rng.gen_range(0..theirs.len())].to_string();
                    lines.insert(i, l);
                }
            }
            5 => {
                // A long string or a long array.
                if let Some(eq) = lines[i].find('=') {
                    let n = rng.gen_range(100..5000);
                    let v = if rng.gen_bool(0.5) {
                        format!("\"{}\"", "é".repeat(n))
                    } else {
                        format!("[{}]", vec!["1"; n].join(","))
                    };
                    lines[i] = format!("{}= {v}", &lines[i][..eq]);
                }
            }
            _ => {
                let mut bytes = lines[i].clone().into_bytes();
                mutate(rng, &mut bytes, &[]);
                lines[i] = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }
    lines.join("\n")
}

/// What one fuzz run did.
#[derive(Debug, Default)]
struct Stats {
    wire_execs: u64,
    wire_decoded: u64,
    manifest_execs: u64,
    manifests_valid: u64,
    corpus: usize,
}

/// Fuzzes for `limit` (or `max_execs` inputs, whichever comes first), seeded by `seed`.
fn fuzz(seed: u64, limit: Duration, max_execs: u64) -> Stats {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let table = targets();
    let mut corpora: Vec<Vec<Vec<u8>>> = table.iter().map(|(_, _, s)| s.clone()).collect();
    let mut manifests: Vec<String> = vec![PROGRAM.to_string(), COMPUTE_MAP.to_string()];
    let mut stats = Stats::default();
    let start = Instant::now();
    let mut n: u64 = 0;
    while n < max_execs && (!n.is_multiple_of(256) || start.elapsed() < limit) {
        n += 1;
        if n.is_multiple_of(8) {
            // Manifests: what every announcement's manifest goes through.
            let a = &manifests[rng.gen_range(0..manifests.len())];
            let b = &manifests[rng.gen_range(0..manifests.len())];
            let text = mutate_manifest(&mut rng, a, b);
            stats.manifest_execs += 1;
            if let Ok(p) = Program::from_toml(&text) {
                stats.manifests_valid += 1;
                let _ = p.kb();
                let _ = ProgramId::compute(&p, &key(1).public());
                if manifests.len() < MAX_CORPUS {
                    manifests.push(text);
                }
            }
            continue;
        }
        let t = rng.gen_range(0..table.len());
        let corpus = &corpora[t];
        let mut input = if rng.gen_range(0..16) == 0 {
            let mut v = vec![0u8; rng.gen_range(0..512)];
            rng.fill_bytes(&mut v);
            v
        } else {
            corpus[rng.gen_range(0..corpus.len())].clone()
        };
        let o = rng.gen_range(0..corpora.len());
        let other = corpora[o][rng.gen_range(0..corpora[o].len())].clone();
        mutate(&mut rng, &mut input, &other);
        stats.wire_execs += 1;
        // Every type sees every input: a node may be handed any bytes on any protocol.
        for (k, (_, run, _)) in table.iter().enumerate() {
            if run(&input) {
                stats.wire_decoded += 1;
                let c = &mut corpora[k];
                if c.len() < MAX_CORPUS {
                    c.push(input.clone());
                } else {
                    let i = rng.gen_range(0..c.len());
                    c[i] = input.clone();
                }
            }
        }
    }
    stats.corpus = corpora.iter().map(Vec::len).sum::<usize>() + manifests.len();
    stats
}

fn report(label: &str, s: &Stats, took: Duration) {
    let execs = s.wire_execs + s.manifest_execs;
    println!(
        "fuzz {label}: {execs} execs in {:.1} s ({:.0} execs/s): {} wire inputs × {} message types ({} decoded), {} manifests ({} valid); corpus {}",
        took.as_secs_f64(),
        execs as f64 / took.as_secs_f64().max(1e-9),
        s.wire_execs,
        targets().len(),
        s.wire_decoded,
        s.manifest_execs,
        s.manifests_valid,
        s.corpus,
    );
}

/// Quick mode, with the test suite: a fixed number of inputs (a few seconds even unoptimised).
#[test]
fn wire_decoder_and_manifest_parser_survive_mutated_input() {
    let start = Instant::now();
    let s = fuzz(13, Duration::from_secs(20), 20_000);
    report("quick", &s, start.elapsed());
    assert!(
        s.wire_decoded > 0,
        "no mutated input ever decoded: the fuzzer is blind"
    );
    assert!(s.manifests_valid > 0, "no mutated manifest ever parsed");
}

/// Long mode: `BTD_FUZZ_SECS` seconds (default 60), seed `BTD_FUZZ_SEED` (default: the clock).
#[test]
#[ignore = "long fuzz run; see the module docs"]
fn fuzz_long() {
    let secs = std::env::var("BTD_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed = std::env::var("BTD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("fuzz seed {seed} (replay with BTD_FUZZ_SEED={seed})");
    let start = Instant::now();
    let s = fuzz(seed, Duration::from_secs(secs), u64::MAX);
    report("long", &s, start.elapsed());
}
