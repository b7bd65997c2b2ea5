//! The KB's log in memory, kept small: one 24-byte slot per processed submission (the worker as an
//! index into a table of worker ids, the value, the impact, the KEEP verdict and the check's
//! state), the reasons of failed checks, the pending claims as a set, and running counts. Every
//! read the rules and the status need is O(1) or O(pending); a page of entries is O(page). At
//! 650 000 results the log takes about 16 MB (an [`Entry`] per result took about ten times that,
//! and status reads scanned the whole log).

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};

use super::payout::{payouts_of, Accepted};
use super::{
    better, bound_reason, gain, AcceptRule, Check, Entry, LogEvent, Payouts, ReplayError,
    ResolveError, Rules, RulesError, SubmitError, Verdict, MAX_WORKER_ID_LEN,
};

/// One processed submission, as the log keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slot {
    value: f64,
    impact: f64,
    /// Index into [`Kb::workers`].
    worker: u32,
    accepted: bool,
    champion: bool,
    check: Tag,
}

/// [`Check`] without the failed check's reason (kept in [`Kb::reasons`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    NotNeeded,
    Pending,
    Verified,
    Failed,
}

/// Per-worker counts the rules read (the `[stop] max_submissions` count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tally {
    submitted: u64,
    failed: u64,
}

/// A knowledge base: the rules, the log of every processed submission, and the champion.
#[derive(Debug, Clone)]
pub struct Kb {
    rules: Rules,
    /// Whether accepted claims wait for the owner's check.
    verify: bool,
    /// Slot `i` is the entry with seq `i + 1`.
    log: Vec<Slot>,
    /// Worker ids by index, and their counts.
    workers: Vec<(Box<str>, Tally)>,
    /// Worker id → index into `workers`.
    index: HashMap<Box<str>, u32>,
    /// Why the owner's check failed, by seq.
    reasons: HashMap<u64, Box<str>>,
    /// The current champion's entry (it never changes once it is the champion).
    champion: Option<Entry>,
    /// Claims waiting for the owner's check, by seq.
    pending: BTreeSet<u64>,
    accepted: u64,
    verified: u64,
    rejected: u64,
    /// The split, computed on first read after a change.
    payouts: OnceCell<Payouts>,
}

impl PartialEq for Kb {
    fn eq(&self, other: &Kb) -> bool {
        self.rules == other.rules
            && self.verify == other.verify
            && self.len() == other.len()
            && self.iter().eq(other.iter())
    }
}

/// Counts of a KB's log by verdict and check (the status reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Every processed submission.
    pub submissions: u64,
    /// Accepted by the KEEP rule (verified, where the program checks).
    pub accepted: u64,
    /// Waiting for the owner's check.
    pub pending: u64,
    /// Checked and reproduced.
    pub verified: u64,
    /// Checked and rejected.
    pub rejected: u64,
}

impl Kb {
    /// An empty KB applying `rules` to every submission at once (no owner check), or every problem
    /// with them.
    pub fn new(rules: Rules) -> Result<Kb, Vec<RulesError>> {
        rules.validate()?;
        Ok(Kb {
            rules,
            verify: false,
            log: Vec::new(),
            workers: Vec::new(),
            index: HashMap::new(),
            reasons: HashMap::new(),
            champion: None,
            pending: BTreeSet::new(),
            accepted: 0,
            verified: 0,
            rejected: 0,
            payouts: OnceCell::new(),
        })
    }

    /// An empty KB that holds every claim the KEEP rule would accept as pending until
    /// [`Kb::resolve`] verifies it.
    pub fn verified(rules: Rules) -> Result<Kb, Vec<RulesError>> {
        let mut kb = Kb::new(rules)?;
        kb.verify = true;
        Ok(kb)
    }

    /// Whether accepted claims wait for the owner's check.
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// The KEEP rule's verdict on `value` against the current (verified) state:
    /// `(accepted, champion, impact)`. A champion change needs the program's minimum improvement
    /// over the reference (beats-champion: the champion, else the baseline; threshold: the
    /// champion); the impact stays the whole gain.
    fn keep(&self, value: f64) -> (bool, bool, f64) {
        let direction = self.rules.direction;
        let margin = self.rules.min_improvement;
        match self.rules.accept {
            AcceptRule::BeatsChampion => match self.reference() {
                None => (true, true, 0.0),
                Some(r) if margin.beats(direction, value, r) => {
                    (true, true, gain(direction, r, value))
                }
                Some(_) => (false, false, 0.0),
            },
            AcceptRule::Threshold { threshold } => {
                let accepted = better(direction, value, threshold) || value == threshold;
                let champion = accepted
                    && self
                        .champion()
                        .map(|c| c.value)
                        .is_none_or(|c| margin.beats(direction, value, c));
                let impact = if accepted {
                    gain(direction, threshold, value)
                } else {
                    0.0
                };
                (accepted, champion, impact)
            }
        }
    }

