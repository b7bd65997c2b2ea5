//! The member's outbox: every submission to an owner goes through it. A result is signed (with a
//! fresh nonce), stored in SQLite (`store::put_outbox`) and only then acknowledged as queued; it is
//! sent to the owner paced below the owner's per-peer request budget (a token bucket per owner on
//! this side), and resent — the same signed request, so the same nonce — after a rate-limit
//! refusal, a timeout or while the owner is unreachable, with bounded exponential backoff. The owner
//! counts a nonce once (a resend gets the original receipt, `duplicate: true`). An entry leaves the
//! queue only with the owner's receipt or a permanent refusal (kept with the owner's words). Queued
//! entries survive a restart: they are loaded at start and sent again.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use btd_protocol::program::ProgramId;
use btd_protocol::signed::Signed;
use btd_protocol::trace::Output;
use btd_protocol::wire::{
    ErrorCode, KbCall, KbRequest, KbResponse, Submission, SubmitReceipt, CODE_OUTPUT,
    MAX_SUBMIT_BATCH,
};
use libp2p::PeerId;
use rand::{Rng, RngCore};
use tokio::sync::oneshot;

use super::dispatch::KbTag;
use super::handle::{Command, NodeError, NodeHandle, Reply};
use super::types::{NewResult, OutboxList, OutboxView, Submitted};
use super::Node;
use crate::store::{self, OutboxOutcome, OutboxRow};

/// First pause before a resend; it doubles with each failed send up to `OutboxParams::retry_max`.
const RETRY_BASE: Duration = Duration::from_millis(500);

/// The outbox's bounds and retry pace (part of [`crate::net::NetParams`]; tests shorten them).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxParams {
    /// Most queued submissions in all.
    pub max_total: usize,
    /// Most queued submissions per program.
    pub max_per_program: usize,
    /// Longest pause between two sends of one submission.
    pub retry_max: Duration,
    /// How long [`NodeHandle::submit`] and the worker loop wait for the owner's answer before they
    /// report the result as queued (the outbox keeps sending it).
    pub submit_wait: Duration,
    /// Most requests to one owner awaiting its answer at once (each one result, or a batch).
    pub requests_per_owner: usize,
    /// Most results in one request (1 to [`MAX_SUBMIT_BATCH`]; 1 sends each alone).
    pub max_batch: usize,
}

impl Default for OutboxParams {
    fn default() -> Self {
        Self {
            max_total: 10_000,
            max_per_program: 10_000,
            retry_max: Duration::from_secs(60),
            submit_wait: Duration::from_secs(30),
            requests_per_owner: 4,
            max_batch: MAX_SUBMIT_BATCH,
        }
    }
}

/// One queued submission.
struct Entry {
    program: ProgramId,
    owner: PeerId,
    nonce: [u8; 16],
    value: f64,
    rung: String,
    created_at: btd_protocol::Timestamp,
    request: KbRequest,
    /// Stored: only then is it sent.
    durable: bool,
    in_flight: bool,
    attempts: u32,
    last_error: Option<String>,
    next_at: Instant,
    /// The caller waiting for the owner's answer (`btd submit`, the worker loop), if any.
    waiter: Option<Reply<SubmitReceipt>>,
}

impl Entry {
    /// May go in a batch: a result without code, on its first send.
    fn batchable(&self) -> bool {
        self.attempts == 0 && matches!(self.request.call, KbCall::Submit(_))
    }
}

/// The queue on the node task.
pub(crate) struct Outbox {
    entries: BTreeMap<u64, Entry>,
    last_id: u64,
    params: OutboxParams,
    /// This side's pace per owner: half the owner's budget (burst, per second), assuming the
    /// owner runs btd's limits (this node's own).
    pace: super::budget::Budgets,
    /// An owner that answered "rate limited" is left alone until then.
    hold: HashMap<PeerId, Instant>,
    /// Requests in flight per owner.
    requests: HashMap<PeerId, usize>,
    /// Deliveries not recorded in the store yet ([`finish`]).
    answered: Vec<(u64, OutboxOutcome)>,
}

