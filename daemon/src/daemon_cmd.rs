//! CLI commands that talk to (or are) the running daemon.

use crate::output::out;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use btd_protocol::kb::Check;
use btd_protocol::program::ProgramId;
use btd_protocol::trace::Output;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::{JoinArgs, StartArgs};
use crate::control::{Progress, Request};
use crate::home::Home;
use crate::node::types::{JoinEvent, MembersView, NodeInfo, PeerView, ProgramView, StatusView};
use crate::output::{name_of, print_json, CmdError};
use crate::start::StartFlags;
use crate::work::{RunRecord, RunState, WorkEvent, WorkOptions, WorkSummary};

fn runtime() -> Result<tokio::runtime::Runtime, CmdError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CmdError::Rejected(anyhow!("cannot start the async runtime: {e}")))
}

fn home(flag: Option<PathBuf>) -> Result<Home, CmdError> {
    Home::resolve(flag).map_err(|e| CmdError::Usage(e.to_string()))
}

fn program_id(s: &str) -> Result<ProgramId, CmdError> {
    s.parse().map_err(|e| {
        CmdError::Usage(format!(
            "{s:?} is not a program id: {e} (see `btd programs`)"
        ))
    })
}

/// Sends one request and returns the daemon's answer.
fn call(home_dir: Option<PathBuf>, req: Request) -> Result<Value, CmdError> {
    let h = home(home_dir)?;
    let rt = runtime()?;
    rt.block_on(crate::client::call(&h.socket_path(), &req, |_| {}))
        .map_err(CmdError::Rejected)
}

fn parse<T: DeserializeOwned>(v: Value) -> Result<T, CmdError> {
    serde_json::from_value(v)
        .map_err(|e| CmdError::Rejected(anyhow!("unexpected answer from the daemon: {e}")))
}

pub(crate) fn start(home_dir: Option<PathBuf>, args: StartArgs) -> Result<(), CmdError> {
    // Training in the worker loop uses candle's CPU thread pool, sized from RAYON_NUM_THREADS. Set it
    // here, while the process has one thread (changing the environment later is unsound), leaving
    // one core to the mesh: 1 thread on 2 cores, which is also fastest for the tiny preset.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        std::env::set_var(
            "RAYON_NUM_THREADS",
            cores.saturating_sub(1).max(1).to_string(),
        );
    }
    let h = home(home_dir)?;
    let addrs = |flag: &str, v: Vec<String>| -> Result<Vec<libp2p::Multiaddr>, CmdError> {
        v.into_iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| CmdError::Usage(format!("--{flag} {s:?} is not a multiaddr: {e}")))
            })
            .collect()
    };
    let flags = StartFlags {
        listen: addrs("listen", args.listen)?,
        bootstrap: addrs("bootstrap", args.bootstrap)?,
        relay_server: args.relay_server,
        mdns: args.mdns,
    };
    crate::start::init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CmdError::Rejected(anyhow!("cannot start the async runtime: {e}")))?;
    rt.block_on(crate::start::run(h, flags))
        .map_err(CmdError::Rejected)
}

pub(crate) fn stop(home_dir: Option<PathBuf>, json: bool) -> Result<(), CmdError> {
    let v = call(home_dir, Request::Stop)?;
    if json {
        print_json(&v)
    } else {
        out!("btd: the daemon is stopping");
        Ok(())
    }
}

pub(crate) fn id(home_dir: Option<PathBuf>, json: bool) -> Result<(), CmdError> {
    let v = call(home_dir, Request::Id)?;
    if json {
        return print_json(&v);
    }
    let info: NodeInfo = parse(v)?;
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
    Ok(())
}

pub(crate) fn peers(home_dir: Option<PathBuf>, json: bool) -> Result<(), CmdError> {
    let v = call(home_dir, Request::Peers)?;
    if json {
        return print_json(&v);
    }
    let peers: Vec<PeerView> = parse(v)?;
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
    Ok(())
}

/// An absolute path for the daemon (it runs elsewhere), or a usage error naming the flag.
fn absolute(flag: &str, p: &Path) -> Result<PathBuf, CmdError> {
    std::fs::canonicalize(p).map_err(|e| CmdError::Usage(format!("{flag} {}: {e}", p.display())))
}

