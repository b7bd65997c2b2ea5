//! SQLite behind one actor thread.
//!
//! One thread owns the connection; the rest of the daemon sends jobs on a bounded channel and awaits
//! a oneshot reply. Writes that are queued together are committed in one transaction (group
//! commit), and a write's reply is sent only after its transaction committed with
//! `synchronous = FULL` in WAL mode: an acknowledged write survives a crash or `kill -9`.

mod kb;
mod ordered;
mod outbox;
mod schema;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use rusqlite::{Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

pub use btd_protocol::owner::kb_history;
pub use kb::{load_chain, load_code, load_results, load_submissions, restore_owner};
pub use outbox::{
    finish_outbox, load_refused, outbox_outcome, put_outbox, OutboxOutcome, OutboxRow, RefusedRow,
};
pub use schema::{
    count_programs, delete_programs, load as load_snapshot, load_runs, next_round, prune_programs,
    put_join_code, put_member, put_membership, put_program, put_records, put_run, put_submission,
    put_verdict, MembershipRow, ProgramRow, Snapshot, SubmissionRow, VerdictRow,
};

/// Jobs waiting for the store thread. A full queue makes callers wait (backpressure), it never
/// grows without bound.
const QUEUE: usize = 1024;
/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// A store failure, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store thread is gone (the daemon is shutting down).
    #[error("the database is closed (the daemon is shutting down)")]
    Closed,
    /// Too many writes are waiting for the database; retry later.
    #[error("the database is busy: too many writes are waiting; retry later")]
    Busy,
    /// Stored data is not what this btd version expects.
    #[error("database content is invalid: {0}")]
    Corrupt(String),
}

type WriteFn = Box<dyn FnOnce(&Transaction<'_>) -> Result<(), StoreError> + Send>;
type ReadFn = Box<dyn FnOnce(&Connection) + Send>;

enum Job {
    Write(WriteFn, oneshot::Sender<Result<(), StoreError>>),
    Read(ReadFn),
}

/// Handle to the store thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
    /// Where the store thread records each batch's commit latency, once a node attaches it.
    commits: Arc<Mutex<Option<Histogram>>>,
    /// Ordered writes waiting for room on `tx` (`ordered.rs`).
    overflow: Arc<ordered::Overflow>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (and migrates) the database at `path` and starts its thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        schema::prepare(&conn)?;
        Ok(Self::spawn(conn))
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory()?;
        schema::prepare(&conn)?;
        Ok(Self::spawn(conn))
    }

    fn spawn(conn: Connection) -> Store {
        let (tx, rx) = mpsc::channel(QUEUE);
        let commits = Arc::new(Mutex::new(None));
        let observed = commits.clone();
        std::thread::Builder::new()
            .name("btd-store".into())
            .spawn(move || run(conn, rx, &observed))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the store thread"));
        Store {
            tx,
            commits,
            overflow: Arc::default(),
        }
    }

    /// Records each batch's commit latency (seconds) in `histogram` from now on, instead of where
    /// it went before (`crate::metrics`, `btd_store_commit_seconds`; a node attaches its own when
    /// it starts on this store).
    pub fn record_commits(&self, histogram: Histogram) {
        *self.commits.lock().unwrap_or_else(|p| p.into_inner()) = Some(histogram);
    }

    /// Runs `f` in a transaction; resolves once it is durably committed.
    pub async fn write(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Write(Box::new(f), reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` in a transaction after every write queued before it with this method: queued at
    /// once, not when the future is first polled (see `ordered.rs`). Resolves once it is durably
    /// committed.
    pub fn write_in_order(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<(), StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        self.overflow.write(&self.tx, Box::new(f))
    }

    /// Runs a read and returns its result.
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Read(Box::new(move |c| {
                let _ = reply.send(f(c));
            })))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Resolves once every write queued before it is durable.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        self.write(|_| Ok(())).await
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>, commits: &Mutex<Option<Histogram>>) {
    while let Some(job) = rx.blocking_recv() {
        match job {
            Job::Read(f) => f(&conn),
            Job::Write(f, reply) => {
                let mut batch = vec![(f, reply)];
                let mut deferred_read = None;
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Job::Write(f, r)) => batch.push((f, r)),
                        Ok(Job::Read(f)) => {
                            // Reads must see the batch: run them after the commit.
                            deferred_read = Some(f);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let started = Instant::now();
                commit_batch(&mut conn, batch);
                let took = started.elapsed().as_secs_f64();
                if let Some(h) = &*commits.lock().unwrap_or_else(|p| p.into_inner()) {
                    h.observe(took);
                }
                if let Some(f) = deferred_read {
                    f(&conn);
                }
            }
        }
    }
}

/// Commits a batch in one transaction. A job that fails is rolled back alone (savepoint) and gets
/// its error; the others commit. If the commit itself fails, every job gets the error.
fn commit_batch(
    conn: &mut Connection,
    batch: Vec<(WriteFn, oneshot::Sender<Result<(), StoreError>>)>,
) {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::Corrupt(format!(
                    "cannot begin a transaction: {msg}"
                ))));
            }
            return;
        }
    };
    let mut results = Vec::with_capacity(batch.len());
    for (f, reply) in batch {
        let outcome = (|| -> Result<(), StoreError> {
            tx.execute_batch("SAVEPOINT job")?;
            match f(&tx) {
                Ok(()) => {
                    tx.execute_batch("RELEASE job")?;
                    Ok(())
                }
                Err(e) => {
                    tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
                    Err(e)
                }
            }
        })();
        results.push((outcome, reply));
    }
    match tx.commit() {
        Ok(()) => {
            for (outcome, reply) in results {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, "database commit failed");
            for (_, reply) in results {
                let _ = reply.send(Err(StoreError::Corrupt(format!("commit failed: {msg}"))));
            }
        }
    }
}

#[cfg(test)]
mod tests;
