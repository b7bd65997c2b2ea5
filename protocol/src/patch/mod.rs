//! Source trees and code hypotheses: paths, editable globs, unified diffs (parse, apply, create)
//! and the content address of a tree. Pure functions on in-memory trees; no file system.
//!
//! A program's source bundle is a tree of files ([`Files`]); a code hypothesis is a unified diff
//! against its parent tree that may touch only the program's editable files. Everything here is
//! bounded: a hostile member sends the patch text, so parsing and applying never allocate more than
//! a constant factor of the (bounded) input and the (bounded) tree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod apply;
mod diff;
mod error;
mod glob;
mod myers;
mod parse;
#[cfg(test)]
mod tests;

pub use diff::{changed_paths, diff, DiffError};
pub use error::PatchError;
pub use glob::{check_pattern, Editable, MAX_EDITABLE_PATTERNS};
pub use parse::{Change, FilePatch, Hunk, Line, Patch};

/// Longest patch text (a code hypothesis), bytes.
pub const MAX_PATCH_BYTES: usize = 64 * 1024;

/// Most files one patch may create, change or delete.
pub const MAX_PATCH_FILES: usize = 64;

/// Largest total size of a source tree (the sum of its files' sizes), bytes.
pub const MAX_TREE_BYTES: u64 = 256 << 20;

/// Most files in a source tree.
pub const MAX_TREE_FILES: usize = 10_000;

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

/// The content address of a tree: SHA-256 over `btd/tree/v1`, a zero byte, the number of files
/// (u64 little-endian), then for each file in path order its path length (u64 LE), path bytes,
/// executable flag (one byte, 0 or 1), data length (u64 LE) and data. Every field is
/// length-prefixed, so distinct trees never share an encoding; the tree is hashed in place.
pub fn tree_digest(files: &Files) -> crate::Digest {
    let mut h = crate::hash::Hasher::default();
    h.update(b"btd/tree/v1\0");
    h.update(&(files.len() as u64).to_le_bytes());
    for (path, file) in files {
        h.update(&(path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update(&[u8::from(file.executable)]);
        h.update(&(file.data.len() as u64).to_le_bytes());
        h.update(&file.data);
    }
    h.finish()
}
