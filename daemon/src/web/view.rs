//! What the dashboard shows, as JSON: built from the same node reads as `btd status`, `btd ledger`
//! and `btd peers` (own programs from this node's store, joined ones from the owner over the
//! mesh, with this member's credential). The pure part ([`ProgramPage::build`]) is tested without
//! a node.

use std::collections::BTreeMap;

use btd_protocol::kb::{Check, Direction};
use btd_protocol::program::ProgramId;
use btd_protocol::wire::{KbStatus, LedgerItem, VerifiedProgram};
use btd_protocol::Timestamp;
use serde::Serialize;

use crate::node::types::{NodeInfo, PeerView, ProgramView};

/// Most results a page shows for an own program (read from the local store).
pub const OWN_WINDOW: u64 = 1000;
/// Most results a page shows for a joined program (one ledger request to the owner).
pub const JOINED_WINDOW: u32 = btd_protocol::wire::MAX_LEDGER_PAGE;

/// `GET /api/node`.
#[derive(Debug, Clone, Serialize)]
pub struct NodePage {
    /// Peer id, addresses, rungs.
    pub info: NodeInfo,
    /// Connected peers, each marked direct or relayed.
    pub peers: Vec<PeerRow>,
    /// Programs this node knows.
    pub programs: Vec<ProgramView>,
}

/// A connected peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRow {
    /// What `btd peers` says.
    #[serde(flatten)]
    pub peer: PeerView,
    /// `direct` or `relayed` (every open connection goes through a relay).
    pub connection: &'static str,
}

impl PeerRow {
    /// A peer with how it is connected.
    pub fn of(peer: PeerView) -> Self {
        let relayed =
            !peer.addresses.is_empty() && peer.addresses.iter().all(|a| a.contains("/p2p-circuit"));
        PeerRow {
            connection: if relayed { "relayed" } else { "direct" },
            peer,
        }
    }
}

/// `GET /api/programs/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramPage {
    /// The program as announced.
    pub program: ProgramSummary,
    /// Whether this node may read the KB (owner or member); when false the page shows only the
    /// announcement and `refused` says why.
    pub readable: bool,
    /// Why the KB could not be read (not a member, the owner unreachable, …).
    pub refused: Option<String>,
    /// The KB's summary (counts, champion, payouts).
    pub status: Option<KbStatus>,
    /// The results shown: the newest ones, oldest first.
    pub results: Vec<ResultRow>,
    /// Leaderboards: overall and per rung.
    pub leaderboards: Vec<Board>,
    /// Members' contributions within the shown results, with payouts as they stand.
    pub members: Vec<Contribution>,
    /// Results that carried code, with their parent (lineage); empty for programs without code.
    pub lineage: Vec<LineageRow>,
    /// The stop conditions and how far along each is.
    pub stop: Vec<StopProgress>,
}

/// The announcement's parts the page shows.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramSummary {
    /// Program id.
    pub id: ProgramId,
    /// Name.
    pub name: String,
    /// Objective.
    pub objective: String,
    /// Metric name.
    pub metric: String,
    /// `minimize` or `maximize`.
    pub direction: &'static str,
    /// The baseline, if any.
    pub baseline: Option<f64>,
    /// The owner's peer id.
    pub owner: String,
    /// Rungs the program admits.
    pub rungs: Vec<String>,
    /// How claims are checked, in words.
    pub verify: String,
    /// When it was published.
    pub published_at: Timestamp,
}

/// One result, as the chart and the tables show it.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    /// Its seq.
    pub seq: u64,
    /// When the worker made it (ms since the epoch; 0 when unknown).
    pub at_ms: u64,
    /// The member.
    pub worker: String,
    /// The rung it ran on.
    pub rung: String,
    /// The metric value.
    pub value: f64,
    /// Whether the KEEP rule accepted it.
    pub accepted: bool,
    /// Whether it became champion.
    pub champion: bool,
    /// `-`, `pending`, `verified` or `rejected`.
    pub check: &'static str,
    /// Why the owner's check failed.
    pub reason: Option<String>,
}

/// A leaderboard: overall (`rung` = `None`) or for one rung.
#[derive(Debug, Clone, Serialize)]
pub struct Board {
    /// The rung, or `None` for all rungs.
    pub rung: Option<String>,
    /// Best first.
    pub rows: Vec<Standing>,
}

/// A member's best result on a board (results the owner's check rejected never count).
#[derive(Debug, Clone, Serialize)]
pub struct Standing {
    /// The member.
    pub worker: String,
    /// The best value.
    pub best: f64,
    /// The result that holds it.
    pub seq: u64,
    /// Its check label (`verified`, `pending`, `-`): a value not yet checked is shown as such.
    pub check: &'static str,
    /// Results on this board.
    pub results: u64,
}

