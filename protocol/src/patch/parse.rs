//! Parsing unified diffs (as `git diff` and [`super::diff`] write them), strictly and within
//! bounds: the text is at most [`MAX_PATCH_BYTES`], at most [`MAX_PATCH_FILES`] files, hunk line
//! counts must match their headers, and nothing is allocated from a header's numbers.

use std::collections::BTreeSet;

use super::{check_path, PatchError, MAX_PATCH_BYTES, MAX_PATCH_FILES};

/// A parsed unified diff: which files it creates, changes or deletes, and how. Only
/// [`Patch::parse`] makes one, so its invariants (valid distinct paths, consistent hunks) hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub(super) files: Vec<FilePatch>,
}

/// What a patch does to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePatch {
    /// The file's tree path (the `a/`/`b/` prefix stripped).
    pub path: String,
    /// Whether it is created, changed or deleted.
    pub change: Change,
    /// Its hunks, in file order, not overlapping. A created or deleted file has at most one (none
    /// for an empty file).
    pub hunks: Vec<Hunk>,
}

/// The kind of change to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `--- /dev/null`: the file is new.
    Create,
    /// `--- a/x` / `+++ b/x`: the file's lines change.
    Modify,
    /// `+++ /dev/null`: the file goes away.
    Delete,
}

/// One hunk: `@@ -old_start,old_len +new_start,new_len @@ section`, then its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// First old line (1-based), or the line after which lines are inserted when `old_len` is 0.
    pub old_start: usize,
    /// Old lines (context and removed) the hunk covers.
    pub old_len: usize,
    /// First new line (1-based), or the line after which lines were removed when `new_len` is 0.
    pub new_start: usize,
    /// New lines (context and added) the hunk yields.
    pub new_len: usize,
    /// The text after the second `@@` (git shows the enclosing function there), without the
    /// separating space.
    pub section: String,
    /// Its lines, without the trailing newline.
    pub lines: Vec<Line>,
    /// The hunk's last old line is the end of the old file and has no newline.
    pub old_missing_newline: bool,
    /// The hunk's last new line is the end of the new file and has no newline.
    pub new_missing_newline: bool,
}

/// One line of a hunk, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// ` text`: in both the old and the new file.
    Context(String),
    /// `-text`: only in the old file.
    Remove(String),
    /// `+text`: only in the new file.
    Add(String),
}

impl Hunk {
    /// The hunk's header as git writes it, like `@@ -10,3 +10,4 @@`.
    pub fn header(&self) -> String {
        format!(
            "@@ -{},{} +{},{} @@",
            self.old_start, self.old_len, self.new_start, self.new_len
        )
    }

    /// 0-based index of the first old line the hunk covers (or where it inserts).
    pub(super) fn old_pos(&self) -> usize {
        if self.old_len == 0 {
            self.old_start
        } else {
            self.old_start.saturating_sub(1)
        }
    }

    /// 0-based index of the first new line the hunk yields.
    fn new_pos(&self) -> usize {
        if self.new_len == 0 {
            self.new_start
        } else {
            self.new_start.saturating_sub(1)
        }
    }
}

impl Patch {
    /// Parses a unified diff. Accepts `diff --git` sections (with `index`, `new file mode 100644`
    /// and `deleted file mode` lines) and plain `--- a/x` / `+++ b/x` sections; `/dev/null` creates
    /// or deletes; blank lines between sections are ignored. Refuses anything else: text over
    /// [`MAX_PATCH_BYTES`] or with more than [`MAX_PATCH_FILES`] files, invalid or quoted paths,
    /// renames and copies, mode changes, binary patches, a file changed twice, hunks whose line
    /// counts or positions do not add up. An empty text is an empty patch.
    pub fn parse(text: &str) -> Result<Patch, PatchError> {
        if text.len() > MAX_PATCH_BYTES {
            return Err(PatchError::TooLarge { bytes: text.len() });
        }
        let mut lines: Vec<&str> = text.split('\n').collect();
        if text.ends_with('\n') {
            lines.pop();
        }
        let mut p = Parser {
            lines,
            i: 0,
            files: Vec::new(),
            seen: BTreeSet::new(),
            last_hunk: None,
        };
        while let Some(line) = p.peek() {
            if line.is_empty() {
                p.i += 1;
            } else if let Some(rest) = line.strip_prefix("diff --git ") {
                p.git_section(rest)?;
            } else if line.starts_with("--- ") {
                p.file_section(None)?;
            } else {
                return Err(p.unexpected(line));
            }
        }
        Ok(Patch { files: p.files })
    }

