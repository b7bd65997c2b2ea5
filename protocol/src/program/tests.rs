use libp2p_identity::Keypair;

use super::datetime::{format_rfc3339, rfc3339_to_timestamp};
use super::*;
use crate::dispatch::HardwareClass;

const EXAMPLE: &str = include_str!("../../../examples/program.toml");

fn minimal() -> String {
    r#"
name = "p"
objective = "q"
required_outputs = ["metrics.json"]
[criteria]
metric = "val_bpb"
direction = "minimize"
accept = "beats-champion"
[reward]
pool = 100
token = "OBOL"
split = "by-impact"
[task]
kind = "shell"
command = "echo val_bpb: 1.0"
timeout_secs = 60
[[rungs]]
id = "cpu"
spend_class = "local_unmetered"
hardware = "cpu"
"#
    .to_string()
}

fn errors(text: &str) -> Vec<FieldError> {
    match Program::from_toml(text) {
        Ok(p) => panic!("expected errors, got {p:?}"),
        Err(e) => e.0,
    }
}

fn has(errs: &[FieldError], field: &str, needle: &str) -> bool {
    errs.iter()
        .any(|e| e.field == field && e.message.contains(needle))
}

#[test]
fn example_manifest_is_valid() {
    let p = Program::from_toml(EXAMPLE).unwrap();
    assert_eq!(p.name, "tiny-gpt-bpb");
    assert_eq!(p.criteria.direction, Direction::Minimize);
    assert_eq!(p.criteria.accept, AcceptRule::BeatsChampion);
    assert_eq!(p.reward.pool, Amount(100_000_000));
    assert_eq!(p.rungs.len(), 3);
    assert_eq!(p.rungs[1].hardware, HardwareClass::Rtx4090);
    assert!(p.rungs[1].admitted, "admitted defaults to true");
    assert_eq!(p.rungs[1].label, "A worker's own RTX 4090");
    assert_eq!(p.policy.paid.max_spend_per_packet, Some(5.0));
    assert_eq!(
        p.stop.deadline,
        Some(Timestamp::from_secs(1_801_353_600)),
        "2027-01-31T00:00:00Z"
    );
    match &p.task {
        Task::Candle(t) => {
            assert_eq!(t.preset, ModelPreset::Tiny);
            assert_eq!(t.steps, Some(400));
            assert_eq!(
                t.dataset,
                Dataset::Synthetic {
                    seed: 1,
                    bytes: 262_144
                }
            );
        }
        other => panic!("expected candle task, got {other:?}"),
    }
}

#[test]
fn minimal_manifest_gets_documented_defaults() {
    let p = Program::from_toml(&minimal()).unwrap();
    assert_eq!(p.version, 1);
    assert_eq!(p.membership, MembershipMode::Approval);
    assert_eq!(p.baseline, None);
    assert_eq!(
        p.policy.local.default_action,
        crate::dispatch::LocalAction::Allow
    );
    assert_eq!(
        p.policy.paid.default_action,
        crate::dispatch::PaidAction::RequireExplicitApproval
    );
    assert_eq!(p.stop, StopConditions::default());
    assert_eq!(p.rungs[0].label, "cpu");
}

#[test]
fn malformed_manifest_reports_every_field_with_lines() {
    let text = r#"name = "Bad Name"
objective = ""
required_outputs = []
colour = "blue"
[criteria]
metric = "val_bpb"
direction = "min"
accept = "threshold"
[reward]
pool = -5
token = "OBOL"
split = "by-effort"
[task]
kind = "candle"
[task.dataset]
kind = "file"
sha256 = "abc"
[[rungs]]
id = "cpu"
spend_class = "free"
hardware = "tpu"
"#;
    let errs = errors(text);
    let rendered: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let all = rendered.join("\n");
    assert!(has(&errs, "name", "not a slug"), "{all}");
    assert!(has(&errs, "objective", "must not be empty"), "{all}");
    assert!(
        has(&errs, "required_outputs", "at least one output"),
        "{all}"
    );
    assert!(has(&errs, "colour", "unknown field"), "{all}");
    assert!(
        has(
            &errs,
            "criteria.direction",
            "allowed values: minimize, maximize"
        ),
        "{all}"
    );
    assert!(has(&errs, "criteria.threshold", "required when"), "{all}");
    assert!(has(&errs, "reward.pool", ">= 0"), "{all}");
    assert!(
        has(
            &errs,
            "reward.split",
            "allowed values: by-impact, champion-takes-all"
        ),
        "{all}"
    );
    assert!(has(&errs, "task.seconds", "needs a budget"), "{all}");
    assert!(has(&errs, "task.dataset.sha256", "64 hex"), "{all}");
    assert!(
        has(
            &errs,
            "rungs[0].spend_class",
            "allowed values: local_unmetered, paid_metered"
        ),
        "{all}"
    );
    assert!(has(&errs, "rungs[0].hardware", "\"tpu\""), "{all}");
    // Lines point at the offending field.
    let line = |field: &str| errs.iter().find(|e| e.field == field).and_then(|e| e.line);
    assert_eq!(line("name"), Some(1), "{all}");
    assert_eq!(line("colour"), Some(4), "{all}");
    assert_eq!(line("criteria.direction"), Some(7), "{all}");
    assert_eq!(line("reward.split"), Some(12), "{all}");
    assert_eq!(line("task.dataset.sha256"), Some(17), "{all}");
    assert_eq!(line("rungs[0].hardware"), Some(21), "{all}");
}

