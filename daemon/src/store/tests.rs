use btd_protocol::kb::{Check, Entry, Verdict};
use btd_protocol::program::ProgramId;
use btd_protocol::{Digest, Timestamp};

use super::schema::{load, put_submission};
use super::*;

fn row(seq: u64) -> SubmissionRow {
    SubmissionRow {
        program: ProgramId(Digest([1; 32])),
        entry: Entry {
            seq,
            worker: "w".into(),
            value: 1.0 / seq as f64,
            accepted: true,
            champion: true,
            impact: 0.1,
            check: Check::NotNeeded,
        },
        nonce: [seq as u8; 16],
        signed: vec![1, 2, 3],
        received_at: Timestamp(seq),
    }
}

#[tokio::test]
async fn writes_are_durable_across_reopen_and_failed_jobs_roll_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let store = Store::open(&path).unwrap();
        // Queue 50 writes at once (they share transactions), in order.
        let waits: Vec<_> = (1..=50u64)
            .map(|seq| {
                let r = row(seq);
                store.write(move |tx| put_submission(tx, &r))
            })
            .collect();
        for w in futures::future::join_all(waits).await {
            w.unwrap();
        }
        // A duplicate or out-of-order seq fails alone; nothing else is lost.
        let dup = row(7);
        assert!(store
            .write(move |tx| put_submission(tx, &dup))
            .await
            .is_err());
        let gap = row(60);
        assert!(store
            .write(move |tx| put_submission(tx, &gap))
            .await
            .is_err());
        let ok = row(51);
        store
            .write(move |tx| put_submission(tx, &ok))
            .await
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let snap = store.read(load).await.unwrap();
    let seqs: Vec<u64> = snap.submissions.iter().map(|r| r.entry.seq).collect();
    assert_eq!(seqs, (1..=51).collect::<Vec<_>>());
    assert_eq!(snap.submissions[6], row(7));
}

#[tokio::test]
async fn verdicts_are_stored_in_the_order_they_were_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let program = ProgramId(Digest([1; 32]));
    {
        let store = Store::open(&path).unwrap();
        for (seq, after, verdict) in [
            (2, 5, Verdict::Failed("metric did not reproduce".into())),
            (1, 3, Verdict::Verified),
        ] {
            let r = VerdictRow {
                program,
                seq,
                after,
                verdict,
                decided_at: Timestamp(after),
            };
            store.write(move |tx| put_verdict(tx, &r)).await.unwrap();
        }
        // A second verdict on the same claim is refused.
        let again = VerdictRow {
            program,
            seq: 1,
            after: 9,
            verdict: Verdict::Verified,
            decided_at: Timestamp(9),
        };
        assert!(store
            .write(move |tx| put_verdict(tx, &again))
            .await
            .is_err());
    }
    let store = Store::open(&path).unwrap();
    let snap = store.read(load).await.unwrap();
    let got: Vec<(u64, u64, Verdict)> = snap
        .verdicts
        .iter()
        .map(|v| (v.seq, v.after, v.verdict.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (1, 3, Verdict::Verified),
            (2, 5, Verdict::Failed("metric did not reproduce".into()))
        ]
    );
}
