//! Applying a parsed patch to a tree: strictly (no fuzz, no offsets) and within the tree bounds.

use super::parse::{shown, Change, FilePatch, Hunk, Line};
use super::{Editable, File, Files, Patch, PatchError, MAX_TREE_BYTES, MAX_TREE_FILES};

impl Patch {
    /// Checks that every path the patch touches is editable; the error lists every one that is
    /// not.
    pub fn check_editable(&self, editable: &Editable) -> Result<(), PatchError> {
        let paths: Vec<String> = self
            .paths()
            .into_iter()
            .filter(|p| !editable.matches(p))
            .map(str::to_string)
            .collect();
        if paths.is_empty() {
            Ok(())
        } else {
            Err(PatchError::NotEditable { paths })
        }
    }

    /// The tree `base` becomes under the patch. Strict: every context and removed line must equal
    /// the parent's line at the hunk's stated position; a created file must not exist and a
    /// changed or deleted one must; a deleted file's lines must all be removed; a file the patch
    /// touches must be UTF-8 text; `\ No newline at end of file` must agree with the parent.
    /// Created files are not executable, changed files keep their bit. The result has at most
    /// [`MAX_TREE_FILES`] files and [`MAX_TREE_BYTES`] bytes.
    pub fn apply(&self, base: &Files) -> Result<Files, PatchError> {
        // Every touched file's new content (None: deleted), computed before the tree is copied.
        let mut changes: Vec<(&str, Option<File>)> = Vec::with_capacity(self.files.len());
        let mut files = base.len();
        let mut bytes: u64 = base.values().map(|f| f.data.len() as u64).sum();
        for f in &self.files {
            let old = base.get(&f.path);
            let new = match (f.change, old) {
                (Change::Create, Some(_)) => {
                    return Err(PatchError::AlreadyExists {
                        path: f.path.clone(),
                    })
                }
                (Change::Create, None) => Some(File {
                    data: apply_hunks(f, "")?.into_bytes(),
                    executable: false,
                }),
                (_, None) => {
                    return Err(PatchError::Missing {
                        path: f.path.clone(),
                    })
                }
                (Change::Modify | Change::Delete, Some(old)) => {
                    let text = std::str::from_utf8(&old.data).map_err(|_| PatchError::NotText {
                        path: f.path.clone(),
                    })?;
                    let new = apply_hunks(f, text)?;
                    match f.change {
                        Change::Modify => Some(File {
                            data: new.into_bytes(),
                            executable: old.executable,
                        }),
                        _ if new.is_empty() => None,
                        _ => {
                            return Err(PatchError::PartialDelete {
                                path: f.path.clone(),
                                removed: f.hunks.iter().map(|h| h.old_len).sum(),
                                lines: split_lines(text).0.len(),
                            })
                        }
                    }
                }
            };
            let old_bytes = old.map_or(0, |o| o.data.len() as u64);
            let new_bytes = new.as_ref().map_or(0, |n| n.data.len() as u64);
            bytes = bytes - old_bytes + new_bytes;
            files = files + usize::from(new.is_some()) - usize::from(old.is_some());
            changes.push((&f.path, new));
        }
        if files > MAX_TREE_FILES {
            return Err(PatchError::TreeTooManyFiles { files });
        }
        if bytes > MAX_TREE_BYTES {
            return Err(PatchError::TreeTooLarge { bytes });
        }
        let mut out = base.clone();
        for (path, new) in changes {
            match new {
                Some(file) => out.insert(path.to_string(), file),
                None => out.remove(path),
            };
        }
        for f in self.files.iter().filter(|f| f.change == Change::Create) {
            check_no_clash(&out, &f.path)?;
        }
        Ok(out)
    }
}

/// Checks that no ancestor directory of `path` is a file in `tree` and that `path` is not the
/// directory of another file.
fn check_no_clash(tree: &Files, path: &str) -> Result<(), PatchError> {
    let clash = |other: &str| PatchError::FileDirClash {
        path: path.to_string(),
        other: other.to_string(),
    };
    for (i, _) in path.match_indices('/') {
        if tree.contains_key(&path[..i]) {
            return Err(clash(&path[..i]));
        }
    }
    let dir = format!("{path}/");
    if let Some((other, _)) = tree.range(dir.clone()..).next() {
        if other.starts_with(&dir) {
            return Err(clash(other));
        }
    }
    Ok(())
}