#[test]
fn syntax_error_has_a_line() {
    let errs = errors("name = \"p\"\nobjective = \n");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "(syntax)");
    assert_eq!(errs[0].line, Some(2));
}

#[test]
fn threshold_rules() {
    let m = minimal().replace(
        "accept = \"beats-champion\"",
        "accept = \"threshold\"\nthreshold = 1.5",
    );
    let p = Program::from_toml(&m).unwrap();
    assert_eq!(p.criteria.accept, AcceptRule::Threshold { threshold: 1.5 });
    assert_eq!(p.rules().accept, AcceptRule::Threshold { threshold: 1.5 });

    let m = minimal().replace(
        "metric = \"val_bpb\"",
        "metric = \"val_bpb\"\nthreshold = 1.0",
    );
    assert!(has(&errors(&m), "criteria.threshold", "only used when"));

    let m = minimal().replace(
        "accept = \"beats-champion\"",
        "accept = \"threshold\"\nthreshold = nan",
    );
    assert!(has(&errors(&m), "criteria.threshold", "finite"));
}

#[test]
fn non_finite_and_wrong_types() {
    let m = minimal().replace("name = \"p\"", "name = \"p\"\nbaseline = inf");
    assert!(has(&errors(&m), "baseline", "finite"));
    let m = minimal().replace("pool = 100", "pool = \"lots\"");
    assert!(errors(&m).iter().any(|e| e.field == "reward.pool"));
    let m = minimal().replace("timeout_secs = 60", "timeout_secs = \"60\"");
    assert!(has(&errors(&m), "task.timeout_secs", "expected an integer"));
    let m = minimal().replace("timeout_secs = 60", "timeout_secs = 0");
    assert!(has(&errors(&m), "task.timeout_secs", "from 1 to"));
}

#[test]
fn pool_precision() {
    let m = minimal().replace("pool = 100", "pool = 12.345678");
    assert_eq!(
        Program::from_toml(&m).unwrap().reward.pool,
        Amount(12_345_678)
    );
    let m = minimal().replace("pool = 100", "pool = \"0.000001\"");
    assert_eq!(Program::from_toml(&m).unwrap().reward.pool, Amount(1));
}

#[test]
fn rung_rules() {
    let dup = minimal()
        + "[[rungs]]\nid = \"cpu\"\nspend_class = \"local_unmetered\"\nhardware = \"cpu\"\n";
    assert!(has(&errors(&dup), "rungs[1].id", "declared twice"));
    let none = minimal().replace("hardware = \"cpu\"", "hardware = \"cpu\"\nadmitted = false");
    assert!(has(&errors(&none), "rungs", "no rung is admitted"));
    let bad_approved = minimal() + "[policy.paid]\napproved_rungs = [\"cpu\", \"gpu\"]\n";
    let errs = errors(&bad_approved);
    assert!(has(
        &errs,
        "policy.paid.approved_rungs[0]",
        "local_unmetered"
    ));
    assert!(has(
        &errs,
        "policy.paid.approved_rungs[1]",
        "not a declared rung"
    ));
}

#[test]
fn deadline_conversion() {
    assert_eq!(
        rfc3339_to_timestamp("1970-01-01T00:00:00Z"),
        Some(Timestamp(0))
    );
    assert_eq!(
        rfc3339_to_timestamp("2000-03-01T00:00:01.5+01:00"),
        Some(Timestamp(951_865_201_500))
    );
    for s in [
        "1970-01-01T00:00:00Z",
        "2024-02-29T23:59:59Z",
        "2027-01-31T00:00:00Z",
    ] {
        let t = rfc3339_to_timestamp(s).unwrap();
        assert_eq!(format_rfc3339(t), s);
    }
    let m = minimal() + "[stop]\ndeadline = 2027-01-31\n";
    assert!(has(&errors(&m), "stop.deadline", "offset"));
}

