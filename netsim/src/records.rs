//! What a run observes, collected by the actors and read by the checks and the report.

use std::time::Duration;

use btd_protocol::wire::ErrorCode;
use serde::Serialize;

use crate::world::NodeIx;

/// A join that completed.
#[derive(Debug, Clone)]
pub struct JoinRecord {
    /// The member.
    pub node: NodeIx,
    /// Join request → credential stored, minus the simulated human's approval delay.
    pub latency: Duration,
    /// The approval delay that was excluded.
    pub human: Duration,
    /// Attempts used (a join restarts when the owner was unreachable or lost the code).
    pub attempts: u32,
}

/// A submission the owner acknowledged.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The worker node.
    pub node: NodeIx,
    /// Its member id.
    pub member: String,
    /// The value submitted.
    pub value: f64,
    /// The owner's sequence number.
    pub seq: u64,
    /// Accepted by the KEEP rule.
    pub accepted: bool,
    /// Became champion.
    pub champion: bool,
    /// Impact.
    pub impact: f64,
    /// The owner said it was a retry of an earlier one.
    pub duplicate: bool,
    /// Submit command → receipt.
    pub rtt: Duration,
    /// Sent after the member's revocation completed.
    pub after_revoke: bool,
}

/// How a KB probe by a non-member or revoked member ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    /// The owner refused with this code.
    Refused(ErrorCode),
    /// The request did not get an answer (owner down, partition, timeout).
    NoAnswer,
    /// The owner answered with KB content: a violation.
    Leak(String),
}

/// One KB probe.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The probing node.
    pub node: NodeIx,
    /// Which credential it used: `random`, `stolen` (another member's) or `own-revoked`.
    pub credential: &'static str,
    /// The outcome.
    pub outcome: ProbeOutcome,
}

/// A convergence check (after a heal, and at the end).
#[derive(Debug, Clone, Serialize)]
pub struct Convergence {
    /// What triggered it.
    pub label: String,
    /// Time until every live member saw the champion; `None` if some never did in time.
    #[serde(rename = "within_ms", serialize_with = "opt_ms")]
    pub within: Option<Duration>,
    /// Members that had not converged at the deadline.
    pub lagging: Vec<String>,
    /// Members checked.
    pub members: usize,
}

fn opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

/// Who made a claim in a `train` workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    /// Trained on the training split and claimed what it measured.
    Honest,
    /// Claimed a value its checkpoint does not reach.
    FakeMetric,
    /// Trained on the validation split and claimed what it measured there.
    ValTrainer,
}

/// A claim made in a `train` workload and how the owner's check ended.
#[derive(Debug, Clone)]
pub struct ClaimRecord {
    /// The node.
    pub node: NodeIx,
    /// Who made it.
    pub kind: ClaimKind,
    /// Its seq in the owner's log.
    pub seq: u64,
    /// The check's end state as the owner served it (`None`: never seen settled).
    pub check: Option<btd_protocol::kb::Check>,
}

/// Everything observed during a run.
#[derive(Debug, Default)]
pub struct Records {
    /// Time from the publish until each node knew the program (index = node).
    pub discovered: Vec<Option<Duration>>,
    /// Completed joins.
    pub joins: Vec<JoinRecord>,
    /// Joins that never completed (node, last reason).
    pub join_failures: Vec<(NodeIx, String)>,
    /// Non-member joins the owner denied.
    pub denied: Vec<NodeIx>,
    /// Submit commands issued (node, value).
    pub issued: Vec<(NodeIx, f64)>,
    /// Acknowledged submissions.
    pub acks: Vec<Ack>,
    /// Submissions that were not acknowledged (node, error).
    pub submit_failures: Vec<(NodeIx, String)>,
    /// KB probes by non-members and revoked members.
    pub probes: Vec<Probe>,
    /// Convergence checks.
    pub convergence: Vec<Convergence>,
    /// Timeline log: (ms after publish, what happened).
    pub timeline: Vec<(u64, String)>,
    /// Claims of a `train` workload.
    pub claims: Vec<ClaimRecord>,
    /// What each hostile node did.
    pub attacks: Vec<AttackRecord>,
    /// The latency probe's round trips to the owner (`None`: no answer).
    pub owner_rtts: Vec<Option<Duration>>,
    /// The program published late in a hostile run: each honest node's discover-and-join time,
    /// or why it failed.
    pub late: Vec<(NodeIx, Result<Duration, String>)>,
    /// What the owner and the nodes hold at the end of a hostile run.
    pub held: Option<Held>,
    /// Open connections per node, sampled from the publish on.
    pub connections: Connections,
}

/// Open connections per node (at the fault layer), sampled every [`Connections::EVERY`] from the
/// publish to the end of the checks. The owner and relays are counted apart: they serve every
/// member and unreachable node, so their count follows the members at work, not the bound.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    /// Samples taken.
    pub samples: usize,
    /// The most connections one node (not the owner or a relay) had at any sample.
    pub peak_max: usize,
    /// That node's label.
    pub peak_node: String,
    /// When, in ms after the publish.
    pub peak_at_ms: u64,
    /// The mean per node (not the owner or a relay), averaged over the samples.
    pub mean: f64,
    /// The mean per node (not the owner or a relay) at the last sample.
    pub end_mean: f64,
    /// The most on one node (not the owner or a relay) at the last sample.
    pub end_max: usize,
    /// The most the owner or a relay had at any sample.
    pub servers_peak: usize,
}

impl Connections {
    /// The sampling period.
    pub const EVERY: Duration = Duration::from_millis(500);

    /// Adds a sample: open connections by node index, `at_ms` after the publish; `server` says
    /// which nodes are the owner or relays.
    pub fn sample(
        &mut self,
        per_node: &[usize],
        at_ms: u64,
        server: impl Fn(NodeIx) -> bool,
        label: impl Fn(NodeIx) -> String,
    ) {
        let (mut sum, mut n, mut max, mut node) = (0usize, 0usize, 0usize, 0);
        for (ix, &c) in per_node.iter().enumerate() {
            if server(ix) {
                self.servers_peak = self.servers_peak.max(c);
                continue;
            }
            sum += c;
            n += 1;
            if c > max {
                (max, node) = (c, ix);
            }
        }
        let mean = sum as f64 / n.max(1) as f64;
        if max > self.peak_max || self.samples == 0 {
            self.peak_max = max;
            self.peak_node = label(node);
            self.peak_at_ms = at_ms;
        }
        self.mean = (self.mean * self.samples as f64 + mean) / (self.samples + 1) as f64;
        self.samples += 1;
        self.end_mean = mean;
        self.end_max = max;
    }
}

/// One hostile node's attack.
#[derive(Debug, Clone, Default)]
pub struct AttackRecord {
    /// The node.
    pub node: NodeIx,
    /// The attack (`hostile.attacks`).
    pub attack: String,
    /// Messages or identities it sent.
    pub sent: usize,
    /// How many the owner answered the way the attacker wanted (a code, a receipt, a reply).
    pub answered: usize,
    /// Its submissions' seqs in the owner's log.
    pub seqs: Vec<u64>,
    /// What happened, in words.
    pub detail: String,
}

/// What the owner and the nodes hold at the end of a hostile run (memory and disk bounds).
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// Open join codes on the owner.
    pub pending_codes: usize,
    /// The most programs any node knows, and which node.
    pub max_known: (usize, String),
    /// The owner's database and WAL, bytes.
    pub owner_db_bytes: u64,
    /// Programs the attacker announced that some honest node kept.
    pub flood_known: usize,
}