/// A text's lines without their `\n`, and whether the last one had a `\n` (true for an empty
/// text).
pub(super) fn split_lines(text: &str) -> (Vec<&str>, bool) {
    if text.is_empty() {
        return (Vec::new(), true);
    }
    let mut lines: Vec<&str> = text.split('\n').collect();
    let ends_nl = text.ends_with('\n');
    if ends_nl {
        lines.pop();
    }
    (lines, ends_nl)
}

/// One file's new text: its hunks applied to `text`.
fn apply_hunks(f: &FilePatch, text: &str) -> Result<String, PatchError> {
    let (old, old_nl) = split_lines(text);
    let mut out: Vec<&str> = Vec::with_capacity(old.len());
    let mut pos = 0usize;
    let mut final_nl = old_nl;
    for (k, h) in f.hunks.iter().enumerate() {
        let err = |why: String| PatchError::Hunk {
            path: f.path.clone(),
            hunk: k + 1,
            header: h.header(),
            why,
        };
        let start = h.old_pos();
        if start > old.len() {
            return Err(err(format!(
                "it starts after line {start}, but the parent has only {} lines",
                old.len()
            )));
        }
        if start < pos {
            return Err(err("it overlaps the hunk before it".into()));
        }
        out.extend_from_slice(&old[pos..start]);
        let mut at = start;
        for line in &h.lines {
            match line {
                Line::Context(s) | Line::Remove(s) => {
                    let Some(found) = old.get(at) else {
                        return Err(err(format!(
                            "line {} does not match the parent: expected {:?}, but the parent has only {} lines",
                            at + 1,
                            shown(s),
                            old.len()
                        )));
                    };
                    if found != s {
                        return Err(err(format!(
                            "line {} does not match the parent: expected {:?}, found {:?}",
                            at + 1,
                            shown(s),
                            shown(found)
                        )));
                    }
                    if matches!(line, Line::Context(_)) {
                        out.push(found);
                    }
                    at += 1;
                }
                Line::Add(s) => out.push(s),
            }
        }
        pos = at;
        if let Some(nl) = end_of_file(h, at == old.len(), old.is_empty(), old_nl).map_err(err)? {
            final_nl = nl;
        }
    }
    out.extend_from_slice(&old[pos..]);
    let mut new = out.join("\n");
    if final_nl && !out.is_empty() {
        new.push('\n');
    }
    Ok(new)
}

/// Checks a hunk's `\ No newline at end of file` markers against the parent and says whether the
/// new file ends with a newline, when the hunk decides that (it reaches the old file's end).
fn end_of_file(
    h: &Hunk,
    reaches_end: bool,
    old_empty: bool,
    old_nl: bool,
) -> Result<Option<bool>, String> {
    if !reaches_end {
        if h.old_missing_newline || h.new_missing_newline {
            return Err(
                "it says it ends the file (`\\ No newline at end of file`), but the parent has \
                 more lines after it"
                    .into(),
            );
        }
        return Ok(None);
    }
    if h.old_len > 0 {
        if h.old_missing_newline && old_nl {
            return Err(
                "it says the parent's last line has no newline at end of file, but it has one"
                    .into(),
            );
        }
        if !h.old_missing_newline && !old_nl {
            return Err(
                "the parent's last line has no newline at end of file, but the hunk \
                        does not say so (`\\ No newline at end of file`)"
                    .into(),
            );
        }
    } else if !old_empty && !old_nl {
        return Err(
            "it appends after the parent's last line, which has no newline at end of \
                    file; the hunk must replace that line"
                .into(),
        );
    }
    // Lines before the hunk's new side all end in a newline; the hunk's last new line does unless
    // marked.
    Ok(Some(!h.new_missing_newline))
}
