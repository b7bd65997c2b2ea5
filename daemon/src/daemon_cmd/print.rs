//! How the daemon's answers are printed for people (`--json` prints them as they come): node
//! info, peers, programs, join progress and the worker loop's events, runs, members, receipts,
//! status and paid-compute requests.

use btd_protocol::kb::Check;
use btd_protocol::wire::SubmitReceipt;

use crate::control::Progress;
use crate::node::spend::SpendRequestView;
use crate::node::types::{JoinEvent, MembersView, NodeInfo, PeerView, ProgramView, StatusView};
use crate::output::{name_of, out};
use crate::work::{RunRecord, RunState, WorkEvent};

/// `btd id`: peer id, listen and external addresses, rungs.
pub(super) fn node_info(info: &NodeInfo) {
    out!("peer id:  {}", info.peer_id);
    for a in &info.listen {
        out!("listen:   {a}/p2p/{}", info.peer_id);
    }
    for a in &info.external {
        out!("external: {a}");
    }
    for r in &info.rungs {
        out!(
            "rung:     {} ({}, {}) {}",
            r.id,
            name_of(&r.hardware),
            name_of(&r.spend_class),
            r.detail
        );
    }
}

/// `btd peers`: one line per connected peer.
pub(super) fn peers(peers: &[PeerView]) {
    if peers.is_empty() {
        out!("no connected peers");
    }
    for p in peers {
        let rungs: Vec<String> = p
            .rungs
            .iter()
            .map(|r| format!("{}:{}", r.id, name_of(&r.hardware)))
            .collect();
        out!(
            "{}  {}  rungs: {}",
            p.peer_id,
            p.agent.as_deref().unwrap_or("?"),
            if rungs.is_empty() {
                "-".to_string()
            } else {
                rungs.join(", ")
            }
        );
    }
}

/// `btd programs`: one line per known program, with this node's role.
pub(super) fn programs(list: &[ProgramView]) {
    if list.is_empty() {
        out!("no programs known yet");
    }
    for p in list {
        let role = if p.own {
            "owner"
        } else if p.member {
            "member"
        } else {
            "-"
        };
        out!("{}  {:<24} {:<7} owner {}", p.id, p.name, role, p.owner);
    }
}

/// One progress line of `btd join`: the user code to approve, the grant, the worker loop's
/// events.
pub(super) fn join_progress(p: &Progress, wait: bool) {
    match p {
        Progress::Join(JoinEvent::Code {
            user_code,
            owner,
            expires_in,
            ..
        }) => {
            out!("user code: {user_code}");
            out!(
                "ask the owner ({owner}) to run `btd approve {user_code}` within {} minutes",
                expires_in / 60
            );
            if wait {
                out!("waiting for approval...");
            }
        }
        Progress::Join(JoinEvent::Granted { program, member }) => {
            out!("joined program {program} as member {member}")
        }
        Progress::Join(JoinEvent::AlreadyMember { program }) => {
            out!("already a member of {program}")
        }
        Progress::Join(JoinEvent::Failed { .. }) => {}
        Progress::Work(e) => work_event(e),
    }
}