    /// Makes room for `additional` more results at once (restart knows how many it will replay;
    /// growing by doubling would leave up to half the log's memory unused).
    pub fn reserve(&mut self, additional: usize) {
        self.log.reserve_exact(additional);
    }

    /// The index of `worker`, added to the table when new.
    fn intern(&mut self, worker: &str) -> Result<u32, SubmitError> {
        if let Some(i) = self.index.get(worker) {
            return Ok(*i);
        }
        let i = u32::try_from(self.workers.len()).map_err(|_| SubmitError::LogFull)?;
        self.workers.push((worker.into(), Tally::default()));
        self.index.insert(worker.into(), i);
        Ok(i)
    }

    /// Applies the KEEP rule to one submission in arrival order, logs it and returns its entry.
    /// Invalid input (empty or over-long worker id, non-finite value) is rejected with an error and
    /// consumes no sequence number.
    ///
    /// In a [`Kb::verified`] KB a claim the rule would accept is logged as [`Check::Pending`]
    /// (not accepted, no impact) and counts only once [`Kb::resolve`] verifies it.
    pub fn submit(&mut self, worker: &str, value: f64) -> Result<Entry, SubmitError> {
        if worker.is_empty() {
            return Err(SubmitError::EmptyWorker);
        }
        if worker.len() > MAX_WORKER_ID_LEN {
            return Err(SubmitError::WorkerTooLong {
                len: worker.len(),
                max: MAX_WORKER_ID_LEN,
            });
        }
        if !value.is_finite() {
            return Err(SubmitError::NonFiniteValue { value });
        }
        let seq = self.next_seq_checked().ok_or(SubmitError::LogFull)?;
        let w = self.intern(worker)?;
        let (accepted, champion, impact) = self.keep(value);
        let slot = if self.verify && accepted {
            self.pending.insert(seq);
            Slot {
                value,
                impact: 0.0,
                worker: w,
                accepted: false,
                champion: false,
                check: Tag::Pending,
            }
        } else {
            Slot {
                value,
                impact,
                worker: w,
                accepted,
                champion,
                check: Tag::NotNeeded,
            }
        };
        self.log.push(slot);
        if let Some((_, t)) = self.workers.get_mut(w as usize) {
            t.submitted += 1;
        }
        if slot.accepted {
            self.accepted += 1;
            self.payouts = OnceCell::new();
        }
        let entry = self.entry_of(seq, &slot);
        if slot.champion {
            self.champion = Some(entry.clone());
        }
        Ok(entry)
    }

    fn next_seq_checked(&self) -> Option<u64> {
        u64::try_from(self.log.len()).ok()?.checked_add(1)
    }

    /// The entry of `slot`, whose seq is `seq`.
    fn entry_of(&self, seq: u64, slot: &Slot) -> Entry {
        Entry {
            seq,
            worker: self
                .workers
                .get(slot.worker as usize)
                .map(|(w, _)| w.to_string())
                .unwrap_or_default(),
            value: slot.value,
            accepted: slot.accepted,
            champion: slot.champion,
            impact: slot.impact,
            check: match slot.check {
                Tag::NotNeeded => Check::NotNeeded,
                Tag::Pending => Check::Pending,
                Tag::Verified => Check::Verified,
                Tag::Failed => Check::Failed(
                    self.reasons
                        .get(&seq)
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                ),
            },
        }
    }

