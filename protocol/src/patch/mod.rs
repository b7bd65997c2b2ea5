//! Source trees and code hypotheses: paths, editable globs, unified diffs (parse, apply, create)
//! and the content address of a tree. Pure functions on in-memory trees; no file system.
//!
//! A program's source bundle is a tree of files ([`Files`]); a code hypothesis is a unified diff
//! against its parent tree that may touch only the program's editable files. Everything here is
//! bounded: a hostile member sends the patch text, so parsing and applying never allocate more than
//! a constant factor of the (bounded) input and the (bounded) tree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One file of a source tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    /// Its bytes.
    pub data: Vec<u8>,
    /// Whether it is executable (mode 0755 in a bundle; 0644 otherwise).
    pub executable: bool,
}

/// A source tree: normalised relative paths ([`check_path`]) to files. Directories are implied.
pub type Files = BTreeMap<String, File>;

/// Longest path in a tree, bytes.
pub const MAX_PATH_BYTES: usize = 255;

/// Why a path is not a valid tree path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {path:?} {why}")]
pub struct PathError {
    /// The path (cut to 300 bytes for display).
    pub path: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Checks that `path` is a normalised relative path: 1..=[`MAX_PATH_BYTES`] bytes, `/`-separated
/// components, none empty, `.` or `..`, no leading `/`, no backslash, no NUL or control character.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let fail = |why| {
        Err(PathError {
            path: path.chars().take(300).collect(),
            why,
        })
    };
    if path.is_empty() {
        return fail("is empty");
    }
    if path.len() > MAX_PATH_BYTES {
        return fail("is longer than 255 bytes");
    }
    if path.starts_with('/') {
        return fail("is absolute; tree paths are relative");
    }
    if path.contains('\\') || path.chars().any(char::is_control) {
        return fail("contains a backslash or a control character");
    }
    for c in path.split('/') {
        match c {
            "" => return fail("has an empty component (`//` or a trailing `/`)"),
            "." | ".." => return fail("has a `.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

// ---- TEMPORARY STUBS (replaced by the patch helper's implementation at merge) ----
/// Most bytes of a patch.
pub const MAX_PATCH_BYTES: usize = 64 * 1024;
/// Most files one patch touches.
pub const MAX_PATCH_FILES: usize = 64;
/// Most editable patterns.
pub const MAX_EDITABLE_PATTERNS: usize = 64;
/// Largest tree, bytes.
pub const MAX_TREE_BYTES: u64 = 256 << 20;
/// Most files in a tree.
pub const MAX_TREE_FILES: usize = 10_000;
/// Editable globs.
#[derive(Debug, Clone)]
pub struct Editable(Vec<String>);
impl Editable {
    /// Compiles the patterns.
    pub fn new(patterns: &[String]) -> Result<Editable, String> {
        Ok(Editable(patterns.to_vec()))
    }
    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        self.0.iter().any(|p| p == path)
    }
}
/// Checks a pattern.
pub fn check_pattern(p: &str) -> Result<(), String> {
    check_path(p).map_err(|e| e.to_string())
}
/// A patch error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);
/// A diff error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DiffError(pub String);
/// A parsed patch.
#[derive(Debug, Clone)]
pub struct Patch;
impl Patch {
    /// Parses.
    pub fn parse(_t: &str) -> Result<Patch, PatchError> {
        Err(PatchError("stub".into()))
    }
    /// Paths.
    pub fn paths(&self) -> Vec<&str> {
        Vec::new()
    }
    /// Editable check.
    pub fn check_editable(&self, _e: &Editable) -> Result<(), PatchError> {
        Ok(())
    }
    /// Applies.
    pub fn apply(&self, base: &Files) -> Result<Files, PatchError> {
        Ok(base.clone())
    }
}
/// Diff.
pub fn diff(_old: &Files, _new: &Files) -> Result<String, DiffError> {
    Ok(String::new())
}
/// Changed paths.
pub fn changed_paths(old: &Files, new: &Files) -> Vec<String> {
    let mut v: Vec<String> = old.keys().chain(new.keys()).filter(|k| old.get(*k) != new.get(*k)).cloned().collect();
    v.sort();
    v.dedup();
    v
}
/// Tree digest.
pub fn tree_digest(files: &Files) -> crate::Digest {
    crate::Digest::content_id("btd/tree/v1", files)
}