#[test]
fn program_id_is_content_addressed_and_owner_bound() {
    let p = Program::from_toml(EXAMPLE).unwrap();
    let a = Keypair::ed25519_from_bytes([1u8; 32]).unwrap().public();
    let b = Keypair::ed25519_from_bytes([2u8; 32]).unwrap().public();
    assert_eq!(p.id(&a), Program::from_toml(EXAMPLE).unwrap().id(&a));
    assert_ne!(p.id(&a), p.id(&b));
    let mut q = p.clone();
    q.objective.push('!');
    assert_ne!(p.id(&a), q.id(&a));
    let id = p.id(&a);
    assert_eq!(id.to_string().parse::<ProgramId>().unwrap(), id);
    assert_eq!(id.to_string().len(), 64);
}

#[test]
fn packets_follow_the_program() {
    let p = Program::from_toml(EXAMPLE).unwrap();
    let local = p.packet_for_rung("cpu").unwrap();
    assert_eq!(local.id, "tiny-gpt-bpb:cpu");
    assert_eq!(local.decision_id, p.decision().id);
    assert_eq!(local.budget.wall_clock_secs, Some(20));
    assert_eq!(local.budget.steps, Some(400));
    assert_eq!(local.budget.spend_cap, None);
    assert_eq!(local.required_outputs, p.required_outputs);
    assert!(local.stop_condition.contains("500 submissions"));
    assert!(local.stop_condition.contains("2027-01-31T00:00:00Z"));
    let paid = p.packet_for_rung("paid-h100").unwrap();
    assert_eq!(paid.budget.spend_cap, Some(5.0));
    let err = p.packet_for_rung("tpu").unwrap_err();
    assert!(err.to_string().contains("cpu, local-4090, paid-h100"));
}

#[test]
fn verify_section_defaults_and_errors() {
    // Shell tasks are not re-evaluated by default, and cannot be.
    let shell = Program::from_toml(&minimal()).unwrap();
    assert_eq!(shell.verify.mode, VerifyMode::None);
    assert!(!shell.verify.checks());
    let errs = errors(&format!("{}\n[verify]\nmode = \"reevaluate\"\n", minimal()));
    assert!(
        has(&errs, "verify.mode", "cannot re-evaluate a shell task"),
        "{errs:?}"
    );

    // Candle tasks are re-evaluated with a holdout check by default.
    let candle = Program::from_toml(EXAMPLE).unwrap();
    assert_eq!(candle.verify.mode, VerifyMode::Reevaluate);
    assert_eq!(candle.verify.max_holdout_gap, Some(DEFAULT_HOLDOUT_GAP));
    assert_eq!(candle.verify.retrain_share, None);

    // The example's own [verify] section is replaced by each case's.
    let base = EXAMPLE.split("\n[verify]").next().unwrap();
    let with = |extra: &str| format!("{base}\n[verify]\n{extra}\n");
    let p = Program::from_toml(&with(
        "tolerance = 0.001\nmax_holdout_gap = 0.5\nretrain_share = 0.5\nmax_artifact_bytes = 1048576\nfetch_timeout_secs = 60",
    ))
    .unwrap();
    assert_eq!(p.verify.tolerance, 0.001);
    assert_eq!(p.verify.max_holdout_gap, Some(0.5));
    assert_eq!(p.verify.retrain_share, Some(0.5));
    assert_eq!(p.verify.max_artifact_bytes, 1 << 20);
    assert_eq!(p.verify.fetch_timeout_secs, 60);
    let p = Program::from_toml(&with("holdout = false")).unwrap();
    assert_eq!(p.verify.max_holdout_gap, None);

    let errs = errors(&with(
        "mode = \"trust\"\ntolerance = -1\nretrain_share = 2\nmax_artifact_bytes = 10\nextra = 1",
    ));
    assert!(has(&errs, "verify.mode", "reevaluate, none"), "{errs:?}");
    assert!(
        has(&errs, "verify.tolerance", "between 0 and 1"),
        "{errs:?}"
    );
    assert!(
        has(&errs, "verify.retrain_share", "between 0 and 1"),
        "{errs:?}"
    );
    assert!(has(&errs, "verify.max_artifact_bytes", ""), "{errs:?}");
    assert!(has(&errs, "verify.extra", ""), "{errs:?}");
}