    /// Every path the patch touches, sorted.
    pub fn paths(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.files.iter().map(|f| f.path.as_str()).collect();
        v.sort_unstable();
        v
    }

    /// The per-file changes, in patch order.
    pub fn files(&self) -> &[FilePatch] {
        &self.files
    }

    /// Whether the patch changes nothing (an empty text).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// At most 80 characters of `s`, for error messages.
pub(super) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// What a `diff --git` header block said about its file.
struct GitHeader {
    line: usize,
    path: String,
    created: bool,
    deleted: bool,
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    /// Index of the next line to read.
    i: usize,
    files: Vec<FilePatch>,
    seen: BTreeSet<String>,
    /// The last hunk read (path, number, header), to explain a line beyond its counts.
    last_hunk: Option<(String, usize, String)>,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.lines.get(self.i).copied()
    }

    /// 1-based number of the next line.
    fn line_no(&self) -> usize {
        self.i + 1
    }

    fn syntax(&self, line: usize, why: impl Into<String>) -> PatchError {
        PatchError::Syntax {
            line,
            why: why.into(),
        }
    }

    fn unexpected(&self, line: &str) -> PatchError {
        let why = match (&self.last_hunk, line.chars().next()) {
            (Some((path, n, header)), Some(' ' | '+' | '-' | '\\')) => format!(
                "{:?} is beyond the lines counted by {path} hunk {n} ({header}): the header's \
                 line counts do not match the hunk",
                shown(line)
            ),
            _ => format!(
                "expected `diff --git`, `--- a/<path>` or `--- /dev/null`, found {:?}",
                shown(line)
            ),
        };
        self.syntax(self.line_no(), why)
    }

    fn unsupported(&self, line: usize, path: &str, what: &str) -> PatchError {
        PatchError::Unsupported {
            line,
            path: shown(path),
            what: what.to_string(),
        }
    }

    /// A `diff --git a/P b/P` line and its extended headers, then its `---`/`+++` section (or
    /// none, for an empty file created or deleted).
    fn git_section(&mut self, rest: &str) -> Result<(), PatchError> {
        self.last_hunk = None;
        let line = self.line_no();
        let path = self.git_path(line, rest)?;
        self.i += 1;
        let (mut created, mut deleted) = (false, false);
        let (mut from, mut to) = (None, None);
        while let Some(l) = self.peek() {
            if l.starts_with("index ")
                || l.starts_with("similarity index ")
                || l.starts_with("dissimilarity index ")
            {
            } else if let Some(mode) = l.strip_prefix("new file mode ") {
                match mode {
                    "100644" => created = true,
                    "100755" => return Err(self.unsupported(
                        self.line_no(),
                        &path,
                        "the patch creates an executable file; created files are not executable",
                    )),
                    _ => return Err(self.unsupported(
                        self.line_no(),
                        &path,
                        "the patch creates a symlink or submodule; only regular files are allowed",
                    )),
                }
            } else if let Some(mode) = l.strip_prefix("deleted file mode ") {
                match mode {
                    "100644" | "100755" => deleted = true,
                    _ => return Err(self.unsupported(
                        self.line_no(),
                        &path,
                        "the patch deletes a symlink or submodule; only regular files are allowed",
                    )),
                }
            } else if l.starts_with("old mode ") || l.starts_with("new mode ") {
                return Err(self.unsupported(
                    self.line_no(),
                    &path,
                    "the patch changes the file's mode (executable bit); a code hypothesis may change only lines",
                ));
            } else if let Some(p) = l
                .strip_prefix("rename from ")
                .or(l.strip_prefix("copy from "))
            {
                from = Some(p);
            } else if let Some(p) = l.strip_prefix("rename to ").or(l.strip_prefix("copy to ")) {
                to = Some(p);
            } else if l.starts_with("Binary files ") || l.starts_with("GIT binary patch") {
                return Err(self.unsupported(
                    self.line_no(),
                    &path,
                    "the patch changes a binary file; a patch can change only text files",
                ));
            } else {
                break;
            }
            self.i += 1;
        }
        if from.is_some() || to.is_some() {
            return Err(PatchError::Rename {
                line,
                old: shown(from.unwrap_or(&path)),
                new: shown(to.unwrap_or(&path)),
            });
        }
        if created && deleted {
            return Err(self.syntax(line, "a section both creates and deletes its file"));
        }
        let git = GitHeader {
            line,
            path,
            created,
            deleted,
        };
        if self.peek().is_some_and(|l| l.starts_with("--- ")) {
            return self.file_section(Some(git));
        }
        let change =
            match (created, deleted) {
                (true, _) => Change::Create,
                (_, true) => Change::Delete,
                _ => return Err(self.unsupported(
                    line,
                    &git.path,
                    "the `diff --git` section has no `---`/`+++` lines, so it changes only a mode \
                     or binary content, which a code hypothesis cannot",
                )),
            };
        self.push(line, git.path, change, Vec::new())
    }

