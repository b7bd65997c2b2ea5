//! Prometheus metrics, served as text at `/metrics` by the web server (`btd start --http`).
//!
//! One [`Metrics`] per daemon, created by `btd start` and shared (cheaply cloned: an `Arc` inside)
//! with the parts that count things. One `prometheus-client` registry holds both libp2p's metrics
//! (`libp2p_*`: swarm, bandwidth, gossipsub, Kademlia, identify, relay, ping, DCUtR; recorded in
//! `crate::net`, the only module that sees libp2p's events) and btd's own (`btd_*`, below; the list
//! with their meaning is in docs/user-guide.md, "Metrics").
//!
//! Two kinds of btd metrics:
//! - **counted where it happens** (counters and histograms): the owner's submission verdicts
//!   (`node/owner.rs`), rate-limit refusals (`node/dispatch.rs`, `node/gossip.rs`), artifact bytes
//!   (`node/blob.rs`, `node/dispatch.rs`), store commits (`store`), verifier checks (`verify.rs`),
//!   worker rounds and their training throughput (`work/round.rs`);
//! - **read at scrape time** (gauges of node state): [`scrape`] asks the node for its programs and,
//!   for each program it owns, its status (members, claims) from the owner's own state, never over
//!   the mesh; then it encodes.
//!
//! Recording never blocks the node task: counters, gauges and histograms are atomics (a labelled
//! family takes an uncontended read lock on its map); the registry's mutex is held only to encode a
//! scrape and to register libp2p's bandwidth counters when the swarm is built. Label values are
//! bounded: program ids only of programs this node owns or has joined, and fixed words otherwise;
//! never text a peer sent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use btd_protocol::program::ProgramId;
use btd_protocol::trace::RunState;
use btd_protocol::wire::{KbResponse, SubmitOutcome, SubmitReceipt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::node::NodeHandle;

#[cfg(all(test, feature = "testkit"))]
mod tests;

/// The daemon's metrics: the registry and btd's metric handles. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Locked only to encode and to register libp2p's bandwidth counters.
    registry: Mutex<Registry>,
    /// libp2p's event recorder (`crate::net` feeds it every swarm and behaviour event).
    libp2p: libp2p::metrics::Metrics,
    /// Whether a swarm already registered its bandwidth counters here (once per registry).
    bandwidth_taken: AtomicBool,
    btd: Btd,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A program id label (programs this node owns or has joined only).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabel {
    program: String,
}

/// A claim count's labels: the owned program and the claims' state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    program: String,
    state: &'static str,
}

/// One fixed word as the only label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
    protocol: &'static str,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// btd's own metric handles (each a cheap clone of what the registry encodes).
struct Btd {
    programs_known: Gauge,
    programs_owned: Gauge,
    programs_joined: Gauge,
    members: Family<ProgramLabel, Gauge>,
    claims: Family<ClaimLabels, Gauge>,
    verifier_queue: Gauge,
    verifier_check: Histogram,
    submissions: Family<VerdictLabel, Counter>,
    outbox_requests: Family<KindLabel, Counter>,
    blob_served: Counter,
    blob_fetched: Counter,
    rate_limited: Family<LimitLabels, Counter>,
    store_commit: Histogram,
    worker_tokens_per_sec: Family<ProgramLabel, F64Gauge>,
    worker_rounds: Family<OutcomeLabel, Counter>,
}

