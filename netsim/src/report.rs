//! Metrics and the run report: latency distributions, traffic counted at the fault layer, peak RSS,
//! convergence and the invariants' verdicts. Printed as a table (`Display`) and serialised as JSON.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::check::Invariant;
use crate::records::{Connections, Convergence, ProbeOutcome, Records};
use crate::world::{Traffic, World};

/// A latency distribution in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Stats {
    /// The distribution of `samples`; `None` when empty.
    pub fn of(samples: impl IntoIterator<Item = Duration>) -> Option<Stats> {
        let mut v: Vec<f64> = samples
            .into_iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let rank = (p * v.len() as f64).ceil() as usize;
            v.get(rank.saturating_sub(1).min(v.len() - 1))
                .copied()
                .unwrap_or(0.0)
        };
        Some(Stats {
            n: v.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        })
    }
}

/// Submission counts.
#[derive(Debug, Clone, Serialize)]
pub struct Submissions {
    /// Submit commands issued.
    pub issued: usize,
    /// Acknowledged by the owner.
    pub acked: usize,
    /// Not acknowledged (owner down, revoked, …).
    pub failed: usize,
    /// Receipts marked as retries of an earlier submission.
    pub duplicate_receipts: usize,
    /// Entries in the owner's log at the end.
    pub log_entries: usize,
}

/// Traffic per node, counted at the fault layer (encrypted bytes; a "write" is roughly one Yamux
/// frame).
#[derive(Debug, Clone, Serialize)]
pub struct TrafficSummary {
    /// Mean bytes sent per node.
    pub bytes_out_mean: u64,
    /// Most bytes sent by one node.
    pub bytes_out_max: u64,
    /// Mean writes per node.
    pub writes_out_mean: u64,
    /// Most writes by one node.
    pub writes_out_max: u64,
    /// Bytes sent by the owner.
    pub owner_bytes_out: u64,
    /// Connections opened in total.
    pub connections: u64,
    /// Per node, by index.
    pub per_node: Vec<Traffic>,
}

impl TrafficSummary {
    pub(crate) fn of(world: &World) -> TrafficSummary {
        let per_node: Vec<Traffic> = (0..world.len()).map(|i| world.traffic(i)).collect();
        let n = per_node.len().max(1) as u64;
        TrafficSummary {
            bytes_out_mean: per_node.iter().map(|t| t.bytes_out).sum::<u64>() / n,
            bytes_out_max: per_node.iter().map(|t| t.bytes_out).max().unwrap_or(0),
            writes_out_mean: per_node.iter().map(|t| t.writes_out).sum::<u64>() / n,
            writes_out_max: per_node.iter().map(|t| t.writes_out).max().unwrap_or(0),
            owner_bytes_out: per_node.first().map_or(0, |t| t.bytes_out),
            connections: per_node.iter().map(|t| t.connections).sum::<u64>() / 2,
            per_node,
        }
    }
}

/// Memory use of the process (`/proc/self/status`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    /// RSS before the nodes started.
    pub baseline_mib: f64,
    /// Peak RSS of the process (VmHWM).
    pub peak_mib: f64,
    /// (peak − baseline) / nodes.
    pub per_node_mib: f64,
}

/// Reads a `/proc/self/status` field in MiB (0 where unavailable).
pub fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Wall-clock phases.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Durations {
    /// Starting every node until each is connected and identified.
    pub boot_ms: u64,
    /// From the publish to the end of the final checks.
    pub run_ms: u64,
    /// Everything, teardown included.
    pub total_ms: u64,
}

/// Probe counts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Probes {
    /// Probes sent.
    pub total: usize,
    /// Refused by the owner.
    pub refused: usize,
    /// Unanswered.
    pub unanswered: usize,
    /// Answered with content (violations).
    pub leaks: usize,
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The seed used (`NETSIM_SEED` replays it).
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Where results came from.
    pub workload: String,
    /// Phases.
    pub durations: Durations,
    /// Publish → each node knows the program.
    pub propagation: Option<Stats>,
    /// Join request → credential stored, human approval time excluded.
    pub join: Option<Stats>,
    /// Submit → durable receipt.
    pub submit_rtt: Option<Stats>,
    /// Submission counts.
    pub submissions: Submissions,
    /// Traffic at the fault layer.
    pub traffic: TrafficSummary,
    /// Memory.
    pub memory: Memory,
    /// Convergence checks.
    pub convergence: Vec<Convergence>,
    /// Open connections per node from the publish on.
    pub connections: Connections,
    /// KB probes.
    pub probes: Probes,
    /// What the timeline did, in ms after the publish.
    pub timeline: Vec<(u64, String)>,
    /// Verdicts.
    pub invariants: Vec<Invariant>,
    /// All invariants held.
    pub passed: bool,
}

