//! The owner's KB: gated reads, submissions, claims waiting for the check, and the status views.

use libp2p_identity::PeerId;

use super::ledger::{CodeLink, LedgerRead, LedgerReadKind, MAX_CODE_BYTES_PER_MEMBER};
use super::precheck::CheckedSubmission;
use super::{
    digest_key, err, nonce_key, Effects, ProgramOwner, Record, SubmissionRecord,
    MAX_PENDING_PER_MEMBER, MAX_SUBMISSIONS_PER_MEMBER_PER_WINDOW, SUBMISSION_WINDOW_SECS,
};
use crate::kb::{Check, Direction, Entry, Kb, Verdict};
use crate::membership::{AuthError, MemberId};
use crate::patch::Editable;
use crate::program::{Task, VerifyMode};
use crate::signed::Signed;
use crate::wire::{
    encode, fit_page, ChampionView, CodeHypothesis, ErrorCode, KbCall, KbRequest, KbResponse,
    KbStatus, StatusQuery, Submission, SubmitOutcome, SubmitReceipt, CODE_OUTPUT,
    MAX_MESSAGE_BYTES,
};
use crate::Timestamp;

/// A claim waiting for the owner's check, with what the verifier needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimToCheck {
    /// The program.
    pub program: crate::program::ProgramId,
    /// The claim's seq.
    pub seq: u64,
    /// The worker (serves the checkpoint).
    pub worker: PeerId,
    /// The worker's submission as received (signature checked on receipt).
    pub submission: Submission,
    /// The share of the pool the worker would hold if this claim verified (0–1); computed only
    /// when the program re-trains large claims (`verify.retrain_share`), else 0.
    pub share_if_verified: f64,
    /// Whether the claim carries code: the daemon then reads its [`crate::owner::code_chain`]
    /// from the store into `chain` before the verifier sees it.
    pub has_code: bool,
    /// The code hypotheses from the bundle to this claim, root first, the claim's own last (empty
    /// when the claim carries no code): applying their patches in order rebuilds its tree.
    pub chain: Vec<CodeHypothesis>,
}

impl ProgramOwner {
    /// Serves a KB request from `peer` (the Noise-authenticated sender): only members with a
    /// credential valid from that peer are served; revoked members are told so.
    pub fn on_kb(
        &mut self,
        peer: PeerId,
        request: KbRequest,
        now: Timestamp,
    ) -> Effects<KbResponse> {
        self.on_kb_checked(peer, request, Vec::new(), now)
    }

    /// [`ProgramOwner::on_kb`] with the submission's signature already checked off this task
    /// (`checked`, for the same envelope from the same peer; otherwise it is checked here).
    pub fn on_kb_checked(
        &mut self,
        peer: PeerId,
        request: KbRequest,
        mut checked: Vec<CheckedSubmission>,
        now: Timestamp,
    ) -> Effects<KbResponse> {
        let KbRequest {
            credential, call, ..
        } = request;
        let member = match self.registry.verify(&credential, &peer) {
            Ok(m) => m,
            Err(AuthError::Revoked) => {
                return Effects::reply(KbResponse::Error(err(
                    ErrorCode::Revoked,
                    "revoked: the owner revoked this member; its requests are refused",
                )))
            }
            Err(AuthError::MembershipRequired) => {
                return Effects::reply(KbResponse::Error(err(
                    ErrorCode::MembershipRequired,
                    "membership required: join the program with `btd join` first",
                )))
            }
        };
        if let Err(e) = call.check() {
            return Effects::reply(KbResponse::Error(err(ErrorCode::Invalid, e.to_string())));
        }
        Effects::reply(match call {
            KbCall::Program => KbResponse::Program(self.announcement.clone()),
            KbCall::Champion => KbResponse::Champion(
                self.kb
                    .champion()
                    .cloned()
                    .zip(self.champion.clone())
                    .map(|(entry, submission)| Box::new(ChampionView { entry, submission })),
            ),
            KbCall::Results { after_seq, limit } => {
                let (entries, more) = self.kb.page(after_seq, usize::try_from(limit).unwrap_or(0));
                KbResponse::Results { entries, more }
            }
            KbCall::Status => KbResponse::Status(self.kb_status()),
            KbCall::StatusPage(q) => self.status_page_reply(&q),
            KbCall::Submit(signed) => {
                return self.submit(peer, &member, signed, checked.pop(), None, now)
            }
            KbCall::SubmitCode { submission, code } => {
                return self.submit(peer, &member, submission, checked.pop(), Some(*code), now)
            }
            KbCall::SubmitBatch(list) => {
                return self.submit_batch(peer, &member, list, checked, now)
            }
            KbCall::Ledger { .. } | KbCall::LedgerTail { .. } | KbCall::Code { .. } => {
                return self.read_own(&call).unwrap_or_else(|| {
                    Effects::reply(KbResponse::Error(err(
                        ErrorCode::Invalid,
                        "not a ledger read",
                    )))
                })
            }
        })
    }

