//! Code programs in the worker loop (`[task.source]`, `[verify] mode = "rerun"`): the bundle and
//! its setup, the parent tree each round builds on, the proposer, and the code hypothesis each
//! result carries.
//!
//! A round builds on the champion's tree (the bundle plus the champion's patch chain, read from
//! the owner's ledger and cached). Code other members wrote runs only with `--allow-peer-code`,
//! and then in the sandbox (`btd_trainer::shell::sandbox`); without it the round builds on the
//! bundle. With `--proposer CMD` the round first runs CMD in a workspace holding the parent tree
//! and `context/` (objective, champion, recent ledger as JSON; never raw run output); what CMD
//! changes in the editable files becomes the round's patch, and a change anywhere else refuses
//! the round.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use btd_protocol::dispatch::DispatchResult;
use btd_protocol::patch::{changed_paths, diff, tree_digest, Editable, Files};
use btd_protocol::program::{Program, ProgramId, ShellTask, Task};
use btd_protocol::wire::{
    sanitize_rationale, CodeHypothesis, CodeView, LedgerItem, MAX_RATIONALE_BYTES,
};
use btd_trainer::shell::{run_shell, sandbox_probe, ShellOptions};
use btd_trainer::source::{read_dir, write_tree, SetupSpec};
use libp2p::PeerId;
use serde_json::json;

use super::WorkContext;
use crate::node::NodeHandle;

/// Ledger items a proposer sees (newest first).
const CONTEXT_LEDGER_ITEMS: usize = 50;
/// Ledger items fetched per request.
const LEDGER_PAGE: u32 = 100;

/// The tree a round builds on.
#[derive(Debug, Clone)]
pub(super) struct Parent {
    /// The result it is the tree of (`None`: the bundle).
    pub(super) seq: Option<u64>,
    /// Its files.
    pub(super) tree: Arc<Files>,
    /// Whether it holds code another member wrote (the round then runs in the sandbox).
    pub(super) peer_code: bool,
    /// Why the round builds on something other than the champion, if it does.
    pub(super) note: Option<String>,
}

/// What one round of a code program runs: its tree, where, with what seed, and the hypothesis the
/// result carries.
#[derive(Debug, Clone)]
pub(crate) struct RoundCode {
    /// The round's fresh copy of the tree (the command's working directory).
    pub(crate) tree_dir: PathBuf,
    /// Where the bundle's setup ran (`BTD_SETUP_DIR`).
    pub(crate) setup_dir: Option<PathBuf>,
    /// Run in the sandbox (the tree holds code another member wrote).
    pub(crate) sandbox: bool,
    /// The round runs on a GPU rung: the sandbox sets no address-space limit (a CUDA runtime
    /// reserves far more than it uses).
    pub(crate) gpu: bool,
    /// What the sandbox hides ([`crate::source::sandbox_hidden`]).
    pub(crate) hidden: Vec<PathBuf>,
    /// The code hypothesis.
    pub(crate) code: CodeHypothesis,
}

/// A code program's state in one worker loop.
pub(super) struct CodeRuntime {
    program: ProgramId,
    /// The daemon's home (hidden from sandboxed runs).
    home: PathBuf,
    bundle: Arc<Files>,
    editable: Option<Editable>,
    setup_dir: Option<PathBuf>,
    me: String,
    allow_peer_code: bool,
    proposer: Option<(String, u64)>,
    /// Code views by seq (immutable once served).
    codes: HashMap<u64, CodeView>,
    /// The newest ledger items, newest first, and the last seq read.
    recent: VecDeque<LedgerItem>,
    ledger_seen: u64,
}

impl std::fmt::Debug for CodeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeRuntime")
            .field("program", &self.program)
            .field("files", &self.bundle.len())
            .finish_non_exhaustive()
    }
}

