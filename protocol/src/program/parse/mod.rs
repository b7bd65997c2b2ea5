//! TOML manifest → [`Program`], collecting every problem with its field path and line.

use std::collections::{BTreeMap, BTreeSet};

use toml::de::DeTable;
use toml::{Table, Value};

use super::datetime::datetime_to_timestamp;
use super::walk::{
    as_bool, as_enum, as_f64, as_str, as_table, as_u64, ident, ident_list, is_slug, line_at,
    required, text, type_name, unknown_keys, Ctx, Path, TransposeNone,
};

use super::search::{
    Scale, SearchParam, SearchSpace, CANDLE_INTEGER_PARAMS, CANDLE_PARAMS, MAX_SEARCH_PARAMS,
};
use super::{
    CandleTask, Criteria, Dataset, FieldError, ManifestErrors, ModelPreset, Program, Reward,
    ShellTask, SourceBundle, StopConditions, Task, Verify, VerifyMode, DEFAULT_SETUP_TIMEOUT_SECS,
    MANIFEST_VERSION, MAX_RETRAIN_SEEDS,
};
use crate::dispatch::{
    HardwareClass, LocalAction, LocalPolicy, PaidAction, PaidPolicy, Policy, Rung, SpendClass,
};
use crate::kb::{
    AcceptRule, Amount, Direction, MinImprovement, Split, MAX_MIN_IMPROVEMENT,
    MAX_MIN_IMPROVEMENT_RELATIVE,
};
use crate::membership::MembershipMode;
use crate::Digest;

mod compute;
mod task;
use compute::{default_policy, policy, rungs};
use task::{search, task};

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
const EVAL_TOKENS_RANGE: (u64, u64) = (256, super::MAX_EVAL_TOKENS);
/// Default validation token budget.
const DEFAULT_EVAL_TOKENS: u64 = 65_536;

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
            "verify",
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
    let task_table =
        required(ctx, &top, root, "task").and_then(|v| as_table(ctx, &top.key("task"), v));
    let task = task_table.and_then(|t| task(ctx, &top.key("task"), t));
    let search = match (task_table, &task) {
        (Some(t), Some(task)) => match t.get("search") {
            None => Some(SearchSpace::default()),
            Some(v) => as_table(ctx, &top.key("task").key("search"), v)
                .and_then(|s| search(ctx, &top.key("task").key("search"), s, task)),
        },
        _ => None,
    };
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
    let verify = match (root.get("verify"), &task) {
        (None, Some(task)) => Some(Verify::default_for(task)),
        (Some(v), Some(task)) => as_table(ctx, &top.key("verify"), v)
            .and_then(|t| verify(ctx, &top.key("verify"), t, task)),
        (_, None) => None,
    };
    let criteria = criteria?;
    let criteria = Criteria {
        metric: criteria.metric,
        direction: criteria.direction,
        accept: criteria.accept,
        min_improvement: match criteria.min_improvement {
            Some(m) => m,
            None => Criteria::default_min_improvement(task.as_ref()?),
        },
    };
    Some(Program {
        version: version?,
        name: name?,
        objective: objective?,
        membership: membership?,
        criteria,
        baseline,
        reward: reward?,
        task: task?,
        search: search?,
        rungs: rungs?,
        policy: policy?,
        required_outputs: required_outputs?,
        stop: stop?,
        verify: verify?,
    })
}

fn optional_f64(ctx: &mut Ctx<'_>, path: &Path, table: &Table, key: &str) -> Option<f64> {
    table.get(key).and_then(|v| as_f64(ctx, &path.key(key), v))
}