    /// The owner's own read of its ledger and status (`btd ledger`, `btd checkout`, the
    /// dashboard on the owner's daemon): `KbCall::Ledger`, `KbCall::LedgerTail`, `KbCall::Code`
    /// and `KbCall::Status` without a credential (members reach the same answers through
    /// [`ProgramOwner::on_kb`]); `None` for any other call. A ledger read comes back as
    /// [`Effects::read`]: the entries from memory, to complete from the store.
    pub fn read_own(&self, call: &KbCall) -> Option<Effects<KbResponse>> {
        if let Err(e) = call.check() {
            return Some(Effects::reply(KbResponse::Error(err(
                ErrorCode::Invalid,
                e.to_string(),
            ))));
        }
        let read = |entries: Vec<Entry>, kind: LedgerReadKind| Effects {
            read: Some(LedgerRead {
                program: self.id,
                entries,
                kind,
            }),
            ..Effects::reply(KbResponse::Error(err(
                ErrorCode::Unavailable,
                "the owner could not read its ledger; retry later",
            )))
        };
        match call {
            KbCall::Ledger { after_seq, limit } => {
                let (entries, more) = self
                    .kb
                    .page(*after_seq, usize::try_from(*limit).unwrap_or(0));
                Some(read(entries, LedgerReadKind::Page { more }))
            }
            KbCall::LedgerTail { limit } => {
                // The newest results: nothing follows them.
                let limit = usize::try_from(*limit).unwrap_or(0);
                Some(read(
                    self.kb.tail(limit),
                    LedgerReadKind::Page { more: false },
                ))
            }
            KbCall::Code { seq } => {
                let entries = if self.ledger.has_code(*seq) {
                    self.kb.entry(*seq).into_iter().collect()
                } else {
                    Vec::new()
                };
                Some(read(entries, LedgerReadKind::Code))
            }
            KbCall::Status => Some(Effects::reply(KbResponse::Status(self.kb_status()))),
            KbCall::StatusPage(q) => Some(Effects::reply(self.status_page_reply(q))),
            _ => None,
        }
    }

    /// A batch: each result judged as [`KbCall::Submit`] would judge it alone, in order; one
    /// reply and one set of records for all of them. `checked[i]`, if it is there, is the
    /// signature check of `list[i]` (any other is checked here).
    fn submit_batch(
        &mut self,
        peer: PeerId,
        member: &MemberId,
        list: Vec<Signed<Submission>>,
        checked: Vec<CheckedSubmission>,
        now: Timestamp,
    ) -> Effects<KbResponse> {
        let mut checked = checked.into_iter();
        let mut all = Effects::reply(Vec::with_capacity(list.len()));
        for signed in list {
            let fx = self.submit(peer, member, signed, checked.next(), None, now);
            all.persist.extend(fx.persist);
            all.push.extend(fx.push);
            all.after_durable |= fx.after_durable;
            all.claims_ready |= fx.claims_ready;
            all.reply.push(SubmitOutcome::from_reply(fx.reply));
        }
        all.map(KbResponse::SubmittedBatch)
    }

