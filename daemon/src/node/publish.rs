//! `btd publish` on the owner: the core validates and signs the announcement; this module puts the
//! program's files in place (the dataset members fetch, the owner-only holdout), stores the
//! program, and only then owns and announces it.

use btd_protocol::program::{Program, ProgramId};

use super::handle::{NodeError, Reply};
use super::types::PublishFiles;
use super::{Known, Node};
use crate::store::{self, ProgramRow};

/// `btd publish`: validate and sign (owner core), install the files, persist, then announce.
pub(super) fn publish(
    node: &mut Node,
    manifest: String,
    files: PublishFiles,
    reply: Reply<ProgramId>,
) {
    let now = node.clock.now();
    let addresses = node
        .my_addresses()
        .iter()
        .map(ToString::to_string)
        .collect();
    let published = match node.owners.publish(manifest, addresses, now) {
        Ok(p) => p,
        Err(e) => {
            let _ = reply.send(Err(e.into()));
            return;
        }
    };
    let id = published.view.id;
    let Some(owner) = published.owner else {
        // Same manifest, same owner: the same program. Re-announce and answer with its id.
        node.announce_soon = true;
        let _ = reply.send(Ok(id));
        return;
    };
    let row = ProgramRow {
        id,
        owner: published.view.owner.to_string(),
        announcement: published.encoded,
        published_at: now,
        own: true,
    };
    let (view, signed) = (published.view, published.signed);
    let store = node.store.clone();
    let home = node.home.clone();
    let program = owner.program().clone();
    // The secret stream of a synthetic holdout comes from the node's RNG.
    let holdout_secret = rand::RngCore::next_u64(&mut node.rng);
    node.after(async move {
        // Artifacts first: a program is announced only once its dataset can be served and its
        // holdout is in place.
        let installed = tokio::task::spawn_blocking(move || {
            install_artifacts(home.as_deref(), id, &program, &files, holdout_secret)
        })
        .await
        .map_err(|e| format!("installing the program's files failed: {e}"))
        .and_then(|r| r)
        .map_err(NodeError::Refused);
        let res = match installed {
            Ok(()) => store
                .write(move |tx| store::put_program(tx, &row))
                .await
                .map_err(|e| NodeError::Unavailable(format!("cannot store the program: {e}"))),
            Err(e) => Err(e),
        };
        Box::new(move |node: &mut Node| match res {
            Ok(()) => {
                node.owners.insert(owner);
                // Own programs are pinned: never evicted, outside the discovery caps.
                node.known.pin(id);
                let (owner_peer, at) = (view.owner, view.published_at);
                node.known.offer(id, owner_peer, at, Known { view, signed });
                super::gossip::announce(node, id, true);
                tracing::info!(program = %id, "published");
                let _ = reply.send(Ok(id));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        })
    });
}

/// Where the owner-only holdout of `program` lives under `home`.
pub(crate) fn holdout_path(home: &std::path::Path, program: &ProgramId) -> std::path::PathBuf {
    home.join("holdout").join(format!("{program}.txt"))
}

/// Puts a new program's dataset where members can fetch it and its holdout where only the owner's
/// verifier reads it. Blocking.
fn install_artifacts(
    home: Option<&std::path::Path>,
    id: ProgramId,
    program: &Program,
    files: &PublishFiles,
    holdout_secret: u64,
) -> Result<(), String> {
    use btd_protocol::program::{Dataset, Task};
    let task = match &program.task {
        Task::Candle(t) => Some(t),
        Task::Shell(t) => return install_shell(home, id, program, t, files),
    };
    if files.source.is_some() {
        return Err("--source is only for shell programs with a [task.source] section".into());
    }
    let checks = program.verify.checks();
    let file_digest = match task.map(|t| &t.dataset) {
        Some(Dataset::File { sha256 }) => Some(*sha256),
        _ => None,
    };
    if files.data.is_some() && file_digest.is_none() {
        return Err(
            "--data is only for programs whose [task.dataset] is a file (kind = \"file\")".into(),
        );
    }
    let need_holdout = task.is_some() && checks && program.verify.max_holdout_gap.is_some();
    if files.holdout.is_some() && !need_holdout {
        return Err("--holdout is only for candle programs that check claims on a holdout".into());
    }
    if files.data.is_none()
        && files.holdout.is_none()
        && !need_holdout
        && !(checks && file_digest.is_some())
    {
        return Ok(());
    }
    let home = home.ok_or("this node has no home directory to keep the program's files in")?;
    if let Some(sha256) = file_digest {
        match &files.data {
            Some(path) => {
                crate::blobs::BlobStore::new(home.join("blobs")).add_file(&id, path, Some(sha256))?;
            }
            None if checks => {
                return Err(format!(
                    "the program trains on the file with sha256 {sha256}: publish with --data FILE so                      members can fetch it over the mesh and this node can check claims"
                ))
            }
            None => {}
        }
    }
    if need_holdout {
        let dest = holdout_path(home, &id);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let text = match (&files.holdout, task.map(|t| &t.dataset)) {
            (Some(path), _) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read the holdout {}: {e}", path.display()))?;
                if std::str::from_utf8(&bytes).is_err() {
                    return Err(format!("the holdout {} is not UTF-8 text", path.display()));
                }
                bytes
            }
            (None, Some(Dataset::Synthetic { seed, bytes })) => {
                // Fresh text in the corpus's language from a secret stream: no worker can train
                // on it. As large as the validation split (at least 16 KiB).
                btd_trainer::synth::synthetic_holdout(
                    *seed,
                    holdout_secret,
                    (*bytes / 10).max(16 << 10),
                )
                .map_err(|e| e.to_string())?
            }
            _ => return Err(
                "the program checks claims on an owner-only holdout: publish with --holdout FILE \
                     (text from the same source that workers never see), or set holdout = false \
                     in [verify]"
                    .into(),
            ),
        };
        let tmp = dest.with_extension("tmp");
        std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &dest))
            .map_err(|e| format!("cannot write the holdout {}: {e}", dest.display()))?;
    }
    Ok(())
}

