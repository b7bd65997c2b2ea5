//! Source bundles on a daemon: the owner installs one at `btd publish --source`, members fetch it
//! by digest, and anyone rebuilds a result's tree from the bundle and its patch chain.
//!
//! The bundle is a canonical tar (`btd_trainer::source`); it lives in the blob store under its
//! SHA-256 like a dataset, so the owner serves it over `/btd/blob/1` to members only. A result's
//! tree is the bundle with the patches of its chain applied in order
//! (`btd_protocol::wire::rebuild_tree`); [`fetch_chain`] reads the chain from the owner.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use btd_protocol::patch::Files;
use btd_protocol::program::ProgramId;
use btd_protocol::wire::CodeView;
use btd_protocol::Digest;
use btd_trainer::source::{pack_dir, read_tar};

use crate::blobs::BlobStore;

/// Top-level names the proposer's workspace uses; a bundle may not have them.
pub const RESERVED: [&str; 2] = ["context", "rationale.md"];

/// The canonical tar of `path`: a directory is packed; a file must be a tar this build reads (it is
/// taken as is, so its digest is the file's). Blocking.
pub fn bundle_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bytes = if meta.is_dir() {
        pack_dir(path, max_bytes).map_err(|e| format!("cannot pack {}: {e}", path.display()))?
    } else {
        if meta.len() > max_bytes {
            return Err(format!(
                "{} is {} bytes, over the program's {max_bytes}-byte artifact limit \
                 ([verify] max_artifact_bytes)",
                path.display(),
                meta.len()
            ));
        }
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
    };
    let files = read_tar(&bytes, max_bytes)
        .map_err(|e| format!("{} is not a usable source bundle: {e}", path.display()))?;
    check_reserved(&files)?;
    Ok(bytes)
}

/// Refuses a bundle with a top-level `context/` or `rationale.md` (the proposer's workspace has
/// them).
pub fn check_reserved(files: &Files) -> Result<(), String> {
    for path in files.keys() {
        let top = path.split('/').next().unwrap_or("");
        if RESERVED.contains(&top) {
            return Err(format!(
                "the bundle has {path}; btd reserves the top-level names context/ and \
                 rationale.md for the proposer's workspace: rename it"
            ));
        }
    }
    Ok(())
}

/// Installs the owner's bundle for program `id` in the home's blob store (where members fetch it
/// from); `sha256` is the manifest's. Blocking.
pub fn install_bundle(
    home: &Path,
    id: ProgramId,
    path: &Path,
    sha256: Digest,
    max_bytes: u64,
) -> Result<(), String> {
    let bytes = bundle_bytes(path, max_bytes)?;
    let got = Digest::of(&bytes);
    if got != sha256 {
        return Err(format!(
            "the source {} packs to sha256 {got}, but the manifest's [task.source] names {sha256}: \
             run `btd source pack {}` and put the digest it prints in the manifest",
            path.display(),
            path.display()
        ));
    }
    let blobs = BlobStore::new(home.join("blobs"));
    let dir = home.join("blobs");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".bundle-{sha256}.tmp"));
    std::fs::write(&tmp, &bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let added = blobs.add_file(&id, &tmp, Some(sha256));
    let _ = std::fs::remove_file(&tmp);
    added.map(|_| ())
}

/// Reads program `id`'s bundle from the blob store. Blocking.
pub fn load_bundle(
    blobs: &BlobStore,
    id: &ProgramId,
    sha256: Digest,
    max_bytes: u64,
) -> Result<Files, String> {
    let path = blobs.path(id, &sha256);
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read the bundle {}: {e}", path.display()))?;
    if Digest::of(&bytes) != sha256 {
        return Err(format!(
            "the stored bundle {} does not have sha256 {sha256}",
            path.display()
        ));
    }
    let files = read_tar(&bytes, max_bytes).map_err(|e| format!("the bundle {sha256}: {e}"))?;
    check_reserved(&files)?;
    Ok(files)
}

/// What the sandbox hides from other members' code on this machine: the daemon's home (identity
/// key, store, holdouts, other programs' files) and the user's home (`$HOME`: SSH keys, tokens,
/// shell start-up files). The run's own directories are bound back in.
pub fn sandbox_hidden(home: &Path) -> Vec<PathBuf> {
    let mut hidden = vec![home.to_path_buf()];
    if let Some(user) = std::env::var_os("HOME").map(PathBuf::from) {
        if user.is_absolute() && user != Path::new("/") && user.is_dir() && !hidden.contains(&user)
        {
            hidden.push(user);
        }
    }
    hidden
}

/// Where a home keeps prepared bundles (unpacked, setup run).
pub fn setup_root(home: &Path) -> PathBuf {
    home.join("source")
}

/// The code views from the bundle to result `seq`, root first: from `cache`, else from the owner
/// (and then cached: a result's code never changes). Each link's parent comes strictly earlier, so
/// the walk ends; it is bounded by [`btd_protocol::owner::MAX_CHAIN_DEPTH`].
pub async fn fetch_chain(
    node: &crate::node::NodeHandle,
    program: ProgramId,
    seq: u64,
    cache: &mut HashMap<u64, CodeView>,
) -> Result<Vec<CodeView>, String> {
    let mut out = Vec::new();
    let mut at = Some(seq);
    while let Some(s) = at {
        if out.len() > btd_protocol::owner::MAX_CHAIN_DEPTH {
            return Err(format!("result {seq}'s chain of patches is too long"));
        }
        let view = match cache.get(&s) {
            Some(v) => v.clone(),
            None => {
                let v = node
                    .code(program, s)
                    .await
                    .map_err(|e| format!("cannot read result {s}'s code: {e}"))?
                    .ok_or_else(|| format!("result {s} carries no code"))?;
                if v.entry.seq != s {
                    return Err(format!("the owner answered result {} for {s}", v.entry.seq));
                }
                cache.insert(s, v.clone());
                v
            }
        };
        at = view.code.parent.filter(|p| *p < s);
        if view.code.parent.is_some() && at.is_none() {
            return Err(format!("result {s} names a parent that is not earlier"));
        }
        out.push(view);
    }
    out.reverse();
    Ok(out)
}
