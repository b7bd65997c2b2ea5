//! The local control API: JSON lines over a Unix socket (mode 0600) in the home directory.
//!
//! A client sends one request line; the daemon answers with zero or more `{"event": ...}` lines and
//! then exactly one `{"ok": ...}` or `{"error": "..."}` line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use btd_protocol::program::ProgramId;
use btd_protocol::trace::Output;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use crate::node::types::{JoinEvent, NewResult};
use crate::node::{NodeError, NodeHandle};
use crate::work::{WorkContext, WorkEvent, WorkOptions};

/// Longest request line (a manifest is at most 64 KiB; JSON escaping can double it).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Most control connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// How long `btd submit` waits for the owner's answer by default before it reports the result as
/// queued in the outbox, seconds.
pub const DEFAULT_SUBMIT_WAIT_SECS: u64 = 10;
/// The longest `btd submit --wait`, seconds.
pub const MAX_SUBMIT_WAIT_SECS: u64 = 3600;

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Peer id and addresses.
    Id,
    /// Connected peers.
    Peers,
    /// Publish a manifest.
    Publish {
        /// Manifest text.
        manifest: String,
        /// The dataset and holdout files (absolute paths).
        #[serde(default)]
        files: crate::node::types::PublishFiles,
    },
    /// Known programs.
    Programs,
    /// Join a program (and, with `work`, run rounds of its task once a member).
    Join {
        /// Program id.
        program: ProgramId,
        /// Wait for the outcome (else return after the code).
        wait: bool,
        /// Rounds of work to run after joining.
        #[serde(default)]
        work: Option<WorkOptions>,
    },
    /// The worker loop's run records.
    Runs {
        /// Program id (all programs when absent).
        program: Option<ProgramId>,
    },
    /// Approve a user code.
    Approve {
        /// The code.
        code: String,
    },
    /// Deny a user code.
    Deny {
        /// The code.
        code: String,
    },
    /// Members of an own program.
    Members {
        /// Program id.
        program: ProgramId,
    },
    /// Revoke a member.
    Revoke {
        /// Program id.
        program: ProgramId,
        /// Member id.
        member: String,
    },
    /// Submit a result.
    Submit {
        /// Program id.
        program: ProgramId,
        /// Metric value; `None`: this daemon scores the checkpoint the way the owner will
        /// ([`WorkContext::score_checkpoint`]) and claims that.
        #[serde(default)]
        value: Option<f64>,
        /// Rung id.
        rung_id: String,
        /// Outputs by digest.
        outputs: Vec<Output>,
        /// A checkpoint to claim the value with (absolute path): the owner fetches and checks it.
        #[serde(default)]
        checkpoint: Option<std::path::PathBuf>,
        /// The code hypothesis the value was measured with (code programs).
        #[serde(default)]
        code: Option<btd_protocol::wire::CodeHypothesis>,
        /// How long to wait for the owner's answer before answering "queued", seconds (0: answer
        /// once the submission is stored in the outbox; absent: [`DEFAULT_SUBMIT_WAIT_SECS`]).
        #[serde(default)]
        wait_secs: Option<u64>,
    },
    /// The member's outbox: queued submissions and the newest refusals.
    Outbox {
        /// Program id (all programs when absent).
        #[serde(default)]
        program: Option<ProgramId>,
    },
    /// A program's candle task for `btd train --program`, with the path of its dataset file when
    /// this node has it (fetched from the owner first with `fetch`).
    TrainTask {
        /// Program id.
        program: ProgramId,
        /// Fetch a `file` dataset this node lacks.
        #[serde(default)]
        fetch: bool,
    },
    /// Score a checkpoint the way the program's owner will (what `btd submit` claims).
    Score {
        /// Program id.
        program: ProgramId,
        /// The checkpoint (absolute path).
        checkpoint: std::path::PathBuf,
        /// Do not fetch a `file` dataset this node lacks (then the scoring fails saying so).
        #[serde(default)]
        local_only: bool,
    },
    /// A page of a program's hypothesis ledger.
    Ledger {
        /// Program id.
        program: ProgramId,
        /// Items with a larger seq.
        after_seq: u64,
        /// At most this many (1 to `MAX_LEDGER_PAGE`).
        limit: u32,
    },
    /// A result's code hypothesis (with its entry).
    Code {
        /// Program id.
        program: ProgramId,
        /// The result.
        seq: u64,
    },
    /// Write a result's tree to a directory.
    Checkout {
        /// Program id.
        program: ProgramId,
        /// The result (default: the champion).
        seq: Option<u64>,
        /// The directory (absolute; must not exist or be empty).
        dir: std::path::PathBuf,
    },
    /// Program status: the summary and one page of results.
    Status {
        /// Program id (optional when there is only one).
        program: Option<ProgramId>,
        /// Which page (default: the newest 20, newest first).
        #[serde(default)]
        query: btd_protocol::wire::StatusQuery,
    },
    /// Owner: spend requests.
    Approvals,
    /// Owner: approve or deny a spend request.
    DecideSpend {
        /// Program id.
        program: ProgramId,
        /// Member id.
        member: String,
        /// Packet id.
        packet_id: String,
        /// Approve or deny.
        approve: bool,
        /// Receipt validity, minutes.
        minutes: u64,
    },
    /// Stop the daemon.
    Stop,
}