    /// The rules this KB applies.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// How many submissions the log holds.
    pub fn len(&self) -> u64 {
        self.log.len() as u64
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// The entry with sequence number `seq`.
    pub fn entry(&self, seq: u64) -> Option<Entry> {
        let i = usize::try_from(seq).ok()?.checked_sub(1)?;
        self.log.get(i).map(|s| self.entry_of(seq, s))
    }

    /// Entries after `after_seq`, at most `limit`, oldest first, and whether more follow.
    pub fn page(&self, after_seq: u64, limit: usize) -> (Vec<Entry>, bool) {
        let start = usize::try_from(after_seq)
            .unwrap_or(usize::MAX)
            .min(self.log.len());
        let end = start.saturating_add(limit).min(self.log.len());
        let entries = (start..end)
            .filter_map(|i| self.entry(i as u64 + 1))
            .collect();
        (entries, end < self.log.len())
    }

    /// The latest `limit` entries, oldest first.
    pub fn tail(&self, limit: usize) -> Vec<Entry> {
        let start = self.log.len().saturating_sub(limit);
        self.page(start as u64, limit).0
    }

    /// Every processed submission, accepted or not, in sequence order. Each entry is built on the
    /// way: O(log) — for tests and offline tools; the daemon reads pages ([`Kb::page`]).
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        self.log
            .iter()
            .enumerate()
            .map(|(i, s)| self.entry_of(i as u64 + 1, s))
    }

    /// [`Kb::iter`] collected.
    pub fn entries(&self) -> Vec<Entry> {
        self.iter().collect()
    }

    /// Counts by verdict and check.
    pub fn counts(&self) -> Counts {
        Counts {
            submissions: self.len(),
            accepted: self.accepted,
            pending: self.pending.len() as u64,
            verified: self.verified,
            rejected: self.rejected,
        }
    }

    /// The submissions of `worker`, and how many of them the owner's check rejected.
    pub fn tally(&self, worker: &str) -> (u64, u64) {
        self.index
            .get(worker)
            .and_then(|i| self.workers.get(*i as usize))
            .map_or((0, 0), |(_, t)| (t.submitted, t.failed))
    }

