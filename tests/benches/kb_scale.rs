//! The owner's KB at scale: `cargo bench -p btd-tests --bench kb_scale [-- --bench N]`
//! (docs/benchmarks.md, "KB at scale").
//!
//! Fills an owner's store with N results exactly as the owner core stores them: 16 members (as an
//! approval records them), each result a real signed submission (with a numeric hypothesis, as a
//! worker's round sends) handed to the owner core (`ProgramOwner::on_kb`, every rule applied: the
//! signature, the nonce, the per-member quota in simulated time, the KEEP rule) and its records
//! written through the store in batches. Then it starts `btd start` on that home and reports the
//! restart time (spawn until the control socket answers), the daemon's RSS, and the latency of the
//! owner's status (`Request::Status` over the control socket: summary plus the newest results) and
//! of a ledger page (`Request::Ledger`, 100 results, read from disk).
//!
//! `BTD_OLD_BIN=/path/to/btd` also measures that binary on the same store (an earlier btd: before
//! and after in one run). Under `cargo test` (no `--bench` argument) it runs its quick mode: 3000
//! results, shapes checked (counts served, RSS read), no timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use btd::control::Request;
use btd::harness;
use btd::store::{self, Store};
use btd_protocol::membership::{Credential, MemberId, MemberRecord};
use btd_protocol::owner::Record;
use btd_protocol::program::ProgramId;
use btd_protocol::signed::Signed;
use btd_protocol::wire::{
    KbCall, KbRequest, KbResponse, ProgramAnnouncement, StatusQuery, MAX_RESULTS_PAGE,
};
use btd_protocol::Timestamp;
use libp2p_identity::Keypair;

const MEMBERS: usize = 16;

fn now() -> Timestamp {
    btd::clock::Clock::system().now()
}