/// One event of the worker loop, as a progress line.
pub(super) fn work_event(e: &WorkEvent) {
    match e {
        WorkEvent::Dispatch {
            round,
            packet_id,
            action,
            detail,
        } => out!("round {round}: dispatch {} for {packet_id}: {detail}", name_of(action)),
        WorkEvent::AwaitingApproval {
            round,
            packet_id,
            member,
        } => out!(
            "round {round}: waiting for the owner to approve paid compute: `btd approve-spend <program> {packet_id} --member {member}`"
        ),
        WorkEvent::Round {
            round,
            rung_id,
            hypothesis,
            parent_seq,
        } => {
            let h = if hypothesis.is_empty() {
                "the task as written".to_string()
            } else {
                hypothesis
                    .iter()
                    .map(|(k, v)| format!("{k}={}", short_num(*v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let from = match parent_seq {
                Some(s) => format!("near champion seq {s}"),
                None => "from the task's defaults".into(),
            };
            out!("round {round}: on {rung_id}: {h} ({from})");
        }
        WorkEvent::Code {
            round,
            parent,
            patch_bytes,
            rationale,
            sandbox,
            note,
        } => {
            if let Some(n) = note {
                out!("round {round}: {n}");
            }
            let on = match parent {
                Some(s) => format!("result {s}'s tree"),
                None => "the bundle".into(),
            };
            let change = if *patch_bytes == 0 {
                "unchanged".to_string()
            } else {
                format!("a {patch_bytes}-byte patch: {rationale}")
            };
            let sandboxed = if *sandbox { " (in the sandbox)" } else { "" };
            out!("round {round}: code on {on}, {change}{sandboxed}");
        }
        WorkEvent::Ran {
            round,
            status,
            metric,
            value,
            detail,
        } => match value {
            Some(v) => out!("round {round}: {metric} {v:.4}: {detail}"),
            None => out!("round {round}: {}: {detail}", name_of(status)),
        },
        WorkEvent::Dataset {
            sha256,
            bytes,
            resumed_from,
            secs,
        } => {
            let resumed = if *resumed_from > 0 {
                format!(", resumed from {resumed_from} bytes")
            } else {
                String::new()
            };
            out!(
                "fetched the dataset {} from the owner: {bytes} bytes in {secs:.1} s{resumed}",
                sha256.short()
            );
        }
        WorkEvent::Checked {
            round,
            seq,
            check,
            champion,
        } => match check {
            Check::Failed(why) => out!("round {round}: seq {seq} rejected by the owner's check: {why}"),
            _ => out!(
                "round {round}: seq {seq} verified by the owner{}",
                if *champion { ": new champion" } else { "" }
            ),
        },
        WorkEvent::Verdict { round, receipt } => {
            let what = if receipt.check == Check::Pending {
                "pending until the owner checks it"
            } else if receipt.champion {
                "new champion"
            } else if receipt.accepted {
                "accepted"
            } else {
                "not accepted"
            };
            out!(
                "round {round}: the owner recorded it as seq {}: {what} (impact {})",
                receipt.seq,
                short_num(receipt.impact)
            );
        }
        WorkEvent::Queued { round, note } => out!("round {round}: {note}"),
        WorkEvent::Recorded { round, record, dir } => match record {
            Some(id) => out!(
                "round {round}: traceability record {} in {}",
                id.short(),
                dir.display()
            ),
            None => out!("round {round}: recorded in {}", dir.display()),
        },
    }
}

/// A number for a progress line: whole numbers plainly, small ones in scientific notation, the
/// rest with four decimals.
fn short_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v != 0.0 && v.abs() < 1e-2 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// `btd runs`: one line per round, with its note and the owner's check when they matter.
pub(super) fn runs(runs: &[RunRecord]) {
    if runs.is_empty() {
        out!("no rounds yet (`btd join PROGRAM --rounds N` runs some)");
    }
    for r in runs {
        let value = r.value;
        let verdict = match &r.verdict {
            Some(v) if v.check == Check::Pending => format!("seq {} pending", v.seq),
            Some(v) if matches!(v.check, Check::Failed(_)) => {
                format!("seq {} rejected by check", v.seq)
            }
            Some(v) if v.champion => format!("seq {} champion", v.seq),
            Some(v) if v.accepted => format!("seq {} accepted", v.seq),
            Some(v) => format!("seq {} not accepted", v.seq),
            None => "-".into(),
        };
        out!(
            "{} round {:>4}  {:<11} {:>10}  {:<18} record {}  {}",
            r.program.short(),
            r.round,
            name_of(&r.state),
            value.map_or_else(|| "-".to_string(), |v| format!("{v:.4}")),
            verdict,
            r.trace
                .as_ref()
                .map_or_else(|| "-".to_string(), |t| t.id.short()),
            r.dir.display()
        );
        if r.state != RunState::Submitted && !r.note.is_empty() {
            out!("    {}", r.note);
        }
        if let Some(Check::Failed(why)) = r.verdict.as_ref().map(|v| &v.check) {
            out!("    the owner's check: {why}");
        }
    }
}

/// `btd members`: members and their state, then pending join codes.
pub(super) fn members(m: &MembersView) {
    out!("members of {}:", m.program);
    if m.members.is_empty() {
        out!("  none");
    }
    for mem in &m.members {
        out!(
            "  {}  {}",
            mem.member,
            if mem.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            }
        );
    }
    if !m.pending.is_empty() {
        out!("pending join codes:");
        for p in &m.pending {
            out!(
                "  {}  from {}  ({} s left)",
                p.user_code,
                p.peer,
                p.expires_in
            );
        }
    }
}

/// `btd submit`: the owner's receipt.
pub(super) fn submit_receipt(r: &SubmitReceipt) {
    out!(
        "submission #{}: {}{}, impact {:.6}{}",
        r.seq,
        match &r.check {
            Check::Pending => "pending (the owner checks it before it counts)",
            Check::Failed(_) => "rejected by the owner's check",
            _ if r.accepted => "accepted",
            _ => "rejected",
        },
        if r.champion { ", new champion" } else { "" },
        r.impact,
        if r.duplicate {
            " (already recorded)"
        } else {
            ""
        }
    );
}

/// `btd submit` when the owner did not answer in time: where the result waits and why.
pub(super) fn submit_queued(v: &crate::node::types::OutboxView) {
    out!("{}", crate::node::queued_words(v));
}

/// `btd outbox`: the queue, oldest first, then the newest refusals.
pub(super) fn outbox(list: &crate::node::types::OutboxList) {
    if list.queued.is_empty() {
        out!("the outbox is empty: every submission reached its owner");
    }
    for v in &list.queued {
        let next = v
            .next_attempt_secs
            .map_or_else(|| "sending".to_string(), |s| format!("next in {s}s"));
        out!(
            "#{:<5} {}  {}  value {:>10}  rung {:<8} {} attempts, {}, queued {}s ago",
            v.id,
            v.nonce.chars().take(8).collect::<String>(),
            v.program.short(),
            short_num(v.value),
            v.rung,
            v.attempts,
            next,
            v.age_secs
        );
        if let Some(e) = &v.last_error {
            out!("    {e}");
        }
    }
    if !list.refused.is_empty() {
        out!("refused by the owner (newest first; not sent again):");
    }
    for v in &list.refused {
        out!(
            "#{:<5} {}  {}  value {:>10}  {}s ago: {}",
            v.id,
            v.nonce.chars().take(8).collect::<String>(),
            v.program.short(),
            short_num(v.value),
            v.age_secs,
            v.refused.as_deref().unwrap_or("refused")
        );
    }
}

/// `btd status`: the program's KB as this node sees it, with the page of results asked for. Values
/// are shown with 6 decimals, as the owner's reasons quote them (`--json` has every digit).
pub(super) fn status(s: &StatusView) {
    out!("{}", status_text(s, usize::MAX).trim_end());
}

/// `btd status` as text, listing at most `most` results of the page (also the top of each `btd
/// status --watch` frame).
pub(super) fn status_text(s: &StatusView, most: usize) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(t, "program:     {} ({})", s.name, s.program);
    let _ = writeln!(t, "owner:       {} [{}]", s.owner, s.source);
    let _ = writeln!(t, "members:     {}", s.members);
    let _ = writeln!(
        t,
        "submissions: {} ({} accepted)",
        s.submissions, s.accepted
    );
    let _ = writeln!(
        t,
        "claims:      {} pending, {} verified, {} rejected by the owner's check",
        s.pending, s.verified, s.rejected
    );
    let _ = match &s.champion {
        Some(c) => writeln!(
            t,
            "champion:    #{} {} = {:.6} by {}",
            c.seq, s.metric, c.value, c.worker
        ),
        None => writeln!(t, "champion:    none yet"),
    };
    if s.payouts.is_empty() {
        let _ = writeln!(t, "payouts:     none (pool {} {})", s.pool, s.token);
    } else {
        let _ = writeln!(t, "payouts (pool {} {}):", s.pool, s.token);
        for (w, a) in s.payouts.iter() {
            let _ = writeln!(t, "  {w}  {a}");
        }
    }
    if !s.results.is_empty() || s.page > 1 {
        let shown = s.results.len().min(most);
        let _ = writeln!(
            t,
            "results (page {}, {} first{}):",
            s.page,
            if s.oldest_first { "oldest" } else { "newest" },
            match (shown < s.results.len(), s.more) {
                (true, _) => format!(", {shown} of {} shown", s.results.len()),
                (false, true) => format!(", more on page {}", s.page.saturating_add(1)),
                (false, false) => String::new(),
            }
        );
        if s.results.is_empty() {
            let _ = writeln!(t, "  none on this page");
        }
        for e in s.results.iter().take(most) {
            let state = match &e.check {
                Check::Pending => "pending".to_string(),
                Check::Failed(why) => format!("rejected: {why}"),
                Check::Verified if e.accepted => "verified, accepted".to_string(),
                _ if e.accepted => "accepted".to_string(),
                _ => "not accepted".to_string(),
            };
            let _ = writeln!(
                t,
                "  #{:<4} {:<54} {:>12.6} {state}{}",
                e.seq,
                e.worker,
                e.value,
                if e.champion { ", champion" } else { "" }
            );
        }
    }
    t
}

/// `btd approvals`: one line per paid-compute request.
pub(super) fn approvals(list: &[SpendRequestView]) {
    if list.is_empty() {
        out!("no paid-compute requests");
    }
    for r in list {
        out!(
            "{:<8} {}  packet {}  member {}  cap {}",
            r.state,
            r.program.short(),
            r.packet.id,
            r.member,
            r.packet
                .budget
                .spend_cap
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
}

/// `btd ledger`: one line per result, oldest first: its seq and parent (lineage), value, the
/// KEEP rule's and the owner's verdicts, member, files and rationale.
pub(super) fn ledger(items: &[btd_protocol::wire::LedgerItem]) {
    if items.is_empty() {
        out!("no results yet");
        return;
    }
    out!(
        "{:>5}  {:>6}  {:>12}  {:<9}  {:<9}  {:<12}  change",
        "seq",
        "parent",
        "value",
        "verdict",
        "check",
        "member"
    );
    for i in items {
        let e = &i.entry;
        let verdict = if e.champion {
            "champion"
        } else if e.accepted {
            "accepted"
        } else {
            "-"
        };
        let parent = match &i.code {
            Some(c) => c.parent.map_or_else(|| "bundle".into(), |p| p.to_string()),
            None => "-".into(),
        };
        let change = match &i.code {
            Some(c) if c.patch_bytes > 0 => format!(
                "{} ({}): {}",
                c.files.join(", "),
                c.patch_bytes,
                c.rationale.lines().next().unwrap_or("")
            ),
            Some(_) => "unchanged".into(),
            None if !i.hypothesis.is_empty() => i
                .hypothesis
                .iter()
                .map(|(k, v)| format!("{k}={}", short_num(*v)))
                .collect::<Vec<_>>()
                .join(" "),
            None => "-".into(),
        };
        out!(
            "{:>5}  {:>6}  {:>12}  {:<9}  {:<9}  {:<12}  {change}",
            e.seq,
            parent,
            short_num(e.value),
            verdict,
            e.check.label(),
            e.worker.chars().take(12).collect::<String>()
        );
        if let btd_protocol::kb::Check::Failed(why) = &e.check {
            out!("{:>7}rejected: {why}", "");
        }
    }
}

/// `btd checkout`: where the tree went and the chain it came from.
pub(super) fn checkout(v: &crate::work::CheckoutView) {
    let what = match v.seq {
        Some(s) => format!("result {s}"),
        None => "the bundle".into(),
    };
    out!(
        "checked out {what} ({} files, tree {}) into {}",
        v.files,
        v.tree.short(),
        v.dir.display()
    );
    for l in &v.chain {
        out!(
            "  {:>5}  {:<12}  {:>6} bytes  {}",
            l.seq,
            l.member.chars().take(12).collect::<String>(),
            l.patch_bytes,
            l.rationale
        );
    }
}
