//! The invariants, checked against what the actors observed and the owner's durable log (read from
//! its SQLite file after it was crashed at the end of the run).

use std::collections::HashMap;

use btd::node::types::StatusView;
use btd::store::{SubmissionRow, VerdictRow};
use btd_protocol::kb::{Check, Kb};
use btd_protocol::program::Program;
use serde::Serialize;

use crate::records::{ClaimKind, ProbeOutcome, Records};
use crate::roles::{Layout, Role};
use crate::sim::Sim;

/// One invariant's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Invariant {
    /// Its name.
    pub name: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// Evidence or the first violations.
    pub detail: String,
}

fn verdict(name: &'static str, problems: Vec<String>, fine: String) -> Invariant {
    let ok = problems.is_empty();
    let detail = if ok {
        fine
    } else {
        let n = problems.len();
        let mut d: Vec<String> = problems.into_iter().take(5).collect();
        if n > 5 {
            d.push(format!("… {} more", n - 5));
        }
        d.join("; ")
    };
    Invariant { name, ok, detail }
}

/// Everything the checks need.
pub(crate) struct Evidence<'a> {
    pub(crate) rec: &'a Records,
    pub(crate) sim: &'a Sim,
    /// The program the owner published.
    pub(crate) program: &'a Program,
    /// The owner's log (this program only), in seq order.
    pub(crate) log: &'a [SubmissionRow],
    /// The owner's verdicts on claims (this program only), in the order applied.
    pub(crate) verdicts: &'a [VerdictRow],
    /// The owner's status as served just before the end.
    pub(crate) served: Option<&'a StatusView>,
}

/// Runs every check.
pub(crate) fn all(e: &Evidence<'_>) -> Vec<Invariant> {
    vec![
        acked_durable(e),
        no_double_count(e),
        champion_rules(e),
        payouts_exact(e),
        kb_gated(e),
        revocation(e),
        joins(e),
        converged(e),
        propagated(e),
        claims_checked(e),
    ]
}

fn acked_durable(e: &Evidence<'_>) -> Invariant {
    let mut bad = Vec::new();
    for a in &e.rec.acks {
        let row = usize::try_from(a.seq)
            .ok()
            .and_then(|s| s.checked_sub(1))
            .and_then(|i| e.log.get(i));
        match row {
            None => bad.push(format!("seq {} ({}) missing", a.seq, a.member)),
            Some(r) => {
                let x = &r.entry;
                if x.seq != a.seq
                    || x.worker != a.member
                    || x.value.to_bits() != a.value.to_bits()
                    || x.accepted != a.accepted
                    || x.champion != a.champion
                    || x.impact.to_bits() != a.impact.to_bits()
                {
                    bad.push(format!("seq {} differs: acked {a:?}, stored {x:?}", a.seq));
                }
            }
        }
    }
    let fine = format!(
        "{} acknowledged submissions all in the owner's log ({} entries)",
        e.rec.acks.len(),
        e.log.len()
    );
    verdict("acked submissions survive crash/restart", bad, fine)
}

fn no_double_count(e: &Evidence<'_>) -> Invariant {
    let mut bad = Vec::new();
    for (i, r) in e.log.iter().enumerate() {
        if r.entry.seq != i as u64 + 1 {
            bad.push(format!("position {} holds seq {}", i + 1, r.entry.seq));
        }
    }
    let mut nonces: HashMap<(&str, [u8; 16]), u64> = HashMap::new();
    for r in e.log {
        if let Some(prev) = nonces.insert((r.entry.worker.as_str(), r.nonce), r.entry.seq) {
            bad.push(format!(
                "nonce of {} counted twice (seq {prev} and {})",
                r.entry.worker, r.entry.seq
            ));
        }
    }
    // Every Submit command netsim issued is one distinct (member, value): the log may hold each at
    // most once, and nothing netsim did not issue.
    let mut issued: HashMap<(String, u64), usize> = HashMap::new();
    for (ix, v) in &e.rec.issued {
        let member = e.sim.peer(*ix).map(|p| p.to_string()).unwrap_or_default();
        *issued.entry((member, v.to_bits())).or_default() += 1;
    }
    let mut stored: HashMap<(String, u64), usize> = HashMap::new();
    for r in e.log {
        *stored
            .entry((r.entry.worker.clone(), r.entry.value.to_bits()))
            .or_default() += 1;
    }
    for (k, n) in &stored {
        let allowed = issued.get(k).copied().unwrap_or(0);
        if *n > allowed {
            bad.push(format!(
                "{} stored {n}× value {} but submitted it {allowed}×",
                k.0,
                f64::from_bits(k.1)
            ));
        }
    }
    let dups = e.rec.acks.iter().filter(|a| a.duplicate).count();
    let fine = format!(
        "{} entries, seqs 1..={} contiguous, nonces unique, none beyond what was submitted ({} receipts were for retries)",
        e.log.len(),
        e.log.len(),
        dups
    );
    verdict("no submission counted twice", bad, fine)
}

