//! Why a patch was refused.

use super::{PathError, MAX_PATCH_BYTES, MAX_PATCH_FILES, MAX_TREE_BYTES, MAX_TREE_FILES};

/// Why a patch could not be parsed, is not allowed, or does not apply. Every message names the
/// patch line, or the file and hunk, it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch text is longer than [`MAX_PATCH_BYTES`].
    #[error("the patch is {bytes} bytes; at most {MAX_PATCH_BYTES} are allowed")]
    TooLarge {
        /// Its length in bytes.
        bytes: usize,
    },
    /// The patch changes more than [`MAX_PATCH_FILES`] files.
    #[error("the patch changes more than {MAX_PATCH_FILES} files")]
    TooManyFiles,
    /// A line of the patch is not valid unified-diff syntax.
    #[error("patch line {line}: {why}")]
    Syntax {
        /// 1-based line of the patch text.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A path in a `---`/`+++` or `diff --git` header is not a valid tree path.
    #[error("patch line {line}: {source}")]
    Path {
        /// 1-based line of the patch text.
        line: usize,
        /// Why the path is refused.
        source: PathError,
    },
    /// The patch renames (or copies) a file; code hypotheses may only create, change or delete.
    #[error("patch line {line}: the patch renames {old:?} to {new:?}; renames are not supported, delete the old file and create the new one instead")]
    Rename {
        /// 1-based line of the patch text.
        line: usize,
        /// The old path.
        old: String,
        /// The new path.
        new: String,
    },
    /// The patch changes something other than text lines: a mode, a binary file, a symlink.
    #[error("patch line {line}: {path}: {what}")]
    Unsupported {
        /// 1-based line of the patch text.
        line: usize,
        /// The file (as the header names it).
        path: String,
        /// What the patch tries to do and why that is not possible.
        what: String,
    },
    /// The same path appears in two file sections.
    #[error("patch line {line}: {path} is changed twice in one patch")]
    Duplicate {
        /// 1-based line of the second header.
        line: usize,
        /// The path.
        path: String,
    },
    /// A hunk is inconsistent in itself or with the file it applies to.
    #[error("{path} hunk {hunk} ({header}): {why}")]
    Hunk {
        /// The file.
        path: String,
        /// 1-based number of the hunk within its file.
        hunk: usize,
        /// The hunk header, like `@@ -10,3 +10,4 @@`.
        header: String,
        /// What is wrong.
        why: String,
    },
    /// The patch touches files the program does not let hypotheses edit.
    #[error("the patch touches files that are not editable in this program: {}", paths.join(", "))]
    NotEditable {
        /// Every such path, in path order.
        paths: Vec<String>,
    },
    /// The patch creates a file the parent tree already has.
    #[error("{path}: the patch creates it, but the parent tree already has it")]
    AlreadyExists {
        /// The path.
        path: String,
    },
    /// The patch creates a file whose path clashes with another file: one would have to be both a
    /// file and a directory (`a` and `a/b`).
    #[error("{path}: the patch creates it, but {other} is also a file, so one of them would have to be a directory")]
    FileDirClash {
        /// The created path.
        path: String,
        /// The file it clashes with.
        other: String,
    },
    /// The patch changes or deletes a file the parent tree lacks.
    #[error("{path}: the patch changes or deletes it, but the parent tree has no such file")]
    Missing {
        /// The path.
        path: String,
    },
    /// A file the patch changes or deletes is not UTF-8 text.
    #[error("{path}: the parent's file is not UTF-8 text; a patch can change only text files")]
    NotText {
        /// The path.
        path: String,
    },
    /// Deleting a file, the patch does not remove all of its lines.
    #[error("{path}: the patch deletes it but removes only {removed} of its {lines} lines")]
    PartialDelete {
        /// The path.
        path: String,
        /// Lines the patch removes.
        removed: usize,
        /// Lines the parent's file has.
        lines: usize,
    },
    /// The patched tree would be larger than [`MAX_TREE_BYTES`].
    #[error("the patched tree would be {bytes} bytes; at most {MAX_TREE_BYTES} are allowed")]
    TreeTooLarge {
        /// Its total size in bytes.
        bytes: u64,
    },
    /// The patched tree would have more than [`MAX_TREE_FILES`] files.
    #[error("the patched tree would have {files} files; at most {MAX_TREE_FILES} are allowed")]
    TreeTooManyFiles {
        /// Its number of files.
        files: usize,
    },
}