/// Progress of a long request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Progress {
    /// Joining.
    Join(JoinEvent),
    /// The worker loop.
    Work(WorkEvent),
}

/// One line of a reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// Progress.
    Event(Progress),
    /// Success, with the result.
    Ok(serde_json::Value),
    /// Failure, in words.
    Error(String),
}

/// Serves the control socket until `shutdown` turns true. `stop` is signalled by a `Stop` request.
pub async fn serve(
    path: PathBuf,
    node: NodeHandle,
    work: Arc<WorkContext>,
    stop: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let listener = bind(&path)?;
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!("too many control connections; refusing one");
                    continue;
                };
                let node = node.clone();
                let stop = stop.clone();
                let work = work.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, node, work, stop).await {
                        tracing::debug!(error = %e, "control connection ended");
                    }
                    drop(permit);
                });
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

fn bind(path: &Path) -> Result<UnixListener> {
    // The caller holds the home's lock, so a leftover socket belongs to a dead daemon.
    if path.exists() {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

async fn write_line(w: &mut (impl AsyncWriteExt + Unpin), line: &Line) -> Result<()> {
    let mut s = serde_json::to_string(line)?;
    s.push('\n');
    w.write_all(s.as_bytes()).await?;
    w.flush().await?;
    Ok(())
}

async fn handle(
    stream: UnixStream,
    node: NodeHandle,
    work: Arc<WorkContext>,
    stop: mpsc::Sender<()>,
) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r.take(MAX_REQUEST_BYTES as u64 + 1));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if line.len() > MAX_REQUEST_BYTES {
        return write_line(&mut w, &Line::Error("request too large".into())).await;
    }
    let req: Request = match serde_json::from_str(line.trim_end()) {
        Ok(r) => r,
        Err(e) => return write_line(&mut w, &Line::Error(format!("bad request: {e}"))).await,
    };
    let out = match req {
        Request::Join {
            program,
            wait,
            work: opts,
        } => return join(&mut w, node, work, program, wait, opts).await,
        Request::Runs { program } => work.runs(program).await.and_then(json),
        Request::Stop => {
            let _ = stop.try_send(());
            Ok(serde_json::json!("stopping"))
        }
        other => dispatch(&node, &work, other).await,
    };
    let line = match out {
        Ok(v) => Line::Ok(v),
        Err(e) => Line::Error(e),
    };
    write_line(&mut w, &line).await
}

fn json<T: Serialize>(v: T) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// Maps a request onto the node's method; the answer as JSON, or the error in words.
async fn dispatch(
    node: &NodeHandle,
    work: &WorkContext,
    req: Request,
) -> Result<serde_json::Value, String> {
    match req {
        Request::Id => answer(node.info().await),
        Request::Peers => answer(node.peers().await),
        Request::Programs => answer(node.programs().await),
        Request::Publish { manifest, files } => answer(node.publish_with(manifest, files).await),
        Request::Approve { code } => answer(node.approve(code).await),
        Request::Deny { code } => answer(node.deny(code).await),
        Request::Members { program } => answer(node.members(program).await),
        Request::Revoke { program, member } => answer(node.revoke(program, member).await),
        Request::Submit {
            program,
            value,
            rung_id,
            mut outputs,
            checkpoint,
            code,
            wait_secs,
        } => {
            let value = match (value, &checkpoint) {
                (Some(v), _) => v,
                (None, Some(path)) => {
                    work.score_checkpoint(program, path.clone(), true)
                        .await?
                        .value
                }
                (None, None) => {
                    return Err("give the value, or a checkpoint for this daemon to score".into())
                }
            };
            let claim = match checkpoint {
                Some(path) => {
                    let (output, claim) = work.claim_checkpoint(program, path).await?;
                    outputs.retain(|o| o.sha256 != output.sha256);
                    outputs.push(output);
                    Some(claim)
                }
                None => None,
            };
            let result = NewResult {
                value,
                rung_id,
                outputs,
                claim,
                code,
                ..Default::default()
            };
            let wait = wait_secs
                .unwrap_or(DEFAULT_SUBMIT_WAIT_SECS)
                .min(MAX_SUBMIT_WAIT_SECS);
            answer(
                node.submit_queued(program, result, std::time::Duration::from_secs(wait))
                    .await,
            )
        }
        Request::Outbox { program } => answer(node.outbox(program).await),
        Request::Ledger {
            program,
            after_seq,
            limit,
        } => node
            .ledger(program, after_seq, limit)
            .await
            .map_err(|e| e.to_string())
            .and_then(|(items, more)| json(serde_json::json!({ "items": items, "more": more }))),
        Request::TrainTask { program, fetch } => {
            work.train_task(program, fetch).await.and_then(json)
        }
        Request::Score {
            program,
            checkpoint,
            local_only,
        } => work
            .score_checkpoint(program, checkpoint, !local_only)
            .await
            .and_then(json),
        Request::Code { program, seq } => answer(node.code(program, seq).await),
        Request::Checkout { program, seq, dir } => {
            work.checkout(program, seq, dir).await.and_then(json)
        }
        Request::Status { program, query } => answer(node.status_page(program, query).await),
        Request::Approvals => answer(node.spend_requests().await),
        Request::DecideSpend {
            program,
            member,
            packet_id,
            approve,
            minutes,
        } => answer(
            node.decide_spend(program, member, packet_id, approve, minutes)
                .await,
        ),
        Request::Join { .. } | Request::Runs { .. } | Request::Stop => {
            Err("unsupported here".into())
        }
    }
}