impl Btd {
    fn register(r: &mut Registry) -> Btd {
        let b = Btd {
            programs_known: Gauge::default(),
            programs_owned: Gauge::default(),
            programs_joined: Gauge::default(),
            members: Family::default(),
            claims: Family::default(),
            verifier_queue: Gauge::default(),
            // 10 ms to about 45 min: an evaluation takes seconds, a re-training spot check minutes.
            verifier_check: Histogram::new(exponential_buckets(0.01, 4.0, 10)),
            submissions: Family::default(),
            outbox_requests: Family::default(),
            blob_served: Counter::default(),
            blob_fetched: Counter::default(),
            rate_limited: Family::default(),
            // 0.5 ms to about 8 s: one fsync'd transaction per batch of writes.
            store_commit: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            worker_tokens_per_sec: Family::default(),
            worker_rounds: Family::default(),
        };
        let r = r.sub_registry_with_prefix("btd");
        r.register(
            "programs_known",
            "Programs in this node's discovery table (owned and joined ones included)",
            b.programs_known.clone(),
        );
        r.register(
            "programs_owned",
            "Programs this node owns (published)",
            b.programs_owned.clone(),
        );
        r.register(
            "programs_joined",
            "Programs this node is a member of",
            b.programs_joined.clone(),
        );
        r.register(
            "program_members",
            "Active (not revoked) members of each program this node owns",
            b.members.clone(),
        );
        r.register(
            "claims",
            "Claims in each owned program by state: pending (waiting for the owner's check), \
             verified, rejected (failed the check)",
            b.claims.clone(),
        );
        r.register(
            "verifier_queue",
            "Claims waiting for the owner's verifier, over all owned programs",
            b.verifier_queue.clone(),
        );
        r.register_with_unit(
            "verifier_check",
            "Time the owner's verifier took to check one claim (fetch, evaluation, re-training)",
            Unit::Seconds,
            b.verifier_check.clone(),
        );
        r.register(
            "submissions",
            "Submissions this node received as a program's owner, by verdict: accepted (met the \
             acceptance rule), pending (would be accepted; its claim waits for the owner's check, \
             see btd_claims), rejected (recorded, not accepted), duplicate (a retry of one \
             already recorded), refused (not recorded: not a member, invalid, store failure)",
            b.submissions.clone(),
        );
        r.register(
            "outbox_requests",
            "Requests this node's outbox sent to program owners (resends included), by kind: \
             single (one result) or batch (results that queued behind busy requests, sent \
             together)",
            b.outbox_requests.clone(),
        );
        r.register_with_unit(
            "blob_served",
            "Artifact bytes this node sent in /btd/blob/1 chunks",
            Unit::Bytes,
            b.blob_served.clone(),
        );
        r.register_with_unit(
            "blob_fetched",
            "Artifact bytes this node received in /btd/blob/1 chunks",
            Unit::Bytes,
            b.blob_fetched.clone(),
        );
        r.register(
            "rate_limited",
            "Peer requests refused because the peer was over its budget, by limit (requests or \
             artifacts) and protocol",
            b.rate_limited.clone(),
        );
        r.register_with_unit(
            "store_commit",
            "Time to commit one batch of database writes (durable: synchronous WAL)",
            Unit::Seconds,
            b.store_commit.clone(),
        );
        r.register(
            "worker_tokens_per_second",
            "Training throughput of the last round of this node's worker loop, per joined program",
            b.worker_tokens_per_sec.clone(),
        );
        r.register(
            "worker_rounds",
            "Worker-loop rounds finished, by outcome: submitted, unsubmitted, failed, held, \
             cancelled",
            b.worker_rounds.clone(),
        );
        b
    }
}

/// What a submission came to at the owner ([`Metrics::submission`]).
fn receipt_verdict(r: &SubmitReceipt) -> &'static str {
    if r.duplicate {
        "duplicate"
    } else if r.accepted {
        "accepted"
    } else if r.check == btd_protocol::kb::Check::Pending {
        "pending"
    } else {
        "rejected"
    }
}

/// A request refused because the peer was over its budget ([`Metrics::rate_limited`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limited {
    /// A `/btd/membership/1` request.
    Membership,
    /// A `/btd/kb/1` request.
    Kb,
    /// A `/btd/approval/1` request.
    Approval,
    /// A `/btd/blob/1` chunk request (the artifact budget).
    Blob,
    /// A DHT record a peer asked this node to keep.
    DhtRecord,
}

impl Limited {
    fn labels(self) -> LimitLabels {
        let (limit, protocol) = match self {
            Limited::Membership => ("requests", "membership"),
            Limited::Kb => ("requests", "kb"),
            Limited::Approval => ("requests", "approval"),
            Limited::Blob => ("artifacts", "blob"),
            Limited::DhtRecord => ("requests", "dht_record"),
        };
        LimitLabels { limit, protocol }
    }
}

fn outcome_name(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Held => "held",
        RunState::Failed => "failed",
        RunState::Cancelled => "cancelled",
        RunState::Unsubmitted => "unsubmitted",
        RunState::Submitted => "submitted",
        RunState::Queued => "queued",
    }
}