/// Whether `program` is a code program (it ships a bundle or re-runs claims).
pub(crate) fn is_code_program(program: &Program) -> bool {
    match &program.task {
        Task::Shell(t) => {
            t.source.is_some() || program.verify.mode == btd_protocol::program::VerifyMode::Rerun
        }
        Task::Candle(_) => false,
    }
}

impl CodeRuntime {
    /// The runtime for `program`, or `None` when it is not a code program. Fetches the bundle from
    /// the owner (once; it is kept in the blob store) and runs its setup (once per bundle, cached
    /// under `HOME/source`).
    pub(super) async fn prepare(
        ctx: &Arc<WorkContext>,
        id: ProgramId,
        owner: PeerId,
        program: &Program,
        opts: &super::WorkOptions,
    ) -> Result<Option<CodeRuntime>, String> {
        if !is_code_program(program) {
            if opts.proposer.is_some() {
                return Err(
                    "--proposer is for programs with a source bundle ([task.source]); this \
                     program has none"
                        .into(),
                );
            }
            return Ok(None);
        }
        let Task::Shell(task) = &program.task else {
            return Ok(None);
        };
        if opts.proposer.is_some() && task.source.is_none() {
            return Err(
                "--proposer is for programs with a source bundle ([task.source]); this program \
                 re-runs claims but ships no source to edit"
                    .into(),
            );
        }
        if opts.allow_peer_code {
            sandbox_probe().map_err(|why| {
                format!(
                    "--allow-peer-code runs other members' code in a sandbox, and this machine \
                     cannot make one: {why}"
                )
            })?;
        }
        let me = btd_protocol::membership::MemberId::from_peer(&ctx.node.peer_id()).to_string();
        let mut rt = CodeRuntime {
            program: id,
            home: ctx
                .runs_dir
                .parent()
                .map_or_else(|| ctx.runs_dir.clone(), Path::to_path_buf),
            bundle: Arc::new(Files::new()),
            editable: None,
            setup_dir: None,
            me,
            allow_peer_code: opts.allow_peer_code,
            proposer: opts
                .proposer
                .clone()
                .map(|c| (c, opts.proposer_timeout_secs.clamp(1, 24 * 3600))),
            codes: HashMap::new(),
            recent: VecDeque::new(),
            ledger_seen: 0,
        };
        let Some(src) = &task.source else {
            return Ok(Some(rt));
        };
        rt.editable = Some(
            Editable::new(&src.editable)
                .map_err(|e| format!("the program's editable globs: {e}"))?,
        );
        let max = program.verify.max_artifact_bytes;
        if ctx.blobs.size(&id, &src.sha256).is_none() {
            super::dataset::fetch_artifact(ctx, id, owner, src.sha256, max, "source bundle")
                .await?;
        }
        let (blobs, sha, setup) = (ctx.blobs.clone(), src.sha256, src.setup.clone());
        let timeout = src.setup_timeout_secs;
        let cache = ctx.setup.clone();
        let (bundle, setup_dir) = tokio::task::spawn_blocking(move || {
            let files = crate::source::load_bundle(&blobs, &id, sha, max)?;
            let spec = setup.map(|command| SetupSpec {
                command,
                timeout_secs: timeout,
            });
            // The setup is the owner's code, admitted with --allow-shell: it runs as the rounds
            // of the bundle do, outside the sandbox (it may need the network to install).
            let dir = cache
                .prepare(sha, &files, spec.as_ref(), None)
                .map_err(|e| format!("the program's setup failed: {e}"))?;
            Ok::<_, String>((files, dir))
        })
        .await
        .map_err(|e| format!("preparing the bundle failed: {e}"))??;
        rt.bundle = Arc::new(bundle);
        rt.setup_dir = Some(setup_dir);
        Ok(Some(rt))
    }