#[test]
fn minimum_improvement_defaults_declarations_and_errors() {
    // Candle tasks get the default margin (about twice the measured run-to-run noise); shell tasks,
    // whose metric's scale btd cannot know, none unless declared.
    let candle = Program::from_toml(&EXAMPLE.replace("min_improvement = 0.035", "")).unwrap();
    assert_eq!(
        candle.criteria.min_improvement,
        MinImprovement {
            absolute: DEFAULT_MIN_IMPROVEMENT_BPB,
            relative: 0.0
        }
    );
    assert_eq!(
        candle.rules().min_improvement,
        candle.criteria.min_improvement
    );
    let shell = Program::from_toml(&minimal()).unwrap();
    assert_eq!(shell.criteria.min_improvement, MinImprovement::NONE);

    // Declared: either half or both; an absent half is 0. Declaring 0 turns the margin off.
    let with = |extra: &str| {
        minimal().replace(
            "accept = \"beats-champion\"\n",
            &format!("accept = \"beats-champion\"\n{extra}\n"),
        )
    };
    let p = Program::from_toml(&with("min_improvement = 0.05")).unwrap();
    assert_eq!(
        p.criteria.min_improvement,
        MinImprovement {
            absolute: 0.05,
            relative: 0.0
        }
    );
    let p = Program::from_toml(&with(
        "min_improvement = 0.01\nmin_improvement_relative = 0.002",
    ))
    .unwrap();
    assert_eq!(
        p.criteria.min_improvement,
        MinImprovement {
            absolute: 0.01,
            relative: 0.002
        }
    );
    let base = EXAMPLE.replace("min_improvement = 0.035", "min_improvement = 0");
    assert_eq!(
        Program::from_toml(&base).unwrap().criteria.min_improvement,
        MinImprovement::NONE
    );
    // The margin is part of the program, so of its id.
    let key = Keypair::generate_ed25519().public();
    assert_ne!(candle.id(&key), Program::from_toml(&base).unwrap().id(&key));

    // Negative, too large, the wrong type: every problem named with its field and line.
    let errs = errors(&with(
        "min_improvement = -0.1\nmin_improvement_relative = 1.5",
    ));
    assert!(
        has(&errs, "criteria.min_improvement", "between 0 and 1000000"),
        "{errs:?}"
    );
    assert!(
        has(
            &errs,
            "criteria.min_improvement_relative",
            "between 0 and 1"
        ),
        "{errs:?}"
    );
    assert!(errs.iter().all(|e| e.line.is_some()), "{errs:?}");
    let errs = errors(&with(
        "min_improvement = \"a lot\"\nmin_improvement_relative = nan",
    ));
    assert!(has(&errs, "criteria.min_improvement", ""), "{errs:?}");
    assert!(
        has(&errs, "criteria.min_improvement_relative", ""),
        "{errs:?}"
    );
    let errs = errors(&with("min_improvement = 1e7"));
    assert!(has(&errs, "criteria.min_improvement", ""), "{errs:?}");
}

#[test]
fn retrain_seeds_default_bounds_and_derivation() {
    let candle = Program::from_toml(EXAMPLE).unwrap();
    assert_eq!(candle.verify.retrain_seeds, DEFAULT_RETRAIN_SEEDS);
    let base = EXAMPLE.split("\n[verify]").next().unwrap();
    let with = |extra: &str| format!("{base}\n[verify]\n{extra}\n");
    let p = Program::from_toml(&with("retrain_share = 0.5\nretrain_seeds = 5")).unwrap();
    assert_eq!(p.verify.retrain_seeds, 5);
    // The claim's seed first, then distinct derived ones; the same every time.
    let seeds = p.verify.retrain_seed_list(42);
    assert_eq!(seeds.len(), 5);
    assert_eq!(seeds[0], 42);
    let distinct: std::collections::BTreeSet<_> = seeds.iter().collect();
    assert_eq!(distinct.len(), 5, "{seeds:?}");
    assert_eq!(seeds, p.verify.retrain_seed_list(42));
    assert_ne!(seeds[1..], p.verify.retrain_seed_list(43)[1..]);
    for bad in ["0", "9", "-1", "2.5"] {
        let errs = errors(&with(&format!("retrain_seeds = {bad}")));
        assert!(has(&errs, "verify.retrain_seeds", ""), "{bad}: {errs:?}");
    }
}

/// A manifest cannot name more validation tokens than the trainer evaluates (it used to accept up
/// to 2^30 while the trainer refused anything over 2^27, so a published program failed every
/// worker's evaluation).
#[test]
fn eval_tokens_bounded_by_what_the_trainer_accepts() {
    let with = |n: u64| EXAMPLE.replace("eval_tokens = 65536", &format!("eval_tokens = {n}"));
    let p = Program::from_toml(&with(MAX_EVAL_TOKENS)).unwrap();
    let Task::Candle(t) = &p.task else {
        panic!("the example is a candle task")
    };
    assert_eq!(t.eval_tokens, MAX_EVAL_TOKENS);
    let errs = errors(&with(MAX_EVAL_TOKENS + 1));
    assert!(has(&errs, "task.eval_tokens", ""), "{errs:?}");
    assert_eq!(MAX_EVAL_TOKENS, 1 << 27);
}
