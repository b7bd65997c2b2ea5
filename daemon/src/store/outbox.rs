//! The member's outbox table (`crate::node::outbox`): a signed submission is stored before
//! `btd submit` hears "queued", and stays until its owner answered it with a receipt or a
//! permanent refusal. Answered rows keep that answer (the newest [`MAX_DONE_ROWS`]).

use btd_protocol::program::ProgramId;
use btd_protocol::wire::SubmitReceipt;
use btd_protocol::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::schema::{exec, ms, program_id, query_one, ts};
use super::StoreError;

/// Answered rows kept (receipts and refusals), newest first; older ones are deleted.
pub(super) const MAX_DONE_ROWS: i64 = 1000;
/// The older answered rows are deleted once every this many answers (by id), so between two
/// prunes at most this many more are kept: finding the cut walks [`MAX_DONE_ROWS`] rows, which
/// done on every answer cost more than the answer itself (`cargo bench -p btd --bench mesh`).
pub(super) const PRUNE_EVERY: u64 = 64;
/// Refusals `btd outbox` shows, newest first.
pub(super) const MAX_REFUSED_SHOWN: u32 = 50;

/// One queued submission as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Its id on this node (increasing).
    pub id: u64,
    /// The program.
    pub program: ProgramId,
    /// The owner's peer id.
    pub owner: String,
    /// The submission's nonce (the owner counts a nonce once).
    pub nonce: [u8; 16],
    /// The metric value.
    pub value: f64,
    /// The rung.
    pub rung: String,
    /// The encoded `KbRequest` exactly as it is sent (signed submission, credential).
    pub request: Vec<u8>,
    /// When it was queued.
    pub created_at: Timestamp,
}

/// How the owner answered a queued submission.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxOutcome {
    /// Not answered yet: still in the outbox.
    Queued,
    /// Recorded: the owner's receipt.
    Delivered(SubmitReceipt),
    /// Refused for good: the owner's words.
    Refused(String),
}

/// A refused row, for `btd outbox`.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedRow {
    /// The row.
    pub row: OutboxRow,
    /// The owner's words.
    pub reason: String,
    /// When the refusal came.
    pub refused_at: Timestamp,
}

/// Stores a new queued submission.
pub fn put_outbox(tx: &Transaction<'_>, row: &OutboxRow) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO outbox (id, program, owner, nonce, value, rung, request, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            i64::try_from(row.id).unwrap_or(i64::MAX),
            row.program.to_string(),
            row.owner,
            row.nonce.as_slice(),
            row.value,
            row.rung,
            row.request,
            ms(row.created_at)
        ],
    )?;
    Ok(())
}

/// Records the owner's answer to a queued submission (it leaves the queue) and, every
/// [`PRUNE_EVERY`] ids, deletes the answered rows beyond the newest [`MAX_DONE_ROWS`].
pub fn finish_outbox(
    tx: &Transaction<'_>,
    id: u64,
    at: Timestamp,
    outcome: &OutboxOutcome,
) -> Result<(), StoreError> {
    let (receipt, refused) = match outcome {
        OutboxOutcome::Queued => return Ok(()),
        OutboxOutcome::Delivered(r) => (
            Some(
                serde_json::to_string(r)
                    .map_err(|e| StoreError::Corrupt(format!("cannot encode a receipt: {e}")))?,
            ),
            None,
        ),
        OutboxOutcome::Refused(why) => (None, Some(why.as_str())),
    };
    exec(
        tx,
        "UPDATE outbox SET done_at = ?2, receipt = ?3, refused = ?4 WHERE id = ?1",
        params![
            i64::try_from(id).unwrap_or(i64::MAX),
            ms(at),
            receipt,
            refused
        ],
    )?;
    if id.is_multiple_of(PRUNE_EVERY) {
        // The id of the oldest answered row to keep; every answered row before it goes.
        let cut: Option<i64> = tx
            .query_row(
                "SELECT id FROM outbox WHERE done_at IS NOT NULL ORDER BY id DESC LIMIT 1 OFFSET ?1",
                params![MAX_DONE_ROWS - 1],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(cut) = cut {
            exec(
                tx,
                "DELETE FROM outbox WHERE id < ?1 AND done_at IS NOT NULL",
                params![cut],
            )?;
        }
    }
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

type RawRow = (i64, String, String, Vec<u8>, f64, String, Vec<u8>, i64);

fn parse(raw: RawRow) -> Result<OutboxRow, StoreError> {
    let (id, program, owner, nonce, value, rung, request, created_at) = raw;
    let nonce: [u8; 16] = nonce
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("nonce of outbox entry {id}")))?;
    Ok(OutboxRow {
        id: u64::try_from(id).unwrap_or(0),
        program: program_id(&program)?,
        owner,
        nonce,
        value,
        rung,
        request,
        created_at: ts(created_at),
    })
}

const COLUMNS: &str = "id, program, owner, nonce, value, rung, request, created_at";

/// The queued rows, oldest first, and the highest id ever used.
pub(super) fn load_queued(conn: &Connection) -> Result<(Vec<OutboxRow>, u64), StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE done_at IS NULL ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([], row)?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(parse)
        .collect::<Result<Vec<_>, _>>()?;
    let last: i64 = query_one(conn, "SELECT COALESCE(MAX(id), 0) FROM outbox", [], |r| {
        r.get(0)
    })?;
    Ok((rows, u64::try_from(last).unwrap_or(0)))
}

/// The newest refusals (of `program`, or of all), newest first, at most [`MAX_REFUSED_SHOWN`].
pub fn load_refused(
    conn: &Connection,
    program: Option<&ProgramId>,
) -> Result<Vec<RefusedRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS}, refused, done_at FROM outbox
         WHERE refused IS NOT NULL AND (?1 IS NULL OR program = ?1) ORDER BY id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(
        params![program.map(ToString::to_string), MAX_REFUSED_SHOWN],
        |r| Ok((row(r)?, r.get::<_, String>(8)?, r.get::<_, i64>(9)?)),
    )?;
    let mut out = Vec::new();
    for r in rows {
        let (raw, reason, at) = r?;
        out.push(RefusedRow {
            row: parse(raw)?,
            reason,
            refused_at: ts(at),
        });
    }
    Ok(out)
}

/// What became of outbox entry `id` (`None`: no such entry, or answered so long ago that it was
/// deleted).
pub fn outbox_outcome(conn: &Connection, id: u64) -> Result<Option<OutboxOutcome>, StoreError> {
    let found = conn
        .query_row(
            "SELECT done_at, receipt, refused FROM outbox WHERE id = ?1",
            params![i64::try_from(id).unwrap_or(i64::MAX)],
            |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            },
        )
        .optional()?;
    Ok(match found {
        None => None,
        Some((None, _, _)) => Some(OutboxOutcome::Queued),
        Some((Some(_), Some(receipt), _)) => Some(OutboxOutcome::Delivered(
            serde_json::from_str(&receipt)
                .map_err(|e| StoreError::Corrupt(format!("receipt of outbox entry {id}: {e}")))?,
        )),
        Some((Some(_), None, refused)) => Some(OutboxOutcome::Refused(
            refused.unwrap_or_else(|| "refused by the owner".into()),
        )),
    })
}
