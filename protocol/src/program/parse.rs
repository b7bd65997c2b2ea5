//! TOML manifest → [`Program`], collecting every problem with its field path and line.

use std::collections::BTreeSet;

use toml::de::{DeTable, DeValue};
use toml::{Table, Value};

use super::{
    CandleTask, Criteria, Dataset, FieldError, ManifestErrors, ModelPreset, Program, Reward,
    ShellTask, StopConditions, Task, MANIFEST_VERSION,
};
use crate::dispatch::{
    HardwareClass, LocalAction, LocalPolicy, PaidAction, PaidPolicy, Policy, Rung, SpendClass,
};
use crate::kb::{AcceptRule, Amount, Direction, Split};
use crate::membership::MembershipMode;
use crate::{Digest, Timestamp};

/// Largest manifest accepted (64 KiB): manifests travel in one gossip message with room to spare.
pub(super) const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Longest objective (bytes): a question, not a document.
const MAX_OBJECTIVE_BYTES: usize = 4096;
/// Longest shell command (bytes).
const MAX_COMMAND_BYTES: usize = 4096;
/// Most rungs one program may declare.
const MAX_RUNGS: usize = 64;
/// Most required outputs.
const MAX_OUTPUTS: usize = 64;
/// Longest per-packet wall-clock budget or shell timeout: one week.
const MAX_SECONDS: u64 = 7 * 24 * 3600;
/// Largest synthetic corpus (1 GiB): it is generated in memory.
const MAX_SYNTHETIC_BYTES: u64 = 1 << 30;
/// Largest step budget.
const MAX_STEPS: u64 = 1_000_000_000;
/// Validation token budget bounds: enough tokens for a stable estimate, few enough to evaluate quickly.
const EVAL_TOKENS_RANGE: (u64, u64) = (256, 1 << 30);
/// Default validation token budget.
const DEFAULT_EVAL_TOKENS: u64 = 65_536;

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Clone, Debug, Default)]
struct Path(Vec<Seg>);

impl Path {
    fn key(&self, k: &str) -> Path {
        let mut p = self.0.clone();
        p.push(Seg::Key(k.to_string()));
        Path(p)
    }

    fn index(&self, i: usize) -> Path {
        let mut p = self.0.clone();
        p.push(Seg::Index(i));
        Path(p)
    }

    fn render(&self) -> String {
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

struct Ctx<'a> {
    text: &'a str,
    spans: Option<DeTable<'a>>,
    errors: Vec<FieldError>,
}

impl Ctx<'_> {
    fn err(&mut self, path: &Path, message: impl Into<String>) {
        let line = self.line_of(path);
        self.errors.push(FieldError {
            field: path.render(),
            line,
            message: message.into(),
        });
    }