    /// The tree the next round builds on: the champion's when it can be rebuilt and may run here,
    /// else the bundle (with a note saying why).
    pub(super) async fn parent(&mut self, node: &NodeHandle, champion: Option<u64>) -> Parent {
        let bundle = Parent {
            seq: None,
            tree: self.bundle.clone(),
            peer_code: false,
            note: None,
        };
        let Some(seq) = champion else {
            return bundle;
        };
        let fallback = |why: String| Parent {
            note: Some(format!("building on the bundle: {why}")),
            ..bundle.clone()
        };
        let chain = match crate::source::fetch_chain(node, self.program, seq, &mut self.codes).await
        {
            Ok(c) => c,
            Err(why) => return fallback(why),
        };
        let peer_code = chain
            .iter()
            .any(|v| v.entry.worker != self.me && !v.code.patch.trim().is_empty());
        if peer_code && !self.allow_peer_code {
            return fallback(format!(
                "the champion (result {seq}) holds code other members wrote; rerun with \
                 --allow-peer-code to build on it (it then runs in the sandbox)"
            ));
        }
        let codes: Vec<CodeHypothesis> = chain.into_iter().map(|v| v.code).collect();
        let base = self.bundle.clone();
        let built =
            tokio::task::spawn_blocking(move || btd_protocol::wire::rebuild_tree(&base, &codes))
                .await;
        match built {
            Ok(Ok(tree)) => Parent {
                seq: Some(seq),
                tree: Arc::new(tree),
                peer_code,
                note: None,
            },
            Ok(Err(why)) => fallback(format!("the champion's tree cannot be rebuilt: {why}")),
            Err(e) => fallback(format!("rebuilding the champion's tree failed: {e}")),
        }
    }

    /// The newest ledger items (newest first): the ledger's tail the first time, then only what
    /// is new since the last call.
    async fn recent_ledger(&mut self, node: &NodeHandle) -> Vec<LedgerItem> {
        if self.ledger_seen == 0 {
            if let Ok(items) = node
                .ledger_tail(self.program, CONTEXT_LEDGER_ITEMS as u32)
                .await
            {
                for item in items {
                    self.ledger_seen = self.ledger_seen.max(item.entry.seq);
                    self.recent.push_front(item);
                    self.recent.truncate(CONTEXT_LEDGER_ITEMS);
                }
            }
        }
        loop {
            let Ok((items, more)) = node
                .ledger(self.program, self.ledger_seen, LEDGER_PAGE)
                .await
            else {
                break;
            };
            for item in items {
                self.ledger_seen = self.ledger_seen.max(item.entry.seq);
                self.recent.push_front(item);
                self.recent.truncate(CONTEXT_LEDGER_ITEMS);
            }
            if !more {
                break;
            }
        }
        self.recent.iter().cloned().collect()
    }

    /// Whether a proposer writes this round's change.
    pub(super) fn has_proposer(&self) -> bool {
        self.proposer.is_some()
    }