/// A node's answer as JSON, or its error in words.
fn answer<T: Serialize>(r: Result<T, NodeError>) -> Result<serde_json::Value, String> {
    json(r.map_err(|e| e.to_string())?)
}

async fn join(
    w: &mut (impl AsyncWriteExt + Unpin),
    node: NodeHandle,
    work: Arc<WorkContext>,
    program: ProgramId,
    wait: bool,
    opts: Option<WorkOptions>,
) -> Result<()> {
    let mut rx = match node.join(program).await {
        Ok(rx) => rx,
        Err(e) => return write_line(w, &Line::Error(e.to_string())).await,
    };
    while let Some(ev) = rx.recv().await {
        match &ev {
            JoinEvent::Code { .. } => {
                write_line(w, &Line::Event(Progress::Join(ev.clone()))).await?;
                if !wait {
                    if let Some(opts) = opts {
                        // The daemon finishes the join and runs the rounds on its own.
                        tokio::spawn(async move {
                            while let Some(ev) = rx.recv().await {
                                match ev {
                                    JoinEvent::Granted { .. } | JoinEvent::AlreadyMember { .. } => {
                                        let (etx, _) = mpsc::channel(1);
                                        if let Err(e) =
                                            crate::work::run_rounds(work, program, opts, etx).await
                                        {
                                            tracing::warn!(program = %program, error = %e, "worker loop did not start");
                                        }
                                        return;
                                    }
                                    JoinEvent::Failed { .. } => return,
                                    JoinEvent::Code { .. } => {}
                                }
                            }
                        });
                    }
                    return write_line(w, &Line::Ok(json(&ev).unwrap_or_default())).await;
                }
            }
            JoinEvent::Granted { .. } | JoinEvent::AlreadyMember { .. } => {
                let Some(opts) = opts else {
                    return write_line(w, &Line::Ok(json(&ev).unwrap_or_default())).await;
                };
                write_line(w, &Line::Event(Progress::Join(ev.clone()))).await?;
                return work_rounds(w, work, program, opts).await;
            }
            JoinEvent::Failed { reason } => {
                return write_line(w, &Line::Error(reason.clone())).await;
            }
        }
    }
    write_line(w, &Line::Error("the daemon stopped during the join".into())).await
}

/// Runs the rounds in a daemon-owned task (a client that goes away does not stop them) and
/// forwards their progress while the client listens.
async fn work_rounds(
    w: &mut (impl AsyncWriteExt + Unpin),
    work: Arc<WorkContext>,
    program: ProgramId,
    opts: WorkOptions,
) -> Result<()> {
    let (etx, mut erx) = mpsc::channel(64);
    let task = tokio::spawn(crate::work::run_rounds(work, program, opts, etx));
    while let Some(ev) = erx.recv().await {
        write_line(w, &Line::Event(Progress::Work(ev))).await?;
    }
    let line = match task.await {
        Ok(Ok(summary)) => Line::Ok(json(&summary).unwrap_or_default()),
        Ok(Err(e)) => Line::Error(e),
        Err(e) => Line::Error(format!("the worker loop crashed: {e}")),
    };
    write_line(w, &line).await
}
