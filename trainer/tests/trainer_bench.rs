//! `trainer-bench` (docs/benchmarks.md, "Training" and "Run-to-run noise") in a tiny configuration,
//! so the binary the benchmark scripts run (`bench/run.sh`, `bench/run-all.sh`) cannot rot: its
//! arguments, its JSON line and `--dump-corpus`. Shapes only, never timings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use btd_trainer::synth::DEFAULT_SYNTHETIC_BYTES;

fn trainer_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer-bench"))
        .args(args)
        .output()
        .expect("run trainer-bench")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "trainer-bench failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

#[test]
fn a_few_steps_give_one_json_line_per_preset_with_a_finite_val_bpb() {
    let out = trainer_bench(&[
        "--preset",
        "tiny",
        "--steps",
        "3",
        "--eval-tokens",
        "1024",
        "--threads",
        "1",
        "--seed",
        "2",
        "--json",
    ]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line per preset:\n{text}");
    let line: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(line["impl"], "candle");
    assert_eq!(line["threads"], 1);
    let report = &line["report"];
    assert_eq!(report["steps"], 3);
    assert_eq!(report["spec"]["seed"], 2);
    assert!(report["tokens"].as_u64().unwrap() > 0, "{report}");
    assert!(report["eval_tokens"].as_u64().unwrap() > 0, "{report}");
    let val_bpb = report["val_bpb"].as_f64().unwrap();
    assert!(val_bpb.is_finite() && val_bpb > 0.0, "val_bpb {val_bpb}");
    for key in ["unigram_bits", "cpu_secs", "tokens_per_cpu_sec"] {
        let v = line[key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v >= 0.0, "{key}: {v}");
    }
}

#[test]
fn the_table_mode_prints_a_header_and_a_row() {
    let out = trainer_bench(&["--steps", "2", "--eval-tokens", "512", "--threads", "1"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "data line, header, one row:\n{text}");
    assert!(lines[0].starts_with("data: "), "{text}");
    assert!(lines[1].contains("val_bpb"), "{text}");
    assert!(lines[2].starts_with("tiny "), "{text}");
}

#[test]
fn dump_corpus_writes_the_synthetic_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.txt");
    let out = trainer_bench(&["--dump-corpus", path.to_str().unwrap()]);
    stdout(&out);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, DEFAULT_SYNTHETIC_BYTES);
}

#[test]
fn an_unknown_argument_fails() {
    let out = trainer_bench(&["--preset", "huge"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown preset"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn device_cpu_is_accepted_and_an_unknown_device_is_refused() {
    let out = trainer_bench(&[
        "--device",
        "cpu",
        "--steps",
        "1",
        "--eval-tokens",
        "512",
        "--threads",
        "1",
        "--json",
    ]);
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("a JSON line");
    assert!(
        line["report"]["device"]
            .as_str()
            .unwrap_or("")
            .starts_with("cpu"),
        "{line}"
    );
    let out = trainer_bench(&["--device", "gpu0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not cpu, cuda or cuda:N"), "{err}");
}

/// Without the `cuda` feature `--device cuda` fails with a message saying how to rebuild (with it,
/// and no GPU, it fails with the driver's reason: checked by hand, docs/benchmarks.md "GPU build").
#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_without_the_feature_says_how_to_rebuild() {
    let out = trainer_bench(&["--device", "cuda:1", "--steps", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without CUDA support"), "{err}");
}
