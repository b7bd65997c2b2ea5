//! Tables, migrations and row types.

use btd_protocol::kb::Verdict;
use btd_protocol::membership::{Credential, MemberId, MemberRecord, UndecidedCode};
use btd_protocol::program::ProgramId;
use btd_protocol::seal::SealPublicKey;
use btd_protocol::{Digest, Timestamp};
use rusqlite::{params, Connection, Transaction};

use super::StoreError;

/// The schema version this build writes. Older databases are migrated forward in [`prepare`].
const SCHEMA_VERSION: i64 = 7;

const SCHEMA_V1: &str = "
CREATE TABLE programs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    announcement BLOB NOT NULL,
    published_at INTEGER NOT NULL,
    own INTEGER NOT NULL
);
CREATE TABLE members (
    program TEXT NOT NULL,
    member TEXT NOT NULL,
    credential_hash BLOB NOT NULL,
    joined_at INTEGER NOT NULL,
    revoked_at INTEGER,
    PRIMARY KEY (program, member)
);
CREATE TABLE submissions (
    program TEXT NOT NULL,
    seq INTEGER NOT NULL,
    worker TEXT NOT NULL,
    value REAL NOT NULL,
    accepted INTEGER NOT NULL,
    champion INTEGER NOT NULL,
    impact REAL NOT NULL,
    nonce BLOB NOT NULL,
    signed BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (program, seq),
    UNIQUE (program, worker, nonce)
);
CREATE TABLE memberships (
    program TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    credential BLOB NOT NULL,
    joined_at INTEGER NOT NULL
);
";

/// Version 2: the worker loop's runs (one JSON record per round, see `crate::work`).
const SCHEMA_V2: &str = "
CREATE TABLE runs (
    program TEXT NOT NULL,
    round INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (program, round)
);
";

/// Version 3: the owner's verdicts on pending claims, each with the number of submissions the KB
/// held when it was applied (so a restart replays submissions and verdicts in the order they
/// happened).
const SCHEMA_V3: &str = "
CREATE TABLE verdicts (
    program TEXT NOT NULL,
    seq INTEGER NOT NULL,
    after INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    decided_at INTEGER NOT NULL,
    PRIMARY KEY (program, seq)
);
";

/// Version 4: join requests of own programs still waiting for the owner's decision (so an owner
/// restart does not lose them); a row is deleted once its code is decided, expired or evicted.
const SCHEMA_V4: &str = "
CREATE TABLE join_codes (
    program TEXT NOT NULL,
    device_code TEXT NOT NULL,
    user_code TEXT NOT NULL,
    peer TEXT NOT NULL,
    seal_key BLOB NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (program, device_code)
);
";

/// Version 5: the code hypothesis a submission came with (programs with a source bundle or re-run
/// verification); NULL for the others and for every row written before.
const SCHEMA_V5: &str = "
ALTER TABLE submissions ADD COLUMN code BLOB;
";

/// Version 6: the member's outbox (`crate::node::outbox`): each signed submission, as sent, until
/// the owner answered it; answered rows keep the receipt or the refusal (the newest
/// [`super::outbox::MAX_DONE_ROWS`]) so a worker round queued in it can learn its outcome.
const SCHEMA_V6: &str = "
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    program TEXT NOT NULL,
    owner TEXT NOT NULL,
    nonce BLOB NOT NULL,
    value REAL NOT NULL,
    rung TEXT NOT NULL,
    request BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    done_at INTEGER,
    receipt TEXT,
    refused TEXT
);
CREATE INDEX outbox_done ON outbox (done_at);
";

/// Version 7: the KB log without its UNIQUE (program, worker, nonce) index. Retries are told apart
/// by the owner core's nonce index before any record is made (restored from these rows), so the
/// index never refused a row; it cost one scattered B-tree page per stored result (nonces are
/// random). `cargo bench -p btd --bench store` (100,000 results, 16 a commit): 23.9 KiB written
/// and 37 µs of CPU per result with it, 2.9 KiB and 11 µs without. SQLite drops a table constraint
/// only by copying the table, once.
const SCHEMA_V7: &str = "
CREATE TABLE submissions_v7 (
    program TEXT NOT NULL,
    seq INTEGER NOT NULL,
    worker TEXT NOT NULL,
    value REAL NOT NULL,
    accepted INTEGER NOT NULL,
    champion INTEGER NOT NULL,
    impact REAL NOT NULL,
    nonce BLOB NOT NULL,
    signed BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    code BLOB,
    PRIMARY KEY (program, seq)
);
INSERT INTO submissions_v7 (program, seq, worker, value, accepted, champion, impact, nonce, signed,
    received_at, code)