impl Outbox {
    /// An empty outbox pacing below an owner budget of `rate` (burst, per second).
    pub(crate) fn new(params: OutboxParams, rate: (f64, f64)) -> Self {
        Self {
            entries: BTreeMap::new(),
            last_id: 0,
            params,
            pace: super::budget::Budgets::new(((rate.0 / 2.0).max(1.0), (rate.1 / 2.0).max(0.1))),
            hold: HashMap::new(),
            requests: HashMap::new(),
            answered: Vec::new(),
        }
    }

    fn view(
        &self,
        id: u64,
        e: &Entry,
        now: Instant,
        clock_now: btd_protocol::Timestamp,
    ) -> OutboxView {
        OutboxView {
            id,
            nonce: hex::encode(e.nonce),
            program: e.program,
            value: e.value,
            rung: e.rung.clone(),
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            next_attempt_secs: (!e.in_flight).then(|| {
                let at = self
                    .hold
                    .get(&e.owner)
                    .map_or(e.next_at, |h| (*h).max(e.next_at));
                at.saturating_duration_since(now).as_secs()
            }),
            age_secs: clock_now.millis_since(e.created_at) / 1000,
            refused: None,
        }
    }
}

/// Loads the stored queue at start; each entry is sent again (same request, same nonce).
pub(super) fn restore(node: &mut Node, rows: Vec<OutboxRow>, last_id: u64) {
    node.outbox.last_id = last_id;
    let now = Instant::now();
    for row in rows {
        let parsed = btd_protocol::wire::decode::<KbRequest>(&row.request)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                let owner: PeerId = row.owner.parse().map_err(|e| format!("owner: {e}"))?;
                Ok((r, owner))
            });
        let (request, owner) = match parsed {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(id = row.id, error = %e, "dropping an unreadable outbox entry");
                let why = format!("unreadable in the database: {e}");
                finish(node, vec![(row.id, OutboxOutcome::Refused(why))]);
                continue;
            }
        };
        node.outbox.entries.insert(
            row.id,
            Entry {
                program: row.program,
                owner,
                nonce: row.nonce,
                value: row.value,
                rung: row.rung,
                created_at: row.created_at,
                request,
                durable: true,
                in_flight: false,
                attempts: 0,
                last_error: None,
                next_at: now,
                waiter: None,
            },
        );
    }
    if !node.outbox.entries.is_empty() {
        tracing::info!(
            queued = node.outbox.entries.len(),
            "outbox restored; sending again"
        );
    }
}