    /// A member's submission: the KB rules apply in arrival order; the entry is stored before the
    /// receipt goes out; a retry with the same nonce gets the original receipt. A claim of a
    /// checkpoint another member claimed first is refused (every member reads the champion's claim,
    /// so its digest is no proof of work).
    fn submit(
        &mut self,
        peer: PeerId,
        member: &MemberId,
        signed: Signed<Submission>,
        checked: Option<CheckedSubmission>,
        code: Option<CodeHypothesis>,
        now: Timestamp,
    ) -> Effects<KbResponse> {
        let invalid = |m: String| Effects::reply(KbResponse::Error(err(ErrorCode::Invalid, m)));
        let checked = checked.and_then(|c| c.value_for(&peer, &signed));
        let sub = match checked.map_or_else(|| signed.verify_from(&peer), Ok) {
            Ok(s) => s,
            Err(e) => {
                return invalid(format!(
                    "the submission must be signed by the submitting peer: {e}"
                ))
            }
        };
        if sub.program != self.id {
            return invalid("the submission names another program".into());
        }
        if let Err(e) = sub.check(now) {
            return invalid(e.to_string());
        }
        let worker = self.kb.worker_index(member.as_str());
        let retry = worker.and_then(|w| {
            let seq = *self.nonces.get(&nonce_key(w, &sub.nonce))?;
            (self.kb.worker_of(seq) == Some(w)).then_some(seq)
        });
        if let Some(seq) = retry {
            // A retry: the original receipt, once the original entry is durable.
            return match self.receipt(seq, true) {
                Some(r) => Effects {
                    after_durable: true,
                    ..Effects::reply(KbResponse::Submitted(r))
                },
                None => Effects::reply(KbResponse::Error(err(ErrorCode::Unavailable, "try again"))),
            };
        }
        if let Err(why) = self.check_code(&sub, code.as_ref()) {
            return invalid(why);
        }
        if self.program.verify.mode == VerifyMode::Reevaluate && sub.claim.is_none() {
            return invalid(
                "this program checks every claim before it counts: submit the checkpoint the \
                 value was measured on (btd submit --checkpoint FILE)"
                    .into(),
            );
        }
        if let Some(c) = &sub.claim {
            if self
                .claimed
                .get(&digest_key(&c.checkpoint))
                .is_some_and(|first| Some(*first) != worker)
            {
                return invalid(format!(
                    "checkpoint {} was already claimed by another member: the same bytes count \
                     once, for their first claimant; submit a checkpoint of your own (btd submit \
                     --checkpoint FILE)",
                    c.checkpoint
                ));
            }
        }
        let waiting = self
            .kb
            .pending_workers()
            .filter(|w| *w == member.as_str())
            .count();
        if waiting >= MAX_PENDING_PER_MEMBER {
            return Effects::reply(KbResponse::Error(err(
                ErrorCode::RateLimited,
                format!(
                    "you have {waiting} claims waiting for the owner's check; submit more once they \
                     are settled (btd status shows them)"
                ),
            )));
        }
        if let Some(wait) = self.quota_wait(member.as_str(), now) {
            return Effects::reply(KbResponse::Error(err(
                ErrorCode::RateLimited,
                format!(
                    "you submitted {MAX_SUBMISSIONS_PER_MEMBER_PER_WINDOW} results in the last \
                     {SUBMISSION_WINDOW_SECS} s, the most one member may; submit again in {wait} s"
                ),
            )));
        }
        if let Some(c) = &code {
            let held = self.ledger.code_bytes(member.as_str());
            if held + super::ledger::code_size(c) > MAX_CODE_BYTES_PER_MEMBER {
                return Effects::reply(KbResponse::Error(err(
                    ErrorCode::RateLimited,
                    format!(
                        "the owner already holds {held} bytes of your results' code, the most one \
                         member may ({MAX_CODE_BYTES_PER_MEMBER}); send smaller patches, or ask the \
                         owner"
                    ),
                )));
            }
        }
        if let Some(why) = self.stopped(now) {
            return Effects::reply(KbResponse::Error(err(ErrorCode::ProgramStopped, why)));
        }
        let bytes = match crate::wire::encode(&signed) {
            Ok(b) => b,
            Err(e) => return invalid(format!("the submission cannot be stored: {e}")),
        };
        let code_bytes = match code.as_ref().map(crate::wire::encode).transpose() {
            Ok(b) => b,
            Err(e) => return invalid(format!("the code hypothesis cannot be stored: {e}")),
        };
        let entry = match self.kb.submit(member.as_str(), sub.value) {
            Ok(e) => e,
            Err(e) => return invalid(e.to_string()),
        };
        self.ledger.record(
            entry.seq,
            member.as_str(),
            code.as_ref().map(CodeLink::of).as_ref(),
        );
        if let Some(w) = self.kb.worker_index(member.as_str()) {
            self.nonces
                .entry(nonce_key(w, &sub.nonce))
                .or_insert(entry.seq);
            if let Some(c) = &sub.claim {
                self.claimed.entry(digest_key(&c.checkpoint)).or_insert(w);
            }
        }
        self.note_submission(member.as_str(), now);
        if entry.champion {
            self.champion = Some(signed.clone());
        }
        let claims_ready = entry.check == Check::Pending;
        if claims_ready {
            self.claims.insert(entry.seq, signed);
        }
        let receipt = SubmitReceipt {
            seq: entry.seq,
            accepted: entry.accepted,
            champion: entry.champion,
            impact: entry.impact,
            check: entry.check.clone(),
            duplicate: false,
        };
        let record = Record::Submission(SubmissionRecord {
            program: self.id,
            entry,
            nonce: sub.nonce,
            signed: bytes,
            code: code_bytes,
            received_at: now,
        });
        Effects {
            claims_ready,
            ..Effects::persist_then(vec![record], KbResponse::Submitted(receipt))
        }
    }