    /// The path of a `diff --git a/P b/P` line. Renames (`a/X b/Y`) and quoted paths are refused.
    fn git_path(&self, line: usize, rest: &str) -> Result<String, PatchError> {
        if rest.starts_with('"') {
            return Err(self.unsupported(
                line,
                rest,
                "quoted paths (names with special characters) are not supported",
            ));
        }
        let n = rest.len();
        if n >= 5 && (n - 5).is_multiple_of(2) {
            let half = (n - 5) / 2;
            if let (Some(a), Some(b)) = (rest.get(2..2 + half), rest.get(half + 5..)) {
                if a == b
                    && rest.get(..2) == Some("a/")
                    && rest.get(2 + half..half + 5) == Some(" b/")
                {
                    check_path(a).map_err(|source| PatchError::Path { line, source })?;
                    return Ok(a.to_string());
                }
            }
        }
        if let Some((old, new)) = rest.strip_prefix("a/").and_then(|r| r.split_once(" b/")) {
            if !new.contains(" b/") {
                return Err(PatchError::Rename {
                    line,
                    old: shown(old),
                    new: shown(new),
                });
            }
        }
        Err(self.syntax(
            line,
            format!(
                "cannot read `diff --git {}`: expected `diff --git a/<path> b/<path>`",
                shown(rest)
            ),
        ))
    }

    /// The path of a `---` or `+++` line: `None` for `/dev/null`.
    fn header_path(&self, marker: &str, prefix: &str) -> Result<Option<String>, PatchError> {
        let line = self.line_no();
        let text = self.peek().unwrap_or_default();
        let Some(raw) = text.strip_prefix(marker) else {
            return Err(self.syntax(
                line,
                format!("expected a `{marker}` line, found {:?}", shown(text)),
            ));
        };
        let raw = raw.split_once('\t').map_or(raw, |(p, _)| p);
        if raw == "/dev/null" {
            return Ok(None);
        }
        if raw.starts_with('"') {
            return Err(self.unsupported(
                line,
                raw,
                "quoted paths (names with special characters) are not supported",
            ));
        }
        let Some(path) = raw.strip_prefix(prefix) else {
            return Err(self.syntax(
                line,
                format!(
                    "expected `{marker}{prefix}<path>` or `{marker}/dev/null`, found {:?}",
                    shown(text)
                ),
            ));
        };
        check_path(path).map_err(|source| PatchError::Path { line, source })?;
        Ok(Some(path.to_string()))
    }

