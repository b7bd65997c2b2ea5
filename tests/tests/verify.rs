//! Verified results over real `btd` processes: a worker fetches the program's dataset from the
//! owner by digest (it has no copy), its claims go pending -> verified, and a doctored claim with a
//! real checkpoint is rejected with the numbers and never counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use btd_tests::{sha256_hex, stderr, stdout, wait_until, word_text as text, Daemon};

#[test]
fn dataset_by_digest_claims_verified_and_a_doctored_claim_rejected() {
    let owner = Daemon::start(&[]);
    let worker = Daemon::start(&["--bootstrap", &owner.addr()]);
    let dir = owner.home.parent().unwrap().to_path_buf();
    let data = dir.join("corpus.txt");
    let holdout = dir.join("holdout.txt");
    std::fs::write(&data, text(1, 48 * 1024)).unwrap();
    std::fs::write(&holdout, text(2, 16 * 1024)).unwrap();
    let manifest = dir.join("verified.toml");
    std::fs::write(
        &manifest,
        btd_tests::candle_file_manifest(
            "verified-e2e",
            "lowest val_bpb on the owner's corpus",
            &sha256_hex(&data),
            "",
        ),
    )
    .unwrap();
    // Without the file the owner cannot serve or check: publishing says so.
    let o = owner.btd(&["publish", manifest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--data"), "{}", stderr(&o));
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
    btd_tests::wait_known(&worker, &id);

    // The worker has no copy of the corpus: it fetches it from the owner by digest.
    let (status, out) = btd_tests::join_approved(
        &owner,
        &worker,
        &id,
        &["--rounds", "2", "--verdict-wait", "120"],
    );
    assert!(status.success(), "join failed:\n{out}\n{}", worker.log());
    assert!(
        out.contains("fetched the dataset") && out.contains("49152 bytes"),
        "{out}"
    );
    assert!(out.contains("pending until the owner checks it"), "{out}");
    assert!(out.contains("verified by the owner: new champion"), "{out}");
    let fetched = worker.home.join("blobs").join(&id).join(sha256_hex(&data));
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&data).unwrap()
    );

    let s = owner.json(&["status", &id]);
    assert_eq!(s["pending"], 0, "{s}");
    assert!(s["verified"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["champion"]["check"], "verified", "{s}");
    let honest = s["champion"]["value"].as_f64().unwrap();

    // A doctored claim: a real checkpoint with a value it does not reach.
    let runs = worker.json(&["runs", &id]);
    let ckpt =
        std::path::PathBuf::from(runs[0]["dir"].as_str().unwrap()).join("checkpoint.safetensors");
    let o = worker.btd(&[
        "submit",
        &id,
        "--value",
        "0.5",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("pending"), "{}", stdout(&o));
    // A bare value is refused: this program checks every claim.
    let o = worker.btd(&["submit", &id, "--value", "0.5"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("--checkpoint"), "{}", stderr(&o));

    let s = wait_until("the owner's check of the doctored claim", 120, || {
        let s = owner.json(&["status", &id]);
        (s["rejected"] == 1).then_some(s)
    });
    let failed = s["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["check"].get("failed").is_some())
        .unwrap()
        .clone();
    let why = failed["check"]["failed"].as_str().unwrap();
    assert!(
        why.contains("metric did not reproduce: claimed 0.500000"),
        "{why}"
    );
    assert_eq!(failed["accepted"], false);
    assert_eq!(s["champion"]["value"].as_f64().unwrap(), honest, "{s}");
    // The owner's human view says so too.
    let o = owner.btd(&["status", &id]);
    assert!(
        stdout(&o).contains("1 rejected by the owner's check"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("rejected: metric did not reproduce"),
        "{}",
        stdout(&o)
    );
}
