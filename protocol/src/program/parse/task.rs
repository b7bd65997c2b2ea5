//! `[task]`, its dataset and `[task.search]`: what a worker runs.

// The parser's context, field readers, limits and the program types.
use super::*;

pub(super) fn task(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<Task> {
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
            "search",
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
    unknown_keys(
        ctx,
        path,
        t,
        &["kind", "command", "timeout_secs", "search", "source"],
    );
    let command =
        required(ctx, path, t, "command").and_then(|v| command(ctx, &path.key("command"), v));
    let timeout_secs = required(ctx, path, t, "timeout_secs")
        .and_then(|v| as_u64(ctx, &path.key("timeout_secs"), v, 1, MAX_SECONDS));
    let source = match t.get("source") {
        None => Some(None),
        Some(v) => as_table(ctx, &path.key("source"), v)
            .and_then(|s| source(ctx, &path.key("source"), s))
            .map(Some),
    };
    Some(ShellTask {
        command: command?,
        timeout_secs: timeout_secs?,
        source: source?,
    })
}

/// A command line for `sh -c`: non-empty, at most [`MAX_COMMAND_BYTES`], no NUL.
fn command(ctx: &mut Ctx<'_>, p: &Path, v: &Value) -> Option<String> {
    let s = as_str(ctx, p, v)?;
    if s.trim().is_empty() || s.len() > MAX_COMMAND_BYTES || s.contains('\0') {
        ctx.err(
            p,
            format!("must be a non-empty command of at most {MAX_COMMAND_BYTES} bytes"),
        );
        return None;
    }
    Some(s.to_string())
}

/// `[task.source]`: the bundle's digest, its editable globs and the optional setup command.
fn source(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<SourceBundle> {
    unknown_keys(
        ctx,
        path,
        t,
        &["sha256", "editable", "setup", "setup_timeout_secs"],
    );
    let sha256 = required(ctx, path, t, "sha256").and_then(|v| {
        let p = path.key("sha256");
        let s = as_str(ctx, &p, v)?;
        match s.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(e) => {
                ctx.err(
                    &p,
                    format!("{e}; `btd source pack DIR` prints the bundle's digest"),
                );
                None
            }
        }
    });
    let editable = required(ctx, path, t, "editable").and_then(|v| {
        let p = path.key("editable");
        let Some(items) = v.as_array() else {
            ctx.err(&p, "must be an array of glob strings, e.g. [\"train.py\"]");
            return None;
        };
        if items.is_empty() || items.len() > crate::patch::MAX_EDITABLE_PATTERNS {
            ctx.err(
                &p,
                format!(
                    "must list 1 to {} globs of the files a hypothesis may change",
                    crate::patch::MAX_EDITABLE_PATTERNS
                ),
            );
            return None;
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = p.index(i);
            let Some(g) = item.as_str() else {
                ctx.err(&ip, "must be a string");
                continue;
            };
            match crate::patch::check_pattern(g) {
                Ok(()) => out.push(g.to_string()),
                Err(e) => ctx.err(&ip, e),
            }
        }
        (out.len() == items.len()).then_some(out)
    });
    let setup = match t.get("setup") {
        None => Some(None),
        Some(v) => command(ctx, &path.key("setup"), v).map(Some),
    };
    let setup_timeout_secs = match t.get("setup_timeout_secs") {
        None => Some(DEFAULT_SETUP_TIMEOUT_SECS),
        Some(v) => as_u64(ctx, &path.key("setup_timeout_secs"), v, 1, MAX_SECONDS),
    };
    Some(SourceBundle {
        sha256: sha256?,
        editable: editable?,
        setup: setup?,
        setup_timeout_secs: setup_timeout_secs?,
    })
}

/// `[task.search]`: parameter name → `{ min, max, scale, integer, start }`. A candle task may
/// search only the trainer's hyperparameters ([`CANDLE_PARAMS`]); a shell task names its own
/// (they reach the command as `BTD_PARAM_<NAME>` environment variables).
pub(super) fn search(
    ctx: &mut Ctx<'_>,
    path: &Path,
    t: &Table,
    task: &Task,
) -> Option<SearchSpace> {
    if t.len() > MAX_SEARCH_PARAMS {
        ctx.err(
            path,
            format!(
                "declares {} parameters; the limit is {MAX_SEARCH_PARAMS}",
                t.len()
            ),
        );
        return None;
    }
    let mut params = BTreeMap::new();
    let mut ok = true;
    for (name, v) in t {
        let p = path.key(name);
        let limits = match task {
            Task::Candle(_) => match CANDLE_PARAMS.iter().find(|(n, _, _)| n == name) {
                Some(&(_, lo, hi)) => Some((lo, hi)),
                None => {
                    let names: Vec<&str> = CANDLE_PARAMS.iter().map(|(n, _, _)| *n).collect();
                    ctx.err(
                        &p,
                        format!(
                            "a candle task cannot search {name:?}; searchable: {}",
                            names.join(", ")
                        ),
                    );
                    ok = false;
                    continue;
                }
            },
            Task::Shell(_) => {
                let valid = name.len() <= 32
                    && name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !valid {
                    ctx.err(
                        &p,
                        format!(
                            "{name:?} is not a parameter name: 1-32 characters of a-z 0-9 _, starting with a letter"
                        ),
                    );
                    ok = false;
                    continue;
                }
                None
            }
        };
        let integer_forced =
            matches!(task, Task::Candle(_)) && CANDLE_INTEGER_PARAMS.contains(&name.as_str());
        match as_table(ctx, &p, v).and_then(|pt| search_param(ctx, &p, pt, limits, integer_forced))
        {
            Some(sp) => {
                params.insert(name.clone(), sp);
            }
            None => ok = false,
        }
    }
    ok.then_some(SearchSpace { params })
}

fn search_param(
    ctx: &mut Ctx<'_>,
    path: &Path,
    t: &Table,
    limits: Option<(f64, f64)>,
    integer_forced: bool,
) -> Option<SearchParam> {
    unknown_keys(ctx, path, t, &["min", "max", "scale", "integer", "start"]);
    let min = required(ctx, path, t, "min").and_then(|v| as_f64(ctx, &path.key("min"), v));
    let max = required(ctx, path, t, "max").and_then(|v| as_f64(ctx, &path.key("max"), v));
    let scale = match t.get("scale") {
        None => Some(Scale::Linear),
        Some(v) => as_enum(
            ctx,
            &path.key("scale"),
            v,
            &[("linear", Scale::Linear), ("log", Scale::Log)],
        ),
    };
    let integer = match t.get("integer") {
        None => Some(integer_forced),
        Some(v) => as_bool(ctx, &path.key("integer"), v).and_then(|b| {
            if integer_forced && !b {
                ctx.err(&path.key("integer"), "this parameter is a whole number");
                None
            } else {
                Some(b)
            }
        }),
    };
    let start = t.get("start").map(|v| as_f64(ctx, &path.key("start"), v));
    let (min, max, scale, integer) = (min?, max?, scale?, integer?);
    let start = start.transpose_none()?;
    if min >= max {
        ctx.err(
            &path.key("max"),
            format!("must be greater than min ({min}), got {max}"),
        );
        return None;
    }
    if let Some((lo, hi)) = limits {
        if min < lo || max > hi {
            ctx.err(
                path,
                format!("the range [{min}, {max}] must lie within [{lo}, {hi}]"),
            );
            return None;
        }
    }
    if scale == Scale::Log && min <= 0.0 {
        ctx.err(&path.key("min"), "a log-scale range needs min > 0");
        return None;
    }
    if integer && min.ceil() > max.floor() {
        ctx.err(path, format!("no whole number lies in [{min}, {max}]"));
        return None;
    }
    if let Some(s) = start {
        if !(min..=max).contains(&s) {
            ctx.err(
                &path.key("start"),
                format!("must lie within [{min}, {max}], got {s}"),
            );
            return None;
        }
    }
    Some(SearchParam {
        min,
        max,
        scale,
        integer,
        start,
    })
}
