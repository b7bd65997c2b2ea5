//! Creating unified diffs between two trees (the worker's side of a code hypothesis).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use super::myers::{self, Op};
use super::{check_path, File, Files, PathError, MAX_PATCH_BYTES, MAX_PATCH_FILES};

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// Why two trees cannot be expressed as a patch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    /// A file that differs is not UTF-8 text.
    #[error("{path}: the file is not UTF-8 text; a code hypothesis can change only text files")]
    Binary {
        /// The path.
        path: String,
    },
    /// A file's executable bit differs (or a created file is executable).
    #[error("{path}: its executable bit changes; a code hypothesis can change only lines (created files are not executable)")]
    Mode {
        /// The path.
        path: String,
    },
    /// A path of one of the trees is not a valid tree path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// More files differ than a patch may change ([`MAX_PATCH_FILES`]).
    #[error("{files} files differ; a code hypothesis may change at most {MAX_PATCH_FILES}")]
    TooManyFiles {
        /// How many differ.
        files: usize,
    },
    /// The diff is longer than [`MAX_PATCH_BYTES`].
    #[error("the diff is {bytes} bytes; a code hypothesis may be at most {MAX_PATCH_BYTES} bytes")]
    TooLarge {
        /// Its length in bytes.
        bytes: usize,
    },
}

/// Every path that is added, removed or modified (data or executable bit) between `old` and
/// `new`, sorted.
pub fn changed_paths(old: &Files, new: &Files) -> Vec<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// A unified diff from `old` to `new` (3 lines of context, `diff --git` headers, `--- a/path` /
/// `+++ b/path`, `/dev/null` for created and deleted files, `\ No newline at end of file` where
/// needed), such that `Patch::parse(&d)?.apply(old)? == *new`. Empty when the trees are equal.
/// Refuses a changed file that is not UTF-8, an executable-bit change (also an executable
/// created file), an invalid path, more than [`MAX_PATCH_FILES`] changed files, and a diff over
/// [`MAX_PATCH_BYTES`].
pub fn diff(old: &Files, new: &Files) -> Result<String, DiffError> {
    let changed = changed_paths(old, new);
    if changed.len() > MAX_PATCH_FILES {
        return Err(DiffError::TooManyFiles {
            files: changed.len(),
        });
    }
    let mut out = String::new();
    let mut bytes = 0usize;
    for path in changed {
        check_path(&path)?;
        let section = file_diff(&path, old.get(&path), new.get(&path))?;
        bytes += section.len();
        if bytes <= MAX_PATCH_BYTES {
            out.push_str(&section);
        }
    }
    if bytes > MAX_PATCH_BYTES {
        return Err(DiffError::TooLarge { bytes });
    }
    Ok(out)
}

/// One file's section of the diff.
fn file_diff(path: &str, o: Option<&File>, n: Option<&File>) -> Result<String, DiffError> {
    fn text<'f>(path: &str, f: Option<&'f File>) -> Result<&'f str, DiffError> {
        f.map_or(Ok(""), |f| {
            std::str::from_utf8(&f.data).map_err(|_| DiffError::Binary {
                path: path.to_string(),
            })
        })
    }
    let mode_changed = match (o, n) {
        (Some(o), Some(n)) => o.executable != n.executable,
        (None, Some(n)) => n.executable,
        _ => false,
    };
    if mode_changed {
        return Err(DiffError::Mode {
            path: path.to_string(),
        });
    }
    let (a, b) = (text(path, o)?, text(path, n)?);
    let mut out = String::new();
    let _ = writeln!(out, "diff --git a/{path} b/{path}");
    match (o, n) {
        (None, _) => out.push_str("new file mode 100644\n"),
        (Some(o), None) => {
            let mode = if o.executable { "100755" } else { "100644" };
            let _ = writeln!(out, "deleted file mode {mode}");
        }
        _ => {}
    }
    // An empty file created or deleted has no `---`/`+++` lines, as git writes it.
    if !(a.is_empty() && b.is_empty()) {
        let minus = o.map_or("/dev/null".to_string(), |_| format!("a/{path}"));
        let plus = n.map_or("/dev/null".to_string(), |_| format!("b/{path}"));
        let _ = writeln!(out, "--- {minus}\n+++ {plus}");
        hunks(&mut out, a, b);
    }
    Ok(out)
}

