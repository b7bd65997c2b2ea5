//! Source bundles: a program's source tree as one canonical tar archive, fetched by SHA-256.
//!
//! * [`pack_dir`] / [`pack`] make the bundle: a POSIX ustar archive that depends only on the
//!   tree's paths, bytes and executable bits, so the same directory always gives the same bytes
//!   and the same [`Digest`]. Entries are regular files only, sorted by path (byte order), with
//!   mode 0755 (executable) or 0644, uid/gid 0, empty user and group names, mtime 0, no directory
//!   entries (directories are implied by the paths; an empty directory is not kept).
//! * [`read_tar`] reads a bundle from a peer, which is hostile input: see its docs for what it
//!   refuses. It never panics and allocates at most the input's size plus `max_bytes`.
//! * [`read_dir`] reads a directory into a [`Files`] tree under the same rules as [`pack_dir`];
//!   [`write_tree`] writes a tree into a new, empty directory.
//! * [`SetupCache`] unpacks a bundle once per worker and runs the program's `setup` command in it
//!   once (cached), e.g. to install dependencies.
//!
//! Walking a directory ([`read_dir`], [`pack_dir`]) refuses symbolic links, devices, sockets,
//! FIFOs, names that are not UTF-8 and paths that fail [`check_path`], more than
//! [`MAX_TREE_FILES`] files and more than `max_bytes` bytes of file content. It skips exactly one
//! thing: a top-level `.git` (a directory, or the file git leaves in worktrees and submodules).

mod setup;
mod tar;
mod tree;

pub use setup::{SetupCache, SetupSpec, MAX_SETUP_TAIL_BYTES};
pub use tar::{pack, read_tar};
pub use tree::{read_dir, write_tree};

use std::path::Path;

use btd_protocol::patch::{check_path, Files, PathError};
#[cfg(doc)]
use btd_protocol::Digest;

/// Most files in one tree.
pub const MAX_TREE_FILES: usize = 10_000;
/// A sensible default for the `max_bytes` argument: 256 MiB of file content per bundle.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 256 << 20;

/// Why a bundle could not be made, read, written or set up.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An entry cannot be part of a tree (a link, a device, a name that is not UTF-8, …).
    #[error("{path}: {why}")]
    Refused {
        /// The entry (relative to the tree's root when known).
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A path is not a valid tree path.
    #[error("{0}")]
    Path(#[from] PathError),
    /// The tree has more than [`MAX_TREE_FILES`] files.
    #[error("the tree has more than {limit} files; bundles hold at most {limit}")]
    TooManyFiles {
        /// [`MAX_TREE_FILES`].
        limit: usize,
    },
    /// The tree's files hold more bytes than allowed.
    #[error(
        "the tree holds more than {limit} bytes of files (at least {bytes}); remove large files \
         (data, checkpoints) from the bundle, or raise the limit"
    )]
    TooLarge {
        /// Bytes seen when the limit was crossed.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The archive is malformed or uses a feature bundles do not.
    #[error("bad bundle archive at byte {offset}: {why}")]
    Tar {
        /// Where in the archive.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// The directory to write a tree into is not empty.
    #[error("{path} is not empty: a tree is only written into a new or empty directory")]
    NotEmpty {
        /// The directory.
        path: String,
    },
    /// The setup specification is unusable.
    #[error("invalid setup: {0}")]
    InvalidSetup(String),
    /// The sandbox the setup was to run in is unavailable.
    #[error("{0}")]
    SandboxUnavailable(String),
    /// The setup command did not succeed.
    #[error("setup command {command:?} {outcome}; the end of its output:\n{tail}")]
    SetupFailed {
        /// The command.
        command: String,
        /// How it ended, e.g. "exited with code 1" or "timed out after 600 s".
        outcome: String,
        /// The last bytes of its stdout and stderr (at most [`MAX_SETUP_TAIL_BYTES`]).
        tail: String,
    },
}

impl SourceError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn refused(path: impl Into<String>, why: impl Into<String>) -> Self {
        Self::Refused {
            path: path.into(),
            why: why.into(),
        }
    }
}

/// Checks that no path of `files` is also a directory of another (`a` and `a/b`), which no file
/// system can hold; `files` paths must already pass [`check_path`].
fn check_no_file_dir_clash(files: &Files) -> Result<(), SourceError> {
    for path in files.keys() {
        for (i, _) in path.match_indices('/') {
            let dir = &path[..i];
            if files.contains_key(dir) {
                return Err(SourceError::refused(
                    dir,
                    format!("is a file, but {path} needs it to be a directory"),
                ));
            }
        }
    }
    Ok(())
}

/// [`check_path`] for every path of `files`, the clash check and the limits.
pub(crate) fn check_tree(files: &Files, max_bytes: u64) -> Result<(), SourceError> {
    if files.len() > MAX_TREE_FILES {
        return Err(SourceError::TooManyFiles {
            limit: MAX_TREE_FILES,
        });
    }
    let mut bytes = 0u64;
    for (path, file) in files {
        check_path(path)?;
        bytes = bytes.saturating_add(file.data.len() as u64);
        if bytes > max_bytes {
            return Err(SourceError::TooLarge {
                bytes,
                limit: max_bytes,
            });
        }
    }
    check_no_file_dir_clash(files)
}

/// Reads `dir` ([`read_dir`]) and packs it ([`pack`]): the directory's canonical bundle.
pub fn pack_dir(dir: &Path, max_bytes: u64) -> Result<Vec<u8>, SourceError> {
    pack(&read_dir(dir, max_bytes)?, max_bytes)
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod setup_tests;
#[cfg(test)]
mod tests;