/// A shell program's files: its source bundle (served to members by digest, kept for the owner's
/// re-runs) and, for re-run verification, the owner-only holdout its command reads as
/// `BTD_HOLDOUT`. Blocking.
fn install_shell(
    home: Option<&std::path::Path>,
    id: ProgramId,
    program: &Program,
    task: &btd_protocol::program::ShellTask,
    files: &PublishFiles,
) -> Result<(), String> {
    use btd_protocol::program::VerifyMode;
    if files.data.is_some() {
        return Err(
            "--data is for candle programs; a shell program ships its files in [task.source] \
             (--source DIR)"
                .into(),
        );
    }
    let rerun = program.verify.mode == VerifyMode::Rerun;
    if rerun {
        // The owner re-runs members' code only in the sandbox: say now if it cannot.
        btd_trainer::shell::sandbox_probe().map_err(|why| {
            format!(
                "[verify] mode = \"rerun\" runs members' code in a sandbox, and this machine \
                 cannot make one: {why}"
            )
        })?;
    }
    if files.holdout.is_some() && !rerun {
        return Err(
            "--holdout is for programs that check claims: set [verify] mode = \"rerun\" so the \
             owner's re-run reads it as BTD_HOLDOUT"
                .into(),
        );
    }
    match (&task.source, &files.source) {
        (None, Some(_)) => {
            return Err(
                "--source is for programs with a [task.source] section (sha256, editable)".into(),
            )
        }
        (Some(src), None) => {
            return Err(format!(
                "the program ships a source tree (sha256 {}): publish with --source DIR (or the \
                 tar `btd source pack DIR` wrote) so members can fetch it",
                src.sha256
            ))
        }
        (None, None) if files.holdout.is_none() => return Ok(()),
        _ => {}
    }
    let home = home.ok_or("this node has no home directory to keep the program's files in")?;
    if let (Some(src), Some(path)) = (&task.source, &files.source) {
        crate::source::install_bundle(
            home,
            id,
            path,
            src.sha256,
            program.verify.max_artifact_bytes,
        )?;
    }
    if let Some(path) = &files.holdout {
        let dest = holdout_path(home, &id);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let tmp = dest.with_extension("tmp");
        std::fs::copy(path, &tmp)
            .map_err(|e| format!("cannot read the holdout {}: {e}", path.display()))
            .and_then(|_| {
                std::fs::File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, &dest))
                    .map_err(|e| format!("cannot write the holdout {}: {e}", dest.display()))
            })?;
    }
    Ok(())
}