/// Appends the hunks turning `a` into `b`. The search effort is bounded: an edit costs at least
/// its shortest line plus two bytes of output, so a file needing more edits than fit in
/// [`MAX_PATCH_BYTES`] is over the limit anyway and may be written non-minimally (its size is then
/// only reported).
fn hunks(out: &mut String, a: &str, b: &str) {
    let la: Vec<&str> = a.split_inclusive('\n').collect();
    let lb: Vec<&str> = b.split_inclusive('\n').collect();
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let ia = intern(&mut ids, &la);
    let ib = intern(&mut ids, &lb);
    // Each edit writes its line, a sign and a newline: more edits than this cannot fit.
    let cheapest = la
        .iter()
        .chain(&lb)
        .map(|l| l.len() + 1)
        .min()
        .unwrap_or(2)
        .max(2);
    let cap = MAX_PATCH_BYTES / cheapest + 1;
    let ops = if edits_at_least(&ia, &ib) > cap {
        // Over the limit whatever the script: skip the search.
        (0..ia.len())
            .map(Op::Delete)
            .chain((0..ib.len()).map(Op::Insert))
            .collect()
    } else {
        myers::diff(&ia, &ib, cap)
    };
    let changed: Vec<usize> = (0..ops.len())
        .filter(|&i| !matches!(ops[i], Op::Equal(..)))
        .collect();
    let mut g = 0;
    while g < changed.len() {
        // A group: changes whose gaps of equal lines are at most 2 × CONTEXT.
        let mut end = g;
        while end + 1 < changed.len() && changed[end + 1] - changed[end] <= 2 * CONTEXT + 1 {
            end += 1;
        }
        let first = changed[g].saturating_sub(CONTEXT);
        let last = (changed[end] + CONTEXT).min(ops.len() - 1);
        write_hunk(out, &ops[first..=last], &la, &lb);
        g = end + 1;
    }
}

/// A lower bound on the edits between `a` and `b`: a common subsequence has at most
/// min(count in `a`, count in `b`) copies of each line.
fn edits_at_least(a: &[u32], b: &[u32]) -> usize {
    let mut count: HashMap<u32, (usize, usize)> = HashMap::new();
    for x in a {
        count.entry(*x).or_default().0 += 1;
    }
    for y in b {
        count.entry(*y).or_default().1 += 1;
    }
    let common: usize = count.values().map(|(p, q)| *p.min(q)).sum();
    a.len() + b.len() - 2 * common
}

/// Line ids: equal lines (with their `\n`, if any) get equal ids.
fn intern<'s>(ids: &mut HashMap<&'s str, u32>, lines: &[&'s str]) -> Vec<u32> {
    let mut v = Vec::with_capacity(lines.len());
    for s in lines {
        let next = ids.len() as u32;
        v.push(*ids.entry(*s).or_insert(next));
    }
    v
}

/// Writes one hunk for the ops `span` (a side without lines in it is an empty file: the hunk
/// always has context or changes on both sides otherwise).
fn write_hunk(out: &mut String, span: &[Op], la: &[&str], lb: &[&str]) {
    let (mut old_len, mut new_len) = (0usize, 0usize);
    let (mut old_first, mut new_first) = (None, None);
    for op in span {
        match *op {
            Op::Equal(i, j) => {
                old_first.get_or_insert(i);
                new_first.get_or_insert(j);
                old_len += 1;
                new_len += 1;
            }
            Op::Delete(i) => {
                old_first.get_or_insert(i);
                old_len += 1;
            }
            Op::Insert(j) => {
                new_first.get_or_insert(j);
                new_len += 1;
            }
        }
    }
    let start =
        |first: Option<usize>, len: usize| if len == 0 { 0 } else { first.unwrap_or(0) + 1 };
    let _ = writeln!(
        out,
        "@@ -{},{old_len} +{},{new_len} @@",
        start(old_first, old_len),
        start(new_first, new_len)
    );
    for op in span {
        let (sign, line) = match *op {
            Op::Equal(i, _) => (' ', la[i]),
            Op::Delete(i) => ('-', la[i]),
            Op::Insert(j) => ('+', lb[j]),
        };
        out.push(sign);
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push_str("\n\\ No newline at end of file\n");
        }
    }
}