SELECT program, seq, worker, value, accepted, champion, impact, nonce, signed, received_at, code
FROM submissions;
DROP TABLE submissions;
ALTER TABLE submissions_v7 RENAME TO submissions;
";

/// Opens the database in WAL mode with full fsync and migrates it.
pub(super) fn prepare(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Every statement with a fixed text runs through the cache ([`exec`], [`query_one`]): parsing
    // and planning it again on each write was a tenth of the owner's store thread under load.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the database was written by a newer btd (schema {version}, this build reads {SCHEMA_VERSION}); upgrade btd"
        )));
    }
    if version < 1 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V1} PRAGMA user_version = 1; COMMIT;"
        ))?;
    }
    if version < 2 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V2} PRAGMA user_version = 2; COMMIT;"
        ))?;
    }
    if version < 3 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V3} PRAGMA user_version = 3; COMMIT;"
        ))?;
    }
    if version < 4 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V4} PRAGMA user_version = 4; COMMIT;"
        ))?;
    }
    if version < 5 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V5} PRAGMA user_version = 5; COMMIT;"
        ))?;
    }
    if version < 6 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V6} PRAGMA user_version = 6; COMMIT;"
        ))?;
    }
    if version < 7 {
        if version >= 1 {
            tracing::info!("upgrading the store to schema 7: the KB log is copied once, without its nonce index (about 15 s for 650,000 results)");
        }
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V7} PRAGMA user_version = 7; COMMIT;"
        ))?;
        // The copy left the old table's pages free inside the file: give them back once. Not
        // fatal: VACUUM needs temporary space the size of the database, and new rows reuse the
        // free pages anyway.
        if let Err(e) = conn.execute_batch("VACUUM") {
            tracing::warn!(error = %e, "the store's old KB log pages stay free inside the file (VACUUM failed)");
        }
    }
    Ok(())
}

/// A program this node knows: its own or one announced on the mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramRow {
    /// The program id.
    pub id: ProgramId,
    /// The owner's peer id.
    pub owner: String,
    /// The encoded `Signed<ProgramAnnouncement>`.
    pub announcement: Vec<u8>,
    /// When it was published.
    pub published_at: Timestamp,
    /// Whether this node owns it.
    pub own: bool,
}

/// One KB entry as the owner stored it (the owner core's record).
pub use btd_protocol::owner::SubmissionRecord as SubmissionRow;
/// The owner's verdict on a pending claim (the owner core's record).
pub use btd_protocol::owner::VerdictRecord as VerdictRow;

/// This node's membership in someone else's program.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipRow {
    /// The program.
    pub program: ProgramId,
    /// The owner's peer id.
    pub owner: String,
    /// The secret credential.
    pub credential: Credential,
    /// When it was granted.
    pub joined_at: Timestamp,
}

/// Everything the daemon loads at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Known programs: every own and joined one, and the newest others up to
    /// [`btd_protocol::discovery::MAX_UNPINNED_PROGRAMS`] (in no particular order).
    pub programs: Vec<ProgramRow>,
    /// Members of own programs.
    pub members: Vec<(ProgramId, MemberRecord)>,
    /// Verdicts on claims of own programs, by program then the order they were applied in.
    pub verdicts: Vec<VerdictRow>,
    /// This node's memberships.
    pub memberships: Vec<MembershipRow>,
    /// Undecided join requests of own programs, with the requester's sealing key.
    pub join_codes: Vec<(ProgramId, UndecidedCode, SealPublicKey)>,
    /// The member's outbox: submissions not yet answered by their owner, oldest first.
    pub outbox: Vec<super::outbox::OutboxRow>,
    /// The highest outbox id ever used (answered rows included): new ids continue after it.
    pub outbox_last_id: u64,
}