    /// Every worker with its submissions and how many of them the owner's check rejected.
    pub fn tallies(&self) -> impl Iterator<Item = (&str, u64, u64)> + '_ {
        self.workers
            .iter()
            .map(|(w, t)| (&**w, t.submitted, t.failed))
    }

    /// The index of `worker` in the KB's worker table, if it submitted anything.
    pub fn worker_index(&self, worker: &str) -> Option<u32> {
        self.index.get(worker).copied()
    }

    /// The worker index of result `seq`.
    pub fn worker_of(&self, seq: u64) -> Option<u32> {
        let i = usize::try_from(seq).ok()?.checked_sub(1)?;
        self.log.get(i).map(|s| s.worker)
    }

    /// The current champion, if any.
    pub fn champion(&self) -> Option<&Entry> {
        self.champion.as_ref()
    }

    /// The value a beats-champion submission must strictly beat (by the minimum improvement): the
    /// champion's value, else the baseline, else none (then the next submission is accepted).
    /// Threshold mode does not use it for acceptance.
    pub fn reference(&self) -> Option<f64> {
        self.champion().map(|c| c.value).or(self.rules.baseline)
    }

    /// The sequence number the next valid submission will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq_checked().unwrap_or(u64::MAX)
    }

    /// The current split of the reward pool (computed once per change).
    pub fn payouts(&self) -> Payouts {
        self.payouts
            .get_or_init(|| {
                let accepted =
                    self.log
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.accepted)
                        .map(|(i, s)| Accepted {
                            first: (i as u64 + 1, i),
                            worker: self
                                .workers
                                .get(s.worker as usize)
                                .map_or("", |(w, _)| &**w),
                            impact: s.impact,
                        });
                payouts_of(
                    &self.rules,
                    accepted,
                    self.champion().map(|c| c.worker.as_str()),
                )
            })
            .clone()
    }

    /// The oldest pending claim: the next one the owner must check.
    pub fn next_pending(&self) -> Option<Entry> {
        self.pending.first().and_then(|s| self.entry(*s))
    }

    /// Claims still waiting for the owner's check, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = Entry> + '_ {
        self.pending.iter().filter_map(|s| self.entry(*s))
    }

    /// The workers of the pending claims, oldest first (no entry is built).
    pub fn pending_workers(&self) -> impl Iterator<Item = &str> + '_ {
        self.pending.iter().filter_map(|s| {
            let slot = self.log.get(usize::try_from(*s).ok()?.checked_sub(1)?)?;
            self.workers.get(slot.worker as usize).map(|(w, _)| &**w)
        })
    }

    /// Applies the owner's verdict on the oldest pending claim `seq`.
    ///
    /// Measured: the entry's value becomes the owner's measurement and the KEEP rule is applied to
    /// that value against the verified state (a measurement worse than the claim may be rejected).
    /// Verified (older stored verdicts): the same with the claimed value. Failed: it is rejected with
    /// the reason and never counts. Afterwards, pending claims the rule would now reject (an
    /// earlier claim verified with a better value) are settled as rejected without a check.
    pub fn resolve(&mut self, seq: u64, verdict: &Verdict) -> Result<Entry, ResolveError> {
        let oldest = self.pending.first().copied();
        if oldest != Some(seq) {
            return Err(ResolveError::NotNext { seq, oldest });
        }
        let index = usize::try_from(seq - 1).map_err(|_| ResolveError::NotNext { seq, oldest })?;
        let Some(mut slot) = self.log.get(index).copied() else {
            return Err(ResolveError::NotNext { seq, oldest });
        };
        let value = match verdict {
            Verdict::Verified => slot.value,
            Verdict::Measured { value } if value.is_finite() => *value,
            Verdict::Measured { value } => {
                return Err(ResolveError::NonFiniteMeasurement { seq, value: *value })
            }
            Verdict::Failed(reason) => {
                // Bounded here too, so a verdict stored before the bound existed is cut on replay.
                slot.check = Tag::Failed;
                self.reasons.insert(seq, bound_reason(reason).into());
                self.rejected += 1;
                if let Some((_, t)) = self.workers.get_mut(slot.worker as usize) {
                    t.failed += 1;
                }
                self.log[index] = slot;
                self.pending.remove(&seq);
                self.settle();
                return Ok(self.entry_of(seq, &slot));
            }
        };
        let (accepted, champion, impact) = self.keep(value);
        slot.value = value;
        slot.accepted = accepted;
        slot.champion = champion;
        slot.impact = impact;
        slot.check = Tag::Verified;
        self.log[index] = slot;
        self.pending.remove(&seq);
        self.verified += 1;
        if accepted {
            self.accepted += 1;
            self.payouts = OnceCell::new();
        }
        let entry = self.entry_of(seq, &slot);
        if champion {
            self.champion = Some(entry.clone());
            self.payouts = OnceCell::new();
        }
        self.settle();
        Ok(entry)
    }

    /// Marks leading pending claims that the KEEP rule would now reject as not needing a check.
    fn settle(&mut self) {
        while let Some(seq) = self.pending.first().copied() {
            let Some(i) = usize::try_from(seq).ok().and_then(|s| s.checked_sub(1)) else {
                return;
            };
            let Some(value) = self.log.get(i).map(|s| s.value) else {
                return;
            };
            if self.keep(value).0 {
                return;
            }
            self.log[i].check = Tag::NotNeeded;
            self.pending.remove(&seq);
        }
    }

    /// Rebuilds a KB from a stored log by re-applying `rules` to its `(worker, value)` pairs in
    /// sequence order. The daemon uses this at restart; a stored pair that is invalid means the log
    /// is corrupt and is reported with its position.
    pub fn replay<'a>(
        rules: Rules,
        log: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<Kb, ReplayError> {
        let kb = Kb::new(rules).map_err(ReplayError::Rules)?;
        kb.replay_events(
            log.into_iter()
                .map(|(worker, value)| LogEvent::Submit { worker, value }),
        )
    }

    /// Rebuilds a KB (empty, made with [`Kb::new`] or [`Kb::verified`]) from its stored history:
    /// submissions and verdicts in the order they happened.
    pub fn replay_events<'a>(
        mut self,
        log: impl IntoIterator<Item = LogEvent<'a>>,
    ) -> Result<Kb, ReplayError> {
        for event in log {
            self.apply(event)?;
        }
        Ok(self)
    }

    /// Applies one stored event (restart replays the log one event at a time).
    pub fn apply(&mut self, event: LogEvent<'_>) -> Result<(), ReplayError> {
        match event {
            LogEvent::Submit { worker, value } => {
                let seq = self.next_seq();
                self.submit(worker, value)
                    .map_err(|error| ReplayError::Entry { seq, error })?;
            }
            LogEvent::Resolve { seq, verdict } => {
                self.resolve(seq, verdict).map_err(ReplayError::Verdict)?;
            }
        }
        Ok(())
    }
}
