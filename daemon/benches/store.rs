//! What storing KB results costs the owner's database: `cargo bench -p btd --bench store`.
//!
//! Writes N results through the owner's `Store` (SQLite in WAL mode with full fsync, in a temp dir)
//! as the owner stores them (`store::put_records`), 16 to a commit (what group commit makes of a
//! batch from each of 16 members). Each result is a real signed submission from one of 16 members,
//! with a fresh random nonce as workers send. Two logs side by side in one run: the shipped schema,
//! and the same with schema 6's UNIQUE (program, worker, nonce) index added back. For each it prints
//! per result the process's CPU (user and system, from `/proc/self/stat`; the rows are built before
//! the clock starts, so this is the store thread's work) and the bytes it made the kernel write
//! (`/proc/self/io`, WAL and checkpoints included), and the database's size. No timing assertions:
//! the numbers go to docs/benchmarks.md ("The log without its nonce index").
//!
//! Under `cargo test` (no `--bench` argument) it runs its quick mode: 480 results per log, and
//! checks the shape (every result stored in order, the index present only where added), never the
//! cost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use btd::store::{self, Store};
use btd_protocol::kb::{Check, Entry};
use btd_protocol::owner::{Record, SubmissionRecord};
use btd_protocol::program::ProgramId;
use btd_protocol::signed::Signed;
use btd_protocol::{Digest, Timestamp};
use libp2p::identity::Keypair;
use rand::RngCore;

const MEMBERS: usize = 16;
const PER_COMMIT: usize = 16;

/// `n` results of `program` in commits of [`PER_COMMIT`], each a real signed submission.
fn commits(program: ProgramId, n: usize) -> Vec<Vec<Record>> {
    let keys: Vec<Keypair> = (0..MEMBERS).map(|_| Keypair::generate_ed25519()).collect();
    let mut rng = rand::thread_rng();
    let t0 = Timestamp::from_millis(1_800_000_000_000);
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let key = &keys[i % MEMBERS];
            let mut nonce = [0u8; 16];
            rng.fill_bytes(&mut nonce);
            let value = 3.0 + (i % 997) as f64 / 1000.0;
            let at = t0.plus_millis(i as u64);
            let sub = btd::testkit::scored_submission(program, nonce, value, 0.001, at);
            let signed = Signed::sign(key, &sub).unwrap();
            Record::Submission(SubmissionRecord {
                program,
                entry: Entry {
                    seq: i as u64 + 1,
                    worker: key.public().to_peer_id().to_string(),
                    value,
                    accepted: false,
                    champion: false,
                    impact: 0.0,
                    check: Check::NotNeeded,
                },
                nonce,
                signed: btd_protocol::wire::encode(&signed).unwrap(),
                code: None,
                received_at: at,
            })
        })
        .collect();
    records.chunks(PER_COMMIT).map(<[Record]>::to_vec).collect()
}

/// This process's CPU time (user, system) in seconds, in clock ticks of 10 ms.
fn cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| f[i].parse::<f64>().unwrap() / 100.0;
    (ticks(11), ticks(12)) // utime, stime: fields 14 and 15 of the line
}

/// Bytes this process made the kernel write to storage so far.
fn written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .unwrap()
        .parse()
        .unwrap()
}

struct Cost {
    user_us: f64,
    sys_us: f64,
    written_kib: f64,
    db_mib: f64,
    wall_us: f64,
}

fn run(rt: &tokio::runtime::Runtime, n: usize, nonce_index: bool) -> Cost {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("btd.sqlite");
    let store = Store::open(&db).unwrap();
    if nonce_index {
        rt.block_on(store.write(|tx| {
            Ok(tx.execute_batch(
                "CREATE UNIQUE INDEX nonce_v6 ON submissions (program, worker, nonce)",
            )?)
        }))
        .unwrap();
    }
    let program = ProgramId(Digest([7; 32]));
    let commits = commits(program, n);
    let ((u0, s0), w0, t0) = (cpu(), written(), Instant::now());
    for records in commits {
        rt.block_on(store.write(move |tx| store::put_records(tx, &records)))
            .unwrap();
    }
    let wall = t0.elapsed().as_secs_f64();
    let ((u1, s1), w1) = (cpu(), written());
    let (stored, indexes) = rt
        .block_on(store.read(move |c| {
            let rows = store::load_submissions(c, program)?;
            let indexes: i64 = c.query_row(
                "SELECT COUNT(*) FROM pragma_index_list('submissions')",
                [],
                |r| r.get(0),
            )?;
            Ok((rows, indexes))
        }))
        .unwrap();
    assert_eq!(stored.len(), n);
    assert!(stored
        .iter()
        .enumerate()
        .all(|(i, r)| r.entry.seq == i as u64 + 1));
    // The (program, seq) key, plus the nonce index where it was added back.
    assert_eq!(indexes, 1 + i64::from(nonce_index));
    drop(store);
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let wal = dir.path().join("btd.sqlite-wal");
    let per = |x: f64| x / n as f64;
    Cost {
        user_us: per(u1 - u0) * 1e6,
        sys_us: per(s1 - s0) * 1e6,
        written_kib: per((w1 - w0) as f64) / 1024.0,
        db_mib: (size(db) + size(wal)) as f64 / (1 << 20) as f64,
        wall_us: per(wall) * 1e6,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 100_000 } else { 480 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{n} results per log, {PER_COMMIT} per commit, {MEMBERS} members, random nonces");
    println!("| log | CPU per result (user + system) | written per result | database | wall per result |");
    println!("|---|---:|---:|---:|---:|");
    // Alternate, so neither log always runs on a warmer machine.
    for (name, index) in [
        ("shipped (schema 7)", false),
        ("with schema 6's nonce index", true),
        ("shipped (schema 7)", false),
        ("with schema 6's nonce index", true),
    ] {
        let c = run(&rt, n, index);
        println!(
            "| {name} | {:.1} µs ({:.1} + {:.1}) | {:.2} KiB | {:.1} MiB | {:.1} µs |",
            c.user_us + c.sys_us,
            c.user_us,
            c.sys_us,
            c.written_kib,
            c.db_mib,
            c.wall_us
        );
        assert!(c.written_kib.is_finite() && c.db_mib > 0.0);
    }
}