impl Probes {
    pub(crate) fn of(rec: &Records) -> Probes {
        let count =
            |f: fn(&ProbeOutcome) -> bool| rec.probes.iter().filter(|p| f(&p.outcome)).count();
        Probes {
            total: rec.probes.len(),
            refused: count(|o| matches!(o, ProbeOutcome::Refused(_))),
            unanswered: count(|o| matches!(o, ProbeOutcome::NoAnswer)),
            leaks: count(|o| matches!(o, ProbeOutcome::Leak(_))),
        }
    }
}

fn stats_row(f: &mut fmt::Formatter<'_>, name: &str, s: &Option<Stats>) -> fmt::Result {
    match s {
        Some(s) => writeln!(
            f,
            "  {name:<28} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            s.n, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms
        ),
        None => writeln!(f, "  {name:<28} {:>6}", 0),
    }
}

fn kib(b: u64) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.durations;
        writeln!(
            f,
            "netsim {} — {} nodes, seed {} — {}",
            self.scenario,
            self.nodes,
            self.seed,
            if self.passed { "PASSED" } else { "FAILED" }
        )?;
        writeln!(f, "  workload: {}", self.workload)?;
        writeln!(
            f,
            "  boot {} ms, run {} ms, total {} ms",
            d.boot_ms, d.run_ms, d.total_ms
        )?;
        writeln!(
            f,
            "\n  {:<28} {:>6} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "n", "p50", "p95", "p99", "max"
        )?;
        stats_row(f, "announcement propagation", &self.propagation)?;
        stats_row(f, "join (excl. approval)", &self.join)?;
        stats_row(f, "submission round trip", &self.submit_rtt)?;
        let s = &self.submissions;
        writeln!(
            f,
            "\n  submissions: {} issued, {} acknowledged, {} failed, {} retry receipts, {} in the owner's log",
            s.issued, s.acked, s.failed, s.duplicate_receipts, s.log_entries
        )?;
        let t = &self.traffic;
        writeln!(
            f,
            "  traffic/node: mean {} ({} writes), max {} ({} writes); owner {}; {} connections",
            kib(t.bytes_out_mean),
            t.writes_out_mean,
            kib(t.bytes_out_max),
            t.writes_out_max,
            kib(t.owner_bytes_out),
            t.connections
        )?;
        let c = &self.connections;
        writeln!(
            f,
            "  connections/node: mean {:.1} (end {:.1}), max {} (end {}; peak on {} at {} ms); owner/relays peak {}",
            c.mean, c.end_mean, c.peak_max, c.end_max, c.peak_node, c.peak_at_ms, c.servers_peak
        )?;
        let m = &self.memory;
        writeln!(
            f,
            "  memory: peak RSS {:.1} MiB (baseline {:.1} MiB) → {:.2} MiB/node",
            m.peak_mib, m.baseline_mib, m.per_node_mib
        )?;
        let p = &self.probes;
        writeln!(
            f,
            "  KB probes: {} sent, {} refused, {} unanswered, {} leaks",
            p.total, p.refused, p.unanswered, p.leaks
        )?;
        for c in &self.convergence {
            match c.within {
                Some(w) => writeln!(
                    f,
                    "  convergence {}: {} members in {} ms",
                    c.label,
                    c.members,
                    w.as_millis()
                )?,
                None => writeln!(
                    f,
                    "  convergence {}: NOT within bound, lagging {}",
                    c.label,
                    c.lagging.join(", ")
                )?,
            }
        }
        if !self.timeline.is_empty() {
            writeln!(f, "\n  timeline:")?;
            for (ms, what) in &self.timeline {
                writeln!(f, "    {ms:>7} ms  {what}")?;
            }
        }
        writeln!(f, "\n  invariants:")?;
        for i in &self.invariants {
            writeln!(
                f,
                "    [{}] {}: {}",
                if i.ok { "ok" } else { "FAIL" },
                i.name,
                i.detail
            )?;
        }
        if !self.passed {
            writeln!(f, "\n  replay with NETSIM_SEED={}", self.seed)?;
        }
        Ok(())
    }
}