    /// The line of the deepest part of `path` present in the document.
    fn line_of(&self, path: &Path) -> Option<usize> {
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

fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn type_name(v: &Value) -> &'static str {
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
fn unknown_keys(ctx: &mut Ctx<'_>, path: &Path, table: &Table, known: &[&str]) {
    for key in table.keys() {
        if !known.contains(&key.as_str()) {
            ctx.err(
                &path.key(key),
                format!("unknown field; allowed fields here: {}", known.join(", ")),
            );
        }
    }
}

fn required<'t>(ctx: &mut Ctx<'_>, path: &Path, table: &'t Table, key: &str) -> Option<&'t Value> {
    let v = table.get(key);
    if v.is_none() {
        ctx.err(&path.key(key), "required field is missing");
    }
    v
}

fn as_str<'t>(ctx: &mut Ctx<'_>, path: &Path, v: &'t Value) -> Option<&'t str> {
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

fn as_f64(ctx: &mut Ctx<'_>, path: &Path, v: &Value) -> Option<f64> {
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

fn as_u64(ctx: &mut Ctx<'_>, path: &Path, v: &Value, min: u64, max: u64) -> Option<u64> {
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

fn as_bool(ctx: &mut Ctx<'_>, path: &Path, v: &Value) -> Option<bool> {
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

fn as_table<'t>(ctx: &mut Ctx<'_>, path: &Path, v: &'t Value) -> Option<&'t Table> {
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

fn as_enum<T: Copy>(ctx: &mut Ctx<'_>, path: &Path, v: &Value, allowed: &[(&str, T)]) -> Option<T> {
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
fn text(ctx: &mut Ctx<'_>, path: &Path, v: &Value, max: usize) -> Option<String> {
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
fn ident(ctx: &mut Ctx<'_>, path: &Path, v: &Value) -> Option<String> {
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

fn ident_list(ctx: &mut Ctx<'_>, path: &Path, v: &Value, max: usize) -> Option<Vec<String>> {
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

fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

pub(super) fn parse_manifest(text: &str) -> Result<Program, ManifestErrors> {
    let mut ctx = Ctx {
        text,
        spans: None,
        errors: Vec::new(),
    };
    if text.len() > MAX_MANIFEST_BYTES {
        ctx.err(
            &Path::default(),
            format!(
                "is {} bytes; manifests are limited to {MAX_MANIFEST_BYTES} bytes",
                text.len()
            ),
        );
        return Err(ManifestErrors(ctx.errors));
    }
    match DeTable::parse(text) {
        Ok(t) => ctx.spans = Some(t.into_inner()),
        Err(e) => {
            let line = e.span().map(|s| line_at(text, s.start));
            return Err(ManifestErrors(vec![FieldError {
                field: "(syntax)".to_string(),
                line,
                message: format!("not valid TOML: {}", e.message()),
            }]));
        }
    }
    let root: Table = match text.parse::<Table>() {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map(|s| line_at(text, s.start));
            return Err(ManifestErrors(vec![FieldError {
                field: "(syntax)".to_string(),
                line,
                message: format!("not valid TOML: {}", e.message()),
            }]));
        }
    };
    let program = program(&mut ctx, &root);
    match program {
        Some(p) if ctx.errors.is_empty() => Ok(p),
        _ => {
            if ctx.errors.is_empty() {
                ctx.err(&Path::default(), "invalid manifest");
            }
            Err(ManifestErrors(ctx.errors))
        }
    }
}

fn program(ctx: &mut Ctx<'_>, root: &Table) -> Option<Program> {
    let top = Path::default();
    unknown_keys(
        ctx,
        &top,
        root,
        &[
            "version",
            "name",
            "objective",
            "membership",
            "baseline",
            "required_outputs",
            "criteria",
            "reward",
            "task",
            "rungs",
            "policy",
            "stop",
        ],
    );
    let version = match root.get("version") {
        None => Some(MANIFEST_VERSION),
        Some(v) => as_u64(ctx, &top.key("version"), v, 1, u64::MAX).and_then(|n| {
            if n == u64::from(MANIFEST_VERSION) {
                Some(MANIFEST_VERSION)
            } else {
                ctx.err(
                    &top.key("version"),
                    format!("this btd reads manifest version {MANIFEST_VERSION}, not {n}"),
                );
                None
            }
        }),
    };
    let name = required(ctx, &top, root, "name").and_then(|v| {
        let p = top.key("name");
        let s = as_str(ctx, &p, v)?;
        if is_slug(s) {
            Some(s.to_string())
        } else {
            ctx.err(
                &p,
                format!(
                    "{s:?} is not a slug: 1-63 characters of a-z 0-9 and '-', starting with a letter or digit"
                ),
            );
            None
        }
    });
    let objective = required(ctx, &top, root, "objective")
        .and_then(|v| text(ctx, &top.key("objective"), v, MAX_OBJECTIVE_BYTES));
    let membership = match root.get("membership") {
        None => Some(MembershipMode::Approval),
        Some(v) => as_enum(
            ctx,
            &top.key("membership"),
            v,
            &[
                ("open", MembershipMode::Open),
                ("approval", MembershipMode::Approval),
            ],
        ),
    };
    let baseline = optional_f64(ctx, &top, root, "baseline");
    let required_outputs = required(ctx, &top, root, "required_outputs").and_then(|v| {
        let p = top.key("required_outputs");
        let list = ident_list(ctx, &p, v, MAX_OUTPUTS)?;
        if list.is_empty() {
            ctx.err(
                &p,
                "must name at least one output (a packet without one is unbounded)",
            );
            return None;
        }
        Some(list)
    });
    let criteria = required(ctx, &top, root, "criteria")
        .and_then(|v| as_table(ctx, &top.key("criteria"), v))
        .and_then(|t| criteria(ctx, &top.key("criteria"), t));
    let reward = required(ctx, &top, root, "reward")
        .and_then(|v| as_table(ctx, &top.key("reward"), v))
        .and_then(|t| reward(ctx, &top.key("reward"), t));
    let task = required(ctx, &top, root, "task")
        .and_then(|v| as_table(ctx, &top.key("task"), v))
        .and_then(|t| task(ctx, &top.key("task"), t));
    let rungs = required(ctx, &top, root, "rungs").and_then(|v| rungs(ctx, &top.key("rungs"), v));
    let policy = match root.get("policy") {
        None => Some(default_policy()),
        Some(v) => as_table(ctx, &top.key("policy"), v)
            .and_then(|t| policy(ctx, &top.key("policy"), t, rungs.as_deref())),
    };
    let stop = match root.get("stop") {
        None => Some(StopConditions::default()),
        Some(v) => as_table(ctx, &top.key("stop"), v).and_then(|t| stop(ctx, &top.key("stop"), t)),
    };
    Some(Program {
        version: version?,
        name: name?,
        objective: objective?,
        membership: membership?,
        criteria: criteria?,
        baseline,
        reward: reward?,
        task: task?,
        rungs: rungs?,
        policy: policy?,
        required_outputs: required_outputs?,
        stop: stop?,
    })
}

fn optional_f64(ctx: &mut Ctx<'_>, path: &Path, table: &Table, key: &str) -> Option<f64> {
    table.get(key).and_then(|v| as_f64(ctx, &path.key(key), v))
}

fn criteria(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<Criteria> {
    unknown_keys(
        ctx,
        path,
        t,
        &["metric", "direction", "accept", "threshold"],
    );
    let metric = required(ctx, path, t, "metric").and_then(|v| {
        let p = path.key("metric");
        let s = as_str(ctx, &p, v)?;
        if s.is_empty()
            || s.len() > 64
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ':')
        {
            ctx.err(
                &p,
                "must be 1 to 64 characters with no spaces, control characters or ':'",
            );
            return None;
        }
        Some(s.to_string())
    });
    let direction = required(ctx, path, t, "direction").and_then(|v| {
        as_enum(
            ctx,
            &path.key("direction"),
            v,
            &[
                ("minimize", Direction::Minimize),
                ("maximize", Direction::Maximize),
            ],
        )
    });
    #[derive(Clone, Copy)]
    enum Mode {
        Beats,
        Threshold,
    }
    let mode = required(ctx, path, t, "accept").and_then(|v| {
        as_enum(
            ctx,
            &path.key("accept"),
            v,
            &[
                ("beats-champion", Mode::Beats),
                ("threshold", Mode::Threshold),
            ],
        )
    });
    let threshold = optional_f64(ctx, path, t, "threshold");
    let accept = match (mode?, t.contains_key("threshold")) {
        (Mode::Beats, false) => AcceptRule::BeatsChampion,
        (Mode::Beats, true) => {
            ctx.err(
                &path.key("threshold"),
                "is only used when accept = \"threshold\"; remove it or change accept",
            );
            return None;
        }
        (Mode::Threshold, false) => {
            ctx.err(
                &path.key("threshold"),
                "is required when accept = \"threshold\"",
            );
            return None;
        }
        (Mode::Threshold, true) => AcceptRule::Threshold {
            threshold: threshold?,
        },
    };
    Some(Criteria {
        metric: metric?,
        direction: direction?,
        accept,
    })
}

fn reward(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<Reward> {
    unknown_keys(ctx, path, t, &["pool", "token", "split"]);
    let pool = required(ctx, path, t, "pool").and_then(|v| {
        let p = path.key("pool");
        let parsed = match v {
            Value::Integer(i) if *i >= 0 => Amount::from_decimal_str(&i.to_string()),
            Value::Float(f) if f.is_finite() && *f >= 0.0 => Amount::from_tokens_f64(*f),
            Value::String(s) => Amount::from_decimal_str(s),
            Value::Integer(_) | Value::Float(_) => {
                ctx.err(&p, "must be a finite number >= 0");
                return None;
            }
            other => {
                ctx.err(&p, format!("expected a number, found {}", type_name(other)));
                return None;
            }
        };
        parsed.map_err(|e| ctx.err(&p, e.to_string())).ok()
    });
    let token = required(ctx, path, t, "token").and_then(|v| {
        let p = path.key("token");
        let s = as_str(ctx, &p, v)?;
        if s.is_empty() || s.len() > 16 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            ctx.err(&p, "must be 1 to 16 characters with no spaces");
            return None;
        }
        Some(s.to_string())
    });
    let split = required(ctx, path, t, "split").and_then(|v| {
        as_enum(
            ctx,
            &path.key("split"),
            v,
            &[
                ("by-impact", Split::ByImpact),
                ("champion-takes-all", Split::ChampionTakesAll),
            ],
        )
    });
    Some(Reward {
        pool: pool?,
        token: token?,
        split: split?,
    })
}

#[derive(Clone, Copy)]
enum TaskKind {
    Candle,
    Shell,
}

fn task(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<Task> {
    let kind = required(ctx, path, t, "kind").and_then(|v| {
        as_enum(
            ctx,
            &path.key("kind"),
            v,
            &[("candle", TaskKind::Candle), ("shell", TaskKind::Shell)],
        )
    })?;
    match kind {
        TaskKind::Candle => candle_task(ctx, path, t).map(Task::Candle),
        TaskKind::Shell => shell_task(ctx, path, t).map(Task::Shell),
    }
}

fn candle_task(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<CandleTask> {
    unknown_keys(
        ctx,
        path,
        t,
        &[
            "kind",
            "preset",
            "dataset",
            "seconds",
            "steps",
            "seed",
            "eval_tokens",
        ],
    );
    let preset = match t.get("preset") {
        None => Some(ModelPreset::Tiny),
        Some(v) => as_enum(
            ctx,
            &path.key("preset"),
            v,
            &[
                ("tiny", ModelPreset::Tiny),
                ("small", ModelPreset::Small),
                ("base", ModelPreset::Base),
            ],
        ),
    };
    let dataset = required(ctx, path, t, "dataset")
        .and_then(|v| as_table(ctx, &path.key("dataset"), v))
        .and_then(|d| dataset(ctx, &path.key("dataset"), d));
    let seconds = t
        .get("seconds")
        .map(|v| as_u64(ctx, &path.key("seconds"), v, 1, MAX_SECONDS));
    let steps = t
        .get("steps")
        .map(|v| as_u64(ctx, &path.key("steps"), v, 1, MAX_STEPS));
    if seconds.is_none() && steps.is_none() {
        ctx.err(
            &path.key("seconds"),
            "a candle task needs a budget: set seconds, steps, or both",
        );
    }
    let seed = match t.get("seed") {
        None => Some(0),
        Some(v) => as_u64(ctx, &path.key("seed"), v, 0, i64::MAX as u64),
    };
    let eval_tokens = match t.get("eval_tokens") {
        None => Some(DEFAULT_EVAL_TOKENS),
        Some(v) => as_u64(
            ctx,
            &path.key("eval_tokens"),
            v,
            EVAL_TOKENS_RANGE.0,
            EVAL_TOKENS_RANGE.1,
        ),
    };
    Some(CandleTask {
        preset: preset?,
        dataset: dataset?,
        seconds: seconds.transpose_none()?,
        steps: steps.transpose_none()?,
        seed: seed?,
        eval_tokens: eval_tokens?,
    })
}

/// `Option<Option<T>>` where the outer is "field present" and the inner "field valid": absent is
/// `Some(None)`, present-and-valid `Some(Some(v))`, present-and-invalid `None`.
trait TransposeNone<T> {
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

fn dataset(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<Dataset> {
    #[derive(Clone, Copy)]
    enum Kind {
        File,
        Synthetic,
    }
    let kind = required(ctx, path, t, "kind").and_then(|v| {
        as_enum(
            ctx,
            &path.key("kind"),
            v,
            &[("file", Kind::File), ("synthetic", Kind::Synthetic)],
        )
    })?;
    match kind {
        Kind::File => {
            unknown_keys(ctx, path, t, &["kind", "sha256"]);
            let sha = required(ctx, path, t, "sha256").and_then(|v| {
                let p = path.key("sha256");
                let s = as_str(ctx, &p, v)?;
                s.parse::<Digest>()
                    .map_err(|e| ctx.err(&p, e.to_string()))
                    .ok()
            })?;
            Some(Dataset::File { sha256: sha })
        }
        Kind::Synthetic => {
            unknown_keys(ctx, path, t, &["kind", "seed", "bytes"]);
            let seed = match t.get("seed") {
                None => Some(0),
                Some(v) => as_u64(ctx, &path.key("seed"), v, 0, i64::MAX as u64),
            };
            let bytes = required(ctx, path, t, "bytes")
                .and_then(|v| as_u64(ctx, &path.key("bytes"), v, 4096, MAX_SYNTHETIC_BYTES));
            Some(Dataset::Synthetic {
                seed: seed?,
                bytes: bytes?,
            })
        }
    }
}

fn shell_task(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<ShellTask> {
    unknown_keys(ctx, path, t, &["kind", "command", "timeout_secs"]);
    let command = required(ctx, path, t, "command").and_then(|v| {
        let p = path.key("command");
        let s = as_str(ctx, &p, v)?;
        if s.trim().is_empty() || s.len() > MAX_COMMAND_BYTES || s.contains('\0') {
            ctx.err(
                &p,
                format!("must be a non-empty command of at most {MAX_COMMAND_BYTES} bytes"),
            );
            return None;
        }
        Some(s.to_string())
    });
    let timeout_secs = required(ctx, path, t, "timeout_secs")
        .and_then(|v| as_u64(ctx, &path.key("timeout_secs"), v, 1, MAX_SECONDS));
    Some(ShellTask {
        command: command?,
        timeout_secs: timeout_secs?,
    })
}

fn rungs(ctx: &mut Ctx<'_>, path: &Path, v: &Value) -> Option<Vec<Rung>> {
    let Value::Array(items) = v else {
        ctx.err(
            path,
            format!(
                "expected an array of tables ([[rungs]]), found {}",
                type_name(v)
            ),
        );
        return None;
    };
    if items.is_empty() || items.len() > MAX_RUNGS {
        ctx.err(path, format!("declare 1 to {MAX_RUNGS} rungs"));
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let Some(t) = as_table(ctx, &p, item) else {
            ok = false;
            continue;
        };
        match rung(ctx, &p, t) {
            Some(r) if !seen.insert(r.id.clone()) => {
                ctx.err(
                    &p.key("id"),
                    format!("rung id {:?} is declared twice", r.id),
                );
                ok = false;
            }
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    if ok && !out.iter().any(|r| r.admitted) {
        ctx.err(
            path,
            "no rung is admitted: set admitted = true on at least one",
        );
        ok = false;
    }
    ok.then_some(out)
}

fn rung(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<Rung> {
    unknown_keys(
        ctx,
        path,
        t,
        &["id", "label", "spend_class", "hardware", "admitted"],
    );
    let id = required(ctx, path, t, "id").and_then(|v| ident(ctx, &path.key("id"), v));
    let label = match t.get("label") {
        None => id.clone(),
        Some(v) => text(ctx, &path.key("label"), v, 256),
    };
    let spend_class = required(ctx, path, t, "spend_class").and_then(|v| {
        as_enum(
            ctx,
            &path.key("spend_class"),
            v,
            &[
                ("local_unmetered", SpendClass::LocalUnmetered),
                ("paid_metered", SpendClass::PaidMetered),
            ],
        )
    });
    let hardware = required(ctx, path, t, "hardware").and_then(|v| {
        as_enum(
            ctx,
            &path.key("hardware"),
            v,
            &[
                ("cpu", HardwareClass::Cpu),
                ("rtx4090", HardwareClass::Rtx4090),
                ("gb10", HardwareClass::Gb10),
                ("h100", HardwareClass::H100),
                ("other_gpu", HardwareClass::OtherGpu),
            ],
        )
    });
    let admitted = match t.get("admitted") {
        None => Some(true),
        Some(v) => as_bool(ctx, &path.key("admitted"), v),
    };
    Some(Rung {
        id: id?,
        label: label?,
        spend_class: spend_class?,
        admitted: admitted?,
        hardware: hardware?,
    })
}

fn default_policy() -> Policy {
    Policy {
        local: LocalPolicy {
            default_action: LocalAction::Allow,
        },
        paid: PaidPolicy {
            default_action: PaidAction::RequireExplicitApproval,
            approved_rungs: Vec::new(),
            max_spend_per_packet: None,
            max_total_spend: None,
        },
    }
}

fn policy(ctx: &mut Ctx<'_>, path: &Path, t: &Table, rungs: Option<&[Rung]>) -> Option<Policy> {
    unknown_keys(ctx, path, t, &["local", "paid"]);
    let mut policy = default_policy();
    let mut ok = true;
    if let Some(v) = t.get("local") {
        let p = path.key("local");
        if let Some(lt) = as_table(ctx, &p, v) {
            unknown_keys(ctx, &p, lt, &["default_action"]);
            if let Some(a) = lt.get("default_action") {
                match as_enum(
                    ctx,
                    &p.key("default_action"),
                    a,
                    &[("allow", LocalAction::Allow), ("deny", LocalAction::Deny)],
                ) {
                    Some(a) => policy.local.default_action = a,
                    None => ok = false,
                }
            }
        } else {
            ok = false;
        }
    }
    if let Some(v) = t.get("paid") {
        let p = path.key("paid");
        if let Some(pt) = as_table(ctx, &p, v) {
            unknown_keys(
                ctx,
                &p,
                pt,
                &[
                    "default_action",
                    "approved_rungs",
                    "max_spend_per_packet",
                    "max_total_spend",
                ],
            );
            if let Some(a) = pt.get("default_action") {
                match as_enum(
                    ctx,
                    &p.key("default_action"),
                    a,
                    &[
                        (
                            "require_explicit_approval",
                            PaidAction::RequireExplicitApproval,
                        ),
                        ("deny", PaidAction::Deny),
                    ],
                ) {
                    Some(a) => policy.paid.default_action = a,
                    None => ok = false,
                }
            }
            if let Some(a) = pt.get("approved_rungs") {
                let ap = p.key("approved_rungs");
                match ident_list(ctx, &ap, a, MAX_RUNGS) {
                    Some(list) => {
                        if let Some(rungs) = rungs {
                            for (i, id) in list.iter().enumerate() {
                                match rungs.iter().find(|r| &r.id == id) {
                                    None => {
                                        ctx.err(
                                            &ap.index(i),
                                            format!("{id:?} is not a declared rung"),
                                        );
                                        ok = false;
                                    }
                                    Some(r) if r.spend_class != SpendClass::PaidMetered => {
                                        ctx.err(
                                            &ap.index(i),
                                            format!(
                                                "{id:?} is local_unmetered; only paid_metered rungs need approval"
                                            ),
                                        );
                                        ok = false;
                                    }
                                    Some(_) => {}
                                }
                            }
                        }
                        policy.paid.approved_rungs = list;
                    }
                    None => ok = false,
                }
            }
            for (key, slot) in [
                (
                    "max_spend_per_packet",
                    &mut policy.paid.max_spend_per_packet,
                ),
                ("max_total_spend", &mut policy.paid.max_total_spend),
            ] {
                if let Some(v) = pt.get(key) {
                    let kp = p.key(key);
                    match as_f64(ctx, &kp, v) {
                        Some(f) if f >= 0.0 => *slot = Some(f),
                        Some(f) => {
                            ctx.err(&kp, format!("must be >= 0, got {f}"));
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
            }
        } else {
            ok = false;
        }
    }
    ok.then_some(policy)
}

fn stop(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<StopConditions> {
    unknown_keys(ctx, path, t, &["max_submissions", "deadline", "target"]);
    let max_submissions = t
        .get("max_submissions")
        .map(|v| as_u64(ctx, &path.key("max_submissions"), v, 1, u64::MAX));
    let deadline = t.get("deadline").map(|v| {
        let p = path.key("deadline");
        match v {
            Value::Datetime(d) => datetime_to_timestamp(d).or_else(|| {
                ctx.err(
                    &p,
                    "must be a full date-time with an offset, e.g. 2026-12-31T00:00:00Z",
                );
                None
            }),
            other => {
                ctx.err(
                    &p,
                    format!(
                        "expected a date-time such as 2026-12-31T00:00:00Z, found {}",
                        type_name(other)
                    ),
                );
                None
            }
        }
    });
    let target = t.get("target").map(|v| as_f64(ctx, &path.key("target"), v));
    Some(StopConditions {
        max_submissions: max_submissions.transpose_none()?,
        deadline: deadline.transpose_none()?,
        target: target.transpose_none()?,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn datetime_to_timestamp(d: &toml::value::Datetime) -> Option<Timestamp> {
    let date = d.date?;
    let time = d.time?;
    let offset_minutes: i64 = match d.offset? {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    let days = days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let secs = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second)
        - offset_minutes * 60;
    let millis = secs.checked_mul(1000)? + i64::from(time.nanosecond / 1_000_000);
    u64::try_from(millis).ok().map(Timestamp::from_millis)
}

/// RFC 3339 (UTC, `Z`) rendering of a timestamp, for display.
pub(super) fn format_rfc3339(t: Timestamp) -> String {
    let ms = t.as_millis();
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
pub(super) fn rfc3339_to_timestamp(s: &str) -> Option<Timestamp> {
    let d: toml::value::Datetime = s.parse().ok()?;
    datetime_to_timestamp(&d)
}
