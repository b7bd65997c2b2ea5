//! Content-addressed artifacts (datasets, checkpoints) on disk, and fetching them from a peer over
//! `/btd/blob/1` in bounded chunks.
//!
//! Layout: `HOME/blobs/<program id>/<sha256 hex>`. A program's directory holds what this node serves
//! inside that program: the owner's dataset, a worker's claimed checkpoints. A fetch writes
//! `<sha256 hex>.part` next to the final name and appends verified-in-order chunks, so a fetch cut
//! off by a disconnect (or a restart) resumes where it stopped; the whole file is checked against
//! its SHA-256 before it is renamed into place, and a mismatch deletes the partial file.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use btd_protocol::hash::Hasher;
use btd_protocol::membership::Credential;
use btd_protocol::program::ProgramId;
use btd_protocol::wire::{BlobRequest, BlobResponse, ErrorCode, MAX_BLOB_CHUNK};
use btd_protocol::Digest;
use futures::stream::{FuturesOrdered, StreamExt};
use libp2p::PeerId;
use tokio::time::Instant;

use crate::node::{NodeError, NodeHandle};

/// Chunk requests in flight during one fetch (pipelining hides the round trip).
const WINDOW: usize = 4;
/// First pause after a transient failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The artifacts of every program on this node.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The peer refused for good (not found, not allowed).
    #[error("the peer refused: {0}")]
    Refused(String),
    /// The artifact is larger than the program allows.
    #[error("the artifact is {size} bytes, over the program's {max}-byte limit")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The bytes received do not hash to the digest asked for.
    #[error("the bytes received hash to {got}, not {want}; the partial file was deleted")]
    DigestMismatch {
        /// The digest asked for.
        want: Digest,
        /// What the bytes hashed to.
        got: Digest,
    },
    /// The peer answered with something that breaks the protocol.
    #[error("the peer broke the protocol: {0}")]
    Protocol(String),
    /// The deadline passed.
    #[error("gave up after the deadline with {have} of {size} bytes (last problem: {last}); a later fetch resumes")]
    Timeout {
        /// Bytes on disk.
        have: u64,
        /// Total, when known (0 otherwise).
        size: u64,
        /// The last transient failure.
        last: String,
    },
    /// Local disk trouble.
    #[error("disk: {0}")]
    Io(#[from] std::io::Error),
    /// The node stopped.
    #[error("the daemon is stopping")]
    Stopped,
}

impl BlobStore {
    /// The store under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where `digest` of `program` lives (whether or not it exists).
    pub fn path(&self, program: &ProgramId, digest: &Digest) -> PathBuf {
        self.root.join(program.to_string()).join(digest.to_string())
    }

    fn part_path(&self, program: &ProgramId, digest: &Digest) -> PathBuf {
        self.root
            .join(program.to_string())
            .join(format!("{digest}.part"))
    }

    /// The size of `digest` of `program`, if this node has it.
    pub fn size(&self, program: &ProgramId, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(program, digest))
            .ok()
            .filter(fs::Metadata::is_file)
            .map(|m| m.len())
    }

    /// Adds the file at `src` to `program`'s artifacts (hard link when possible, else a copy) and
    /// returns its digest and size. With `expect`, refuses a file with another digest. Blocking.
    pub fn add_file(
        &self,
        program: &ProgramId,
        src: &Path,
        expect: Option<Digest>,
    ) -> Result<(Digest, u64), String> {
        let file = File::open(src).map_err(|e| format!("cannot open {}: {e}", src.display()))?;
        let size = file
            .metadata()
            .map_err(|e| format!("cannot read {}: {e}", src.display()))?
            .len();
        let digest =
            Digest::of_reader(file).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        if let Some(want) = expect {
            if want != digest {
                return Err(format!(
                    "{} has sha256 {digest}, not the {want} the program names",
                    src.display()
                ));
            }
        }
        let dest = self.path(program, &digest);
        if self.size(program, &digest) == Some(size) {
            return Ok((digest, size));
        }
        let dir = self.root.join(program.to_string());
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let tmp = dir.join(format!("{digest}.add"));
        let _ = fs::remove_file(&tmp);
        if fs::hard_link(src, &tmp).is_err() {
            fs::copy(src, &tmp).map_err(|e| {
                format!("cannot copy {} into {}: {e}", src.display(), dir.display())
            })?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("cannot sync {}: {e}", tmp.display()))?;
        }
        fs::rename(&tmp, &dest).map_err(|e| format!("cannot store {}: {e}", dest.display()))?;
        Ok((digest, size))
    }

    /// Up to `len` bytes of `digest` of `program` from `offset`, with the total size; `None` when
    /// this node does not have it. Blocking.
    pub fn read_chunk(
        &self,
        program: &ProgramId,
        digest: &Digest,
        offset: u64,
        len: u32,
    ) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        let mut file = match File::open(self.path(program, digest)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        if offset >= size {
            return Ok(Some((size, Vec::new())));
        }
        file.seek(SeekFrom::Start(offset))?;
        let want = u64::from(len.min(MAX_BLOB_CHUNK)).min(size - offset);
        let mut data = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        file.take(want).read_to_end(&mut data)?;
        Ok(Some((size, data)))
    }
}