    /// A `---` line, a `+++` line and the hunks after them.
    fn file_section(&mut self, git: Option<GitHeader>) -> Result<(), PatchError> {
        self.last_hunk = None;
        let line = self.line_no();
        let old = self.header_path("--- ", "a/")?;
        self.i += 1;
        let new = self.header_path("+++ ", "b/")?;
        self.i += 1;
        let (path, change) = match (old, new) {
            (None, None) => return Err(self.syntax(line, "both `---` and `+++` are /dev/null")),
            (None, Some(n)) => (n, Change::Create),
            (Some(o), None) => (o, Change::Delete),
            (Some(o), Some(n)) if o != n => {
                return Err(PatchError::Rename {
                    line,
                    old: o,
                    new: n,
                })
            }
            (Some(o), Some(_)) => (o, Change::Modify),
        };
        if let Some(g) = git {
            if g.path != path {
                return Err(self.syntax(
                    g.line,
                    format!(
                        "the `diff --git` line names {:?} but its `---`/`+++` lines name {path:?}",
                        g.path
                    ),
                ));
            }
            if (g.created && change != Change::Create) || (g.deleted && change != Change::Delete) {
                return Err(self.syntax(
                    g.line,
                    format!(
                        "{path}: `new file mode` needs `--- /dev/null` and `deleted file mode` \
                         needs `+++ /dev/null`"
                    ),
                ));
            }
        }
        let mut hunks: Vec<Hunk> = Vec::new();
        while self.peek().is_some_and(|l| l.starts_with("@@")) {
            let h = self.hunk(&path, &hunks)?;
            self.last_hunk = Some((path.clone(), hunks.len() + 1, h.header()));
            hunks.push(h);
        }
        let bad = |why: &str| Err(self.syntax(line, format!("{path}: {why}")));
        match change {
            Change::Modify if hunks.is_empty() => return bad("the section has no hunks"),
            Change::Create | Change::Delete if hunks.len() > 1 => {
                return bad("a created or deleted file must have a single hunk")
            }
            Change::Create
                if hunks
                    .first()
                    .is_some_and(|h| h.old_len != 0 || h.old_start != 0) =>
            {
                return bad("a created file's hunk must start `@@ -0,0 +1,<n> @@`")
            }
            Change::Delete
                if hunks
                    .first()
                    .is_some_and(|h| h.new_len != 0 || h.new_start != 0) =>
            {
                return bad("a deleted file's hunk must start `@@ -1,<n> +0,0 @@`")
            }
            _ => {}
        }
        self.push(line, path, change, hunks)
    }

    fn push(
        &mut self,
        line: usize,
        path: String,
        change: Change,
        hunks: Vec<Hunk>,
    ) -> Result<(), PatchError> {
        if self.files.len() >= MAX_PATCH_FILES {
            return Err(PatchError::TooManyFiles);
        }
        if !self.seen.insert(path.clone()) {
            return Err(PatchError::Duplicate { line, path });
        }
        self.files.push(FilePatch {
            path,
            change,
            hunks,
        });
        Ok(())
    }

