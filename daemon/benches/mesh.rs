//! Mesh benchmarks on loopback TCP: `cargo bench -p btd --bench mesh`.
//!
//! Real nodes (production transport on 127.0.0.1, SQLite in WAL mode with full fsync in a temp dir)
//! in one process: an owner and one worker, then 16 more members. Prints: approval → credential
//! latency, submission round trip until durable acknowledgement, sustained durable submissions per
//! second from one worker (64 in flight) and from 16 members at once (16 in flight each), `btd
//! status` pages of 100 and 1000 (a member's over the mesh, the owner's own), and the idle RSS of
//! one `btd start` process. Per-peer rate limits are lifted. No timing assertions: the numbers go
//! to docs/benchmarks.md.
//!
//! The owner runs on a runtime of its own (threads named `btd-owner`, its store thread found by
//! id), so the many-member phases can say how much CPU the owner itself spent per submission
//! (`/proc/self/task/*/schedstat`) apart from its members, which share the machine with it here.
//!
//! Under `cargo test` (no `--bench` argument) it runs its quick mode: 3 joins, 20 sequential and
//! 128 concurrent submissions, 3 members with 32 each, 3 status reads, the idle RSS read as soon as
//! the daemon is ready; it checks the shape (every submission in the owner's log, the members,
//! pages newest first), never the timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use btd::harness;
use btd::net::{NetParams, TransportKind};
use btd::node::types::{JoinEvent, NewResult};
use btd::node::OutboxParams;
use btd::node::{self, NodeConfig, NodeHandle};
use btd::store::Store;
use btd::testkit::wait_known;
use btd_protocol::program::ProgramId;
use btd_protocol::wire::StatusQuery;
use libp2p::identity::Keypair;
use libp2p::Multiaddr;

fn manifest(i: usize) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/program.toml"
    ))
    .unwrap()
    .replace("name = \"tiny-gpt-bpb\"", &format!("name = \"bench-{i}\""))
    .replace("max_submissions = 500", "max_submissions = 1000000")
    // The bench measures the mesh and the store, not the owner's check: results count on receipt
    // (a checking program would need a checkpoint per result and a home for its holdout).
    .replace("mode = \"reevaluate\"", "mode = \"none\"")
}

const T: Duration = Duration::from_secs(60);

/// How much each part of the bench does.
struct Sizes {
    joins: usize,
    sequential: usize,
    /// Submissions per in-flight task (64 tasks).
    per_task: usize,
    /// How long the idle daemon runs after it is ready before its RSS is read.
    idle: Duration,
    /// `btd status` reads timed, member and owner.
    status_reads: usize,
    /// Members submitting at once in the many-member phase.
    workers: usize,
    /// Submissions per member in that phase (16 in flight each).
    per_member: usize,
}

const FULL: Sizes = Sizes {
    joins: 30,
    sequential: 300,
    per_task: 3000 / 64,
    idle: Duration::from_secs(3),
    status_reads: 200,
    workers: 16,
    per_member: 1024,
};

const QUICK: Sizes = Sizes {
    joins: 3,
    sequential: 20,
    per_task: 2,
    idle: Duration::ZERO,
    status_reads: 3,
    workers: 3,
    per_member: 32,
};

/// A node whose home (store, blobs, holdouts) is `dir/name`, as `btd start --home` lays it out.
async fn start(dir: &std::path::Path, name: &str, bootstrap: Vec<Multiaddr>) -> NodeHandle {
    start_with(dir, name, bootstrap, OutboxParams::default()).await
}

/// [`start`] with the member's outbox set to `outbox`.
async fn start_with(
    dir: &std::path::Path,
    name: &str,
    bootstrap: Vec<Multiaddr>,
    outbox: OutboxParams,
) -> NodeHandle {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let store = Store::open(&home.join("btd.sqlite")).unwrap();
    let net = NetParams {
        autonat: false,
        rate_burst: 1e9,
        rate_per_sec: 1e9,
        outbox,
        ..NetParams::default()
    };
    let (h, _task) = node::spawn(
        NodeConfig {
            key: Keypair::generate_ed25519(),
            transport: TransportKind::Production,
            net,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap,
            rungs: btd::config::Config::default_rungs(),
            home: Some(home),
            clock: btd::clock::Clock::system(),
            rng_seed: None,
            metrics: btd::metrics::Metrics::new(),
        },
        store,
    )
    .await
    .unwrap();
    h
}

