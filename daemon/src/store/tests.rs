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
        code: None,
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
    let program = row(1).program;
    let rows = store
        .read(move |c| load_submissions(c, program))
        .await
        .unwrap();
    let seqs: Vec<u64> = rows.iter().map(|r| r.entry.seq).collect();
    assert_eq!(seqs, (1..=51).collect::<Vec<_>>());
    assert_eq!(rows[6], row(7));
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

/// Join codes waiting for the owner survive a reopen, a closed one is deleted, and a home written
/// before the table existed (schema 3) opens and gains it.
#[tokio::test]
async fn undecided_join_codes_survive_a_reopen_and_an_old_home_gains_the_table() {
    use btd_protocol::membership::{DeviceCode, UndecidedCode, UserCode};
    use btd_protocol::owner::Record;
    use btd_protocol::seal::SealPublicKey;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        // A schema-3 home: the tables of versions 1 to 3 and nothing else.
        let conn = rusqlite::Connection::open(&path).unwrap();
        schema::prepare(&conn).unwrap();
        conn.execute_batch(
            "ALTER TABLE submissions DROP COLUMN code; DROP TABLE join_codes; \
             DROP TABLE outbox; PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    let program = ProgramId(Digest([1; 32]));
    let code = |n: u8| UndecidedCode {
        device_code: DeviceCode([n; 32]),
        user_code: UserCode::parse(&format!("ABCD-EFG{}", (b'A' + n) as char)).unwrap(),
        peer: libp2p::PeerId::random().to_base58(),
        issued_at: Timestamp(1000),
        expires_at: Timestamp(901_000),
    };
    let (kept, closed) = (code(1), code(2));
    {
        let store = Store::open(&path).unwrap();
        let records = vec![
            Record::JoinCode {
                program,
                code: kept.clone(),
                seal_key: SealPublicKey([7; 32]),
            },
            Record::JoinCode {
                program,
                code: closed.clone(),
                seal_key: SealPublicKey([8; 32]),
            },
            Record::JoinCodeClosed {
                program,
                device_code: closed.device_code,
            },
        ];
        store
            .write(move |tx| put_records(tx, &records))
            .await
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let snap = store.read(load).await.unwrap();
    assert_eq!(
        snap.join_codes,
        vec![(program, kept, SealPublicKey([7; 32]))]
    );
}

/// A home written before submissions carried code (schema 4) opens: its rows read back without
/// code, and a new row keeps its code.
#[tokio::test]
async fn a_schema_4_home_gains_the_code_column_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        schema::prepare(&conn).unwrap();
        conn.execute_batch(
            "ALTER TABLE submissions DROP COLUMN code; DROP TABLE outbox; \
             PRAGMA user_version = 4;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO submissions (program, seq, worker, value, accepted, champion, impact, \
             nonce, signed, received_at) VALUES (?1, 1, 'w', 1.0, 1, 1, 0.1, ?2, x'010203', 1)",
            rusqlite::params![ProgramId(Digest([1; 32])).to_string(), [1u8; 16].as_slice()],
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let mut second = row(2);
    second.code = Some(vec![9, 9]);
    store
        .write(move |tx| put_submission(tx, &second))
        .await
        .unwrap();
    let program = row(1).program;
    let rows = store
        .read(move |c| load_submissions(c, program))
        .await
        .unwrap();
    let codes: Vec<_> = rows.iter().map(|r| r.code.clone()).collect();
    assert_eq!(codes, vec![None, Some(vec![9, 9])]);
}

/// A schema-6 home's KB log loses its (program, worker, nonce) index and keeps every row as it
/// was, codes included.
#[tokio::test]
async fn a_schema_6_home_keeps_its_log_without_the_nonce_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let mut rows = vec![row(1), row(2), row(3)];
    rows[1].code = Some(vec![7; 40]);
    rows[2].entry.worker = "other".into();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        schema::prepare(&conn).unwrap();
        // The log as schema 6 made it.
        conn.execute_batch(
            "DROP TABLE submissions;
             CREATE TABLE submissions (program TEXT NOT NULL, seq INTEGER NOT NULL,
                 worker TEXT NOT NULL, value REAL NOT NULL, accepted INTEGER NOT NULL,
                 champion INTEGER NOT NULL, impact REAL NOT NULL, nonce BLOB NOT NULL,
                 signed BLOB NOT NULL, received_at INTEGER NOT NULL, code BLOB,
                 PRIMARY KEY (program, seq), UNIQUE (program, worker, nonce));
             PRAGMA user_version = 6;",
        )
        .unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for r in &rows {
            put_submission(&tx, r).unwrap();
        }
        tx.commit().unwrap();
        let indexes: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_index_list('submissions')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            indexes, 2,
            "the schema-6 log has its key and the nonce index"
        );
    }
    let store = Store::open(&path).unwrap();
    let program = row(1).program;
    let back = store
        .read(move |c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM pragma_index_list('submissions')",
                [],
                |r| r.get(0),
            )?;
            let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
            let free: i64 = c.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
            Ok((n, v, free, load_submissions(c, program)?))
        })
        .await
        .unwrap();
    assert_eq!(
        (back.0, back.1),
        (1, 7),
        "only the (program, seq) key is left"
    );
    assert_eq!(
        back.2, 0,
        "the old table's pages went back to the file system"
    );
    assert_eq!(back.3, rows);
}