    /// One hunk: its header, then exactly as many lines as the header counts, then an optional
    /// `\ No newline at end of file`.
    fn hunk(&mut self, path: &str, earlier: &[Hunk]) -> Result<Hunk, PatchError> {
        let line = self.line_no();
        let text = self.peek().unwrap_or_default();
        let mut h = parse_header(text).ok_or_else(|| {
            self.syntax(
                line,
                format!(
                    "expected a hunk header like `@@ -10,3 +10,4 @@`, found {:?}",
                    shown(text)
                ),
            )
        })?;
        self.i += 1;
        let n = earlier.len() + 1;
        let header = h.header();
        let err = |why: String| PatchError::Hunk {
            path: path.to_string(),
            hunk: n,
            header: header.clone(),
            why,
        };
        if (h.old_len > 0 && h.old_start == 0) || (h.new_len > 0 && h.new_start == 0) {
            return Err(err("a side with lines must start at line 1 or later".into()));
        }
        if h.old_len == 0 && h.new_len == 0 {
            return Err(err("the hunk has no lines".into()));
        }
        if let Some(prev) = earlier.last() {
            if prev.old_missing_newline || prev.new_missing_newline {
                return Err(err(
                    "it follows a hunk that ends the file (`\\ No newline at end of file`)".into(),
                ));
            }
            if h.old_pos() < prev.old_pos() + prev.old_len {
                return Err(err(format!(
                    "it starts at old line {} but the hunk before it covers old lines up to {}; \
                     hunks must be in order and not overlap",
                    h.old_start,
                    prev.old_pos() + prev.old_len
                )));
            }
        }
        let delta: i64 = earlier
            .iter()
            .map(|e| e.new_len as i64 - e.old_len as i64)
            .sum();
        let expected = h.old_pos() as i64 + delta;
        if h.new_pos() as i64 != expected {
            let shown_start = if h.new_len == 0 {
                expected
            } else {
                expected + 1
            };
            return Err(err(format!(
                "the new side starts at line {}, but after the earlier hunks it must start at {shown_start}",
                h.new_start
            )));
        }
        let (old_len, new_len) = (h.old_len, h.new_len);
        let (mut old_left, mut new_left) = (old_len, new_len);
        let mismatch = |old_left: usize, new_left: usize| {
            err(format!(
                "the header counts {old_len} old and {new_len} new lines, but the hunk has {} and {}",
                old_len - old_left,
                new_len - new_left
            ))
        };
        loop {
            let Some(l) = self.peek() else {
                if old_left > 0 || new_left > 0 {
                    return Err(mismatch(old_left, new_left));
                }
                break;
            };
            if l.starts_with('\\') {
                let Some(last) = h.lines.last() else {
                    return Err(self.syntax(
                        self.line_no(),
                        "`\\ No newline at end of file` before any line of the hunk",
                    ));
                };
                let (old_side, new_side) = match last {
                    Line::Context(_) => (true, true),
                    Line::Remove(_) => (true, false),
                    Line::Add(_) => (false, true),
                };
                if (old_side && h.old_missing_newline) || (new_side && h.new_missing_newline) {
                    return Err(self.syntax(
                        self.line_no(),
                        "a second `\\ No newline at end of file` for the same side",
                    ));
                }
                h.old_missing_newline |= old_side;
                h.new_missing_newline |= new_side;
                self.i += 1;
                continue;
            }
            if old_left == 0 && new_left == 0 {
                break;
            }
            // An empty line is an empty context line whose space an editor trimmed.
            let mut chars = l.chars();
            let kind = chars.next().unwrap_or(' ');
            let body = chars.as_str();
            let (uses_old, uses_new, line_v) = match kind {
                ' ' => (true, true, Line::Context(body.to_string())),
                '-' => (true, false, Line::Remove(body.to_string())),
                '+' => (false, true, Line::Add(body.to_string())),
                _ => {
                    return Err(self.syntax(
                        self.line_no(),
                        format!(
                            "{path} hunk {n} ({header}): expected a line starting with ' ', '-', \
                             '+' or '\\', found {:?} (the header counts more lines than the hunk has)",
                            shown(l)
                        ),
                    ))
                }
            };
            if (uses_old && old_left == 0) || (uses_new && new_left == 0) {
                return Err(err(format!(
                    "line {} ({:?}) is beyond the header's counts of {} old and {} new lines",
                    self.line_no(),
                    shown(l),
                    old_len,
                    new_len
                )));
            }
            if (uses_old && h.old_missing_newline) || (uses_new && h.new_missing_newline) {
                return Err(err(format!(
                    "line {} follows `\\ No newline at end of file` on the same side",
                    self.line_no()
                )));
            }
            old_left -= usize::from(uses_old);
            new_left -= usize::from(uses_new);
            h.lines.push(line_v);
            self.i += 1;
        }
        Ok(h)
    }
}

/// `@@ -a[,b] +c[,d] @@[ section]`, or `None`.
fn parse_header(text: &str) -> Option<Hunk> {
    let rest = text.strip_prefix("@@ -")?;
    let (ranges, after) = rest.split_once(" @@")?;
    let section = after.strip_prefix(' ').unwrap_or(after);
    if !after.is_empty() && !after.starts_with(' ') {
        return None;
    }
    let (old, new) = ranges.split_once(" +")?;
    let (old_start, old_len) = parse_range(old)?;
    let (new_start, new_len) = parse_range(new)?;
    Some(Hunk {
        old_start,
        old_len,
        new_start,
        new_len,
        section: section.to_string(),
        lines: Vec::new(),
        old_missing_newline: false,
        new_missing_newline: false,
    })
}

/// `start[,len]` (len 1 when absent).
fn parse_range(s: &str) -> Option<(usize, usize)> {
    match s.split_once(',') {
        Some((a, b)) => Some((parse_num(a)?, parse_num(b)?)),
        None => Some((parse_num(s)?, 1)),
    }
}

/// 1 to 9 ASCII digits.
fn parse_num(s: &str) -> Option<usize> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