/// A member's contribution.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Contribution {
    /// The member.
    pub worker: String,
    /// Results shown.
    pub results: u64,
    /// Accepted by the KEEP rule.
    pub accepted: u64,
    /// Verified by the owner.
    pub verified: u64,
    /// Waiting for the owner's check.
    pub pending: u64,
    /// Rejected by the owner's check.
    pub rejected: u64,
    /// Champions it made.
    pub champions: u64,
    /// Its payout as it stands (6 decimals), if any.
    pub payout: Option<String>,
}

/// A result with code, for the ledger view.
#[derive(Debug, Clone, Serialize)]
pub struct LineageRow {
    /// Its seq.
    pub seq: u64,
    /// The result it built on (`None`: the bundle).
    pub parent: Option<u64>,
    /// The member.
    pub worker: String,
    /// The value.
    pub value: f64,
    /// Check label.
    pub check: &'static str,
    /// Whether the KEEP rule accepted it.
    pub accepted: bool,
    /// Files the patch touches.
    pub files: Vec<String>,
    /// The rationale.
    pub rationale: String,
}

/// One stop condition.
#[derive(Debug, Clone, Serialize)]
pub struct StopProgress {
    /// What it is, in words.
    pub what: String,
    /// How far along, 0 to 1.
    pub progress: f64,
    /// Whether it is reached.
    pub reached: bool,
    /// The deadline (ms since the epoch), for a deadline.
    pub deadline_ms: Option<u64>,
}

impl ProgramPage {
    /// The page of `program` from the KB's answers: `kb` is the status and the newest results
    /// (oldest first), or why they could not be read.
    pub fn build(
        program: &VerifiedProgram,
        kb: Result<(KbStatus, Vec<LedgerItem>), String>,
        now: Timestamp,
    ) -> ProgramPage {
        let p = &program.program;
        let minimize = matches!(p.criteria.direction, Direction::Minimize);
        let summary = ProgramSummary {
            id: program.id,
            name: p.name.clone(),
            objective: p.objective.clone(),
            metric: p.criteria.metric.clone(),
            direction: if minimize { "minimize" } else { "maximize" },
            baseline: p.baseline,
            owner: program.owner.to_string(),
            rungs: p.rungs.iter().map(|r| r.id.clone()).collect(),
            verify: crate::output::name_of(&p.verify.mode),
            published_at: program.published_at,
        };
        let (status, items) = match kb {
            Ok(kb) => kb,
            Err(why) => {
                return ProgramPage {
                    program: summary,
                    readable: false,
                    refused: Some(why),
                    status: None,
                    results: Vec::new(),
                    leaderboards: Vec::new(),
                    members: Vec::new(),
                    lineage: Vec::new(),
                    stop: Vec::new(),
                }
            }
        };
        let results: Vec<ResultRow> = items.iter().map(row).collect();
        let lineage = items
            .iter()
            .filter_map(|i| {
                let code = i.code.as_ref()?;
                Some(LineageRow {
                    seq: i.entry.seq,
                    parent: code.parent,
                    worker: i.entry.worker.clone(),
                    value: i.entry.value,
                    check: i.entry.check.label(),
                    accepted: i.entry.accepted,
                    files: code.files.clone(),
                    rationale: code.rationale.clone(),
                })
            })
            .collect();
        let mut leaderboards = vec![board(None, &results, minimize)];
        let rungs: std::collections::BTreeSet<&str> =
            results.iter().map(|r| r.rung.as_str()).collect();
        for rung in rungs {
            let on: Vec<ResultRow> = results.iter().filter(|r| r.rung == rung).cloned().collect();
            leaderboards.push(board(Some(rung.to_string()), &on, minimize));
        }
        let members = contributions(&results, &status);
        let stop = stop_progress(p, &status, now, program.published_at, minimize);
        ProgramPage {
            program: summary,
            readable: true,
            refused: None,
            status: Some(status),
            results,
            leaderboards,
            members,
            lineage,
            stop,
        }
    }
}

fn row(i: &LedgerItem) -> ResultRow {
    ResultRow::of(&i.entry, i.rung_id.clone(), i.created_at.as_millis())
}

impl ResultRow {
    /// A KB entry made at `at_ms` on `rung`.
    pub fn of(e: &btd_protocol::kb::Entry, rung: String, at_ms: u64) -> ResultRow {
        ResultRow {
            seq: e.seq,
            at_ms,
            worker: e.worker.clone(),
            rung,
            value: e.value,
            accepted: e.accepted,
            champion: e.champion,
            check: e.check.label(),
            reason: match &e.check {
                Check::Failed(why) => Some(why.clone()),
                _ => None,
            },
        }
    }
}

