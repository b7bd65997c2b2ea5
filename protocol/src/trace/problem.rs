//! Validation problems, shared by [`crate::dispatch`] and [`crate::trace`], and the checks that
//! produce them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id btd accepts, in bytes. Ids appear in paths, logs, messages and derived packet ids;
/// a bound keeps all of them readable and small on the wire.
pub const MAX_ID_BYTES: usize = 128;

/// The characters an id may use, as shown to users.
const ID_CHARS: &str = "A-Z a-z 0-9 . _ : -";

/// One thing wrong with an object: where it is (`path`, e.g. `packet.budget.spend_cap`) and what is
/// wrong with it, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Problem {
    /// Dotted path to the offending field, with `[i]` for list positions.
    pub path: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found, as one error (for callers that want `?`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// `Ok(())` when `problems` is empty, else the problems as an error.
    pub fn check(problems: Vec<Problem>) -> Result<(), Problems> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(problems))
        }
    }
}

impl From<Vec<Problem>> for Problems {
    fn from(problems: Vec<Problem>) -> Self {
        Self(problems)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&join_problems(&self.0))
    }
}

impl std::error::Error for Problems {}

/// `"N problem(s): a; b"`, the form dispatch details and errors use.
pub(crate) fn join_problems(problems: &[Problem]) -> String {
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let noun = if problems.len() == 1 {
        "problem"
    } else {
        "problems"
    };
    format!("{} {noun}: {}", problems.len(), list.join("; "))
}

/// `base.field`.
pub(crate) fn at(base: &str, field: &str) -> String {
    format!("{base}.{field}")
}

/// `base[i]`.
pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// Whether `c` may appear in an id.
fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// Checks an id: non-empty, at most [`MAX_ID_BYTES`] bytes, only `[A-Za-z0-9._:-]`.
pub(crate) fn check_id(out: &mut Vec<Problem>, path: String, id: &str) {
    if id.is_empty() {
        out.push(Problem::new(
            path,
            format!("must not be empty; use 1 to {MAX_ID_BYTES} characters from {ID_CHARS}"),
        ));
        return;
    }
    if id.len() > MAX_ID_BYTES {
        out.push(Problem::new(
            path.clone(),
            format!(
                "is {} bytes long, over the {MAX_ID_BYTES}-byte limit for ids; shorten it",
                id.len()
            ),
        ));
    }
    let mut bad: Vec<char> = Vec::new();
    for c in id.chars().filter(|c| !is_id_char(*c)) {
        if !bad.contains(&c) {
            bad.push(c);
        }
    }
    if !bad.is_empty() {
        let shown: Vec<String> = bad.iter().take(5).map(|c| format!("{c:?}")).collect();
        out.push(Problem::new(
            path,
            format!(
                "contains {} which ids may not use; ids use only {ID_CHARS}",
                shown.join(", ")
            ),
        ));
    }
}

/// Checks that free text (a question, a label) is not empty or blank.
pub(crate) fn check_text(out: &mut Vec<Problem>, path: String, text: &str) {
    if text.trim().is_empty() {
        out.push(Problem::new(path, "must not be empty"));
    }
}

/// Checks a list of names (required outputs): each non-blank, none repeated.
pub(crate) fn check_names(out: &mut Vec<Problem>, path: &str, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        if name.trim().is_empty() {
            out.push(Problem::new(
                index(path, i),
                "must not be empty; give the output a name",
            ));
        } else if let Some(first) = names.iter().position(|n| n == name).filter(|&j| j < i) {
            out.push(Problem::new(
                index(path, i),
                format!("repeats {name:?} (already at [{first}]); list each name once"),
            ));
        }
    }
}

/// Checks that a number is finite.
pub(crate) fn check_finite(out: &mut Vec<Problem>, path: String, value: f64) {
    if !value.is_finite() {
        out.push(Problem::new(
            path,
            format!("must be a finite number, got {value}"),
        ));
    }
}

/// Checks a spend amount or cap: finite and at least zero.
pub(crate) fn check_amount(out: &mut Vec<Problem>, path: String, value: f64) {
    if !value.is_finite() {
        out.push(Problem::new(
            path,
            format!("must be a finite number of spend units, got {value}"),
        ));
    } else if value < 0.0 {
        out.push(Problem::new(
            path,
            format!("must be 0 or more, got {value}"),
        ));
    }
}