/// `btd submit` and the worker loop: sign a result, store it in the outbox, answer `queued` once it
/// is durable, send it; `delivered` gets the owner's receipt or refusal.
pub(super) fn submit(
    node: &mut Node,
    program: ProgramId,
    result: NewResult,
    queued: Reply<OutboxView>,
    delivered: Reply<SubmitReceipt>,
) {
    let Some(m) = node.memberships.get(&program).cloned() else {
        let msg = if node.owners.contains(&program) {
            "this node owns the program; submit from a member's daemon".to_string()
        } else {
            format!("membership required: join program {program} with `btd join` first")
        };
        let _ = queued.send(Err(NodeError::Refused(msg)));
        return;
    };
    let p = &node.outbox.params;
    let of_program = node
        .outbox
        .entries
        .values()
        .filter(|e| e.program == program)
        .count();
    if of_program >= p.max_per_program || node.outbox.entries.len() >= p.max_total {
        let (n, limit, whose) = if of_program >= p.max_per_program {
            (
                of_program,
                p.max_per_program,
                format!("for program {program}"),
            )
        } else {
            (node.outbox.entries.len(), p.max_total, "in all".to_string())
        };
        let _ = queued.send(Err(NodeError::Refused(format!(
            "the outbox is full: {n} submissions {whose} wait for their owner (limit {limit}); \
             `btd outbox` shows why they are not sent (owner offline or rate limiting); submit \
             again once they have gone"
        ))));
        return;
    }
    let mut nonce = [0u8; 16];
    node.rng.fill_bytes(&mut nonce);
    let mut outputs = result.outputs;
    let mut result_code = result.code;
    if let Some(code) = &mut result_code {
        // Normalised as every reader shows it, before the digest is signed.
        code.rationale = btd_protocol::wire::sanitize_rationale(&code.rationale);
        // The signature binds the code: its digest is one of the signed outputs.
        outputs.retain(|o| o.name != CODE_OUTPUT);
        outputs.push(Output {
            name: CODE_OUTPUT.into(),
            sha256: code.digest(),
        });
    }
    let created_at = node.clock.now();
    let sub = Submission {
        program,
        nonce,
        value: result.value,
        rung_id: result.rung_id.clone(),
        outputs,
        metrics: result.metrics,
        hypothesis: result.hypothesis,
        created_at,
        claim: result.claim,
    };
    if let Err(e) = sub.check(created_at) {
        let _ = queued.send(Err(NodeError::Refused(e.to_string())));
        return;
    }
    let signed = match Signed::sign(&node.key, &sub) {
        Ok(s) => s,
        Err(e) => {
            let _ = queued.send(Err(NodeError::Refused(format!(
                "cannot sign the submission: {e}"
            ))));
            return;
        }
    };
    let request = KbRequest {
        program,
        credential: m.credential,
        call: match result_code {
            Some(code) => KbCall::SubmitCode {
                submission: signed,
                code: Box::new(code),
            },
            None => KbCall::Submit(signed),
        },
    };
    let encoded = match btd_protocol::wire::encode(&request) {
        Ok(b) => b,
        Err(e) => {
            let _ = queued.send(Err(NodeError::Refused(format!(
                "the submission cannot be sent: {e}"
            ))));
            return;
        }
    };
    node.outbox.last_id += 1;
    let id = node.outbox.last_id;
    let row = OutboxRow {
        id,
        program,
        owner: m.owner.to_string(),
        nonce,
        value: result.value,
        rung: result.rung_id.clone(),
        request: encoded,
        created_at,
    };
    node.outbox.entries.insert(
        id,
        Entry {
            program,
            owner: m.owner,
            nonce,
            value: result.value,
            rung: result.rung_id,
            created_at,
            request,
            durable: false,
            in_flight: false,
            attempts: 0,
            last_error: None,
            next_at: Instant::now(),
            waiter: Some(delivered),
        },
    );
    let written = write_answers(node, Some(row));
    node.after(async move {
        let res = written.await;
        move |node: &mut Node| match res {
            Ok(()) => {
                let now = Instant::now();
                let clock_now = node.clock.now();
                let Some(e) = node.outbox.entries.get_mut(&id) else {
                    return;
                };
                e.durable = true;
                if let Some(e) = node.outbox.entries.get(&id) {
                    let _ = queued.send(Ok(node.outbox.view(id, e, now, clock_now)));
                }
                pump(node, now);
            }
            Err(e) => {
                node.outbox.entries.remove(&id);
                let _ = queued.send(Err(NodeError::Unavailable(format!(
                    "cannot store the submission in the outbox: {e}"
                ))));
            }
        }
    });
}

/// Sends what is due, within each owner's pace: at most `requests_per_owner` requests in flight
/// per owner. A result is sent alone when a request slot is free; results that queue up behind
/// busy slots go together, up to `max_batch` ([`MAX_SUBMIT_BATCH`]) of one program in one
/// [`KbCall::SubmitBatch`]. Resends and results with code always go alone (a resend to an owner
/// that cannot read batches then still gets through).
pub(super) fn pump(node: &mut Node, now: Instant) {
    node.outbox.hold.retain(|_, until| *until > now);
    let mut due: Vec<(PeerId, Vec<u64>)> = Vec::new();
    for (id, e) in &node.outbox.entries {
        if !e.durable || e.in_flight || e.next_at > now || node.outbox.hold.contains_key(&e.owner) {
            continue;
        }
        match due.iter_mut().find(|(o, _)| *o == e.owner) {
            Some((_, ids)) => ids.push(*id),
            None => due.push((e.owner, vec![*id])),
        }
    }
    let slots = node.outbox.params.requests_per_owner.max(1);
    let max_batch = node.outbox.params.max_batch.clamp(1, MAX_SUBMIT_BATCH);
    for (owner, ids) in due {
        let mut ids = ids.into_iter().peekable();
        while node.outbox.requests.get(&owner).copied().unwrap_or(0) < slots {
            let Some(first) = ids.next() else { break };
            if !node.outbox.pace.take(owner) {
                // Out of budget for this owner until the bucket refills.
                break;
            }
            let mut batch = vec![first];
            if node
                .outbox
                .entries
                .get(&first)
                .is_some_and(Entry::batchable)
            {
                let program = node.outbox.entries.get(&first).map(|e| e.program);
                while batch.len() < max_batch {
                    let next = ids.peek().and_then(|id| node.outbox.entries.get(id));
                    if !next.is_some_and(|e| e.batchable() && Some(e.program) == program) {
                        break;
                    }
                    if !node.outbox.pace.take(owner) {
                        break;
                    }
                    batch.extend(ids.next());
                }
            }
            send(node, owner, batch);
        }
    }
}