/// Rebuilds the KB from the owner's durable log: submissions and verdicts in the order they
/// happened, by the KB rules alone.
fn replay(e: &Evidence<'_>) -> Result<Kb, String> {
    e.program
        .kb()
        .map_err(|err| format!("the rules are invalid: {err:?}"))?
        .replay_events(btd::store::kb_history(e.log, e.verdicts))
        .map_err(|err| format!("the owner's log does not replay: {err:?}"))
}

fn champion_rules(e: &Evidence<'_>) -> Invariant {
    let mut bad = Vec::new();
    match replay(e) {
        Err(m) => bad.push(m),
        Ok(kb) => {
            for (mine, theirs) in kb.entries().iter().zip(e.log) {
                // With verification the stored row is the claim as received; its verdict is
                // replayed, so compare what was claimed.
                let differs = if e.program.verify.checks() {
                    (mine.seq, &mine.worker, mine.value.to_bits())
                        != (
                            theirs.entry.seq,
                            &theirs.entry.worker,
                            theirs.entry.value.to_bits(),
                        )
                } else {
                    *mine != theirs.entry
                };
                if differs {
                    bad.push(format!(
                        "seq {}: rules give {mine:?}, owner stored {:?}",
                        mine.seq, theirs.entry
                    ));
                }
            }
            match e.served {
                Some(s) if s.champion.as_ref() != kb.champion() => bad.push(format!(
                    "owner serves champion {:?}, rules give {:?}",
                    s.champion,
                    kb.champion()
                )),
                Some(_) => {}
                None => bad.push("the owner's status could not be read at the end".into()),
            }
            if bad.is_empty() {
                let c = kb
                    .champion()
                    .map(|c| format!("seq {} value {:.6}", c.seq, c.value));
                return verdict(
                    "champion is the best accepted result",
                    bad,
                    format!(
                        "re-applied the KB rules to {} entries: champion {}",
                        e.log.len(),
                        c.unwrap_or_else(|| "none".into())
                    ),
                );
            }
        }
    }
    verdict("champion is the best accepted result", bad, String::new())
}

fn payouts_exact(e: &Evidence<'_>) -> Invariant {
    let mut bad = Vec::new();
    let mut fine = String::new();
    match replay(e) {
        Err(m) => bad.push(m),
        Ok(kb) => {
            let p = kb.payouts();
            let total = p.total();
            if !p.is_empty() && total != e.program.reward.pool {
                bad.push(format!(
                    "payouts sum to {total}, the pool is {}",
                    e.program.reward.pool
                ));
            }
            if let Some(s) = e.served {
                if s.payouts != p {
                    bad.push("the owner serves other payouts than the rules give".into());
                }
            }
            fine = format!(
                "{} payees, total {total} = pool {}",
                p.len(),
                e.program.reward.pool
            );
        }
    }
    verdict("payouts sum exactly to the pool", bad, fine)
}

fn kb_gated(e: &Evidence<'_>) -> Invariant {
    let mut bad = Vec::new();
    let mut refused = 0;
    for p in &e.rec.probes {
        match &p.outcome {
            ProbeOutcome::Leak(what) => bad.push(format!(
                "{} ({} credential) received {what}",
                e.sim.layout.label(p.node),
                p.credential
            )),
            ProbeOutcome::Refused(_) => refused += 1,
            ProbeOutcome::NoAnswer => {}
        }
    }
    let probers = (0..e.sim.layout.len())
        .filter(|&i| matches!(e.sim.layout.role(i), Role::NonMember | Role::Revoked))
        .count();
    if probers > 0 && refused == 0 {
        bad.push("no probe got an answer: the check proved nothing".into());
    }
    let fine = format!(
        "{} probes by {probers} non-members/revoked members: {refused} refused, {} unanswered, 0 leaks",
        e.rec.probes.len(),
        e.rec.probes.len() - refused
    );
    verdict(
        "non-members and revoked members get no KB content",
        bad,
        fine,
    )
}

fn revocation(e: &Evidence<'_>) -> Invariant {
    let mut bad: Vec<String> = e
        .rec
        .acks
        .iter()
        .filter(|a| a.after_revoke)
        .map(|a| format!("seq {} from a revoked member was accepted", a.seq))
        .collect();
    let layout: &Layout = &e.sim.layout;
    for ix in layout.with_role(Role::Revoked) {
        let stored: Vec<u64> = e
            .log
            .iter()
            .filter(|r| Some(r.entry.worker.clone()) == e.sim.peer(ix).map(|p| p.to_string()))
            .map(|r| r.entry.seq)
            .collect();
        let acked = e.rec.acks.iter().filter(|a| a.node == ix).count();
        if stored.len() < acked {
            bad.push(format!("{} lost entries", layout.label(ix)));
        }
    }
    let refused_after = e
        .rec
        .submit_failures
        .iter()
        .filter(|(ix, m)| layout.role(*ix) == Role::Revoked && m.contains("revoked"))
        .count();
    verdict(
        "revocation takes effect on the next request",
        bad,
        format!("{refused_after} submissions after revocation refused, none accepted"),
    )
}

