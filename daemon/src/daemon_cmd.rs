//! CLI commands that talk to (or are) the running daemon: each sends its request on the control
//! socket and prints the answer as JSON (`--json`) or for people (`daemon_cmd/print.rs`).

mod orp;
mod print;
mod score;
pub(crate) mod watch;

use crate::output::out;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use btd_protocol::program::ProgramId;
use btd_protocol::trace::Output;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::{JoinArgs, StartArgs};
use crate::control::Request;
use crate::home::Home;
use crate::node::types::{JoinEvent, MembersView, NodeInfo, PeerView, ProgramView, StatusView};
use crate::output::{print_json, CmdError};
use crate::start::StartFlags;
use crate::work::{RunRecord, WorkOptions, WorkSummary};
pub(crate) use orp::runs_orp;

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
    // Training in the worker loop uses rayon's pool (two shards of each batch, each shard's matmuls
    // on half the pool: `btd_trainer::device::set_cpu_threads`). Size it here, while the process
    // has one thread (changing the environment later is unsound): RAYON_NUM_THREADS if set, else
    // every core but one, which is left to the mesh.
    let threads = btd_trainer::device::threads_from_env("RAYON_NUM_THREADS").unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        cores.saturating_sub(1).max(1)
    });
    btd_trainer::device::set_cpu_threads(threads);
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
        http: match args.http {
            None => None,
            Some(a) => Some(a.parse().map_err(|e| {
                CmdError::Usage(format!(
                    "--http {a:?} is not an address such as 127.0.0.1:4802: {e}"
                ))
            })?),
        },
        http_token: args.http_token,
    };
    if let Some(addr) = flags.http {
        crate::web::check_settings(addr, flags.http_token.as_deref())
            .map_err(|e| CmdError::Usage(e.to_string()))?;
    } else if flags.http_token.is_some() {
        return Err(CmdError::Usage("--http-token needs --http".into()));
    }
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
    print::node_info(&info);
    Ok(())
}

pub(crate) fn peers(home_dir: Option<PathBuf>, json: bool) -> Result<(), CmdError> {
    let v = call(home_dir, Request::Peers)?;
    if json {
        return print_json(&v);
    }
    let peers: Vec<PeerView> = parse(v)?;
    print::peers(&peers);
    Ok(())
}

/// An absolute path for the daemon (it runs elsewhere), or a usage error naming the flag.
fn absolute(flag: &str, p: &Path) -> Result<PathBuf, CmdError> {
    std::fs::canonicalize(p).map_err(|e| CmdError::Usage(format!("{flag} {}: {e}", p.display())))
}

pub(crate) fn publish(
    home_dir: Option<PathBuf>,
    manifest: &Path,
    files: crate::node::types::PublishFiles,
    json: bool,
) -> Result<(), CmdError> {
    let text = crate::output::read_text(manifest)?;
    // Validate locally first so errors carry the file name and lines.
    crate::offline::program::load(manifest)?;
    let files = crate::node::types::PublishFiles {
        data: files.data.map(|p| absolute("--data", &p)).transpose()?,
        holdout: files
            .holdout
            .map(|p| absolute("--holdout", &p))
            .transpose()?,
        source: files.source.map(|p| absolute("--source", &p)).transpose()?,
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
    print::programs(&list);
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
            proposer: args.proposer.clone(),
            proposer_timeout_secs: args.proposer_timeout,
            allow_peer_code: args.allow_peer_code,
        }),
    };
    let h = home(home_dir)?;
    let rt = runtime()?;
    // With --json the output is JSON lines: one compact object per event, the result last (not
    // repeated when it is the event just printed, as with --no-wait).
    let mut last = None;
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
                    last = serde_json::to_value(p).ok();
                    return;
                }
                print::join_progress(p, wait);
            },
        ))
        .map_err(CmdError::Rejected)?;
    let json_line = |v: &serde_json::Value| -> Result<(), CmdError> {
        if last.as_ref() != Some(v) {
            let s = serde_json::to_string(v)
                .map_err(|e| CmdError::Rejected(anyhow!("cannot encode the answer: {e}")))?;
            out!("{s}");
        }
        Ok(())
    };
    if work.is_some() && wait {
        if json {
            json_line(&v)?;
        }
        let summary: WorkSummary = parse(v)?;
        if !json {
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
    if json {
        json_line(&v)?;
    }
    let ev: JoinEvent = parse(v)?;
    if json {
        return match ev {
            JoinEvent::Failed { reason } => Err(CmdError::Rejected(anyhow!(reason))),
            _ => Ok(()),
        };
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
    print::runs(&runs);
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
    print::members(&m);
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
    args: &crate::cli::SubmitArgs,
    json: bool,
) -> Result<(), CmdError> {
    let crate::cli::SubmitArgs {
        program,
        value,
        outputs,
        rung: rung_id,
        checkpoint,
        code,
        wait,
        no_wait,
    } = args;
    let (value, rung_id) = (*value, rung_id.clone());
    let program = program_id(program)?;
    let code = code
        .as_deref()
        .map(|p| {
            let text = crate::output::read_text(p)?;
            serde_json::from_str::<btd_protocol::wire::CodeHypothesis>(&text).map_err(|e| {
                CmdError::Usage(format!(
                    "--code {}: not a code hypothesis (JSON with parent, patch, rationale, seed, \
                     tree): {e}",
                    p.display()
                ))
            })
        })
        .transpose()?;
    if let Some(value) = value.filter(|v| !v.is_finite()) {
        return Err(CmdError::Usage(format!(
            "--value must be a finite number, got {value}"
        )));
    }
    // The value to claim: the checkpoint scored as the owner will (warning when --value differs).
    let given = value;
    let value = score::claim_value(
        home_dir.clone(),
        program,
        value,
        checkpoint.as_deref(),
        json,
    )?;
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
                .as_deref()
                .map(|p| absolute("--checkpoint", p))
                .transpose()?,
            code,
            wait_secs: Some(if *no_wait { 0 } else { *wait }),
        },
    )?;
    if json {
        return print_json(&score::with_value(v, value.filter(|_| given.is_none())));
    }
    match parse(v)? {
        crate::node::types::Submitted::Receipt(r) => print::submit_receipt(&r),
        crate::node::types::Submitted::Queued { queued } => print::submit_queued(&queued),
    }
    Ok(())
}

