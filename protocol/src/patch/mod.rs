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