impl Snapshot {
    /// The stored event log of the owned program `program` but its submissions (read one at a
    /// time by [`super::restore_owner`]): its members, verdicts and undecided join codes.
    pub fn records_of(&self, program: ProgramId) -> Vec<btd_protocol::owner::Record> {
        use btd_protocol::owner::Record;
        let members = self
            .members
            .iter()
            .filter(|(p, _)| *p == program)
            .map(|(p, m)| Record::Member {
                program: *p,
                record: m.clone(),
            });
        let verdicts = self
            .verdicts
            .iter()
            .filter(|v| v.program == program)
            .cloned()
            .map(Record::Verdict);
        let codes = self
            .join_codes
            .iter()
            .filter(|(p, _, _)| *p == program)
            .map(|(p, code, key)| Record::JoinCode {
                program: *p,
                code: code.clone(),
                seal_key: *key,
            });
        members.chain(verdicts).chain(codes).collect()
    }
}

/// How many prepared statements a connection keeps (more than the store's fixed statements).
const STATEMENT_CACHE: usize = 64;

/// Runs the fixed statement `sql` with `params` through the connection's statement cache.
pub(super) fn exec(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<usize, StoreError> {
    Ok(conn.prepare_cached(sql)?.execute(params)?)
}

/// Reads one row with the fixed statement `sql` through the connection's statement cache.
pub(super) fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, row)
}

pub(super) fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn ts(v: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(v).unwrap_or(0))
}

pub(super) fn program_id(s: &str) -> Result<ProgramId, StoreError> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("program id {s:?}: {e}")))
}

/// Inserts or replaces a known program.
pub fn put_program(tx: &Transaction<'_>, row: &ProgramRow) -> Result<(), StoreError> {
    exec(tx,
        "INSERT INTO programs (id, owner, announcement, published_at, own) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET announcement = excluded.announcement,
             published_at = excluded.published_at, own = MAX(own, excluded.own)",
        params![
            row.id.to_string(),
            row.owner,
            row.announcement,
            ms(row.published_at),
            row.own
        ],
    )?;
    Ok(())
}

/// Forgets known programs (the discovery table let them go). Own programs are never deleted here.
pub fn delete_programs(tx: &Transaction<'_>, ids: &[ProgramId]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached("DELETE FROM programs WHERE id = ?1 AND own = 0")?;
    for id in ids {
        stmt.execute(params![id.to_string()])?;
    }
    Ok(())
}

/// Known programs that are neither own nor joined: the ones the discovery table bounds. Loaded and
/// kept newest first, at most [`btd_protocol::discovery::MAX_UNPINNED_PROGRAMS`].
const UNPINNED_PROGRAMS: &str = "own = 0 AND id NOT IN (SELECT program FROM memberships)";

/// Deletes the known programs beyond the newest `keep` unpinned ones (a database written by an
/// older btd, or one the table has not pruned yet).
pub fn prune_programs(tx: &Transaction<'_>, keep: usize) -> Result<(), StoreError> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    exec(
        tx,
        &format!(
            "DELETE FROM programs WHERE {UNPINNED_PROGRAMS} AND id NOT IN
             (SELECT id FROM programs WHERE {UNPINNED_PROGRAMS}
              ORDER BY published_at DESC, id LIMIT ?1)"
        ),
        params![keep],
    )?;
    Ok(())
}

/// How many programs the store holds (tests check it stays bounded).
pub fn count_programs(conn: &Connection) -> Result<usize, StoreError> {
    let n: i64 = query_one(conn, "SELECT COUNT(*) FROM programs", [], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Inserts or updates a member of an own program.
pub fn put_member(
    tx: &Transaction<'_>,
    program: &ProgramId,
    m: &MemberRecord,
) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO members (program, member, credential_hash, joined_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (program, member) DO UPDATE SET credential_hash = excluded.credential_hash,
             joined_at = excluded.joined_at, revoked_at = excluded.revoked_at",
        params![
            program.to_string(),
            m.member.as_str(),
            m.credential_hash.as_bytes().as_slice(),
            ms(m.joined_at),
            m.revoked_at.map(ms)
        ],
    )?;
    Ok(())
}

/// Appends a KB entry. Its seq must directly follow the last stored one: after a failed write, later
/// in-flight entries fail too instead of leaving a gap.
pub fn put_submission(tx: &Transaction<'_>, row: &SubmissionRow) -> Result<(), StoreError> {
    let e = &row.entry;
    let last: i64 = query_one(
        tx,
        "SELECT COALESCE(MAX(seq), 0) FROM submissions WHERE program = ?1",
        params![row.program.to_string()],
        |r| r.get(0),
    )?;
    if u64::try_from(last).unwrap_or(0).saturating_add(1) != e.seq {
        return Err(StoreError::Corrupt(format!(
            "submission {} of {} does not follow the stored {last}",
            e.seq, row.program
        )));
    }
    exec(tx,
        "INSERT INTO submissions (program, seq, worker, value, accepted, champion, impact, nonce, signed, received_at, code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            row.program.to_string(),
            i64::try_from(e.seq).unwrap_or(i64::MAX),
            e.worker,
            e.value,
            e.accepted,
            e.champion,
            e.impact,
            row.nonce.as_slice(),
            row.signed,
            ms(row.received_at),
            row.code
        ],
    )?;
    Ok(())
}