fn joins(e: &Evidence<'_>) -> Invariant {
    let bad: Vec<String> = e
        .rec
        .join_failures
        .iter()
        .filter(|(ix, _)| e.sim.layout.role(*ix).is_member())
        .map(|(ix, why)| format!("{} never joined: {why}", e.sim.layout.label(*ix)))
        .collect();
    let fine = format!(
        "{} members joined, {} non-members denied",
        e.rec.joins.len(),
        e.rec.denied.len()
    );
    verdict("every member joins", bad, fine)
}

fn converged(e: &Evidence<'_>) -> Invariant {
    let bad: Vec<String> = e
        .rec
        .convergence
        .iter()
        .filter(|c| c.within.is_none())
        .map(|c| format!("{}: {} lagging", c.label, c.lagging.join(", ")))
        .collect();
    let fine = e
        .rec
        .convergence
        .iter()
        .map(|c| {
            format!(
                "{}: {} members in {} ms",
                c.label,
                c.members,
                c.within.map_or(0, |d| d.as_millis())
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    verdict("live members converge on the champion", bad, fine)
}

fn propagated(e: &Evidence<'_>) -> Invariant {
    let missing: Vec<String> = e
        .rec
        .discovered
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_none())
        .map(|(ix, _)| e.sim.layout.label(ix))
        .collect();
    let fine = format!("all {} nodes learned the program", e.rec.discovered.len());
    verdict("the announcement reaches every node", missing, fine)
}

/// `train` workloads: every adversary claim that the KEEP rule would have accepted was checked and
/// rejected, none counts; every honest claim the owner checked was verified; none is left pending.
fn claims_checked(e: &Evidence<'_>) -> Invariant {
    let name = "fake and val-trained claims never count; honest ones verify";
    if e.rec.claims.is_empty() {
        return verdict(name, Vec::new(), "no training workload".into());
    }
    let mut bad = Vec::new();
    let kb = match replay(e) {
        Ok(kb) => kb,
        Err(m) => return verdict(name, vec![m], String::new()),
    };
    let mut caught = 0;
    let mut verified = 0;
    for c in &e.rec.claims {
        let label = e.sim.layout.label(c.node);
        let Some(entry) = usize::try_from(c.seq)
            .ok()
            .and_then(|s| s.checked_sub(1))
            .and_then(|i| kb.entries().get(i))
        else {
            bad.push(format!(
                "{label}: claim {} is not in the owner's log",
                c.seq
            ));
            continue;
        };
        if c.check.as_ref() != Some(&entry.check) {
            bad.push(format!(
                "{label}: claim {} settled as {:?} for the member, {:?} in the owner's log",
                c.seq, c.check, entry.check
            ));
        }
        match (c.kind, &entry.check) {
            (_, Check::Pending) => bad.push(format!("{label}: claim {} still pending", c.seq)),
            (ClaimKind::Honest, Check::Failed(why)) => {
                bad.push(format!("{label}: honest claim {} rejected: {why}", c.seq))
            }
            (ClaimKind::Honest, Check::Verified) => verified += 1,
            (ClaimKind::Honest, _) => {}
            (_, Check::Verified) => {
                bad.push(format!("{label}: {:?} claim {} verified", c.kind, c.seq))
            }
            (_, Check::Failed(_)) => caught += 1,
            // Not better than the champion: never checked, and it counts for nothing.
            (_, Check::NotNeeded) => {}
        }
        if c.kind != ClaimKind::Honest && (entry.accepted || entry.impact > 0.0) {
            bad.push(format!("{label}: {:?} claim {} counts", c.kind, c.seq));
        }
    }
    let adversaries: Vec<String> = e
        .rec
        .claims
        .iter()
        .filter(|c| c.kind != ClaimKind::Honest)
        .map(|c| {
            e.sim
                .peer(c.node)
                .map(|p| p.to_string())
                .unwrap_or_default()
        })
        .collect();
    for w in &adversaries {
        if kb.payouts().get(w).is_some() {
            bad.push(format!("adversary {w} is paid"));
        }
    }
    if caught == 0 && !adversaries.is_empty() {
        bad.push("no adversary claim was ever checked: the scenario proves nothing".into());
    }
    let fine = format!(
        "{} claims: {caught} adversary claims rejected by the owner's check, {verified} honest claims verified, none pending; no adversary paid",
        e.rec.claims.len()
    );
    verdict(name, bad, fine)
}