/// Sends outbox entries `ids` (one program, one owner, in `pump`'s order) in one request: an
/// entry's own request when alone, else their signed results as one batch.
fn send(node: &mut Node, owner: PeerId, ids: Vec<u64>) {
    let mut requests = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(e) = node.outbox.entries.get_mut(id) {
            e.in_flight = true;
            e.attempts = e.attempts.saturating_add(1);
            requests.push(e.request.clone());
        }
    }
    let Some(first) = requests.first() else {
        return;
    };
    let (program, credential) = (first.program, first.credential.clone());
    super::worker::learn_owner_addresses(node, &program);
    let request = match requests.len() {
        1 => requests.swap_remove(0),
        _ => KbRequest {
            program,
            credential,
            // `pump` batches only plain results (`Entry::batchable`).
            call: KbCall::SubmitBatch(
                requests
                    .into_iter()
                    .filter_map(|r| match r.call {
                        KbCall::Submit(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
            ),
        },
    };
    *node.outbox.requests.entry(owner).or_default() += 1;
    node.metrics.outbox_request(ids.len());
    node.net.request_kb(owner, request, KbTag::Submit(ids));
}

/// A connection to `peer` opened: submissions waiting for it (an owner back online) go now.
pub(super) fn on_connected(node: &mut Node, peer: PeerId) {
    let now = Instant::now();
    let mut woke = false;
    for e in node.outbox.entries.values_mut() {
        if e.owner == peer && !e.in_flight && e.next_at > now {
            e.next_at = now;
            woke = true;
        }
    }
    if woke {
        node.outbox.hold.remove(&peer);
        pump(node, now);
    }
}

/// The owner answered a send of entries `ids` (or the request failed): each is done, refused for
/// good, or sent again later.
pub(super) fn on_answer(
    node: &mut Node,
    owner: PeerId,
    ids: Vec<u64>,
    result: Result<KbResponse, String>,
) {
    if let Some(n) = node.outbox.requests.get_mut(&owner) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            node.outbox.requests.remove(&owner);
        }
    }
    let n = ids.len();
    let answers: Vec<(u64, Result<KbResponse, String>)> = match result {
        Ok(KbResponse::SubmittedBatch(list)) if list.len() == n && n > 1 => ids
            .into_iter()
            .zip(list)
            .map(|(id, o)| (id, Ok(o.into_reply())))
            .collect(),
        Ok(KbResponse::SubmittedBatch(_) | KbResponse::Submitted(_)) if n > 1 => {
            let why = format!("the owner's answer does not fit a batch of {n}; sending again");
            ids.into_iter().map(|id| (id, Err(why.clone()))).collect()
        }
        other => ids.into_iter().map(|id| (id, other.clone())).collect(),
    };
    let now = Instant::now();
    let mut done = Vec::with_capacity(answers.len());
    for (id, result) in answers {
        done.extend(settle(node, id, result, now));
    }
    finish(node, done);
    pump(node, now);
}

