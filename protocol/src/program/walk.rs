//! A small TOML walker that collects every problem with its dotted path and line, instead of
//! stopping at the first (as serde would).

use std::collections::BTreeSet;

use toml::de::{DeTable, DeValue};
use toml::{Table, Value};

use super::FieldError;

#[derive(Clone, Debug)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Clone, Debug, Default)]
pub(super) struct Path(Vec<Seg>);

impl Path {
    pub(super) fn key(&self, k: &str) -> Path {
        let mut p = self.0.clone();
        p.push(Seg::Key(k.to_string()));
        Path(p)
    }

    pub(super) fn index(&self, i: usize) -> Path {
        let mut p = self.0.clone();
        p.push(Seg::Index(i));
        Path(p)
    }

    pub(super) fn render(&self) -> String {
        let mut s = String::new();
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        if s.is_empty() {
            "(manifest)".to_string()
        } else {
            s
        }
    }
}

pub(super) struct Ctx<'a> {
    pub(super) text: &'a str,
    pub(super) spans: Option<DeTable<'a>>,
    pub(super) errors: Vec<FieldError>,
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, path: &Path, message: impl Into<String>) {
        let line = self.line_of(path);
        self.errors.push(FieldError {
            field: path.render(),
            line,
            message: message.into(),
        });
    }

    /// The line of the deepest part of `path` present in the document.
    pub(super) fn line_of(&self, path: &Path) -> Option<usize> {
        let table = self.spans.as_ref()?;
        let mut offset: Option<usize> = None;
        let mut cur_table: Option<&DeTable<'_>> = Some(table);
        let mut cur_array: Option<&[toml::Spanned<DeValue<'_>>]> = None;
        for seg in &path.0 {
            let value = match (seg, cur_table, cur_array) {
                (Seg::Key(k), Some(t), _) => t
                    .iter()
                    .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                    .map(|(key, v)| (key.span().start, v)),
                (Seg::Index(i), _, Some(a)) => a.get(*i).map(|v| (v.span().start, v)),
                _ => None,
            };
            let Some((key_start, v)) = value else { break };
            offset = Some(if v.span().start < key_start {
                key_start
            } else {
                v.span().start
            });
            cur_table = v.get_ref().as_table();
            cur_array = v.get_ref().as_array().map(|a| &a[..]);
        }
        offset.map(|o| line_at(self.text, o))
    }
}

pub(super) fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// Reports keys of `table` that are not in `known`.
pub(super) fn unknown_keys(ctx: &mut Ctx<'_>, path: &Path, table: &Table, known: &[&str]) {
    for key in table.keys() {
        if !known.contains(&key.as_str()) {
            ctx.err(
                &path.key(key),
                format!("unknown field; allowed fields here: {}", known.join(", ")),
            );
        }
    }
}

pub(super) fn required<'t>(
    ctx: &mut Ctx<'_>,
    path: &Path,
    table: &'t Table,
    key: &str,
) -> Option<&'t Value> {
    let v = table.get(key);
    if v.is_none() {
        ctx.err(&path.key(key), "required field is missing");
    }
    v
}

pub(super) fn as_str<'t>(ctx: &mut Ctx<'_>, path: &Path, v: &'t Value) -> Option<&'t str> {
    match v {
        Value::String(s) => Some(s.as_str()),
        other => {
            ctx.err(
                path,
                format!("expected a string, found {}", type_name(other)),
            );
            None
        }
    }
}

pub(super) fn as_f64(ctx: &mut Ctx<'_>, path: &Path, v: &Value) -> Option<f64> {
    let f = match v {
        Value::Float(f) => *f,
        Value::Integer(i) => *i as f64,
        other => {
            ctx.err(
                path,
                format!("expected a number, found {}", type_name(other)),
            );
            return None;
        }
    };
    if !f.is_finite() {
        ctx.err(path, format!("must be a finite number, got {f}"));
        return None;
    }
    // -0.0 and 0.0 encode differently; normalise so equal programs get equal ids.
    Some(if f == 0.0 { 0.0 } else { f })
}

