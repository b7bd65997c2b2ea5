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
    /// The hostile nodes' attacks and bounds.
    pub(crate) spec: &'a crate::scenario::HostileSpec,
    /// `[checks] max_connections_per_node` (0: not checked).
    pub(crate) max_connections: usize,
}

/// Runs every check.
pub(crate) fn all(e: &Evidence<'_>) -> Vec<Invariant> {
    let mut out = vec![
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
    ];
    if !e.sim.layout.with_role(Role::Hostile).is_empty() {
        out.extend(crate::check::hostile::all(e));
    }
    if e.max_connections > 0 {
        out.push(connections_bounded(e));
    }
    out
}

/// The daemon's connection bound holds on its own (no host-level cap needed): no node but the owner
/// and relays (which serve every member at work) had more than the scenario's bound open at any
/// sample from the publish on.
fn connections_bounded(e: &Evidence<'_>) -> Invariant {
    let c = &e.rec.connections;
    let mut bad = Vec::new();
    if c.samples == 0 {
        bad.push("no connection sample was taken".to_string());
    } else if c.peak_max > e.max_connections {
        bad.push(format!(
            "{} had {} connections open at {} ms (bound {})",
            c.peak_node, c.peak_max, c.peak_at_ms, e.max_connections
        ));
    }
    verdict(
        "connections per node stay bounded",
        bad,
        format!(
            "at most {} on any node over {} samples (bound {}), mean {:.1}; owner/relays peak {}",
            c.peak_max, c.samples, e.max_connections, c.mean, c.servers_peak
        ),
    )
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
        let Some(entry) = kb.entry(c.seq) else {
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

/// The `hostile` scenario's invariants (only for runs with hostile nodes).
mod hostile {
    use std::collections::HashSet;
    use std::time::Duration;

    use btd_protocol::kb::{Check, MAX_VERDICT_REASON_BYTES};
    use btd_protocol::membership::MAX_PENDING_TOTAL;

    use super::{replay, verdict, Evidence, Invariant};
    use crate::records::AttackRecord;
    use crate::roles::Role;

    pub(super) fn all(e: &Evidence<'_>) -> Vec<Invariant> {
        vec![
            every_attack_ran(e),
            no_credit(e),
            reasons_bounded(e),
            late_program(e),
            owner_latency(e),
            bounded(e),
        ]
    }

    fn attacks<'a>(e: &'a Evidence<'_>, name: &'a str) -> impl Iterator<Item = &'a AttackRecord> {
        e.rec.attacks.iter().filter(move |a| a.attack == name)
    }

    fn every_attack_ran(e: &Evidence<'_>) -> Invariant {
        let mut bad = Vec::new();
        for ix in e.sim.layout.with_role(Role::Hostile) {
            match e.rec.attacks.iter().find(|a| a.node == ix) {
                None => bad.push(format!(
                    "{} never finished its attack",
                    e.sim.layout.label(ix)
                )),
                Some(a) if a.sent == 0 => bad.push(format!(
                    "{} ({}) sent nothing: {}",
                    e.sim.layout.label(ix),
                    a.attack,
                    a.detail
                )),
                Some(_) => {}
            }
        }
        let fine = e
            .rec
            .attacks
            .iter()
            .map(|a| {
                format!(
                    "{}: {} sent, {} answered as wished",
                    a.attack, a.sent, a.answered
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        verdict("every attack ran", bad, fine)
    }

    /// No hostile member gets credit; nothing unverified counts.
    fn no_credit(e: &Evidence<'_>) -> Invariant {
        let name = "no stolen or unverified credit";
        let kb = match replay(e) {
            Ok(kb) => kb,
            Err(m) => return verdict(name, vec![m], String::new()),
        };
        let hostile: HashSet<String> = e
            .sim
            .layout
            .with_role(Role::Hostile)
            .into_iter()
            .filter_map(|ix| e.sim.peer(ix).map(|p| p.to_string()))
            .collect();
        let mut bad = Vec::new();
        let mut theirs = 0;
        for x in kb.entries() {
            if hostile.contains(&x.worker) {
                theirs += 1;
                if x.check == Check::Verified || x.impact > 0.0 {
                    bad.push(format!("hostile seq {} counts: {x:?}", x.seq));
                }
            }
            if x.impact > 0.0 && x.check != Check::Verified {
                bad.push(format!(
                    "seq {} has impact {} unverified ({:?})",
                    x.seq, x.impact, x.check
                ));
            }
        }
        if let Some(c) = kb.champion() {
            if hostile.contains(&c.worker) {
                bad.push(format!("a hostile member is champion: seq {}", c.seq));
            }
        }
        for w in &hostile {
            if kb.payouts().get(w).is_some() {
                bad.push(format!("hostile {w} is paid"));
            }
        }
        let thefts: usize = attacks(e, "digest_thief").map(|a| a.sent).sum();
        if attacks(e, "digest_thief").next().is_some() && thefts == 0 {
            bad.push("the digest thief never found a champion to copy: proves nothing".into());
        }
        let fine = format!(
            "{theirs} hostile entries in the log, none verified or credited; {thefts} thefts of the champion's digest; every credited entry verified; {} payees, none hostile",
            kb.payouts().len()
        );
        verdict(name, bad, fine)
    }

    fn reasons_bounded(e: &Evidence<'_>) -> Invariant {
        let mut bad = Vec::new();
        let mut longest = 0;
        let kb = match replay(e) {
            Ok(kb) => kb,
            Err(m) => return verdict("verdict reasons bounded", vec![m], String::new()),
        };
        for x in kb.entries() {
            if let Check::Failed(why) = &x.check {
                longest = longest.max(why.len());
                if why.len() > MAX_VERDICT_REASON_BYTES || why.chars().any(char::is_control) {
                    bad.push(format!(
                        "seq {}: a reason of {} bytes, or with control characters",
                        x.seq,
                        why.len()
                    ));
                }
            }
        }
        let poisoned: Vec<u64> = attacks(e, "verdict_poisoner")
            .flat_map(|a| a.seqs.clone())
            .collect();
        let caught = kb
            .entries()
            .iter()
            .filter(|x| poisoned.contains(&x.seq) && matches!(x.check, Check::Failed(_)))
            .count();
        if !poisoned.is_empty() && caught == 0 {
            bad.push("no poisoned claim was ever checked: proves nothing".into());
        }
        if e.served.is_none() {
            bad.push("the owner's status could not be read at the end".into());
        }
        let fine = format!(
            "{caught} poisoned claims rejected; longest stored reason {longest} bytes (cap {MAX_VERDICT_REASON_BYTES}); the owner's status still served"
        );
        verdict("verdict reasons bounded", bad, fine)
    }

    fn late_program(e: &Evidence<'_>) -> Invariant {
        let mut bad: Vec<String> = e
            .rec
            .late
            .iter()
            .filter_map(|(ix, r)| {
                r.as_ref()
                    .err()
                    .map(|why| format!("{}: {why}", e.sim.layout.label(*ix)))
            })
            .collect();
        let honest = e.sim.layout.with_role(Role::Worker).len()
            + e.sim.layout.with_role(Role::Observer).len();
        if e.rec.late.len() < honest {
            bad.push(format!(
                "only {} of {honest} honest nodes tried",
                e.rec.late.len()
            ));
        }
        let slowest = e
            .rec
            .late
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .max()
            .copied()
            .unwrap_or_default();
        let fine = format!(
            "all {honest} honest nodes discovered and joined the program published after the attacks, the last within {} ms",
            slowest.as_millis()
        );
        verdict(
            "every honest node discovers and joins a late program",
            bad,
            fine,
        )
    }

    fn owner_latency(e: &Evidence<'_>) -> Invariant {
        let p95_bound = Duration::from_millis(e.spec.owner_p95_ms);
        let max_bound = Duration::from_millis(e.spec.owner_max_ms);
        let mut rtts: Vec<Duration> = e.rec.owner_rtts.iter().flatten().copied().collect();
        rtts.sort_unstable();
        let lost = e.rec.owner_rtts.len() - rtts.len();
        let mut bad = Vec::new();
        if rtts.len() < 10 {
            bad.push(format!("only {} probes answered", rtts.len()));
        }
        if lost > 0 {
            bad.push(format!(
                "{lost} of {} probes got no answer",
                e.rec.owner_rtts.len()
            ));
        }
        let at = |q: f64| {
            let i = ((rtts.len().saturating_sub(1)) as f64 * q).round() as usize;
            rtts.get(i).copied().unwrap_or_default()
        };
        if at(0.95) > p95_bound {
            bad.push(format!(
                "p95 {} ms, over {} ms",
                at(0.95).as_millis(),
                p95_bound.as_millis()
            ));
        }
        if at(1.0) > max_bound {
            bad.push(format!(
                "slowest answer {} ms, over {} ms",
                at(1.0).as_millis(),
                max_bound.as_millis()
            ));
        }
        let fine = format!(
            "{} probes: p50 {} ms, p95 {} ms (bound {}), max {} ms (bound {})",
            rtts.len(),
            at(0.5).as_millis(),
            at(0.95).as_millis(),
            p95_bound.as_millis(),
            at(1.0).as_millis(),
            max_bound.as_millis()
        );
        verdict(
            "the owner keeps answering within its latency bound",
            bad,
            fine,
        )
    }

    fn bounded(e: &Evidence<'_>) -> Invariant {
        let mut bad = Vec::new();
        let Some(h) = &e.rec.held else {
            return verdict(
                "memory and disk stay bounded",
                vec!["nothing measured".into()],
                String::new(),
            );
        };
        if h.pending_codes > MAX_PENDING_TOTAL {
            bad.push(format!(
                "{} open join codes (cap {MAX_PENDING_TOTAL})",
                h.pending_codes
            ));
        }
        if h.max_known.0 > e.spec.max_known_programs {
            bad.push(format!(
                "{} knows {} programs (bound {})",
                h.max_known.1, h.max_known.0, e.spec.max_known_programs
            ));
        }
        let db_cap = e.spec.owner_db_mib << 20;
        if h.owner_db_bytes > db_cap {
            bad.push(format!(
                "the owner's database is {} bytes (bound {db_cap})",
                h.owner_db_bytes
            ));
        }
        let malformed_answered: usize = attacks(e, "malformed").map(|a| a.answered).sum();
        if malformed_answered > 0 {
            bad.push(format!(
                "{malformed_answered} malformed frames were answered"
            ));
        }
        let fine = format!(
            "{} open join codes (cap {MAX_PENDING_TOTAL}); at most {} programs known ({}), {} of the flood's kept by an honest node; owner database {} KiB; {} malformed frames answered",
            h.pending_codes,
            h.max_known.0,
            h.max_known.1,
            h.flood_known,
            h.owner_db_bytes >> 10,
            malformed_answered
        );
        verdict("memory and disk stay bounded", bad, fine)
    }
}