/// Records the verdict on a pending claim.
pub fn put_verdict(tx: &Transaction<'_>, row: &VerdictRow) -> Result<(), StoreError> {
    let json = serde_json::to_string(&row.verdict)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a verdict: {e}")))?;
    exec(tx,
        "INSERT INTO verdicts (program, seq, after, verdict, decided_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            row.program.to_string(),
            i64::try_from(row.seq).unwrap_or(i64::MAX),
            i64::try_from(row.after).unwrap_or(i64::MAX),
            json,
            ms(row.decided_at)
        ],
    )?;
    Ok(())
}

/// Stores an undecided join request of an own program.
pub fn put_join_code(
    tx: &Transaction<'_>,
    program: &ProgramId,
    code: &UndecidedCode,
    seal_key: &SealPublicKey,
) -> Result<(), StoreError> {
    exec(tx,
        "INSERT INTO join_codes (program, device_code, user_code, peer, seal_key, issued_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (program, device_code) DO UPDATE SET user_code = excluded.user_code,
             peer = excluded.peer, seal_key = excluded.seal_key, issued_at = excluded.issued_at,
             expires_at = excluded.expires_at",
        params![
            program.to_string(),
            code.device_code.to_hex(),
            code.user_code.to_string(),
            code.peer,
            seal_key.0.as_slice(),
            ms(code.issued_at),
            ms(code.expires_at)
        ],
    )?;
    Ok(())
}

/// Stores what the owner core asked to persist, in order.
pub fn put_records(
    tx: &Transaction<'_>,
    records: &[btd_protocol::owner::Record],
) -> Result<(), StoreError> {
    use btd_protocol::owner::Record;
    for r in records {
        match r {
            Record::Member { program, record } => put_member(tx, program, record)?,
            Record::Submission(row) => put_submission(tx, row)?,
            Record::Verdict(row) => put_verdict(tx, row)?,
            Record::JoinCode {
                program,
                code,
                seal_key,
            } => put_join_code(tx, program, code, seal_key)?,
            Record::JoinCodeClosed {
                program,
                device_code,
            } => {
                exec(
                    tx,
                    "DELETE FROM join_codes WHERE program = ?1 AND device_code = ?2",
                    params![program.to_string(), device_code.to_hex()],
                )?;
            }
        }
    }
    Ok(())
}

/// Records this node's membership in a program.
pub fn put_membership(tx: &Transaction<'_>, row: &MembershipRow) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO memberships (program, owner, credential, joined_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (program) DO UPDATE SET owner = excluded.owner,
             credential = excluded.credential, joined_at = excluded.joined_at",
        params![
            row.program.to_string(),
            row.owner,
            row.credential.as_bytes().as_slice(),
            ms(row.joined_at)
        ],
    )?;
    Ok(())
}

/// Inserts or replaces one round of the worker loop (its record as JSON).
pub fn put_run(
    tx: &Transaction<'_>,
    program: &ProgramId,
    round: u64,
    started_at: Timestamp,
    record_json: &str,
) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO runs (program, round, started_at, record) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (program, round) DO UPDATE SET record = excluded.record",
        params![
            program.to_string(),
            i64::try_from(round).unwrap_or(i64::MAX),
            ms(started_at),
            record_json
        ],
    )?;
    Ok(())
}