async fn addr(h: &NodeHandle) -> Multiaddr {
    loop {
        let info = h.info().await.unwrap();
        if let Some(a) = info.listen.first() {
            return format!("{a}/p2p/{}", info.peer_id).parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    assert!(!v.is_empty(), "no samples");
    assert!(
        v.iter().all(|x| x.is_finite() && *x >= 0.0),
        "a sample is not a finite duration: {v:?}"
    );
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn bench(sizes: &Sizes, owner_rt: tokio::runtime::Handle) {
    let dir = tempfile::tempdir().unwrap();
    // The owner's node, verifier, signature checks and store thread run apart from everything
    // else, so their CPU can be told apart.
    let stores_before = threads_named(STORE_THREAD);
    let owner_home = dir.path().to_path_buf();
    let owner = owner_rt
        .spawn(async move { start(&owner_home, "owner", vec![]).await })
        .await
        .unwrap();
    let new_stores: Vec<u32> = threads_named(STORE_THREAD)
        .into_iter()
        .filter(|t| !stores_before.contains(t))
        .collect();
    assert_eq!(
        new_stores.len(),
        1,
        "the owner's store thread: {new_stores:?}"
    );
    let owner_cpu = OwnerCpu {
        store_thread: new_stores[0],
    };
    let worker = start(dir.path(), "worker", vec![addr(&owner).await]).await;

    // Approval → credential in the worker's hands, one program per sample.
    let joins = sizes.joins;
    let mut lat = Vec::new();
    let mut last = None;
    for i in 0..joins {
        let id = owner.publish(manifest(i)).await.unwrap();
        wait_known(&worker, id, T).await.unwrap();
        let mut rx = worker.join(id).await.unwrap();
        let Some(JoinEvent::Code { user_code, .. }) = rx.recv().await else {
            panic!("no code")
        };
        let t0 = Instant::now();
        owner.approve(user_code).await.unwrap();
        let Some(JoinEvent::Granted { .. }) = rx.recv().await else {
            panic!("no grant")
        };
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        last = Some(id);
    }
    println!(
        "approval → credential (n={joins}):         p50 {:.2} ms   p99 {:.2} ms",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    let id = last.unwrap();

    // Sequential submission round trips (signed, durable before the ack).
    let n = sizes.sequential;
    let mut rt = Vec::new();
    for i in 0..n {
        let t0 = Instant::now();
        let result = NewResult {
            value: 4.0 - i as f64 * 1e-4,
            rung_id: "cpu".into(),
            outputs: vec![],
            ..Default::default()
        };
        worker.submit(id, result).await.unwrap();
        rt.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "submission round trip, durable (n={n}):    p50 {:.2} ms   p99 {:.2} ms",
        pct(&mut rt, 0.5),
        pct(&mut rt, 0.99)
    );

    // Sustained: 64 submissions in flight.
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per = sizes.per_task;
    for t in 0..64 {
        tasks.spawn(submit_values(
            worker.clone(),
            id,
            5.0 + (t * per) as f64,
            per,
        ));
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    assert!(secs > 0.0 && secs.is_finite());
    println!(
        "sustained durable submissions (64 in flight): {:.0} /s ({} in {:.2} s)",
        (per * 64) as f64 / secs,
        per * 64,
        secs
    );

    // Sustained from many members at once (each its own node and connection), 16 in flight each:
    // first with each result in a request of its own (16 requests in flight per member, the
    // outbox before batches), then with the default outbox (4 requests in flight, results that
    // queue behind them sent as batches). Fresh members each time: a member's hourly budget at
    // the owner is 3600 results.
    let single = OutboxParams {
        max_batch: 1,
        requests_per_owner: 16,
        ..OutboxParams::default()
    };
    let mut many = 0;
    for (round, (outbox, label)) in [
        (single, "one result per request"),
        (OutboxParams::default(), "batched"),
    ]
    .into_iter()
    .enumerate()
    {
        let first = 1e6 + 1e7 * round as f64;
        let phase = Phase {
            outbox,
            label,
            round,
            first,
        };
        many += many_members(&owner, &owner_cpu, id, dir.path(), sizes, phase).await;
    }

    // `btd status` pages with the log just written: a member's over the mesh (one request), and
    // the owner's own, newest first.
    for limit in [100u32, 1000] {
        let q = StatusQuery::newest(limit);
        let mut member = Vec::new();
        let mut own = Vec::new();
        for _ in 0..sizes.status_reads {
            let t0 = Instant::now();
            let s = worker.status_page(Some(id), q).await.unwrap();
            member.push(t0.elapsed().as_secs_f64() * 1e3);
            let full = u64::from(limit).min(s.submissions) as usize;
            assert_eq!(s.results.len(), full, "a full page");
            assert!(s.results[0].seq > s.results[1].seq, "newest first");
            let t0 = Instant::now();
            owner.status_page(Some(id), q).await.unwrap();
            own.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "status page of {limit:>4}, member over the mesh (n={}): p50 {:.2} ms   p99 {:.2} ms",
            sizes.status_reads,
            pct(&mut member, 0.5),
            pct(&mut member, 0.99)
        );
        println!(
            "status page of {limit:>4}, owner's own (n={}):          p50 {:.2} ms   p99 {:.2} ms",
            sizes.status_reads,
            pct(&mut own, 0.5),
            pct(&mut own, 0.99)
        );
    }

    // Every acknowledged submission is in the owner's log, from its one member.
    let status = owner.status(Some(id)).await.unwrap();
    assert_eq!(
        status.submissions,
        (n + per * 64 + many) as u64,
        "owner's log"
    );
    assert_eq!(
        status.members as usize,
        1 + 2 * sizes.workers,
        "members of the last program"
    );
    assert_eq!(owner.programs().await.unwrap().len(), joins, "programs");
}

/// One many-member phase: the members' outbox, its name, which round (fresh members each) and
/// the first value submitted.
struct Phase {
    outbox: OutboxParams,
    label: &'static str,
    round: usize,
    first: f64,
}

/// `sizes.workers` new members (outbox `phase.outbox`) submit `sizes.per_member` results each, 16
/// in flight per member; prints the rate and the owner's CPU per submission and returns how many
/// were acknowledged.
async fn many_members(
    owner: &NodeHandle,
    owner_cpu: &OwnerCpu,
    id: ProgramId,
    dir: &std::path::Path,
    sizes: &Sizes,
    phase: Phase,
) -> usize {
    let Phase {
        outbox,
        label,
        round,
        first,
    } = phase;
    let mut members = Vec::new();
    for i in 1..=sizes.workers {
        let name = format!("member{round}-{i}");
        let w = start_with(dir, &name, vec![addr(owner).await], outbox.clone()).await;
        wait_known(&w, id, T).await.unwrap();
        let mut rx = w.join(id).await.unwrap();
        let Some(JoinEvent::Code { user_code, .. }) = rx.recv().await else {
            panic!("no code")
        };
        owner.approve(user_code).await.unwrap();
        let Some(JoinEvent::Granted { .. }) = rx.recv().await else {
            panic!("no grant")
        };
        members.push(w);
    }
    let each = sizes.per_member / 16;
    let cpu0 = owner_cpu.read();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (m, w) in members.iter().enumerate() {
        for t in 0..16 {
            let v = first + (m * 100_000 + t * each) as f64;
            tasks.spawn(submit_values(w.clone(), id, v, each));
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let many = members.len() * 16 * each;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = owner_cpu
        .read()
        .zip(cpu0)
        .map(|(now, then)| now.since(then));
    println!(
        "sustained durable submissions ({} members, 16 in flight each, {label}): {:.0} /s ({many} in {secs:.2} s)",
        members.len(),
        many as f64 / secs,
    );
    let Some(cpu) = cpu else {
        println!("  the owner's CPU: not measured (no /proc/self/task/*/schedstat here)");
        return many;
    };
    // The accounting found the owner's threads at work, and they are a part of the process.
    assert!(cpu.owner_ns > 0 && cpu.owner_ns <= cpu.all_ns, "{cpu:?}");
    let per = cpu.owner_ns as f64 / 1e3 / many as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "  the owner's threads: {per:.0} µs CPU per submission, {:.0}% of the process's CPU; \
         {cores} cores at that cost: {:.0} /s",
        100.0 * cpu.owner_ns as f64 / cpu.all_ns as f64,
        cores as f64 * 1e6 / per,
    );
    many
}

const OWNER_THREADS: &str = "btd-owner";
const STORE_THREAD: &str = "btd-store";

/// The owner's threads: its runtime's (named [`OWNER_THREADS`]) and its store thread.
struct OwnerCpu {
    store_thread: u32,
}

/// On-CPU nanoseconds so far: the owner's threads and all of this process's live threads.
#[derive(Debug, Clone, Copy)]
struct CpuNs {
    owner_ns: u64,
    all_ns: u64,
}

impl CpuNs {
    fn since(self, earlier: CpuNs) -> CpuNs {
        CpuNs {
            owner_ns: self.owner_ns.saturating_sub(earlier.owner_ns),
            all_ns: self.all_ns.saturating_sub(earlier.all_ns),
        }
    }
}

impl OwnerCpu {
    /// None where the kernel does not report threads' CPU time.
    fn read(&self) -> Option<CpuNs> {
        let mut cpu = CpuNs {
            owner_ns: 0,
            all_ns: 0,
        };
        for (tid, name, ns) in threads() {
            let ns = ns?;
            cpu.all_ns += ns;
            if name == OWNER_THREADS || tid == self.store_thread {
                cpu.owner_ns += ns;
            }
        }
        Some(cpu)
    }
}

/// This process's threads: id, name and on-CPU nanoseconds where the kernel reports them
/// (`/proc/self/task/*/schedstat`). A thread that exits between the listing and the read is left
/// out.
fn threads() -> Vec<(u32, String, Option<u64>)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| {
            let t = t.ok()?;
            let tid = t.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let ns = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok());
            Some((tid, name.trim_end().to_string(), ns))
        })
        .collect()
}

fn threads_named(name: &str) -> Vec<u32> {
    threads()
        .into_iter()
        .filter(|(_, n, _)| n == name)
        .map(|(tid, _, _)| tid)
        .collect()
}

/// Submits `n` results valued `first`, `first + 1`, … one after another, each durably
/// acknowledged.
async fn submit_values(w: NodeHandle, id: ProgramId, first: f64, n: usize) {
    for i in 0..n {
        let result = NewResult {
            value: first + i as f64,
            rung_id: "cpu".into(),
            outputs: vec![],
            ..Default::default()
        };
        w.submit(id, result).await.unwrap();
    }
}

/// The RSS of one `btd start` (killed when dropped) `idle` after it answers and listens.
fn idle_rss(idle: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = harness::Daemon::spawn(
        &dir.path().join("h"),
        harness::Launch::new(env!("CARGO_BIN_EXE_btd")),
    )
    .unwrap();
    if let Err(e) = daemon.ready_blocking(harness::READY_WITHIN) {
        panic!("btd start did not become ready: {e:#}\n{}", daemon.log());
    }
    // Nothing to await: the point is a daemon left alone for this long.
    std::thread::sleep(idle);
    match rss_kib(daemon.pid()) {
        Some(kib) => {
            assert!(kib > 0, "RSS 0 KiB");
            println!(
                "idle RSS of one `btd start` after {} s:      {:.1} MiB",
                idle.as_secs(),
                kib as f64 / 1024.0
            )
        }
        None => println!("idle RSS: /proc not readable"),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` runs the quick mode.
    let sizes = if std::env::args().any(|a| a == "--bench") {
        &FULL
    } else {
        &QUICK
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Blocking threads are kept, so the CPU of the owner's signature checks is not lost with an
    // idle thread that exits.
    let owner_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(OWNER_THREADS)
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench(sizes, owner_rt.handle().clone()));
    drop(owner_rt);
    idle_rss(sizes.idle);
}