fn bytes(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Metrics {
    /// A fresh registry with libp2p's and btd's metrics registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let libp2p = libp2p::metrics::Metrics::new(&mut registry);
        let btd = Btd::register(&mut registry);
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                libp2p,
                bandwidth_taken: AtomicBool::new(false),
                btd,
            }),
        }
    }

    /// libp2p's recorder: `crate::net` hands it every swarm and behaviour event.
    pub(crate) fn libp2p(&self) -> &libp2p::metrics::Metrics {
        &self.inner.libp2p
    }

    /// The registry, to register libp2p's bandwidth counters when a swarm is built: the first
    /// time only (`None` after: a second swarm on the same registry would register them twice).
    /// Hold it only while registering.
    pub(crate) fn bandwidth_registry(&self) -> Option<std::sync::MutexGuard<'_, Registry>> {
        if self.inner.bandwidth_taken.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(
            self.inner
                .registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The owner's answer to a submission, as it went out.
    pub(crate) fn submission(&self, resp: &KbResponse) {
        let count = |verdict| {
            self.inner
                .btd
                .submissions
                .get_or_create(&VerdictLabel { verdict })
                .inc();
        };
        match resp {
            // A batch counts each of its results.
            KbResponse::SubmittedBatch(list) => {
                for outcome in list {
                    count(match outcome {
                        SubmitOutcome::Submitted(r) => receipt_verdict(r),
                        SubmitOutcome::Refused(_) => "refused",
                    });
                }
            }
            KbResponse::Submitted(r) => count(receipt_verdict(r)),
            _ => count("refused"),
        }
    }

    /// The outbox sent a request to an owner carrying `results` results.
    pub(crate) fn outbox_request(&self, results: usize) {
        let kind = if results > 1 { "batch" } else { "single" };
        self.inner
            .btd
            .outbox_requests
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// A peer's request refused: over its budget.
    pub(crate) fn rate_limited(&self, what: Limited) {
        self.inner
            .btd
            .rate_limited
            .get_or_create(&what.labels())
            .inc();
    }

    /// Artifact bytes sent to a peer.
    pub(crate) fn blob_served(&self, n: usize) {
        self.inner.btd.blob_served.inc_by(bytes(n));
    }

    /// Artifact bytes received from a peer.
    pub(crate) fn blob_fetched(&self, n: usize) {
        self.inner.btd.blob_fetched.inc_by(bytes(n));
    }

    /// One claim checked by the verifier.
    pub(crate) fn verifier_check(&self, took: std::time::Duration) {
        self.inner.btd.verifier_check.observe(took.as_secs_f64());
    }

    /// The store's commit-latency histogram (the store thread observes it).
    pub(crate) fn store_commit(&self) -> Histogram {
        self.inner.btd.store_commit.clone()
    }

    /// One worker-loop round finished with `state`.
    pub(crate) fn worker_round(&self, state: RunState) {
        let outcome = outcome_name(state);
        self.inner
            .btd
            .worker_rounds
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// The training throughput of a round of `program` (a joined program).
    pub(crate) fn worker_tokens_per_sec(&self, program: &ProgramId, tokens_per_sec: f64) {
        let label = ProgramLabel {
            program: program.to_string(),
        };
        self.inner
            .btd
            .worker_tokens_per_sec
            .get_or_create(&label)
            .set(tokens_per_sec);
    }

    /// Sets the gauges read from the node and encodes everything (OpenMetrics text, ending in
    /// `# EOF`).
    fn encode(&self, state: Option<NodeGauges>) -> String {
        let registry = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(s) = state {
            s.apply(&self.inner.btd);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            // Writing to a String cannot fail; should it ever, the exposition still ends properly.
            out.push_str("# EOF\n");
        }
        out
    }
}

/// The node state the gauges show, read at scrape time.
#[derive(Debug, Default)]
struct NodeGauges {
    known: i64,
    owned: i64,
    joined: i64,
    /// Per owned program: active members, pending, verified, rejected claims.
    programs: Vec<(ProgramId, [i64; 4])>,
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl NodeGauges {
    /// Reads the node's programs and, for each owned one, its status from the owner's own state
    /// (never asks another node). `None` when the node has stopped.
    async fn read(node: &NodeHandle) -> Option<NodeGauges> {
        let programs = node.programs().await.ok()?;
        let mut g = NodeGauges {
            known: count(programs.len() as u64),
            owned: count(programs.iter().filter(|p| p.own).count() as u64),
            joined: count(programs.iter().filter(|p| p.member).count() as u64),
            programs: Vec::new(),
        };
        for p in programs.iter().filter(|p| p.own) {
            // An owned program's status is answered by this node's owner core.
            let summary = btd_protocol::wire::StatusQuery::summary();
            let Ok(s) = node.status_page(Some(p.id), summary).await else {
                continue;
            };
            g.programs.push((
                p.id,
                [
                    count(s.members),
                    count(s.pending),
                    count(s.verified),
                    count(s.rejected),
                ],
            ));
        }
        Some(g)
    }

    fn apply(self, b: &Btd) {
        b.programs_known.set(self.known);
        b.programs_owned.set(self.owned);
        b.programs_joined.set(self.joined);
        // Programs no longer owned drop out of the labelled gauges.
        b.members.clear();
        b.claims.clear();
        let mut queue = 0;
        for (id, [members, pending, verified, rejected]) in self.programs {
            let program = id.to_string();
            b.members
                .get_or_create(&ProgramLabel {
                    program: program.clone(),
                })
                .set(members);
            for (state, n) in [
                ("pending", pending),
                ("verified", verified),
                ("rejected", rejected),
            ] {
                let labels = ClaimLabels {
                    program: program.clone(),
                    state,
                };
                b.claims.get_or_create(&labels).set(n);
            }
            queue += pending;
        }
        b.verifier_queue.set(queue);
    }
}

/// The metrics in Prometheus text format (OpenMetrics, ending in `# EOF`), with the gauges read
/// from the node refreshed first. A stopped node leaves those gauges as last read.
pub async fn scrape(metrics: &Metrics, node: &NodeHandle) -> String {
    let state = NodeGauges::read(node).await;
    metrics.encode(state)
}
