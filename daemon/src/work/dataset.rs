//! The program's dataset, fetched from the owner by digest over `/btd/blob/1` when the worker was
//! not given the file (`--data`): resumable, size-capped, checked against the digest.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use btd_protocol::program::{Program, ProgramId};
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::{WorkContext, WorkEvent};

/// How long fetching the program's dataset may take.
const DATASET_FETCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Fetches the program's dataset from the owner by digest (resuming a partial fetch) and returns
/// its path.
pub(super) async fn fetch_dataset(
    ctx: &Arc<WorkContext>,
    id: ProgramId,
    owner: PeerId,
    sha256: btd_protocol::Digest,
    program: &Program,
    events: &mpsc::Sender<WorkEvent>,
) -> Result<PathBuf, String> {
    let started = std::time::Instant::now();
    let (path, progress) = fetch_artifact(
        ctx,
        id,
        owner,
        sha256,
        program.verify.max_artifact_bytes,
        "dataset",
    )
    .await
    .map_err(|e| format!("{e}; or give the file with --data"))?;
    let _ = events
        .send(WorkEvent::Dataset {
            sha256,
            bytes: progress.size,
            resumed_from: progress.resumed_from,
            secs: started.elapsed().as_secs_f64(),
        })
        .await;
    Ok(path)
}

/// Fetches one of the program's artifacts (`what`: "dataset", "source bundle") from the owner by
/// digest, resuming a partial fetch; returns its path in the blob store and the transfer.
pub(super) async fn fetch_artifact(
    ctx: &WorkContext,
    id: ProgramId,
    owner: PeerId,
    sha256: btd_protocol::Digest,
    max_bytes: u64,
    what: &str,
) -> Result<(PathBuf, crate::blobs::FetchProgress), String> {
    let credential = ctx
        .node
        .credential(id)
        .await
        .map_err(|e| e.to_string())?
        .map(|(_, c)| c)
        .ok_or_else(|| format!("this node is not a member of {id}"))?;
    let spec = crate::blobs::FetchSpec {
        peer: owner,
        program: id,
        credential: Some(credential),
        digest: sha256,
        max_bytes,
        deadline: tokio::time::Instant::now() + DATASET_FETCH_TIMEOUT,
    };
    crate::blobs::fetch(&ctx.node, &ctx.blobs, &spec)
        .await
        .map_err(|e| {
            format!("cannot fetch the program's {what} (sha256 {sha256}) from the owner: {e}")
        })
}