fn board(rung: Option<String>, results: &[ResultRow], minimize: bool) -> Board {
    Board {
        rung,
        rows: standings(results, minimize),
    }
}

/// Each member's best result among `results` that the owner's check has not rejected, best
/// first (ties: the earlier result).
pub fn standings(results: &[ResultRow], minimize: bool) -> Vec<Standing> {
    let mut best: BTreeMap<&str, Standing> = BTreeMap::new();
    for r in results
        .iter()
        .filter(|r| r.check != "rejected" && r.value.is_finite())
    {
        let better = |s: &Standing| {
            if minimize {
                r.value < s.best
            } else {
                r.value > s.best
            }
        };
        match best.get_mut(r.worker.as_str()) {
            Some(s) => {
                s.results += 1;
                if better(s) {
                    s.best = r.value;
                    s.seq = r.seq;
                    s.check = r.check;
                }
            }
            None => {
                best.insert(
                    &r.worker,
                    Standing {
                        worker: r.worker.clone(),
                        best: r.value,
                        seq: r.seq,
                        check: r.check,
                        results: 1,
                    },
                );
            }
        }
    }
    let mut rows: Vec<Standing> = best.into_values().collect();
    rows.sort_by(|a, b| {
        let by_value = if minimize {
            a.best.total_cmp(&b.best)
        } else {
            b.best.total_cmp(&a.best)
        };
        by_value.then(a.seq.cmp(&b.seq))
    });
    rows
}

fn contributions(results: &[ResultRow], status: &KbStatus) -> Vec<Contribution> {
    let mut by: BTreeMap<&str, Contribution> = BTreeMap::new();
    for r in results {
        let c = by.entry(&r.worker).or_insert_with(|| Contribution {
            worker: r.worker.clone(),
            ..Default::default()
        });
        c.results += 1;
        c.accepted += u64::from(r.accepted);
        c.champions += u64::from(r.champion);
        match r.check {
            "verified" => c.verified += 1,
            "pending" => c.pending += 1,
            "rejected" => c.rejected += 1,
            _ => {}
        }
    }
    for (worker, _) in status.payouts.iter() {
        by.entry(worker).or_insert_with(|| Contribution {
            worker: worker.to_string(),
            ..Default::default()
        });
    }
    let mut out: Vec<Contribution> = by
        .into_values()
        .map(|mut c| {
            c.payout = status.payouts.get(&c.worker).map(|a| a.to_string());
            c
        })
        .collect();
    out.sort_by(|a, b| b.results.cmp(&a.results).then(a.worker.cmp(&b.worker)));
    out
}

/// Seconds in the largest whole unit: `3 d`, `5 h`, `12 min`, `40 s`.
fn in_words(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{} d", s / 86_400),
        s if s >= 3_600 => format!("{} h", s / 3_600),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn stop_progress(
    p: &btd_protocol::program::Program,
    status: &KbStatus,
    now: Timestamp,
    published_at: Timestamp,
    minimize: bool,
) -> Vec<StopProgress> {
    let mut out = Vec::new();
    if let Some(max) = p.stop.max_submissions {
        let share = if max == 0 {
            1.0
        } else {
            status.submissions as f64 / max as f64
        };
        out.push(StopProgress {
            what: format!("{} of {max} submissions", status.submissions),
            progress: share.clamp(0.0, 1.0),
            reached: status.submissions >= max,
            deadline_ms: None,
        });
    }
    if let Some(deadline) = p.stop.deadline {
        let total = deadline.millis_since(published_at) as f64;
        let left_s = deadline.millis_since(now) / 1000;
        out.push(StopProgress {
            what: if left_s == 0 {
                "deadline passed".to_string()
            } else {
                format!("deadline in {}", in_words(left_s))
            },
            progress: if total > 0.0 {
                (now.millis_since(published_at) as f64 / total).clamp(0.0, 1.0)
            } else {
                1.0
            },
            reached: now >= deadline,
            deadline_ms: Some(deadline.as_millis()),
        });
    }
    if let Some(target) = p.stop.target {
        let champion = status.champion.as_ref().map(|c| c.value);
        let reached = champion.is_some_and(|v| if minimize { v <= target } else { v >= target });
        let start = p.baseline.or(champion);
        let progress = match (start, champion) {
            (Some(s), Some(c)) if (s - target).abs() > f64::EPSILON => {
                ((s - c) / (s - target)).clamp(0.0, 1.0)
            }
            _ => f64::from(u8::from(reached)),
        };
        out.push(StopProgress {
            what: format!(
                "target {} {} {target}",
                p.criteria.metric,
                if minimize { "<=" } else { ">=" }
            ),
            progress,
            reached,
            deadline_ms: None,
        });
    }
    out
}
