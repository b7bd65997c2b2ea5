//! The owner's KB on disk: restart streams the log through the owner core one row at a time, and
//! ledger pages, a result's code and a claim's patch chain are read from the stored submissions.
//! Only what the rules need stays in memory (`btd_protocol::owner`); nothing here keeps a row.

use std::collections::HashMap;

use btd_protocol::kb::{Check, Entry};
use btd_protocol::owner::{
    code_chain, OwnerRestoreError, ProgramOwner, Record, StoredResult, StoredSubmission,
};
use btd_protocol::program::ProgramId;
use btd_protocol::signed::Signed;
use btd_protocol::wire::{CodeHypothesis, ProgramAnnouncement, VerifiedProgram};
use rusqlite::{params, Connection, OptionalExtension};

use super::schema::{query_one, ts};
use super::{StoreError, SubmissionRow};

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Rebuilds the owned program `view` from the store: `records` are its members, verdicts and
/// join codes ([`super::Snapshot::records_of`]); its submissions are read in seq order and handed
/// to the owner core one at a time (no signature is checked again, none is kept but the
/// champion's and the pending claims').
pub fn restore_owner(
    conn: &Connection,
    view: &VerifiedProgram,
    signed: Signed<ProgramAnnouncement>,
    records: Vec<Record>,
) -> Result<ProgramOwner, StoreError> {
    let id = view.id;
    let program = id.to_string();
    let mut stmt = conn.prepare_cached(LOG_QUERY)?;
    // Counted first (in the same read, so no write comes between) so that the owner core sizes
    // its tables once.
    let count: i64 = query_one(
        conn,
        "SELECT COUNT(*) FROM submissions WHERE program = ?1",
        params![program],
        |r| r.get(0),
    )?;
    let mut rows = stmt.query(params![program])?;
    let corrupt = |seq: u64, detail: String| OwnerRestoreError::Submission {
        program: id,
        seq,
        detail,
    };
    let results = (0..u64::try_from(count).unwrap_or(0)).map(|i| match rows.next() {
        Ok(Some(row)) => submission_row(id, row)
            .and_then(|r| StoredSubmission::of(&r).map_err(|e| (r.entry.seq, e)))
            .map_err(|(seq, e)| corrupt(seq, e)),
        Ok(None) => Err(corrupt(i + 1, "missing (the log ended early)".into())),
        Err(e) => Err(corrupt(i + 1, e.to_string())),
    });
    let mut one =
        conn.prepare_cached("SELECT signed FROM submissions WHERE program = ?1 AND seq = ?2")?;
    ProgramOwner::restore_from(
        id,
        view.owner,
        view.program.clone(),
        signed,
        records,
        results,
        |seq| {
            one.query_row(params![program, seq_param(seq)], |r| r.get(0))
                .ok()
        },
    )
    .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A program's stored submissions in seq order, with the columns [`submission_row`] reads.
const LOG_QUERY: &str = "SELECT seq, worker, value, accepted, champion, impact, nonce, received_at,
    signed, code FROM submissions WHERE program = ?1 ORDER BY seq";

/// One row of [`LOG_QUERY`]; an error names the row's seq.
fn submission_row(
    program: ProgramId,
    r: &rusqlite::Row<'_>,
) -> Result<SubmissionRow, (u64, String)> {
    let seq = u64::try_from(r.get::<_, i64>(0).map_err(|e| (0, e.to_string()))?).unwrap_or(0);
    let get = |e: rusqlite::Error| (seq, e.to_string());
    let nonce: Vec<u8> = r.get(6).map_err(get)?;
    let nonce: [u8; 16] = nonce
        .try_into()
        .map_err(|_| (seq, "its nonce is not 16 bytes".to_string()))?;
    Ok(SubmissionRow {
        program,
        entry: Entry {
            seq,
            worker: r.get(1).map_err(get)?,
            value: r.get(2).map_err(get)?,
            accepted: r.get(3).map_err(get)?,
            champion: r.get(4).map_err(get)?,
            impact: r.get(5).map_err(get)?,
            // The check's state is rebuilt by replaying the verdicts.
            check: Check::NotNeeded,
        },
        nonce,
        received_at: ts(r.get(7).map_err(get)?),
        signed: r.get(8).map_err(get)?,
        code: r.get(9).map_err(get)?,
    })
}

/// The stored submissions and code of results `first..=last` of `program`, by seq (a row that
/// cannot be decoded is left out: the page shows its entry without hypothesis or code).
pub fn load_results(
    conn: &Connection,
    program: ProgramId,
    first: u64,
    last: u64,
) -> Result<HashMap<u64, StoredResult>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, signed, code FROM submissions WHERE program = ?1 AND seq BETWEEN ?2 AND ?3",
    )?;
    let rows = stmt.query_map(
        params![program.to_string(), seq_param(first), seq_param(last)],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
            ))
        },
    )?;
    let mut out = HashMap::new();
    for row in rows {
        let (seq, signed, code) = row?;
        match StoredResult::decode(&signed, code.as_deref()) {
            Ok(r) => {
                out.insert(u64::try_from(seq).unwrap_or(0), r);
            }
            Err(e) => {
                tracing::warn!(program = %program, seq, error = %e, "unreadable stored result")
            }
        }
    }
    Ok(out)
}

/// The code hypothesis stored with result `seq` of `program`.
pub fn load_code(
    conn: &Connection,
    program: ProgramId,
    seq: u64,
) -> Result<Option<CodeHypothesis>, StoreError> {
    let code: Option<Option<Vec<u8>>> = conn
        .query_row(
            "SELECT code FROM submissions WHERE program = ?1 AND seq = ?2",
            params![program.to_string(), seq_param(seq)],
            |r| r.get(0),
        )
        .optional()?;
    code.flatten()
        .map(|b| btd_protocol::wire::decode::<CodeHypothesis>(&b))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("the code of result {seq}: {e}")))
}

/// The patch chain of claim `seq` of `program` (see [`code_chain`]); `None` when a link is missing
/// or unreadable.
pub fn load_chain(
    conn: &Connection,
    program: ProgramId,
    seq: u64,
) -> Result<Option<Vec<CodeHypothesis>>, StoreError> {
    Ok(code_chain(seq, |s| {
        load_code(conn, program, s).ok().flatten()
    }))
}

/// Every stored submission of `program`, in seq order: the whole log in memory, for tests and
/// offline tools (the daemon reads pages).
pub fn load_submissions(
    conn: &Connection,
    program: ProgramId,
) -> Result<Vec<SubmissionRow>, StoreError> {
    let mut stmt = conn.prepare_cached(LOG_QUERY)?;
    let mut rows = stmt.query(params![program.to_string()])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(
            submission_row(program, r)
                .map_err(|(seq, e)| StoreError::Corrupt(format!("stored submission {seq}: {e}")))?,
        );
    }
    Ok(out)
}
