//! Garbage collection of the checkpoints the verifier fetched (hostile peers item 8: fetched
//! checkpoints used to stay on the owner's disk for good).
//!
//! The verifier fetches each claim into `HOME/claims/<program>/<seq>/` and deletes that directory
//! once the claim has its verdict. What else may be left there: directories of claims that got their
//! verdict while the daemon crashed, was stopped mid-check, or could not delete them, and those of
//! programs this node no longer owns. A program's claims are checked oldest first (`Kb::resolve`
//! takes only the oldest pending claim), so every claim older than a program's oldest pending one
//! has its verdict: [`sweep`] deletes everything under the claims directory except the directory of
//! each program's oldest pending claim (which a check resumes). The verifier sweeps at start and
//! before every pass, so the claims directory holds at most one claim per owned program with claims
//! waiting, each at most the program's `[verify] max_artifact_bytes`.

use std::collections::HashMap;
use std::path::Path;

use btd_protocol::program::ProgramId;

/// What a sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Directories and files removed.
    pub entries: u64,
    /// Bytes of the files in them.
    pub bytes: u64,
}

/// Deletes everything under `root` (the claims directory) except `root/<program>/<seq>` for each
/// program's oldest pending claim in `keep`. Entries that are not a program id or a seq are deleted
/// too (the directory is the verifier's own). Blocking; a missing `root` is an empty one.
pub fn sweep(root: &Path, keep: &HashMap<ProgramId, u64>) -> std::io::Result<Swept> {
    let mut swept = Swept::default();
    let programs = match std::fs::read_dir(root) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(swept),
        Err(e) => return Err(e),
    };
    for program_dir in programs {
        let program_dir = program_dir?;
        let kept_seq = program_dir
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<ProgramId>().ok())
            .and_then(|p| keep.get(&p).copied());
        let Some(kept_seq) = kept_seq.filter(|_| program_dir.path().is_dir()) else {
            remove(&program_dir.path(), &mut swept)?;
            continue;
        };
        for claim_dir in std::fs::read_dir(program_dir.path())? {
            let claim_dir = claim_dir?;
            let is_kept = claim_dir.file_name().to_str() == Some(&kept_seq.to_string());
            if !is_kept {
                remove(&claim_dir.path(), &mut swept)?;
            }
        }
    }
    Ok(swept)
}

/// [`sweep`] of `claims_root` keeping the claims the verifier is about to check (`jobs`: each
/// program's oldest pending claim), on a blocking thread; what it deleted is logged, a failure too
/// (the next pass tries again).
pub async fn sweep_for(claims_root: std::path::PathBuf, jobs: &[crate::node::types::ClaimJob]) {
    let keep: HashMap<ProgramId, u64> = jobs.iter().map(|j| (j.program, j.seq)).collect();
    match tokio::task::spawn_blocking(move || sweep(&claims_root, &keep)).await {
        Ok(Ok(s)) if s.entries > 0 => {
            tracing::info!(
                entries = s.entries,
                bytes = s.bytes,
                "deleted the files of checked claims"
            )
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot clean the claims directory"),
        Err(e) => tracing::warn!(error = %e, "cleaning the claims directory crashed"),
    }
}

/// Removes a file or a directory tree, counting what it held.
fn remove(path: &Path, swept: &mut Swept) -> std::io::Result<()> {
    swept.bytes = swept.bytes.saturating_add(size(path));
    swept.entries = swept.entries.saturating_add(1);
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Bytes of the files under `path` (not following links).
fn size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| size(&e.path()))
                .fold(0u64, u64::saturating_add)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use btd_protocol::Digest;

    fn put(path: &Path, bytes: usize) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![7u8; bytes]).unwrap();
    }

    /// Crash leftovers (claims that got their verdict, a program no longer owned, stray files) are
    /// deleted; each program's oldest pending claim, which a check resumes, is kept.
    #[test]
    fn only_each_programs_oldest_pending_claim_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("claims");
        let (a, b, gone) = (
            ProgramId(Digest([1; 32])),
            ProgramId(Digest([2; 32])),
            ProgramId(Digest([3; 32])),
        );
        let claim = |p: ProgramId, seq: u64| root.join(p.to_string()).join(seq.to_string());
        // Program a: claims 3 and 5 were checked (a crash kept their files), 7 is being fetched.
        put(&claim(a, 3).join("x/ckpt"), 100);
        put(&claim(a, 5).join("x/ckpt"), 100);
        put(&claim(a, 7).join("x/ckpt.part"), 10);
        // Program b has nothing pending any more; `gone` is not owned; a stray file.
        put(&claim(b, 2).join("x/ckpt"), 50);
        put(&claim(gone, 1).join("x/ckpt"), 50);
        put(&root.join("stray"), 1);
        let keep = HashMap::from([(a, 7)]);
        let swept = sweep(&root, &keep).unwrap();
        assert_eq!(swept.bytes, 301);
        assert!(claim(a, 7).join("x/ckpt.part").exists());
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(a.to_string())]);
        assert_eq!(
            std::fs::read_dir(root.join(a.to_string())).unwrap().count(),
            1
        );
        // Nothing pending anywhere: the directory empties; a missing one is fine.
        sweep(&root, &HashMap::new()).unwrap();
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        assert_eq!(
            sweep(&dir.path().join("none"), &HashMap::new()).unwrap(),
            Swept::default()
        );
    }
}