/// Publishes a shell program on a fresh owner home; returns the home, the program and the owner's
/// key. The daemon is stopped again (the fill writes its store directly).
fn publish(dir: &Path) -> (PathBuf, ProgramId, Keypair) {
    let home = dir.join("owner");
    let mut d = harness::Daemon::spawn(&home, harness::Launch::new(btd_tests::btd_bin())).unwrap();
    d.ready_blocking(harness::READY_WITHIN).unwrap();
    let manifest = dir.join("scale.toml");
    btd_tests::write_echo_manifest(&manifest, "kb-scale");
    let out = std::process::Command::new(btd_tests::btd_bin())
        .args(["--home", home.to_str().unwrap(), "publish"])
        .arg(&manifest)
        .args(["--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", btd_tests::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id: ProgramId = v["program"].as_str().unwrap().parse().unwrap();
    d.kill();
    let key = btd::home::Home::at(&home)
        .load_or_create_identity()
        .unwrap();
    (home, id, key)
}

/// Writes `n` results into the owner's store through the owner core.
fn fill(rt: &tokio::runtime::Runtime, home: &Path, id: ProgramId, n: usize) -> Duration {
    let started = Instant::now();
    let db = btd::home::Home::at(home).db_path();
    let store = Store::open(&db).unwrap();
    let members: Vec<(Keypair, Credential)> = (0..MEMBERS)
        .map(|i| {
            let mut c = [0u8; 32];
            c[0] = i as u8;
            c[1] = 0xB7;
            (Keypair::generate_ed25519(), Credential::from_bytes(c))
        })
        .collect();
    // Simulated time: far enough back that every member stays within its hourly quota.
    let step_ms = 3_600_000 / (MEMBERS as u64 * 3_000);
    let t0 = Timestamp::from_millis(
        now()
            .as_millis()
            .saturating_sub(step_ms * n as u64 + 60_000),
    );
    let records: Vec<Record> = members
        .iter()
        .map(|(k, c)| Record::Member {
            program: id,
            record: MemberRecord {
                member: MemberId::from(k.public().to_peer_id()),
                credential_hash: c.hash(),
                joined_at: t0,
                revoked_at: None,
            },
        })
        .collect();
    rt.block_on(store.write(move |tx| store::put_records(tx, &records)))
        .unwrap();
    let snap = rt.block_on(store.read(store::load_snapshot)).unwrap();
    let row = snap.programs.iter().find(|r| r.id == id).unwrap();
    let signed: Signed<ProgramAnnouncement> =
        btd_protocol::wire::decode(&row.announcement).unwrap();
    let view = btd_protocol::wire::verify_announcement(&signed, now()).unwrap();
    let records = snap.records_of(id);
    let mut owner = rt
        .block_on(store.read(move |c| store::restore_owner(c, &view, signed, records)))
        .unwrap();
    let mut batch = Vec::new();
    for i in 0..n {
        let (key, credential) = &members[i % MEMBERS];
        let at = t0.plus_millis(step_ms * i as u64);
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
        // Mostly no better than the champion, with a slow downward drift: like a real search.
        let value = 50.0 - (i as f64 / n as f64) * 40.0 + ((i * 7919) % 997) as f64 / 50.0;
        let sub = btd::testkit::scored_submission(id, nonce, value, 0.001 * (1 + i % 7) as f64, at);
        let signed = Signed::sign(key, &sub).unwrap();
        let fx = owner.on_kb(
            key.public().to_peer_id(),
            KbRequest {
                program: id,
                credential: credential.clone(),
                call: KbCall::Submit(signed),
            },
            at,
        );
        assert!(
            matches!(fx.reply, KbResponse::Submitted(_)),
            "result {i}: {:?}",
            fx.reply
        );
        batch.extend(fx.persist);
        if batch.len() >= 5_000 || i + 1 == n {
            let records = std::mem::take(&mut batch);
            rt.block_on(store.write(move |tx| store::put_records(tx, &records)))
                .unwrap();
        }
    }
    started.elapsed()
}

/// What one binary shows on the filled store.
struct Measured {
    restart: Duration,
    rss_start: f64,
    rss_after: f64,
    status_p50_ms: f64,
    ledger_p50_ms: f64,
    submissions: u64,
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(
    rt: &tokio::runtime::Runtime,
    exe: PathBuf,
    home: &Path,
    id: ProgramId,
    reads: usize,
) -> Measured {
    let launch = harness::Launch {
        fresh_log: false,
        ..harness::Launch::new(exe)
    };
    let started = Instant::now();
    let mut d = harness::Daemon::spawn(home, launch).unwrap();
    d.ready_blocking(Duration::from_secs(600)).unwrap();
    let restart = started.elapsed();
    let rss_start = btd_tests::rss_mib(d.pid());
    let socket = btd::home::Home::at(home).socket_path();
    let call = |req: Request| {
        let t = Instant::now();
        let v = rt
            .block_on(btd::client::call(&socket, &req, |_| {}))
            .unwrap();
        (t.elapsed().as_secs_f64() * 1000.0, v)
    };
    let mut status = Vec::new();
    let mut submissions = 0;
    for _ in 0..reads {
        let (ms, v) = call(Request::Status {
            program: Some(id),
            query: StatusQuery::newest(MAX_RESULTS_PAGE),
        });
        submissions = v["submissions"].as_u64().unwrap();
        status.push(ms);
    }
    let mut ledger = Vec::new();
    for i in 0..reads {
        let (ms, v) = call(Request::Ledger {
            program: id,
            after_seq: (i as u64 * 7919) % submissions.max(1),
            limit: 100,
        });
        assert!(v["items"].as_array().is_some_and(|a| !a.is_empty()), "{v}");
        ledger.push(ms);
    }
    std::thread::sleep(Duration::from_secs(2)); // settle after the reads, then read RSS again
    let rss_after = btd_tests::rss_mib(d.pid());
    d.kill();
    Measured {
        restart,
        rss_start,
        rss_after,
        status_p50_ms: p50(status),
        ledger_p50_ms: p50(ledger),
        submissions,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let n: usize = if full {
        args.iter()
            .skip_while(|a| *a != "--bench")
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(650_000)
    } else {
        3_000
    };
    let reads = if full { 50 } else { 5 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (home, id, _key) = publish(dir.path());
    let took = fill(&rt, &home, id, n);
    let db = btd::home::Home::at(&home).db_path();
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let db_mib = (size(db) + size(wal)) as f64 / (1 << 20) as f64;
    println!(
        "filled {n} results in {:.1} s through the owner core ({:.0}/s); database {db_mib:.0} MiB",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let mut bins = vec![("this btd", btd_tests::btd_bin())];
    if let Ok(old) = std::env::var("BTD_OLD_BIN") {
        bins.push(("BTD_OLD_BIN", PathBuf::from(old)));
    }
    println!("| binary | results | restart (s) | RSS at start (MiB) | RSS after reads (MiB) | status p50 (ms) | ledger page p50 (ms) |");
    println!("|---|---|---|---|---|---|---|");
    for (name, exe) in bins {
        let m = measure(&rt, exe, &home, id, reads);
        assert_eq!(m.submissions, n as u64, "{name} serves every result");
        assert!(m.rss_start > 0.0 && m.rss_after > 0.0);
        println!(
            "| {name} | {n} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} |",
            m.restart.as_secs_f64(),
            m.rss_start,
            m.rss_after,
            m.status_p50_ms,
            m.ledger_p50_ms
        );
    }
}