#[tokio::test]
async fn known_programs_load_bounded_and_prune_keeps_own_joined_and_the_newest() {
    use btd_protocol::discovery::MAX_UNPINNED_PROGRAMS;
    let store = Store::open_in_memory().unwrap();
    let id = |n: u64| {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_be_bytes());
        ProgramId(Digest(b))
    };
    let extra = 50u64;
    let total = MAX_UNPINNED_PROGRAMS as u64 + extra;
    store
        .write(move |tx| {
            for n in 0..total {
                put_program(
                    tx,
                    &ProgramRow {
                        id: id(n),
                        owner: "o".into(),
                        announcement: vec![0],
                        published_at: Timestamp(n + 10),
                        // The oldest row is own, the second oldest joined.
                        own: n == 0,
                    },
                )?;
            }
            put_membership(
                tx,
                &MembershipRow {
                    program: id(1),
                    owner: "o".into(),
                    credential: btd_protocol::membership::Credential::from_bytes([3; 32]),
                    joined_at: Timestamp(1),
                },
            )
        })
        .await
        .unwrap();
    // Load: own and joined rows, and the newest MAX_UNPINNED_PROGRAMS others.
    let snap = store.read(load).await.unwrap();
    assert_eq!(snap.programs.len(), MAX_UNPINNED_PROGRAMS + 2);
    let loaded: std::collections::HashSet<ProgramId> = snap.programs.iter().map(|r| r.id).collect();
    assert!(loaded.contains(&id(0)) && loaded.contains(&id(1)));
    assert!(loaded.contains(&id(total - 1)) && !loaded.contains(&id(2)));
    // Prune deletes exactly the rest; deleting programs never touches own ones.
    store
        .write(move |tx| {
            prune_programs(tx, MAX_UNPINNED_PROGRAMS)?;
            delete_programs(tx, &[id(0), id(total - 1)])
        })
        .await
        .unwrap();
    let left = store.read(count_programs).await.unwrap();
    assert_eq!(left, MAX_UNPINNED_PROGRAMS + 1);
}

fn outbox_row(id: u64) -> OutboxRow {
    OutboxRow {
        id,
        program: ProgramId(Digest([1; 32])),
        owner: "o".into(),
        nonce: [id as u8; 16],
        value: id as f64,
        rung: "cpu".into(),
        request: vec![id as u8; 3],
        created_at: Timestamp(id),
    }
}

/// A schema-5 home gains the outbox; queued rows load oldest first, answered ones keep the answer
/// (bounded), and new ids continue after every id ever used.
#[tokio::test]
async fn the_outbox_keeps_queued_rows_and_a_bounded_record_of_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        schema::prepare(&conn).unwrap();
        conn.execute_batch("DROP TABLE outbox; PRAGMA user_version = 5;")
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let receipt = btd_protocol::wire::SubmitReceipt {
        seq: 7,
        accepted: true,
        champion: false,
        impact: 0.5,
        check: Check::NotNeeded,
        duplicate: true,
    };
    let r = receipt.clone();
    store
        .write(move |tx| {
            for id in 1..=4 {
                put_outbox(tx, &outbox_row(id))?;
            }
            finish_outbox(tx, 1, Timestamp(9), &OutboxOutcome::Delivered(r))?;
            finish_outbox(
                tx,
                4,
                Timestamp(9),
                &OutboxOutcome::Refused("revoked".into()),
            )
        })
        .await
        .unwrap();
    let snap = store.read(load).await.unwrap();
    assert_eq!(snap.outbox, vec![outbox_row(2), outbox_row(3)]);
    assert_eq!(snap.outbox_last_id, 4);
    let outcome = |id| store.read(move |c| outbox_outcome(c, id));
    assert_eq!(
        outcome(1).await.unwrap(),
        Some(OutboxOutcome::Delivered(receipt))
    );
    assert_eq!(outcome(2).await.unwrap(), Some(OutboxOutcome::Queued));
    assert_eq!(
        outcome(4).await.unwrap(),
        Some(OutboxOutcome::Refused("revoked".into()))
    );
    assert_eq!(outcome(5).await.unwrap(), None);
    let refused = store.read(|c| load_refused(c, None)).await.unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].row.id, refused[0].reason.as_str()),
        (4, "revoked")
    );

    // Answered rows are bounded: the oldest answers go, queued rows stay.
    store
        .write(|tx| {
            for id in 10..(10 + outbox::MAX_DONE_ROWS as u64 + outbox::PRUNE_EVERY + 5) {
                put_outbox(tx, &outbox_row(id))?;
                finish_outbox(tx, id, Timestamp(id), &OutboxOutcome::Refused("no".into()))?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let total: i64 = store
        .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?))
        .await
        .unwrap();
    // The 2 queued rows stay; of the answered ones, the newest MAX_DONE_ROWS as of the last prune
    // and those answered since (fewer than PRUNE_EVERY).
    let answered = total - 2;
    assert!(
        (outbox::MAX_DONE_ROWS..outbox::MAX_DONE_ROWS + outbox::PRUNE_EVERY as i64)
            .contains(&answered),
        "{answered} answered rows kept"
    );
    assert_eq!(outcome(1).await.unwrap(), None);
    assert_eq!(store.read(load).await.unwrap().outbox.len(), 2);
}