pub(crate) fn publish(
    home_dir: Option<PathBuf>,
    manifest: &Path,
    data: Option<PathBuf>,
    holdout: Option<PathBuf>,
    json: bool,
) -> Result<(), CmdError> {
    let text = crate::output::read_text(manifest)?;
    // Validate locally first so errors carry the file name and lines.
    crate::offline::program::load(manifest)?;
    let files = crate::node::types::PublishFiles {
        data: data.map(|p| absolute("--data", &p)).transpose()?,
        holdout: holdout.map(|p| absolute("--holdout", &p)).transpose()?,
    };
    let v = call(
        home_dir,
        Request::Publish {
            manifest: text,
            files,
        },
    )?;
    if json {
        return print_json(&serde_json::json!({ "program": v }));
    }
    let id: ProgramId = parse(v)?;
    out!("{id}");
    Ok(())
}

pub(crate) fn programs(home_dir: Option<PathBuf>, json: bool) -> Result<(), CmdError> {
    let v = call(home_dir, Request::Programs)?;
    if json {
        return print_json(&v);
    }
    let list: Vec<ProgramView> = parse(v)?;
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
    Ok(())
}

pub(crate) fn join(home_dir: Option<PathBuf>, args: &JoinArgs, json: bool) -> Result<(), CmdError> {
    let program = program_id(&args.program)?;
    let wait = !args.no_wait;
    let work = match args.rounds {
        None => None,
        Some(rounds) => Some(WorkOptions {
            rounds,
            rung: args.rung.clone(),
            // The daemon runs elsewhere: give it an absolute path.
            data: args
                .data
                .as_deref()
                .map(|p| absolute("--data", p))
                .transpose()?,
            allow_shell: args.allow_shell,
            approval_wait_secs: args.approval_wait,
            verdict_wait_secs: args.verdict_wait,
        }),
    };
    let h = home(home_dir)?;
    let rt = runtime()?;
    let v = rt
        .block_on(crate::client::call(
            &h.socket_path(),
            &Request::Join {
                program,
                wait,
                work: work.clone(),
            },
            |p| {
                if json {
                    if let Ok(s) = serde_json::to_string(p) {
                        out!("{s}");
                    }
                    return;
                }
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
                    Progress::Work(e) => print_work_event(e),
                }
            },
        ))
        .map_err(CmdError::Rejected)?;
    if work.is_some() && wait {
        let summary: WorkSummary = parse(v)?;
        if json {
            print_json(&summary)?;
        } else {
            out!(
                "{} of {} rounds submitted; records: `btd runs {}`",
                summary.submitted,
                summary.asked,
                summary.program
            );
        }
        return match summary.stopped {
            Some(why) => Err(CmdError::Rejected(anyhow!(
                "the worker loop stopped after {} of {} rounds: {why}",
                summary.runs.len(),
                summary.asked
            ))),
            None => Ok(()),
        };
    }
    let ev: JoinEvent = parse(v)?;
    if json {
        return print_json(&ev);
    }
    match ev {
        JoinEvent::Granted { program, member } => {
            out!("joined program {program} as member {member}")
        }
        JoinEvent::AlreadyMember { program } => out!("already a member of {program}"),
        JoinEvent::Code { .. } => {
            if work.is_some() {
                out!("the daemon keeps polling and runs the rounds once approved; see `btd runs`")
            } else {
                out!("the daemon keeps polling; check later with `btd programs`")
            }
        }
        JoinEvent::Failed { reason } => return Err(CmdError::Rejected(anyhow!(reason))),
    }
    Ok(())
}