/// One entry's answer: `Some` outcome to record when it leaves the queue (delivered or refused
/// for good), `None` when it is sent again later.
fn settle(
    node: &mut Node,
    id: u64,
    result: Result<KbResponse, String>,
    now: Instant,
) -> Option<(u64, OutboxOutcome)> {
    let retry = match result {
        Ok(KbResponse::Submitted(r)) => {
            if let Some(e) = node.outbox.entries.remove(&id) {
                tracing::debug!(
                    id,
                    seq = r.seq,
                    duplicate = r.duplicate,
                    "outbox entry delivered"
                );
                if let Some(w) = e.waiter {
                    let _ = w.send(Ok(r.clone()));
                }
            }
            return Some((id, OutboxOutcome::Delivered(r)));
        }
        Ok(KbResponse::Error(e)) if e.code == ErrorCode::RateLimited => {
            Retry::RateLimited(format!("the owner is rate limiting: {}", e.message))
        }
        Ok(KbResponse::Error(e)) if e.code == ErrorCode::Unavailable => {
            Retry::Later(format!("the owner could not take it yet: {}", e.message))
        }
        Ok(KbResponse::Error(e)) => return Some(refuse(node, id, e.message)),
        Ok(other) => {
            let kind = format!("{other:?}");
            let kind: String = kind.chars().take(120).collect();
            return Some(refuse(
                node,
                id,
                format!("unexpected reply from the owner: {kind}"),
            ));
        }
        Err(error) => Retry::Later(format!("cannot reach the owner: {error}")),
    };
    let retry_max = node.outbox.params.retry_max;
    let jitter: f64 = node.rng.gen_range(0.75..1.25);
    let e = node.outbox.entries.get_mut(&id)?;
    let doubling = 2u32.saturating_pow(e.attempts.saturating_sub(1).min(16));
    let pause = RETRY_BASE
        .saturating_mul(doubling)
        .min(retry_max)
        .mul_f64(jitter);
    e.in_flight = false;
    e.next_at = now + pause;
    let owner = e.owner;
    let why = match retry {
        Retry::RateLimited(why) => {
            // Leave this owner alone for a while: every queued send would be refused too.
            node.outbox.hold.insert(owner, now + pause);
            why
        }
        Retry::Later(why) => why,
    };
    tracing::debug!(id, attempts = e.attempts, pause_ms = pause.as_millis() as u64, %why, "outbox entry not delivered; sending again later");
    e.last_error = Some(why);
    None
}

enum Retry {
    RateLimited(String),
    Later(String),
}

/// The owner refused a submission for good: it leaves the queue, kept with the owner's words.
fn refuse(node: &mut Node, id: u64, why: String) -> (u64, OutboxOutcome) {
    if let Some(e) = node.outbox.entries.remove(&id) {
        tracing::warn!(id, program = %e.program, reason = %why, "the owner refused a queued submission");
        if let Some(w) = e.waiter {
            let _ = w.send(Err(NodeError::Refused(why.clone())));
        }
    }
    (id, OutboxOutcome::Refused(why))
}

/// Deliveries recorded at once when this many wait.
const ANSWERS_FLUSH_AT: usize = 256;

/// Records entries' outcomes in the store. A refusal is written at once (`btd outbox` shows it);
/// deliveries ride along with the next result's durable write, or go on the next tick
/// ([`on_tick`]): one fsync'd commit per result on the member instead of two. Best effort either
/// way: a delivery whose record is lost (a crash) is sent again after the restart, and the owner
/// answers it with its original receipt.
fn finish(node: &mut Node, done: Vec<(u64, OutboxOutcome)>) {
    let refusal = done
        .iter()
        .any(|(_, o)| matches!(o, OutboxOutcome::Refused(_)));
    node.outbox.answered.extend(done);
    if refusal || node.outbox.answered.len() >= ANSWERS_FLUSH_AT {
        record_answered(node);
    }
}

/// Writes the deliveries and refusals not recorded yet.
fn record_answered(node: &mut Node) {
    if node.outbox.answered.is_empty() {
        return;
    }
    let written = write_answers(node, None);
    node.after(async move {
        let res = written.await;
        move |_: &mut Node| {
            if let Err(e) = res {
                tracing::warn!(error = %e, "cannot record outbox entries' answers");
            }
        }
    });
}

/// The outbox's one write: a new entry (`row`, if any) with the answers not recorded yet riding
/// along. Queued at once: a read queued after this call (`list`) sees it.
fn write_answers(
    node: &mut Node,
    row: Option<OutboxRow>,
) -> impl std::future::Future<Output = Result<(), store::StoreError>> + Send + 'static {
    let done = std::mem::take(&mut node.outbox.answered);
    let at = node.clock.now();
    node.store.write_in_order(move |tx| {
        if let Some(row) = &row {
            store::put_outbox(tx, row)?;
        }
        done.iter()
            .try_for_each(|(id, outcome)| store::finish_outbox(tx, *id, at, outcome))
    })
}