fn criteria(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<DeclaredCriteria> {
    unknown_keys(
        ctx,
        path,
        t,
        &[
            "metric",
            "direction",
            "accept",
            "threshold",
            "min_improvement",
            "min_improvement_relative",
        ],
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
    let margin = |ctx: &mut Ctx<'_>, key: &str, max: f64| -> Option<Option<f64>> {
        let Some(v) = t.get(key) else {
            return Some(None);
        };
        let p = path.key(key);
        let x = as_f64(ctx, &p, v)?;
        if !(0.0..=max).contains(&x) {
            ctx.err(&p, format!("must be between 0 and {max}, got {x}"));
            return None;
        }
        Some(Some(x))
    };
    let absolute = margin(ctx, "min_improvement", MAX_MIN_IMPROVEMENT);
    let relative = margin(
        ctx,
        "min_improvement_relative",
        MAX_MIN_IMPROVEMENT_RELATIVE,
    );
    let (absolute, relative) = (absolute?, relative?);
    Some(DeclaredCriteria {
        metric: metric?,
        direction: direction?,
        accept,
        // Declared: what the manifest says (an absent half is 0). Neither key: `None`, and the
        // caller fills in the task's default.
        min_improvement: (absolute.is_some() || relative.is_some()).then(|| MinImprovement {
            absolute: absolute.unwrap_or(0.0),
            relative: relative.unwrap_or(0.0),
        }),
    })
}

/// `[criteria]` as declared: the minimum improvement is `None` when the manifest gives none.
struct DeclaredCriteria {
    metric: String,
    direction: Direction,
    accept: AcceptRule,
    min_improvement: Option<MinImprovement>,
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

/// Largest `verify.max_artifact_bytes` (4 GiB, the most btd loads as a checkpoint or corpus).
const MAX_ARTIFACT_BYTES: u64 = 4 << 30;
/// Smallest `verify.max_artifact_bytes` (64 KiB).
const MIN_ARTIFACT_BYTES: u64 = 64 << 10;
/// Longest `verify.fetch_timeout_secs`: one day.
const MAX_FETCH_TIMEOUT_SECS: u64 = 24 * 3600;

fn verify(ctx: &mut Ctx<'_>, path: &Path, t: &Table, task: &Task) -> Option<Verify> {
    unknown_keys(
        ctx,
        path,
        t,
        &[
            "mode",
            "tolerance",
            "holdout",
            "max_holdout_gap",
            "retrain_share",
            "retrain_tolerance",
            "retrain_seeds",
            "max_artifact_bytes",
            "fetch_timeout_secs",
        ],
    );
    let d = Verify::default_for(task);
    let mode = match t.get("mode") {
        None => Some(d.mode),
        Some(v) => as_enum(
            ctx,
            &path.key("mode"),
            v,
            &[
                ("reevaluate", VerifyMode::Reevaluate),
                ("none", VerifyMode::None),
                ("rerun", VerifyMode::Rerun),
            ],
        ),
    };
    match (mode, task) {
        (Some(VerifyMode::Reevaluate), Task::Shell(_)) => ctx.err(
            &path.key("mode"),
            "btd cannot re-evaluate a shell task's metric; use mode = \"rerun\" (the owner runs the \
             claim again) or \"none\" (claims count when received)",
        ),
        (Some(VerifyMode::Rerun), Task::Candle(_)) => ctx.err(
            &path.key("mode"),
            "a candle task is checked by re-evaluating its checkpoint: use mode = \"reevaluate\" \
             (and retrain_share to re-train large claims)",
        ),
        _ => {}
    }
    // A shell program re-runs with one seed unless it declares more (a re-run of the same code
    // and seed reproduces the claim; more seeds only guard against a lucky seed).
    let default_seeds = if matches!(task, Task::Shell(_)) {
        1
    } else {
        d.retrain_seeds
    };
    let non_negative = |ctx: &mut Ctx<'_>, key: &str, max: f64| -> Option<Option<f64>> {
        let Some(v) = t.get(key) else {
            return Some(None);
        };
        let p = path.key(key);
        let x = as_f64(ctx, &p, v)?;
        if !(0.0..=max).contains(&x) {
            ctx.err(&p, format!("must be between 0 and {max}, got {x}"));
            return None;
        }
        Some(Some(x))
    };
    let tolerance = non_negative(ctx, "tolerance", 1.0);
    let gap = non_negative(ctx, "max_holdout_gap", 100.0);
    let holdout = match t.get("holdout") {
        None => Some(true),
        Some(v) => as_bool(ctx, &path.key("holdout"), v),
    };
    let retrain_tolerance = non_negative(ctx, "retrain_tolerance", 100.0);
    let retrain_share = non_negative(ctx, "retrain_share", 1.0);
    let retrain_seeds = t.get("retrain_seeds").map(|v| {
        as_u64(
            ctx,
            &path.key("retrain_seeds"),
            v,
            1,
            u64::from(MAX_RETRAIN_SEEDS),
        )
        .and_then(|n| u32::try_from(n).ok())
    });
    let max_artifact_bytes = t.get("max_artifact_bytes").map(|v| {
        as_u64(
            ctx,
            &path.key("max_artifact_bytes"),
            v,
            MIN_ARTIFACT_BYTES,
            MAX_ARTIFACT_BYTES,
        )
    });
    let fetch_timeout_secs = t.get("fetch_timeout_secs").map(|v| {
        as_u64(
            ctx,
            &path.key("fetch_timeout_secs"),
            v,
            1,
            MAX_FETCH_TIMEOUT_SECS,
        )
    });
    Some(Verify {
        mode: mode?,
        tolerance: tolerance?.unwrap_or(d.tolerance),
        // The holdout check is on unless `holdout = false`; the gap defaults.
        max_holdout_gap: if holdout? {
            gap?.or(d.max_holdout_gap)
        } else {
            None
        },
        retrain_share: retrain_share?,
        retrain_tolerance: retrain_tolerance?.unwrap_or(d.retrain_tolerance),
        retrain_seeds: retrain_seeds.transpose_none()?.unwrap_or(default_seeds),
        max_artifact_bytes: max_artifact_bytes
            .transpose_none()?
            .unwrap_or(d.max_artifact_bytes),
        fetch_timeout_secs: fetch_timeout_secs
            .transpose_none()?
            .unwrap_or(d.fetch_timeout_secs),
    })
}