fn print_work_event(e: &WorkEvent) {
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

pub(crate) fn runs(
    home_dir: Option<PathBuf>,
    program: Option<&str>,
    json: bool,
) -> Result<(), CmdError> {
    let program = program.map(program_id).transpose()?;
    let v = call(home_dir, Request::Runs { program })?;
    if json {
        return print_json(&v);
    }
    let runs: Vec<RunRecord> = parse(v)?;
    if runs.is_empty() {
        out!("no rounds yet (`btd join PROGRAM --rounds N` runs some)");
    }
    for r in &runs {
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
    Ok(())
}

pub(crate) fn decide(
    home_dir: Option<PathBuf>,
    code: String,
    approve: bool,
    json: bool,
) -> Result<(), CmdError> {
    let req = if approve {
        Request::Approve { code }
    } else {
        Request::Deny { code }
    };
    let v = call(home_dir, req)?;
    if json {
        return print_json(&v);
    }
    out!("{}", v.as_str().unwrap_or_default());
    Ok(())
}

pub(crate) fn members(
    home_dir: Option<PathBuf>,
    program: &str,
    json: bool,
) -> Result<(), CmdError> {
    let program = program_id(program)?;
    let v = call(home_dir, Request::Members { program })?;
    if json {
        return print_json(&v);
    }
    let m: MembersView = parse(v)?;
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
    Ok(())
}

pub(crate) fn revoke(
    home_dir: Option<PathBuf>,
    program: &str,
    member: String,
    json: bool,
) -> Result<(), CmdError> {
    let program = program_id(program)?;
    let v = call(
        home_dir,
        Request::Revoke {
            program,
            member: member.clone(),
        },
    )?;
    if json {
        return print_json(&v);
    }
    out!("revoked {member}");
    Ok(())
}

pub(crate) fn submit(
    home_dir: Option<PathBuf>,
    program: &str,
    value: f64,
    outputs: &[PathBuf],
    rung_id: String,
    checkpoint: Option<PathBuf>,
    json: bool,
) -> Result<(), CmdError> {
    let program = program_id(program)?;
    if !value.is_finite() {
        return Err(CmdError::Usage(format!(
            "--value must be a finite number, got {value}"
        )));
    }
    let mut outs = Vec::new();
    for p in outputs {
        let bytes = std::fs::read(p)
            .map_err(|e| CmdError::Rejected(anyhow!("cannot read {}: {e}", p.display())))?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        outs.push(Output::of(name, &bytes));
    }
    let v = call(
        home_dir,
        Request::Submit {
            program,
            value,
            rung_id,
            outputs: outs,
            checkpoint: checkpoint
                .map(|p| absolute("--checkpoint", &p))
                .transpose()?,
        },
    )?;
    if json {
        return print_json(&v);
    }
    let r: btd_protocol::wire::SubmitReceipt = parse(v)?;
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
    Ok(())
}

pub(crate) fn status(
    home_dir: Option<PathBuf>,
    program: Option<&str>,
    json: bool,
) -> Result<(), CmdError> {
    let program = program.map(program_id).transpose()?;
    let v = call(home_dir, Request::Status { program })?;
    if json {
        return print_json(&v);
    }
    let s: StatusView = parse(v)?;
    out!("program:     {} ({})", s.name, s.program);
    out!("owner:       {} [{}]", s.owner, s.source);
    out!("members:     {}", s.members);
    out!("submissions: {} ({} accepted)", s.submissions, s.accepted);
    out!(
        "claims:      {} pending, {} verified, {} rejected by the owner's check",
        s.pending,
        s.verified,
        s.rejected
    );
    match &s.champion {
        Some(c) => out!(
            "champion:    #{} {} = {} by {}",
            c.seq,
            s.metric,
            c.value,
            c.worker
        ),
        None => out!("champion:    none yet"),
    }
    if s.payouts.is_empty() {
        out!("payouts:     none (pool {} {})", s.pool, s.token);
    } else {
        out!("payouts (pool {} {}):", s.pool, s.token);
        for (w, a) in s.payouts.iter() {
            out!("  {w}  {a}");
        }
    }
    if !s.results.is_empty() {
        out!("results:");
        for e in s
            .results
            .iter()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let state = match &e.check {
                Check::Pending => "pending".to_string(),
                Check::Failed(why) => format!("rejected: {why}"),
                Check::Verified if e.accepted => "verified, accepted".to_string(),
                _ if e.accepted => "accepted".to_string(),
                _ => "not accepted".to_string(),
            };
            out!(
                "  #{:<4} {:<54} {:>12} {state}{}",
                e.seq,
                e.worker,
                e.value,
                if e.champion { ", champion" } else { "" }
            );
        }
    }
    Ok(())
}

pub(crate) fn approvals(home_dir: Option<PathBuf>, json: bool) -> Result<(), CmdError> {
    let v = call(home_dir, Request::Approvals)?;
    if json {
        return print_json(&v);
    }
    let list: Vec<crate::node::spend::SpendRequestView> = parse(v)?;
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
    Ok(())
}

pub(crate) fn decide_spend(
    home_dir: Option<PathBuf>,
    program: &str,
    packet_id: String,
    member: String,
    approve: bool,
    minutes: u64,
    json: bool,
) -> Result<(), CmdError> {
    let program = program_id(program)?;
    if approve && minutes == 0 {
        return Err(CmdError::Usage("--minutes must be at least 1".into()));
    }
    let v = call(
        home_dir,
        Request::DecideSpend {
            program,
            member,
            packet_id,
            approve,
            minutes,
        },
    )?;
    if json {
        return print_json(&v);
    }
    out!("{}", v.as_str().unwrap_or_default());
    Ok(())
}