pub(crate) fn outbox(
    home_dir: Option<PathBuf>,
    program: Option<&str>,
    json: bool,
) -> Result<(), CmdError> {
    let program = program.map(program_id).transpose()?;
    let v = call(home_dir, Request::Outbox { program })?;
    if json {
        return print_json(&v);
    }
    let list: crate::node::types::OutboxList = parse(v)?;
    print::outbox(&list);
    Ok(())
}

pub(crate) fn status(
    home_dir: Option<PathBuf>,
    program: Option<&str>,
    query: btd_protocol::wire::StatusQuery,
    json: bool,
) -> Result<(), CmdError> {
    let program = program.map(program_id).transpose()?;
    let v = call(home_dir, Request::Status { program, query })?;
    if json {
        return print_json(&v);
    }
    let s: StatusView = parse(v)?;
    print::status(&s);
    Ok(())
}

pub(crate) fn approvals(home_dir: Option<PathBuf>, json: bool) -> Result<(), CmdError> {
    let v = call(home_dir, Request::Approvals)?;
    if json {
        return print_json(&v);
    }
    let list: Vec<crate::node::spend::SpendRequestView> = parse(v)?;
    print::approvals(&list);
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

pub(crate) fn ledger(
    home_dir: Option<PathBuf>,
    program: &str,
    after: u64,
    limit: u32,
    json: bool,
) -> Result<(), CmdError> {
    let program = program_id(program)?;
    let mut items: Vec<btd_protocol::wire::LedgerItem> = Vec::new();
    let mut after_seq = after;
    let want = usize::try_from(limit).unwrap_or(usize::MAX);
    while items.len() < want {
        let page = u32::try_from(want - items.len())
            .unwrap_or(u32::MAX)
            .min(btd_protocol::wire::MAX_LEDGER_PAGE);
        let v = call(
            home_dir.clone(),
            Request::Ledger {
                program,
                after_seq,
                limit: page,
            },
        )?;
        #[derive(serde::Deserialize)]
        struct Page {
            items: Vec<btd_protocol::wire::LedgerItem>,
            more: bool,
        }
        let p: Page = parse(v)?;
        let Some(last) = p.items.last().map(|i| i.entry.seq) else {
            break;
        };
        after_seq = last;
        items.extend(p.items);
        if !p.more {
            break;
        }
    }
    if json {
        return print_json(&items);
    }
    print::ledger(&items);
    Ok(())
}

pub(crate) fn checkout(
    home_dir: Option<PathBuf>,
    program: &str,
    rest: &[String],
    json: bool,
) -> Result<(), CmdError> {
    let program = program_id(program)?;
    let (seq, dir) = match rest {
        [dir] => (None, dir),
        [seq, dir] => (
            Some(seq.parse::<u64>().map_err(|_| {
                CmdError::Usage(format!("SEQ must be a result's number, got {seq:?}"))
            })?),
            dir,
        ),
        _ => {
            return Err(CmdError::Usage(
                "usage: btd checkout PROGRAM [SEQ] DIR".into(),
            ))
        }
    };
    let dir = Path::new(dir);
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| CmdError::Usage(format!("cannot read the current directory: {e}")))?
            .join(dir)
    };
    let v = call(home_dir, Request::Checkout { program, seq, dir })?;
    if json {
        return print_json(&v);
    }
    let view: crate::work::CheckoutView = parse(v)?;
    print::checkout(&view);
    Ok(())
}
