//! End-to-end tests of the local compute commands: `btd train`, `btd eval`, `btd sample`, `btd rungs`.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup aborts the test

use btd_tests::{run_btd, stderr, stdout};
use serde_json::Value;

fn json(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "btd failed: {}", stderr(o));
    serde_json::from_str(&stdout(o)).unwrap()
}

#[test]
fn train_then_eval_reproduces_the_claim_then_sample() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let args = [
        "train",
        "--steps",
        "15",
        "--eval-tokens",
        "2048",
        "--seed",
        "4",
        "--out",
        out,
        "--json",
    ];
    let trained = json(&run_btd(&args));
    let report = &trained["report"];
    assert_eq!(report["steps"], 15);
    assert_eq!(report["data"]["kind"], "synthetic");
    let val_bpb = report["val_bpb"].as_f64().unwrap();
    assert!(val_bpb > 0.0 && val_bpb < 8.5, "{val_bpb}");
    let ckpt = trained["checkpoint"].as_str().unwrap().to_string();
    assert!(ckpt.ends_with(".safetensors"));

    // Same seed and steps: the same checkpoint, byte for byte.
    let again = json(&run_btd(&args));
    assert_eq!(
        again["report"]["checkpoint_sha256"],
        report["checkpoint_sha256"]
    );

    let eval = json(&run_btd(&["eval", &ckpt, "--verify", "--json"]));
    assert_eq!(eval["matches_claim"], true);
    assert_eq!(
        eval["val_bpb"].as_f64().unwrap().to_bits(),
        val_bpb.to_bits()
    );
    assert_eq!(eval["sha256"], report["checkpoint_sha256"]);

    let text = run_btd(&["eval", &ckpt]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(stdout(&text).contains("identical"), "{}", stdout(&text));

    let s = json(&run_btd(&[
        "sample", &ckpt, "--prompt", "Th", "--tokens", "12", "--json",
    ]));
    assert!(!s["text"].as_str().unwrap().is_empty());
}

#[test]
fn train_refuses_a_file_with_the_wrong_digest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(&data, "some text\n".repeat(100)).unwrap();
    let zeros = "0".repeat(64);
    let o = run_btd(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--sha256",
        &zeros,
        "--steps",
        "1",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refusing to train on a different file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn eval_of_a_non_checkpoint_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.safetensors");
    std::fs::write(&f, b"garbage").unwrap();
    let o = run_btd(&["eval", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bad checkpoint"), "{}", stderr(&o));
}

#[test]
fn rungs_lists_the_cpu() {
    let v = json(&run_btd(&["rungs", "--json"]));
    let rungs = v["rungs"].as_array().unwrap();
    let cpu = rungs.last().unwrap();
    assert_eq!(cpu["rung"]["id"], "local-cpu");
    assert_eq!(cpu["rung"]["hardware"], "cpu");
    assert_eq!(cpu["rung"]["spend_class"], "local_unmetered");
    assert!(v["hardware"]["cpu"]["usable_threads"].as_u64().unwrap() >= 1);
}

/// `btd train` without `--out` writes under the btd home, never into the current directory (a
/// git checkout, say), and says where with absolute paths.
#[test]
fn train_writes_into_the_btd_home_by_default() {
    let cwd = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(btd_tests::btd_bin())
        .args([
            "train",
            "--steps",
            "1",
            "--eval-tokens",
            "1024",
            "--json",
            "--home",
        ])
        .arg(home.path())
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let trained = json(&o);
    let ckpt = std::path::PathBuf::from(trained["checkpoint"].as_str().unwrap());
    assert!(ckpt.is_absolute(), "{}", ckpt.display());
    assert!(
        ckpt.starts_with(home.path().join("train")),
        "{}",
        ckpt.display()
    );
    assert!(ckpt.exists());
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "wrote into the cwd"
    );
}