    /// Runs the proposer in `dir/workspace` on `parent`'s tree: returns the changed tree and the
    /// rationale. Refuses a change outside the editable files, and no change at all.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn propose(
        &mut self,
        node: &NodeHandle,
        program: &Program,
        champion: Option<&super::kb::ChampionInfo>,
        parent: &Parent,
        round: u64,
        dir: &Path,
        dispatch: &DispatchResult,
    ) -> Result<(Files, String), String> {
        let Some((command, timeout_secs)) = self.proposer.clone() else {
            return Ok(((*parent.tree).clone(), String::new()));
        };
        let ledger = self.recent_ledger(node).await;
        let editable: Vec<String> = match &program.task {
            Task::Shell(ShellTask {
                source: Some(s), ..
            }) => s.editable.clone(),
            _ => Vec::new(),
        };
        let context = Context {
            objective: json!({
                "program": self.program.to_string(),
                "name": program.name,
                "objective": program.objective,
                "metric": program.criteria.metric,
                "direction": program.criteria.direction,
                "editable": editable,
            }),
            champion: champion.map(|c| {
                json!({
                    "seq": c.seq,
                    "value": c.value,
                    "metrics": c.metrics,
                    "rationale": self.codes.get(&c.seq).map(|v| v.code.rationale.clone()),
                })
            }),
            ledger: ledger
                .iter()
                .map(|i| {
                    json!({
                        "seq": i.entry.seq,
                        "parent": i.code.as_ref().and_then(|c| c.parent),
                        "value": i.entry.value,
                        "check": i.entry.check.label(),
                        "accepted": i.entry.accepted,
                        "champion": i.entry.champion,
                        "rationale": i.code.as_ref().map(|c| c.rationale.clone()),
                        "files": i.code.as_ref().map(|c| c.files.clone()),
                        "hypothesis": i.hypothesis,
                        "member": i.entry.worker.chars().take(12).collect::<String>(),
                    })
                })
                .collect(),
        };
        let workspace = dir.join("workspace");
        let (tree, me, dispatch) = (parent.tree.clone(), self.me.clone(), dispatch.clone());
        let editable = self.editable.clone();
        tokio::task::spawn_blocking(move || {
            run_proposer(
                &command,
                timeout_secs,
                &workspace,
                &tree,
                &context,
                round,
                &me,
                &dispatch,
                editable.as_ref(),
            )
        })
        .await
        .map_err(|e| format!("the proposer crashed: {e}"))?
    }

    /// The round's code: the patch from `parent` to `child` (only editable files), the seed, the
    /// rationale and the tree digest; `child` is written to `dir/tree`, where the command runs.
    pub(super) async fn round_code(
        &self,
        parent: &Parent,
        child: Files,
        rationale: String,
        seed: u64,
        dir: &Path,
    ) -> Result<RoundCode, String> {
        let tree_dir = dir.join("tree");
        let (base, editable) = (parent.tree.clone(), self.editable.clone());
        let parent_seq = parent.seq;
        let code = tokio::task::spawn_blocking(move || {
            let patch = code_patch(&base, &child, editable.as_ref())?;
            let tree = tree_digest(&child);
            write_tree(&child, &tree_dir)
                .map_err(|e| format!("cannot write the round's tree: {e}"))?;
            Ok::<_, String>((
                CodeHypothesis {
                    parent: parent_seq,
                    patch,
                    // In the form every reader shows it: what is signed is what is read.
                    rationale: sanitize_rationale(&cut(&rationale, MAX_RATIONALE_BYTES)),
                    seed,
                    tree,
                },
                tree_dir,
            ))
        })
        .await
        .map_err(|e| format!("preparing the round's tree failed: {e}"))??;
        Ok(RoundCode {
            tree_dir: code.1,
            setup_dir: self.setup_dir.clone(),
            sandbox: parent.peer_code,
            gpu: false,
            hidden: crate::source::sandbox_hidden(&self.home),
            code: code.0,
        })
    }
}

/// The proposer's view: objective, champion, recent ledger.
#[derive(Debug, Clone)]
struct Context {
    objective: serde_json::Value,
    champion: Option<serde_json::Value>,
    ledger: Vec<serde_json::Value>,
}

/// The patch from `parent` to `child`, refusing changes outside `editable`.
fn code_patch(
    parent: &Files,
    child: &Files,
    editable: Option<&Editable>,
) -> Result<String, String> {
    if checked_changes(parent, child, editable)?.is_empty() {
        return Ok(String::new());
    }
    diff(parent, child).map_err(|e| format!("the change cannot be a patch: {e}"))
}