/// Where a fetch stands, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchProgress {
    /// Bytes on disk.
    pub have: u64,
    /// Total size (once the peer said).
    pub size: u64,
    /// Bytes that were already on disk when this fetch started (resumed).
    pub resumed_from: u64,
}

/// What to fetch and from whom.
#[derive(Debug, Clone)]
pub struct FetchSpec {
    /// The peer that serves it.
    pub peer: PeerId,
    /// The program it belongs to.
    pub program: ProgramId,
    /// The member credential (when fetching from the owner).
    pub credential: Option<Credential>,
    /// Its SHA-256.
    pub digest: Digest,
    /// Largest size accepted.
    pub max_bytes: u64,
    /// Give up (keeping the partial file) after this.
    pub deadline: Instant,
}

/// Fetches `spec.digest` into `store`, resuming a partial file, and returns its final path and the
/// progress at the end. Transient failures (timeouts, dropped connections, rate limiting) are
/// retried with backoff until the deadline; refusals fail at once.
pub async fn fetch(
    node: &NodeHandle,
    store: &BlobStore,
    spec: &FetchSpec,
) -> Result<(PathBuf, FetchProgress), FetchError> {
    let dest = store.path(&spec.program, &spec.digest);
    if let Some(size) = store.size(&spec.program, &spec.digest) {
        return Ok((
            dest,
            FetchProgress {
                have: size,
                size,
                resumed_from: size,
            },
        ));
    }
    let part = store.part_path(&spec.program, &spec.digest);
    if let Some(dir) = part.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&part)?;
    // Re-hash what is already there: the digest covers the whole file.
    let mut hasher = Hasher::default();
    let mut have = hasher.read_from(File::open(&part)?)?;
    let resumed_from = have;
    let mut size: Option<u64> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::from("none");
    loop {
        if size == Some(have) {
            break;
        }
        if Instant::now() >= spec.deadline {
            return Err(FetchError::Timeout {
                have,
                size: size.unwrap_or(0),
                last,
            });
        }
        // A window of sequential chunk requests from `have`.
        let mut inflight = FuturesOrdered::new();
        let chunks = match size {
            Some(s) => usize::try_from((s - have).div_ceil(u64::from(MAX_BLOB_CHUNK)))
                .unwrap_or(WINDOW)
                .clamp(1, WINDOW),
            None => 1,
        };
        for i in 0..chunks as u64 {
            let req = BlobRequest {
                program: spec.program,
                credential: spec.credential.clone(),
                digest: spec.digest,
                offset: have + i * u64::from(MAX_BLOB_CHUNK),
                len: MAX_BLOB_CHUNK,
            };
            let peer = spec.peer;
            inflight.push_back(node.blob(peer, req));
        }
        let mut progressed = false;
        let remaining = spec.deadline.saturating_duration_since(Instant::now());
        let mut transient: Option<String> = None;
        while let Ok(Some(answer)) = tokio::time::timeout(remaining, inflight.next()).await {
            match answer {
                Err(NodeError::Stopped) => return Err(FetchError::Stopped),
                Err(e) => {
                    transient = Some(e.to_string());
                    break;
                }
                Ok(BlobResponse::Error(e)) => match e.code {
                    ErrorCode::RateLimited | ErrorCode::Unavailable => {
                        transient = Some(e.message);
                        break;
                    }
                    _ => return Err(FetchError::Refused(e.message)),
                },
                Ok(BlobResponse::Chunk {
                    size: total,
                    offset,
                    data,
                }) => {
                    if total > spec.max_bytes {
                        return Err(FetchError::TooLarge {
                            size: total,
                            max: spec.max_bytes,
                        });
                    }
                    if size.is_some_and(|s| s != total) || total < have {
                        return Err(FetchError::Protocol(format!(
                            "the artifact's size changed to {total} bytes mid-fetch"
                        )));
                    }
                    size = Some(total);
                    if offset != have
                        || data.len() > MAX_BLOB_CHUNK as usize
                        || (data.is_empty() && have < total)
                        || have + data.len() as u64 > total
                    {
                        return Err(FetchError::Protocol(format!(
                            "a chunk at {offset} with {} bytes does not continue the {have} bytes \
                             received of {total}",
                            data.len()
                        )));
                    }
                    file.write_all(&data)?;
                    hasher.update(&data);
                    have += data.len() as u64;
                    progressed = true;
                    if have == total {
                        break;
                    }
                }
            }
        }
        if let Some(t) = transient {
            tracing::debug!(peer = %spec.peer, digest = %spec.digest.short(), have, problem = %t, "blob fetch: transient failure; retrying");
            last = t;
            let pause = backoff.min(spec.deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = if progressed {
                FIRST_BACKOFF
            } else {
                (backoff * 2).min(MAX_BACKOFF)
            };
        }
    }
    file.sync_all()?;
    drop(file);
    let got = hasher.finish();
    if got != spec.digest {
        let _ = fs::remove_file(&part);
        return Err(FetchError::DigestMismatch {
            want: spec.digest,
            got,
        });
    }
    fs::rename(&part, &dest)?;
    Ok((
        dest,
        FetchProgress {
            have,
            size: have,
            resumed_from,
        },
    ))
}