    /// The receipt of the entry `seq`.
    fn receipt(&self, seq: u64, duplicate: bool) -> Option<SubmitReceipt> {
        let e = self.kb.entry(seq)?;
        Some(SubmitReceipt {
            seq: e.seq,
            accepted: e.accepted,
            champion: e.champion,
            impact: e.impact,
            check: e.check.clone(),
            duplicate,
        })
    }

    /// Seconds until `member` may store another submission, when it holds its full quota
    /// ([`MAX_SUBMISSIONS_PER_MEMBER_PER_WINDOW`] in the last [`SUBMISSION_WINDOW_SECS`]).
    fn quota_wait(&self, member: &str, now: Timestamp) -> Option<u64> {
        let times = self.recent.get(member)?;
        if times.len() < MAX_SUBMISSIONS_PER_MEMBER_PER_WINDOW {
            return None;
        }
        // The oldest of the last quota-many submissions leaves the window at `frees`.
        let frees = times.front()?.plus_secs(SUBMISSION_WINDOW_SECS);
        (frees > now).then(|| frees.millis_since(now).div_ceil(1000).max(1))
    }

    /// The submissions that count toward `[stop] max_submissions`: every stored one except those
    /// the owner's check rejected and those of members the owner revoked. A rejected claim proves
    /// nothing was done, and revoking a member who flooded the log gives the program back its
    /// submissions; a claim still waiting for the check counts until it is rejected, so the cap is
    /// never overshot. Derived from the log and the member table, so a restart counts the same.
    pub fn counted_submissions(&self) -> u64 {
        let revoked: std::collections::HashSet<&str> = self
            .registry
            .members()
            .filter(|m| m.revoked_at.is_some())
            .map(|m| m.member.as_str())
            .collect();
        self.kb
            .tallies()
            .filter(|(w, _, _)| !revoked.contains(w))
            .map(|(_, submitted, failed)| submitted.saturating_sub(failed))
            .sum()
    }

    /// Why the program takes no more submissions, if it does not: the submission cap (counted by
    /// [`ProgramOwner::counted_submissions`]), the deadline (strictly after it), or a champion at or
    /// past the target.
    pub fn stopped(&self, now: Timestamp) -> Option<String> {
        let s = &self.program.stop;
        if let Some(max) = s.max_submissions {
            if self.counted_submissions() >= max {
                return Some(format!("the program reached its {max} submissions"));
            }
        }
        if let Some(d) = s.deadline {
            if now > d {
                return Some("the program's deadline has passed".into());
            }
        }
        if let (Some(t), Some(c)) = (s.target, self.kb.champion()) {
            let reached = match self.program.criteria.direction {
                Direction::Minimize => c.value <= t,
                Direction::Maximize => c.value >= t,
            };
            if reached {
                return Some(format!("the champion reached the target {t}"));
            }
        }
        None
    }

    /// The oldest claim waiting for the owner's check, with what the verifier needs. A claim whose
    /// worker id or stored signature no longer reads is skipped (it stays pending).
    pub fn next_claim(&self) -> Option<ClaimToCheck> {
        let entry = self.kb.next_pending()?;
        let signed = self.claims.get(&entry.seq)?;
        let worker = entry.worker.parse::<PeerId>().ok()?;
        let submission = signed.verify().ok()?.value;
        // Only programs that re-train large claims need the share (it costs a copy of the KB).
        let share_if_verified = if self.program.verify.retrain_share.is_some() {
            share_if_verified(&self.kb, entry.seq, &entry.worker)
        } else {
            0.0
        };
        Some(ClaimToCheck {
            program: self.id,
            seq: entry.seq,
            worker,
            submission,
            share_if_verified,
            has_code: self.ledger.has_code(entry.seq),
            chain: Vec::new(),
        })
    }