pub(super) fn as_u64(ctx: &mut Ctx<'_>, path: &Path, v: &Value, min: u64, max: u64) -> Option<u64> {
    match v {
        Value::Integer(i) if *i >= 0 && (*i as u64) >= min && (*i as u64) <= max => Some(*i as u64),
        Value::Integer(i) => {
            ctx.err(
                path,
                format!("must be an integer from {min} to {max}, got {i}"),
            );
            None
        }
        other => {
            ctx.err(
                path,
                format!("expected an integer, found {}", type_name(other)),
            );
            None
        }
    }
}

pub(super) fn as_bool(ctx: &mut Ctx<'_>, path: &Path, v: &Value) -> Option<bool> {
    match v {
        Value::Boolean(b) => Some(*b),
        other => {
            ctx.err(
                path,
                format!("expected true or false, found {}", type_name(other)),
            );
            None
        }
    }
}

pub(super) fn as_table<'t>(ctx: &mut Ctx<'_>, path: &Path, v: &'t Value) -> Option<&'t Table> {
    match v {
        Value::Table(t) => Some(t),
        other => {
            ctx.err(
                path,
                format!("expected a table, found {}", type_name(other)),
            );
            None
        }
    }
}

pub(super) fn as_enum<T: Copy>(
    ctx: &mut Ctx<'_>,
    path: &Path,
    v: &Value,
    allowed: &[(&str, T)],
) -> Option<T> {
    let s = as_str(ctx, path, v)?;
    match allowed.iter().find(|(name, _)| *name == s) {
        Some((_, t)) => Some(*t),
        None => {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            ctx.err(
                path,
                format!("unknown value {s:?}; allowed values: {}", names.join(", ")),
            );
            None
        }
    }
}

/// A free-text field: non-empty after trimming, at most `max` bytes, no control characters
/// except newlines and tabs.
pub(super) fn text(ctx: &mut Ctx<'_>, path: &Path, v: &Value, max: usize) -> Option<String> {
    let s = as_str(ctx, path, v)?.trim();
    if s.is_empty() {
        ctx.err(path, "must not be empty");
        return None;
    }
    if s.len() > max {
        ctx.err(path, format!("is {} bytes; the limit is {max}", s.len()));
        return None;
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        ctx.err(path, "must not contain control characters");
        return None;
    }
    Some(s.to_string())
}

/// An identifier: 1..=128 bytes of `[A-Za-z0-9._:-]`.
pub(super) fn ident(ctx: &mut Ctx<'_>, path: &Path, v: &Value) -> Option<String> {
    let s = as_str(ctx, path, v)?;
    if s.is_empty() || s.len() > 128 {
        ctx.err(path, "must be 1 to 128 characters long");
        return None;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
    {
        ctx.err(
            path,
            format!("{s:?} has characters outside A-Z a-z 0-9 . _ : -"),
        );
        return None;
    }
    Some(s.to_string())
}

pub(super) fn ident_list(
    ctx: &mut Ctx<'_>,
    path: &Path,
    v: &Value,
    max: usize,
) -> Option<Vec<String>> {
    let Value::Array(items) = v else {
        ctx.err(
            path,
            format!("expected an array of strings, found {}", type_name(v)),
        );
        return None;
    };
    if items.len() > max {
        ctx.err(
            path,
            format!("has {} entries; the limit is {max}", items.len()),
        );
        return None;
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match ident(ctx, &path.index(i), item) {
            Some(s) if !seen.insert(s.clone()) => {
                ctx.err(&path.index(i), format!("{s:?} is listed twice"));
                ok = false;
            }
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

pub(super) fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// `Option<Option<T>>` where the outer is "field present" and the inner "field valid": absent is
/// `Some(None)`, present-and-valid `Some(Some(v))`, present-and-invalid `None`.
pub(super) trait TransposeNone<T> {
    fn transpose_none(self) -> Option<Option<T>>;
}

impl<T> TransposeNone<T> for Option<Option<T>> {
    fn transpose_none(self) -> Option<Option<T>> {
        match self {
            None => Some(None),
            Some(Some(v)) => Some(Some(v)),
            Some(None) => None,
        }
    }
}