/// The run records (JSON) of one program, or of all, in (program, round) order.
pub fn load_runs(
    conn: &Connection,
    program: Option<&ProgramId>,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT record FROM runs WHERE ?1 IS NULL OR program = ?1 ORDER BY program, round",
    )?;
    let rows = stmt.query_map(params![program.map(ToString::to_string)], |r| {
        r.get::<_, String>(0)
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The number the next round of `program` gets (rounds count from 1 across `btd join` calls).
pub fn next_round(conn: &Connection, program: &ProgramId) -> Result<u64, StoreError> {
    let last: i64 = query_one(
        conn,
        "SELECT COALESCE(MAX(round), 0) FROM runs WHERE program = ?1",
        params![program.to_string()],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(last).unwrap_or(0).saturating_add(1))
}

/// Loads everything.
pub fn load(conn: &Connection) -> Result<Snapshot, StoreError> {
    let mut snap = Snapshot::default();
    // Own and joined programs all; the others newest first, bounded: a flooded database costs no
    // more memory at start than the discovery table holds.
    let mut stmt = conn.prepare(&format!(
        "SELECT id, owner, announcement, published_at, own FROM programs WHERE NOT ({UNPINNED_PROGRAMS})
         UNION ALL
         SELECT * FROM (SELECT id, owner, announcement, published_at, own FROM programs
                        WHERE {UNPINNED_PROGRAMS} ORDER BY published_at DESC, id LIMIT ?1)"
    ))?;
    let limit = i64::try_from(btd_protocol::discovery::MAX_UNPINNED_PROGRAMS).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![limit], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, bool>(4)?,
        ))
    })?;
    for row in rows {
        let (id, owner, announcement, published_at, own) = row?;
        snap.programs.push(ProgramRow {
            id: program_id(&id)?,
            owner,
            announcement,
            published_at: ts(published_at),
            own,
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT program, member, credential_hash, joined_at, revoked_at FROM members ORDER BY joined_at",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })?;
    for row in rows {
        let (program, member, hash, joined_at, revoked_at) = row?;
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("credential hash of {member}")))?;
        let member: MemberId = member
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("member id {member:?}: {e}")))?;
        snap.members.push((
            program_id(&program)?,
            MemberRecord {
                member,
                credential_hash: Digest(hash),
                joined_at: ts(joined_at),
                revoked_at: revoked_at.map(ts),
            },
        ));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT program, seq, after, verdict, decided_at FROM verdicts ORDER BY program, after, seq",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (program, seq, after, verdict, decided_at) = row?;
        let verdict: Verdict = serde_json::from_str(&verdict)
            .map_err(|e| StoreError::Corrupt(format!("verdict on claim {seq}: {e}")))?;
        snap.verdicts.push(VerdictRow {
            program: program_id(&program)?,
            seq: u64::try_from(seq).unwrap_or(0),
            after: u64::try_from(after).unwrap_or(0),
            verdict,
            decided_at: ts(decided_at),
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT program, device_code, user_code, peer, seal_key, issued_at, expires_at
         FROM join_codes ORDER BY program, issued_at",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Vec<u8>>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, i64>(6)?,
        ))
    })?;
    for row in rows {
        let (program, device_code, user_code, peer, seal_key, issued_at, expires_at) = row?;
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("join code {device_code:?}: {what}"));
        let key: [u8; 32] = seal_key
            .try_into()
            .map_err(|_| corrupt("the sealing key is not 32 bytes"))?;
        snap.join_codes.push((
            program_id(&program)?,
            UndecidedCode {
                device_code: device_code
                    .parse()
                    .map_err(|e| corrupt(&format!("device code: {e}")))?,
                user_code: user_code
                    .parse()
                    .map_err(|e| corrupt(&format!("user code: {e}")))?,
                peer,
                issued_at: ts(issued_at),
                expires_at: ts(expires_at),
            },
            SealPublicKey(key),
        ));
    }
    let mut stmt =
        conn.prepare_cached("SELECT program, owner, credential, joined_at FROM memberships")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (program, owner, credential, joined_at) = row?;
        let credential: [u8; 32] = credential
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("credential for {program}")))?;
        snap.memberships.push(MembershipRow {
            program: program_id(&program)?,
            owner,
            credential: Credential::from_bytes(credential),
            joined_at: ts(joined_at),
        });
    }
    (snap.outbox, snap.outbox_last_id) = super::outbox::load_queued(conn)?;
    Ok(snap)
}