/// The paths `child` changes from `parent`, refusing any that is not editable.
fn checked_changes(
    parent: &Files,
    child: &Files,
    editable: Option<&Editable>,
) -> Result<Vec<String>, String> {
    let changed = changed_paths(parent, child);
    if changed.is_empty() {
        return Ok(changed);
    }
    let Some(editable) = editable else {
        return Err("this program ships no source tree: there is nothing to edit".into());
    };
    let refused: Vec<&String> = changed.iter().filter(|p| !editable.matches(p)).collect();
    if !refused.is_empty() {
        return Err(format!(
            "the change touches files that are not editable: {}; the program lets hypotheses \
             change only its editable files",
            refused
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(changed)
}

/// Writes the workspace, runs the proposer, reads back its change. Blocking.
#[allow(clippy::too_many_arguments)]
fn run_proposer(
    command: &str,
    timeout_secs: u64,
    workspace: &Path,
    tree: &Files,
    context: &Context,
    round: u64,
    me: &str,
    dispatch: &DispatchResult,
    editable: Option<&Editable>,
) -> Result<(Files, String), String> {
    let _ = std::fs::remove_dir_all(workspace);
    write_tree(tree, workspace).map_err(|e| format!("cannot write the workspace: {e}"))?;
    let ctx_dir = workspace.join("context");
    std::fs::create_dir_all(&ctx_dir)
        .map_err(|e| format!("cannot create {}: {e}", ctx_dir.display()))?;
    let files: [(&str, serde_json::Value); 3] = [
        ("objective.json", context.objective.clone()),
        (
            "champion.json",
            context.champion.clone().unwrap_or(serde_json::Value::Null),
        ),
        (
            "ledger.json",
            serde_json::Value::Array(context.ledger.clone()),
        ),
    ];
    for (name, value) in files {
        let text =
            serde_json::to_vec_pretty(&value).map_err(|e| format!("cannot encode {name}: {e}"))?;
        std::fs::write(ctx_dir.join(name), text)
            .map_err(|e| format!("cannot write context/{name}: {e}"))?;
    }
    let task = ShellTask {
        command: command.to_string(),
        timeout_secs,
        source: None,
    };
    let opts = ShellOptions {
        cwd: Some(workspace.to_path_buf()),
        env: vec![
            ("BTD_ROUND".into(), round.to_string()),
            ("BTD_MEMBER".into(), me.chars().take(12).collect()),
        ],
        ..ShellOptions::new("rationale")
    };
    let receipt = run_shell(&task, dispatch, &opts)
        .map_err(|e| format!("the proposer could not run: {e}"))?;
    if receipt.timed_out {
        return Err(format!("the proposer was killed after {timeout_secs} s"));
    }
    if receipt.exit_code != Some(0) {
        let tail: String = receipt
            .stderr
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "the proposer exited with {}: {}",
            receipt
                .exit_code
                .map_or_else(|| "a signal".to_string(), |c| format!("status {c}")),
            tail.trim()
        ));
    }
    let rationale = std::fs::read(workspace.join("rationale.md"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let max = btd_protocol::patch::MAX_TREE_BYTES;
    let mut after = read_dir(workspace, max)
        .map_err(|e| format!("cannot read the proposer's workspace: {e}"))?;
    after.retain(|path, _| {
        let top = path.split('/').next().unwrap_or("");
        !crate::source::RESERVED.contains(&top)
    });
    // Refuse edits outside the editable files here, with the proposer named (the patch itself is
    // made once, by `round_code`).
    let changed =
        checked_changes(tree, &after, editable).map_err(|e| format!("the proposer's edit: {e}"))?;
    if changed.is_empty() {
        return Err("the proposer changed nothing".into());
    }
    Ok((after, rationale))
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// The digest-named parameters a round's command reads, besides the hypothesis.
pub(crate) fn code_env(code: &RoundCode, dir: &Path) -> Vec<(String, String)> {
    let mut env = vec![
        ("BTD_SEED".to_string(), code.code.seed.to_string()),
        ("BTD_RUN_DIR".to_string(), dir.display().to_string()),
    ];
    if let Some(s) = &code.setup_dir {
        env.push(("BTD_SETUP_DIR".into(), s.display().to_string()));
    }
    env
}