    /// Whether a submission carries the code hypothesis the program needs, bound by its
    /// signature, touching only editable files, on an existing parent. A program with a source
    /// bundle or re-run verification needs one on every result (the ledger's lineage, the
    /// owner's re-run); a candle program takes none.
    fn check_code(&self, sub: &Submission, code: Option<&CodeHypothesis>) -> Result<(), String> {
        let Task::Shell(task) = &self.program.task else {
            return match code {
                Some(_) => Err(
                    "a candle program takes no code hypothesis; submit the checkpoint \
                     (btd submit --checkpoint FILE)"
                        .into(),
                ),
                None => Ok(()),
            };
        };
        let needs = task.source.is_some() || self.program.verify.mode == VerifyMode::Rerun;
        let Some(code) = code else {
            return if needs {
                Err(
                    "this program runs code: every result must carry the code hypothesis it ran \
                     (btd join submits it; btd submit --code FILE for a hand-made one)"
                        .into(),
                )
            } else {
                Ok(())
            };
        };
        if !code.bound_by(sub) {
            return Err(format!(
                "the signed submission does not carry the code's digest as output \"{CODE_OUTPUT}\": \
                 the code must be the one the worker signed"
            ));
        }
        match &task.source {
            Some(src) => {
                let editable = Editable::new(&src.editable)
                    .map_err(|e| format!("the program's editable globs: {e}"))?;
                code.check_editable(&editable).map_err(|e| e.to_string())?;
            }
            None => {
                if code.check().map_err(|e| e.to_string())?.is_some() {
                    return Err(
                        "this program ships no source tree, so a patch has nothing to \
                         edit; send an empty patch"
                            .into(),
                    );
                }
            }
        }
        self.ledger.check_parent(code, self.kb.next_seq())
    }

    /// The program's status as members read it.
    pub fn kb_status(&self) -> KbStatus {
        let counts = self.kb.counts();
        KbStatus {
            program: self.id,
            name: self.program.name.clone(),
            members: self
                .registry
                .members()
                .filter(|m| m.revoked_at.is_none())
                .count() as u64,
            submissions: counts.submissions,
            accepted: counts.accepted,
            pending: counts.pending,
            verified: counts.verified,
            rejected: counts.rejected,
            champion: self.kb.champion().cloned(),
            payouts: self.kb.payouts(),
            pool: self.program.reward.pool,
            token: self.program.reward.token.clone(),
        }
    }

    /// The status with one page of results in the query's order (the query already checked),
    /// read from the compact log in O(page), and whether a later page holds results. A page that
    /// would not fit in one message with the summary is cut short, and `more` says so.
    pub fn status_page(&self, q: &StatusQuery) -> (KbStatus, Vec<Entry>, bool) {
        let status = self.kb_status();
        let w = q.window(self.kb.counts().submissions);
        let (entries, _) = self
            .kb
            .page(w.after_seq, usize::try_from(w.take).unwrap_or(0));
        // The summary's own size grows with the members paid.
        let summary = encode(&status).map_or(MAX_MESSAGE_BYTES, |b| b.len());
        let (results, cut) = fit_page(q.order(entries), summary);
        (status, results, w.more || cut)
    }

    fn status_page_reply(&self, q: &StatusQuery) -> KbResponse {
        let (status, results, more) = self.status_page(q);
        KbResponse::StatusPage {
            status,
            results,
            more,
        }
    }

    /// Whether `peer`, presenting `credential`, may fetch the artifact `digest` from the owner: a
    /// member may fetch the program's dataset and nothing else (never the holdout, never another
    /// worker's checkpoint).
    pub fn may_fetch(
        &self,
        peer: &PeerId,
        credential: Option<&crate::membership::Credential>,
        digest: &crate::Digest,
    ) -> Result<(), (ErrorCode, String)> {
        use crate::program::{Dataset, Task};
        let credential = credential.ok_or((
            ErrorCode::MembershipRequired,
            "membership required: send the member credential".to_string(),
        ))?;
        self.registry.verify(credential, peer).map_err(|_| {
            (
                ErrorCode::MembershipRequired,
                "membership required: join the program with `btd join` first".to_string(),
            )
        })?;
        let served = match &self.program.task {
            Task::Candle(t) => match t.dataset {
                Dataset::File { sha256 } => Some(sha256),
                Dataset::Synthetic { .. } => None,
            },
            Task::Shell(t) => t.source.as_ref().map(|s| s.sha256),
        };
        if served != Some(*digest) {
            return Err((
                ErrorCode::NotFound,
                format!(
                    "the owner serves only the program's dataset or source bundle, not {digest}"
                ),
            ));
        }
        Ok(())
    }
}

/// The share of the pool (0–1) `worker` would hold if the pending claim `seq` verified.
fn share_if_verified(kb: &Kb, seq: u64, worker: &str) -> f64 {
    let mut what_if = kb.clone();
    if what_if.resolve(seq, &Verdict::Verified).is_err() {
        return 0.0;
    }
    let p = what_if.payouts();
    let total = p.total().micros();
    if total == 0 {
        return 0.0;
    }
    p.get(worker).map_or(0, |a| a.micros()) as f64 / total as f64
}
