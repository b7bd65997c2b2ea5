//! Training by hand for a program over real `btd` processes (issue #15): `btd train --program ID`
//! trains the program's task (its dataset fetched from the owner, its eval budget), and
//! `btd submit ID --checkpoint PATH` without `--value` claims what the owner will measure, so the
//! owner verifies it. The old path (`btd train --data` with its own eval budget, submitting the
//! value it printed) is still rejected, with both numbers, and warned about before it is sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use btd_tests::{stderr, stdout, wait_until, word_text as text, Daemon};

/// The token after `marker` in `s`, as an f64 (it must parse).
fn number_after(s: &str, marker: &str) -> f64 {
    let rest = s
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{s}"));
    let token = rest.split_whitespace().next().unwrap();
    token
        .parse()
        .unwrap_or_else(|_| panic!("{token:?} in:\n{s}"))
}

/// Sends one raw control request (a JSON object) to `d`'s daemon; its `ok` answer, or `Err` with
/// its `error` text.
fn control(d: &Daemon, req: serde_json::Value) -> Result<serde_json::Value, String> {
    use std::io::{BufRead, BufReader, Write};
    let mut sock = std::os::unix::net::UnixStream::connect(d.home.join("control.sock")).unwrap();
    writeln!(sock, "{req}").unwrap();
    for line in BufReader::new(sock).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if let Some(ok) = v.get("ok") {
            return Ok(ok.clone());
        }
        if let Some(e) = v.get("error") {
            return Err(e.as_str().unwrap().to_string());
        }
    }
    panic!("the daemon closed the connection without answering")
}

/// A value as the owner's rejection quotes it next to `other` (6 decimals, or every digit when 6
/// decimals would not tell them apart).
fn quoted(v: f64, other: f64) -> String {
    if format!("{v:.6}") != format!("{other:.6}") {
        format!("{v:.6}")
    } else {
        format!("{v}")
    }
}