/// The node's tick: records what was answered since, and sends what is due.
pub(super) fn on_tick(node: &mut Node, now: Instant) {
    record_answered(node);
    pump(node, now);
}

/// `btd outbox`: the queue (of `program`, or all), then the newest refusals from the store.
pub(super) fn list(node: &mut Node, program: Option<ProgramId>, reply: Reply<OutboxList>) {
    // Queued before the read below, so what it lists includes every answer so far.
    record_answered(node);
    let now = Instant::now();
    let clock_now = node.clock.now();
    let queued: Vec<OutboxView> = node
        .outbox
        .entries
        .iter()
        .filter(|(_, e)| program.is_none_or(|p| p == e.program))
        .map(|(id, e)| node.outbox.view(*id, e, now, clock_now))
        .collect();
    let store = node.store.clone();
    node.after(async move {
        let refused = store
            .read(move |c| store::load_refused(c, program.as_ref()))
            .await;
        move |_: &mut Node| {
            let r = refused
                .map(|rows| OutboxList {
                    queued,
                    refused: rows
                        .into_iter()
                        .map(|r| OutboxView {
                            id: r.row.id,
                            nonce: hex::encode(r.row.nonce),
                            program: r.row.program,
                            value: r.row.value,
                            rung: r.row.rung,
                            attempts: 0,
                            last_error: None,
                            next_attempt_secs: None,
                            age_secs: clock_now.millis_since(r.row.created_at) / 1000,
                            refused: Some(r.reason),
                        })
                        .collect(),
                })
                .map_err(|e| NodeError::Unavailable(format!("cannot read the outbox: {e}")));
            let _ = reply.send(r);
        }
    });
}

impl NodeHandle {
    /// Submits a result through the outbox: returns the owner's receipt when it answers within
    /// `wait`, else the entry as queued (stored; the daemon keeps sending it). `Duration::ZERO`
    /// returns once it is stored. A refusal (not a member, outbox full, the owner's permanent
    /// refusal within `wait`) is an error.
    pub async fn submit_queued(
        &self,
        program: ProgramId,
        result: NewResult,
        wait: Duration,
    ) -> Result<Submitted, NodeError> {
        let (delivered, answer) = oneshot::channel();
        let queued = self
            .try_call(|reply| Command::Submit {
                program,
                result,
                reply,
                delivered,
            })
            .await?;
        if wait.is_zero() {
            return Ok(Submitted::Queued { queued });
        }
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(Ok(receipt))) => return Ok(Submitted::Receipt(receipt)),
            Ok(Ok(Err(e))) => return Err(e),
            // Timed out, or the node stopped (the entry is stored: sent after a restart).
            Ok(Err(_)) | Err(_) => {}
        }
        let now = self
            .outbox(Some(program))
            .await
            .ok()
            .and_then(|l| l.queued.into_iter().find(|v| v.id == queued.id));
        Ok(Submitted::Queued {
            queued: now.unwrap_or(queued),
        })
    }

    /// Signs a result and sends it to the program's owner through the outbox; returns its receipt.
    /// When the owner does not answer within [`NodeHandle::submit_wait`] the error says so, and
    /// the result stays queued: the daemon keeps sending it (`btd outbox`).
    pub async fn submit(
        &self,
        program: ProgramId,
        result: NewResult,
    ) -> Result<SubmitReceipt, NodeError> {
        match self
            .submit_queued(program, result, self.submit_wait())
            .await?
        {
            Submitted::Receipt(r) => Ok(r),
            Submitted::Queued { queued } => Err(NodeError::Unreachable(queued_words(&queued))),
        }
    }

    /// `btd outbox`: the queued submissions (of `program`, or all) and the newest refusals.
    pub async fn outbox(&self, program: Option<ProgramId>) -> Result<OutboxList, NodeError> {
        self.try_call(|reply| Command::Outbox { program, reply })
            .await
    }
}

/// A queued entry in words: where it is and why it waits.
pub fn queued_words(v: &OutboxView) -> String {
    let nonce: String = v.nonce.chars().take(8).collect();
    format!(
        "the owner has not answered yet ({}); the result is queued in the outbox as #{} (nonce \
         {nonce}…) and will be sent (`btd outbox`)",
        v.last_error.as_deref().unwrap_or("sending"),
        v.id
    )
}