#[test]
fn trained_for_the_program_and_submitted_without_a_value_verifies() {
    let owner = Daemon::start(&[]);
    let member = Daemon::start(&["--bootstrap", &owner.addr()]);
    let dir = owner.home.parent().unwrap().to_path_buf();
    let data = dir.join("corpus.txt");
    std::fs::write(&data, text(7, 48 * 1024)).unwrap();
    let sha = btd_protocol::Digest::of(&std::fs::read(&data).unwrap()).to_string();
    let manifest = dir.join("hand.toml");
    std::fs::write(
        &manifest,
        btd_tests::candle_file_manifest(
            "by-hand",
            "lowest val_bpb, trained by hand",
            &sha,
            "seed = 3\n",
        ),
    )
    .unwrap();
    let holdout = dir.join("holdout.txt");
    std::fs::write(&holdout, text(8, 16 * 1024)).unwrap();
    let o = owner.btd(&[
        "publish",
        manifest.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--holdout",
        holdout.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    btd_tests::wait_known(&member, &id);
    let out = dir.join("train");
    let out_s = out.to_str().unwrap();

    // Not a member yet: the dataset cannot be fetched, and the refusal says what to do.
    let o = member.btd(&["train", "--program", &id, "--out", out_s]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!("btd join {id}")),
        "{}",
        stderr(&o)
    );

    let (status, joined) = btd_tests::join_approved(&owner, &member, &id, &[]);
    assert!(status.success(), "{joined}\n{}", member.log());

    // A flag that changes the task is refused with the program's value, before any training.
    let o = member.btd(&["train", "--program", &id, "--eval-tokens", "4096"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("--eval-tokens 4096 conflicts with program")
            && stderr(&o).contains("it scores 2048 validation bytes"),
        "{}",
        stderr(&o)
    );
    let fetched = member.home.join("blobs").join(&id).join(&sha);
    assert!(
        !fetched.exists(),
        "a refused command downloaded the dataset"
    );

    // Trained for the program: its task, with the dataset fetched from the owner.
    let trained = member.json(&["train", "--program", &id, "--out", out_s]);
    let report = &trained["report"];
    assert_eq!(trained["program"], id.as_str());
    assert_eq!(report["steps"], 25);
    assert_eq!(report["spec"]["seed"], 3);
    assert_eq!(report["spec"]["eval_tokens"], 2048);
    assert_eq!(report["eval_tokens"], 2048);
    assert_eq!(report["data"]["kind"], "file");
    let trained_value = report["val_bpb"].as_f64().unwrap();
    // The member fetched the program's dataset from the owner by digest.
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&data).unwrap()
    );
    let ckpt = trained["checkpoint"].as_str().unwrap();

    // The old path: trained on the same file with its own eval budget, then submitted with the
    // value it printed. The daemon warns with both numbers; the owner rejects with both.
    let o = member.btd(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "25",
        "--eval-tokens",
        "4096",
        "--out",
        out_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    let own = number_after(&printed, "# val_bpb ");
    let old_ckpt = printed
        .lines()
        .find_map(|l| l.strip_prefix("checkpoint: "))
        .unwrap()
        .trim()
        .to_string();
    let o = member.btd(&[
        "submit",
        &id,
        "--checkpoint",
        &old_ckpt,
        "--value",
        &format!("{own}"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let warning = stderr(&o);
    assert!(
        warning.contains(&format!(
            "warning: --value {own} is not what the owner will measure"
        )),
        "{warning}"
    );
    let measured_old = number_after(&warning, "for this checkpoint: val_bpb ");
    assert_ne!(measured_old.to_bits(), own.to_bits());
    let s = wait_until("the owner's check of the old-path claim", 120, || {
        let s = owner.json(&["status", &id]);
        (s["rejected"] == 1).then_some(s)
    });
    let why = s["results"][0]["check"]["failed"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "metric did not reproduce: claimed {}, measured {}",
            quoted(own, measured_old),
            quoted(measured_old, own)
        )),
        "{why}"
    );

    // Then submitted without a value: the daemon claims what the owner will measure.
    let o = member.btd(&["submit", &id, "--checkpoint", ckpt]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let said = stdout(&o);
    // What it claims is printed in full, and is what training measured, bit for bit.
    let claimed = number_after(&said, "scored:     val_bpb ");
    assert_eq!(claimed.to_bits(), trained_value.to_bits(), "{said}");
    assert!(said.contains("pending"), "{said}");

    let s = wait_until("the owner's check of the program-path claim", 120, || {
        let s = owner.json(&["status", &id]);
        (s["verified"] == 1).then_some(s)
    });
    assert_eq!(s["rejected"], 1, "{s}");
    assert_eq!(s["champion"]["check"], "verified", "{s}");
    assert_eq!(
        s["champion"]["value"].as_f64().unwrap().to_bits(),
        trained_value.to_bits(),
        "{s}"
    );

    // Another seed may differ from the program's; a control client that sends no value gets the
    // checkpoint scored the owner's way and that value recorded.
    let again = member.json(&["train", "--program", &id, "--seed", "4", "--out", out_s]);
    assert_eq!(again["report"]["spec"]["seed"], 4);
    let ckpt = again["checkpoint"].as_str().unwrap();
    let scored = control(
        &member,
        serde_json::json!({"cmd": "score", "program": id, "checkpoint": ckpt}),
    )
    .unwrap();
    assert_eq!(scored["eval_tokens"], 2048);
    let receipt = control(
        &member,
        serde_json::json!({
            "cmd": "submit", "program": id, "rung_id": "cpu", "outputs": [], "checkpoint": ckpt
        }),
    )
    .unwrap();
    let seq = receipt["seq"].as_u64().unwrap();
    let s = owner.json(&["status", &id]);
    let entry = s["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["seq"] == seq)
        .unwrap();
    assert_eq!(
        entry["value"].as_f64().unwrap().to_bits(),
        scored["value"].as_f64().unwrap().to_bits(),
        "{s}"
    );
}

#[test]
fn a_shell_program_is_not_trained_by_hand() {
    let owner = Daemon::start(&[]);
    let member = Daemon::start(&["--bootstrap", &owner.addr()]);
    let manifest = owner.home.parent().unwrap().join("shell.toml");
    std::fs::write(
        &manifest,
        r#"name = "shell-task"
objective = "a shell program"
required_outputs = ["output.log"]
[criteria]
metric = "score"
direction = "minimize"
accept = "beats-champion"
[reward]
pool = 100
token = "OBOL"
split = "by-impact"
[task]
kind = "shell"
command = "true"
timeout_secs = 10
[[rungs]]
id = "cpu"
spend_class = "local_unmetered"
hardware = "cpu"
"#,
    )
    .unwrap();
    let id = btd_tests::publish_known(&owner, &member, &manifest);
    let o = member.btd(&["train", "--program", &id]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!("program {id} runs a shell task"))
            && stderr(&o).contains("--allow-shell"),
        "{}",
        stderr(&o)
    );
    // A control client must send a value or a checkpoint.
    let e = control(
        &member,
        serde_json::json!({"cmd": "submit", "program": id, "rung_id": "cpu", "outputs": []}),
    )
    .unwrap_err();
    assert!(e.contains("give the value, or a checkpoint"), "{e}");
    // Nor scored by hand: a submission without a value says why.
    let ckpt = owner.home.parent().unwrap().join("none.safetensors");
    std::fs::write(&ckpt, b"not a checkpoint").unwrap();
    let o = member.btd(&["submit", &id, "--checkpoint", ckpt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("runs a shell task") && stderr(&o).contains("--value"),
        "{}",
        stderr(&o)
    );
    // With a value, it is sent unchecked (here refused: this node is no member), with a note.
    let o = member.btd(&[
        "submit",
        &id,
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--value",
        "1.5",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("note: --value was not checked against the owner's scoring")
            && stderr(&o).contains("runs a shell task"),
        "{}",
        stderr(&o)
    );
}
