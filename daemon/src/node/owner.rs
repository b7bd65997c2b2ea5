//! The owner's side: publishing, approving, revoking, and serving the membership and KB protocols
//! for programs this node owns.

use std::collections::HashMap;

use btd_protocol::kb::{Check, Entry, Kb, Verdict};
use btd_protocol::membership::{
    DecisionError, DeviceCode, Grant, MemberId, MemberRecord, PollError, Registry,
};
use btd_protocol::program::{Program, ProgramId};
use btd_protocol::seal::{self, SealPublicKey};
use btd_protocol::signed::Signed;
use btd_protocol::wire::{
    grant_seal_context, ChampionView, ErrorCode, ErrorReply, GrantDelivery, KbCall, KbRequest,
    KbResponse, KbStatus, MembershipRequest, MembershipResponse, PollStatus, ProgramAnnouncement,
    SubmitReceipt, VerifiedProgram,
};
use btd_protocol::Timestamp;
use libp2p::PeerId;
use tokio::sync::oneshot;

use super::dispatch::MembershipTag;
use super::types::{MembersView, PendingView, StatusView};
use super::{Known, Node};
use crate::net::Responder;
use crate::store::{self, ProgramRow, StoreError, SubmissionRow, VerdictRow};

/// Most claims one member may have waiting for the owner's check: checking costs the owner an
/// evaluation each, so a member cannot queue unbounded work.
const MAX_PENDING_PER_MEMBER: usize = 8;

/// Most results returned in a status view.
const STATUS_RESULTS: usize = 1000;

/// A program this node owns: its membership registry, KB and idempotency index.
pub struct Owned {
    pub(crate) program: Program,
    pub(crate) registry: Registry,
    pub(crate) kb: Kb,
    /// (member, nonce) → seq: a retried submission gets its original verdict.
    nonces: HashMap<(String, [u8; 16]), u64>,
    /// Device code → (requesting peer, its sealing key), to seal and push the grant.
    seal_keys: HashMap<DeviceCode, (PeerId, SealPublicKey, Timestamp)>,
    /// Grants pushed but not acknowledged: a later poll from the same peer still gets them.
    undelivered: HashMap<DeviceCode, (PeerId, GrantDelivery, Timestamp)>,
    /// Seq of the last durable entry.
    durable_seq: u64,
    /// Paid-compute approval requests (member, packet id) → state.
    pub(crate) spend: super::spend::SpendBook,
    /// The signed submission of the current champion (its hypothesis is where workers search).
    champion: Option<Signed<btd_protocol::wire::Submission>>,
    /// The signed submissions of claims waiting for the owner's check, by seq.
    pub(crate) claims: std::collections::BTreeMap<u64, Signed<btd_protocol::wire::Submission>>,
}

impl std::fmt::Debug for Owned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owned")
            .field("program", &self.program.name)
            .field("entries", &self.kb.entries().len())
            .finish()
    }
}

pub(crate) fn err(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
    ErrorReply {
        code,
        message: message.into(),
    }
}

impl Owned {
    fn new(program: Program) -> anyhow::Result<Owned> {
        let kb = program
            .kb()
            .map_err(|e| anyhow::anyhow!("invalid KB rules: {e:?}"))?;
        Ok(Owned {
            registry: Registry::new(program.membership),
            program,
            kb,
            nonces: HashMap::new(),
            seal_keys: HashMap::new(),
            undelivered: HashMap::new(),
            durable_seq: 0,
            spend: Default::default(),
            champion: None,
            claims: Default::default(),
        })
    }

    /// Rebuilds an owned program from the database, replaying the stored submissions and the
    /// owner's verdicts in the order they happened.
    pub(crate) fn restore<'a>(
        view: &VerifiedProgram,
        members: impl Iterator<Item = MemberRecord>,
        subs: impl Iterator<Item = &'a SubmissionRow>,
        verdicts: impl Iterator<Item = &'a VerdictRow>,
    ) -> anyhow::Result<Owned> {
        let mut o = Owned::new(view.program.clone())?;
        o.registry = Registry::restore(view.program.membership, members)
            .map_err(|e| anyhow::anyhow!("members of {}: {e}", view.id))?;
        let subs: Vec<&SubmissionRow> = subs.collect();
        for (i, row) in subs.iter().enumerate() {
            if row.entry.seq != i as u64 + 1 {
                anyhow::bail!(
                    "stored submission {} of {} is out of sequence (position {})",
                    row.entry.seq,
                    view.id,
                    i + 1
                );
            }
            o.nonces
                .insert((row.entry.worker.clone(), row.nonce), row.entry.seq);
        }
        o.kb =
            o.kb.replay_events(store::kb_history(subs.iter().copied(), verdicts))
                .map_err(|e| anyhow::anyhow!("the KB log of {}: {e}", view.id))?;
        // The signed submissions the owner serves (champion) and checks (pending claims).
        let signed = |seq: u64| -> anyhow::Result<Signed<btd_protocol::wire::Submission>> {
            let row = usize::try_from(seq)
                .ok()
                .and_then(|s| s.checked_sub(1))
                .and_then(|i| subs.get(i))
                .ok_or_else(|| anyhow::anyhow!("stored submission {seq} is missing"))?;
            btd_protocol::wire::decode(&row.signed)
                .map_err(|e| anyhow::anyhow!("stored submission {seq}: {e}"))
        };
        o.champion = o.kb.champion().map(|c| signed(c.seq)).transpose()?;
        o.claims =
            o.kb.pending()
                .map(|e| Ok((e.seq, signed(e.seq)?)))
                .collect::<anyhow::Result<_>>()?;
        o.durable_seq = o.kb.next_seq().saturating_sub(1);
        Ok(o)
    }

    /// Applies the owner's verdict on the oldest pending claim; returns the entry and the row to
    /// store.
    pub(crate) fn resolve(
        &mut self,
        program: ProgramId,
        seq: u64,
        verdict: Verdict,
        now: Timestamp,
    ) -> Result<(Entry, VerdictRow), String> {
        let after = self.kb.entries().len() as u64;
        let entry = self
            .kb
            .resolve(seq, &verdict)
            .map_err(|e| e.to_string())?
            .clone();
        if entry.champion {
            self.champion = self.claims.get(&seq).cloned();
        }
        let still: std::collections::BTreeSet<u64> = self.kb.pending().map(|e| e.seq).collect();
        self.claims.retain(|s, _| still.contains(s));
        Ok((
            entry,
            VerdictRow {
                program,
                seq,
                after,
                verdict,
                decided_at: now,
            },
        ))
    }

    fn receipt(&self, seq: u64, duplicate: bool) -> Option<SubmitReceipt> {
        let e = self
            .kb
            .entries()
            .get(usize::try_from(seq).ok()?.checked_sub(1)?)?;
        Some(SubmitReceipt {
            seq: e.seq,
            accepted: e.accepted,
            champion: e.champion,
            impact: e.impact,
            check: e.check.clone(),
            duplicate,
        })
    }

    fn stopped(&self, now: Timestamp) -> Option<String> {
        let s = &self.program.stop;
        if let Some(max) = s.max_submissions {
            if self.kb.entries().len() as u64 >= max {
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
                btd_protocol::kb::Direction::Minimize => c.value <= t,
                btd_protocol::kb::Direction::Maximize => c.value >= t,
            };
            if reached {
                return Some(format!("the champion reached the target {t}"));
            }
        }
        None
    }

    pub(crate) fn status(&self, id: ProgramId, owner: &str, source: &str) -> StatusView {
        let entries = self.kb.entries();
        let count = |f: fn(&Check) -> bool| entries.iter().filter(|e| f(&e.check)).count() as u64;
        let start = entries.len().saturating_sub(STATUS_RESULTS);
        StatusView {
            program: id,
            name: self.program.name.clone(),
            metric: self.program.criteria.metric.clone(),
            owner: owner.to_string(),
            source: source.to_string(),
            members: self
                .registry
                .members()
                .filter(|m| m.revoked_at.is_none())
                .count() as u64,
            submissions: entries.len() as u64,
            accepted: entries.iter().filter(|e| e.accepted).count() as u64,
            pending: count(|c| *c == Check::Pending),
            verified: count(|c| *c == Check::Verified),
            rejected: count(|c| matches!(c, Check::Failed(_))),
            champion: self.kb.champion().cloned(),
            payouts: self.kb.payouts(),
            pool: self.program.reward.pool,
            token: self.program.reward.token.clone(),
            results: entries.get(start..).map(<[_]>::to_vec).unwrap_or_default(),
        }
    }

    pub(crate) fn kb_status(&self, id: ProgramId) -> KbStatus {
        let s = self.status(id, "", "");
        KbStatus {
            program: id,
            name: s.name,
            members: s.members,
            submissions: s.submissions,
            accepted: s.accepted,
            pending: s.pending,
            verified: s.verified,
            rejected: s.rejected,
            champion: s.champion,
            payouts: s.payouts,
            pool: s.pool,
            token: s.token,
        }
    }
}

/// `btd publish`: validate, sign, persist, then announce.
pub(super) fn publish(
    node: &mut Node,
    manifest: String,
    files: super::types::PublishFiles,
    reply: oneshot::Sender<Result<ProgramId, String>>,
) {
    let program = match Program::from_toml(&manifest) {
        Ok(p) => p,
        Err(e) => {
            let _ = reply.send(Err(e.to_string()));
            return;
        }
    };
    let now = crate::now();
    let announcement = ProgramAnnouncement {
        manifest,
        addresses: node
            .my_addresses()
            .iter()
            .map(ToString::to_string)
            .collect(),
        published_at: now,
    };
    let signed = match Signed::sign(&node.key, &announcement) {
        Ok(s) => s,
        Err(e) => {
            let _ = reply.send(Err(format!("cannot sign the announcement: {e}")));
            return;
        }
    };
    let view = match btd_protocol::wire::verify_announcement(&signed, now) {
        Ok(v) => v,
        Err(e) => {
            let _ = reply.send(Err(e.to_string()));
            return;
        }
    };
    let id = view.id;
    if node.own.contains_key(&id) {
        // Same manifest, same owner: the same program. Re-announce and answer with its id.
        node.announce_soon = true;
        let _ = reply.send(Ok(id));
        return;
    }
    let owned = match Owned::new(program) {
        Ok(o) => o,
        Err(e) => {
            let _ = reply.send(Err(e.to_string()));
            return;
        }
    };
    let bytes = match btd_protocol::wire::encode(&signed) {
        Ok(b) => b,
        Err(e) => {
            let _ = reply.send(Err(format!("the announcement is too large: {e}")));
            return;
        }
    };
    let row = ProgramRow {
        id,
        owner: view.owner.to_string(),
        announcement: bytes,
        published_at: now,
        own: true,
    };
    let store = node.store.clone();
    let home = node.home.clone();
    let program = owned.program.clone();
    node.after(async move {
        // Artifacts first: a program is announced only once its dataset can be served and its
        // holdout is in place.
        let installed = tokio::task::spawn_blocking(move || {
            install_artifacts(home.as_deref(), id, &program, &files)
        })
        .await
        .map_err(|e| format!("installing the program's files failed: {e}"))
        .and_then(|r| r);
        let res = match installed {
            Ok(()) => store
                .write(move |tx| store::put_program(tx, &row))
                .await
                .map_err(|e| format!("cannot store the program: {e}")),
            Err(e) => Err(e),
        };
        Box::new(move |node: &mut Node| match res {
            Ok(()) => {
                node.own.insert(id, owned);
                node.known.insert(id, Known { view, signed });
                super::gossip::announce(node, id, true);
                tracing::info!(program = %id, "published");
                let _ = reply.send(Ok(id));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        })
    });
}

/// Where the owner-only holdout of `program` lives under `home`.
pub(crate) fn holdout_path(home: &std::path::Path, program: &ProgramId) -> std::path::PathBuf {
    home.join("holdout").join(format!("{program}.txt"))
}

/// Puts a new program's dataset where members can fetch it and its holdout where only the owner's
/// verifier reads it. Blocking.
fn install_artifacts(
    home: Option<&std::path::Path>,
    id: ProgramId,
    program: &Program,
    files: &super::types::PublishFiles,
) -> Result<(), String> {
    use btd_protocol::program::{Dataset, Task};
    let task = match &program.task {
        Task::Candle(t) => Some(t),
        Task::Shell(_) => None,
    };
    let checks = program.verify.checks();
    let file_digest = match task.map(|t| &t.dataset) {
        Some(Dataset::File { sha256 }) => Some(*sha256),
        _ => None,
    };
    if files.data.is_some() && file_digest.is_none() {
        return Err(
            "--data is only for programs whose [task.dataset] is a file (kind = \"file\")".into(),
        );
    }
    let need_holdout = task.is_some() && checks && program.verify.max_holdout_gap.is_some();
    if files.holdout.is_some() && !need_holdout {
        return Err("--holdout is only for candle programs that check claims on a holdout".into());
    }
    if files.data.is_none()
        && files.holdout.is_none()
        && !need_holdout
        && !(checks && file_digest.is_some())
    {
        return Ok(());
    }
    let home = home.ok_or("this node has no home directory to keep the program's files in")?;
    if let Some(sha256) = file_digest {
        match &files.data {
            Some(path) => {
                crate::blobs::BlobStore::new(home.join("blobs")).add_file(&id, path, Some(sha256))?;
            }
            None if checks => {
                return Err(format!(
                    "the program trains on the file with sha256 {sha256}: publish with --data FILE so                      members can fetch it over the mesh and this node can check claims"
                ))
            }
            None => {}
        }
    }
    if need_holdout {
        let dest = holdout_path(home, &id);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let text = match (&files.holdout, task.map(|t| &t.dataset)) {
            (Some(path), _) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read the holdout {}: {e}", path.display()))?;
                if std::str::from_utf8(&bytes).is_err() {
                    return Err(format!("the holdout {} is not UTF-8 text", path.display()));
                }
                bytes
            }
            (None, Some(Dataset::Synthetic { seed, bytes })) => {
                // Fresh text in the corpus's language from a secret stream: no worker can train
                // on it. As large as the validation split (at least 16 KiB).
                let secret = rand::random::<u64>();
                btd_trainer::synth::synthetic_holdout(*seed, secret, (*bytes / 10).max(16 << 10))
                    .map_err(|e| e.to_string())?
            }
            _ => {
                return Err(
                    "the program checks claims on an owner-only holdout: publish with --holdout FILE                      (text from the same source that workers never see), or set holdout = false in                      [verify]"
                        .into(),
                )
            }
        };
        let tmp = dest.with_extension("tmp");
        std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &dest))
            .map_err(|e| format!("cannot write the holdout {}: {e}", dest.display()))?;
    }
    Ok(())
}

/// Finds the owned program with a live code `user_code`.
fn program_for_code(node: &Node, user_code: &str, now: Timestamp) -> Option<ProgramId> {
    let code = btd_protocol::membership::UserCode::parse(user_code).ok()?;
    node.own.iter().find_map(|(id, o)| {
        o.registry
            .pending(now)
            .any(|p| p.user_code == code)
            .then_some(*id)
    })
}

/// `btd approve` / `btd deny`.
pub(super) fn decide(
    node: &mut Node,
    user_code: &str,
    approve: bool,
    reply: oneshot::Sender<Result<String, String>>,
) {
    let now = crate::now();
    let parsed = match btd_protocol::membership::UserCode::parse(user_code) {
        Ok(c) => c,
        Err(e) => {
            let _ = reply.send(Err(e.to_string()));
            return;
        }
    };
    // Codes are unique per registry, not across programs; a live code is looked up first, and a
    // code that is not live is handed to every registry so expired/used codes get their own error.
    let ids: Vec<ProgramId> = match program_for_code(node, user_code, now) {
        Some(id) => vec![id],
        None => node.own.keys().copied().collect(),
    };
    let mut last_err = DecisionError::NotFound { user_code: parsed };
    for id in ids {
        let Some(owned) = node.own.get_mut(&id) else {
            continue;
        };
        if !approve {
            match owned.registry.deny(user_code, now) {
                Ok(()) => {
                    let _ =
                        reply.send(Ok(format!("denied {user_code} for {}", owned.program.name)));
                    return;
                }
                Err(DecisionError::NotFound { .. }) => continue,
                Err(e) => last_err = e,
            }
            continue;
        }
        match owned.registry.approve(user_code, now, &mut node.rng) {
            Ok(info) => {
                let name = owned.program.name.clone();
                let record = owned.registry.member(&info.member).cloned();
                let device_code = info.device_code;
                let member = info.member.clone();
                persist_member_then(node, id, record, move |node| {
                    push_grant(node, id, device_code);
                    let _ = reply.send(Ok(format!("approved {member} for {name}")));
                });
                return;
            }
            Err(DecisionError::NotFound { .. }) => continue,
            Err(e) => last_err = e,
        }
    }
    let _ = reply.send(Err(last_err.to_string()));
}

/// Persists a member record, then runs `then` on the node (only if the write is durable).
fn persist_member_then(
    node: &mut Node,
    program: ProgramId,
    record: Option<MemberRecord>,
    then: impl FnOnce(&mut Node) + Send + 'static,
) {
    let Some(record) = record else {
        then(node);
        return;
    };
    let store = node.store.clone();
    node.after(async move {
        let res = store
            .write(move |tx| store::put_member(tx, &program, &record))
            .await;
        Box::new(move |node: &mut Node| match res {
            Ok(()) => then(node),
            Err(e) => tracing::error!(program = %program, error = %e, "cannot store a member"),
        })
    });
}

/// Seals the grant for `device_code` to its requester and pushes it; keeps a copy until acked so
/// that a poll still finds it if the push is lost.
fn push_grant(node: &mut Node, program: ProgramId, device_code: DeviceCode) {
    let Some(owned) = node.own.get_mut(&program) else {
        return;
    };
    let Some(grant) = owned.registry.take_grant(&device_code) else {
        return;
    };
    let Some(delivery) = seal_grant(owned, &mut node.rng, program, &grant) else {
        return;
    };
    let Some((peer, _, expires)) = owned.seal_keys.get(&device_code).copied() else {
        return;
    };
    owned
        .undelivered
        .insert(device_code, (peer, delivery.clone(), expires));
    node.net.request_membership(
        peer,
        MembershipRequest::PushGrant(delivery),
        MembershipTag::Push(program, device_code),
    );
}

fn seal_grant(
    owned: &Owned,
    rng: &mut rand::rngs::StdRng,
    program: ProgramId,
    grant: &Grant,
) -> Option<GrantDelivery> {
    let (_, key, _) = owned.seal_keys.get(&grant.device_code)?;
    let ctx = grant_seal_context(&program, &grant.device_code);
    match seal::seal(key, &ctx, grant.credential.as_bytes(), rng) {
        Ok(sealed) => Some(GrantDelivery {
            program,
            device_code: grant.device_code,
            sealed,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot seal a grant");
            None
        }
    }
}

/// A pushed grant was acknowledged (or failed: then the poll fallback delivers it).
pub(super) fn on_push_result(node: &mut Node, program: ProgramId, code: DeviceCode, ok: bool) {
    if ok {
        if let Some(o) = node.own.get_mut(&program) {
            o.undelivered.remove(&code);
        }
    }
}

pub(super) fn members(node: &Node, program: &ProgramId) -> Result<MembersView, String> {
    let owned = node
        .own
        .get(program)
        .ok_or_else(|| format!("this node does not own program {program}"))?;
    let now = crate::now();
    Ok(MembersView {
        program: *program,
        members: owned.registry.members().map(Into::into).collect(),
        pending: owned
            .registry
            .pending(now)
            .map(|p| PendingView {
                user_code: p.user_code.to_string(),
                peer: p.member.to_string(),
                expires_in: p.expires_at.millis_since(now) / 1000,
            })
            .collect(),
    })
}

pub(super) fn revoke(
    node: &mut Node,
    program: ProgramId,
    member: &str,
    reply: oneshot::Sender<Result<(), String>>,
) {
    let now = crate::now();
    let Some(owned) = node.own.get_mut(&program) else {
        let _ = reply.send(Err(format!("this node does not own program {program}")));
        return;
    };
    let member: MemberId = match member.parse() {
        Ok(m) => m,
        Err(e) => {
            let _ = reply.send(Err(format!("{member:?} is not a member id: {e}")));
            return;
        }
    };
    if let Err(e) = owned.registry.revoke(&member, now) {
        let _ = reply.send(Err(e.to_string()));
        return;
    }
    let record = owned.registry.member(&member).cloned();
    persist_member_then(node, program, record, move |_| {
        let _ = reply.send(Ok(()));
    });
}

/// Inbound membership request for a program this node owns.
pub(super) fn on_membership_request(
    node: &mut Node,
    peer: PeerId,
    req: MembershipRequest,
    channel: Responder<MembershipResponse>,
) {
    let now = crate::now();
    let (program, reply) = match req {
        MembershipRequest::Authorize { program, seal_key } => {
            let Some(owned) = node.own.get_mut(&program) else {
                return respond(node, channel, unknown(&program));
            };
            match owned.registry.request(peer, now, &mut node.rng) {
                Ok(auth) => {
                    let expires = now.plus_secs(auth.expires_in);
                    owned
                        .seal_keys
                        .insert(auth.device_code, (peer, seal_key, expires));
                    tracing::info!(program = %program, peer = %peer, user_code = %auth.user_code, "join requested");
                    let code = auth.device_code;
                    let open =
                        owned.registry.mode() == btd_protocol::membership::MembershipMode::Open;
                    respond(node, channel, MembershipResponse::Authorization(auth));
                    if open {
                        // Open membership: the code is approved at once; persist, then push.
                        let record = node
                            .own
                            .get(&program)
                            .and_then(|o| {
                                o.registry
                                    .member(&btd_protocol::membership::MemberId::from_peer(&peer))
                            })
                            .cloned();
                        persist_member_then(node, program, record, move |node| {
                            push_grant(node, program, code)
                        });
                    }
                    return;
                }
                Err(e) => (
                    program,
                    MembershipResponse::Error(err(ErrorCode::Invalid, e.to_string())),
                ),
            }
        }
        MembershipRequest::Poll {
            program,
            device_code,
        } => {
            let Some(owned) = node.own.get_mut(&program) else {
                return respond(node, channel, unknown(&program));
            };
            match owned.registry.poll(&device_code, &peer, now) {
                Ok(grant) => match seal_grant(owned, &mut node.rng, program, &grant) {
                    Some(d) => {
                        let record = owned.registry.member(&grant.member).cloned();
                        persist_member_then(node, program, record, move |node| {
                            respond(node, channel, MembershipResponse::Granted(d))
                        });
                        return;
                    }
                    None => (
                        program,
                        MembershipResponse::Error(err(
                            ErrorCode::Unavailable,
                            "cannot seal the credential; start the join again",
                        )),
                    ),
                },
                // A pushed grant that was never acknowledged: delivered once, to the same peer.
                Err(PollError::NotFound) => match owned.undelivered.get(&device_code) {
                    Some((p, _, _)) if *p == peer => match owned.undelivered.remove(&device_code) {
                        Some((_, d, _)) => (program, MembershipResponse::Granted(d)),
                        None => (program, MembershipResponse::Poll(PollStatus::NotFound)),
                    },
                    _ => (program, MembershipResponse::Poll(PollStatus::NotFound)),
                },
                Err(e) => (program, MembershipResponse::Poll(poll_status(&e))),
            }
        }
        // Worker-side traffic: `dispatch.rs` routes it to the worker before it gets here.
        MembershipRequest::PushGrant(delivery) => {
            return super::worker::on_push_grant(node, peer, delivery, channel);
        }
    };
    let _ = program;
    respond(node, channel, reply);
}

fn poll_status(e: &PollError) -> PollStatus {
    match e {
        PollError::AuthorizationPending => PollStatus::AuthorizationPending,
        PollError::SlowDown { interval } => PollStatus::SlowDown {
            interval: *interval,
        },
        PollError::AccessDenied => PollStatus::AccessDenied,
        PollError::ExpiredToken => PollStatus::ExpiredToken,
        PollError::NotFound => PollStatus::NotFound,
    }
}

fn unknown(program: &ProgramId) -> MembershipResponse {
    MembershipResponse::Error(err(
        ErrorCode::UnknownProgram,
        format!("this peer does not own program {program}"),
    ))
}

fn respond(node: &mut Node, channel: Responder<MembershipResponse>, resp: MembershipResponse) {
    if !node.net.respond(channel, resp) {
        tracing::debug!("membership response dropped: the requester went away");
    }
}

fn respond_kb(node: &mut Node, channel: Responder<KbResponse>, resp: KbResponse) {
    if !node.net.respond(channel, resp) {
        tracing::debug!("KB response dropped: the requester went away");
    }
}

/// Inbound KB request: membership-gated against the Noise-authenticated peer id.
pub(super) fn on_kb_request(
    node: &mut Node,
    peer: PeerId,
    req: KbRequest,
    channel: Responder<KbResponse>,
) {
    let now = crate::now();
    let KbRequest {
        program,
        credential,
        call,
    } = req;
    let Some(owned) = node.own.get_mut(&program) else {
        return respond_kb(
            node,
            channel,
            KbResponse::Error(err(
                ErrorCode::UnknownProgram,
                format!("this peer does not own program {program}"),
            )),
        );
    };
    let member = match owned.registry.verify(&credential, &peer) {
        Ok(m) => m,
        Err(btd_protocol::membership::AuthError::Revoked) => {
            tracing::info!(program = %program, peer = %peer, "refused a revoked member");
            return respond_kb(
                node,
                channel,
                KbResponse::Error(err(
                    ErrorCode::Revoked,
                    "revoked: the owner revoked this member; its requests are refused",
                )),
            );
        }
        Err(_) => {
            tracing::info!(program = %program, peer = %peer, "refused a non-member");
            return respond_kb(
                node,
                channel,
                KbResponse::Error(err(
                    ErrorCode::MembershipRequired,
                    "membership required: join the program with `btd join` first",
                )),
            );
        }
    };
    if let Err(e) = call.check() {
        return respond_kb(
            node,
            channel,
            KbResponse::Error(err(ErrorCode::Invalid, e.to_string())),
        );
    }
    let resp = match call {
        KbCall::Program => match node.known.get(&program) {
            Some(k) => KbResponse::Program(k.signed.clone()),
            None => KbResponse::Error(err(ErrorCode::Unavailable, "program not loaded")),
        },
        KbCall::Champion => KbResponse::Champion(
            owned
                .kb
                .champion()
                .cloned()
                .zip(owned.champion.clone())
                .map(|(entry, submission)| Box::new(ChampionView { entry, submission })),
        ),
        KbCall::Results { after_seq, limit } => {
            let (entries, more) = Node::page(
                owned.kb.entries(),
                after_seq,
                usize::try_from(limit).unwrap_or(0),
            );
            KbResponse::Results { entries, more }
        }
        KbCall::Status => KbResponse::Status(owned.kb_status(program)),
        KbCall::Submit(signed) => return submit(node, program, peer, member, signed, channel, now),
    };
    respond_kb(node, channel, resp);
}

fn submit(
    node: &mut Node,
    program: ProgramId,
    peer: PeerId,
    member: MemberId,
    signed: Signed<btd_protocol::wire::Submission>,
    channel: Responder<KbResponse>,
    now: Timestamp,
) {
    let invalid = |m: String| KbResponse::Error(err(ErrorCode::Invalid, m));
    let sub = match signed.verify_from(&peer) {
        Ok(s) => s,
        Err(e) => {
            return respond_kb(
                node,
                channel,
                invalid(format!(
                    "the submission must be signed by the submitting peer: {e}"
                )),
            )
        }
    };
    if sub.program != program {
        return respond_kb(
            node,
            channel,
            invalid("the submission names another program".into()),
        );
    }
    if let Err(e) = sub.check(now) {
        return respond_kb(node, channel, invalid(e.to_string()));
    }
    let Some(owned) = node.own.get_mut(&program) else {
        return;
    };
    let key = (member.to_string(), sub.nonce);
    if let Some(seq) = owned.nonces.get(&key).copied() {
        // A retry: the original verdict, once it is durable.
        let receipt = owned.receipt(seq, true);
        let store = node.store.clone();
        node.after(async move {
            let res = store.barrier().await;
            Box::new(move |node: &mut Node| {
                let resp = match (res, receipt) {
                    (Ok(()), Some(r)) => KbResponse::Submitted(r),
                    _ => KbResponse::Error(err(ErrorCode::Unavailable, "try again")),
                };
                respond_kb(node, channel, resp);
            })
        });
        return;
    }
    if owned.kb.verifies() && sub.claim.is_none() {
        return respond_kb(
            node,
            channel,
            invalid(
                "this program checks every claim before it counts: submit the checkpoint the \
                 value was measured on (btd submit --checkpoint FILE)"
                    .into(),
            ),
        );
    }
    let waiting = owned
        .kb
        .pending()
        .filter(|e| e.worker == member.as_str())
        .count();
    if waiting >= MAX_PENDING_PER_MEMBER {
        return respond_kb(
            node,
            channel,
            KbResponse::Error(err(
                ErrorCode::RateLimited,
                format!(
                    "you have {waiting} claims waiting for the owner's check; submit more once they \
                     are settled (btd status shows them)"
                ),
            )),
        );
    }
    if let Some(why) = owned.stopped(now) {
        return respond_kb(
            node,
            channel,
            KbResponse::Error(err(ErrorCode::ProgramStopped, why)),
        );
    }
    let entry = match owned.kb.submit(member.as_str(), sub.value) {
        Ok(e) => e.clone(),
        Err(e) => return respond_kb(node, channel, invalid(e.to_string())),
    };
    owned.nonces.insert(key, entry.seq);
    if entry.champion {
        owned.champion = Some(signed.clone());
    }
    if entry.check == Check::Pending {
        owned.claims.insert(entry.seq, signed.clone());
        node.claims_ready.notify_one();
    }
    let receipt = owned.receipt(entry.seq, false);
    let bytes = btd_protocol::wire::encode(&signed).unwrap_or_default();
    let row = SubmissionRow {
        program,
        entry: entry.clone(),
        nonce: sub.nonce,
        signed: bytes,
        received_at: now,
    };
    tracing::info!(program = %program, member = %member, seq = entry.seq, value = entry.value, accepted = entry.accepted, "submission");
    let store = node.store.clone();
    node.after(async move {
        let res = store.write(move |tx| store::put_submission(tx, &row)).await;
        Box::new(move |node: &mut Node| match (res, receipt) {
            (Ok(()), Some(r)) => {
                if let Some(o) = node.own.get_mut(&program) {
                    o.durable_seq = o.durable_seq.max(r.seq);
                }
                respond_kb(node, channel, KbResponse::Submitted(r));
            }
            (res, _) => {
                let e = res.err().unwrap_or(StoreError::Closed);
                tracing::error!(program = %program, error = %e, "cannot store a submission; reloading the KB");
                respond_kb(
                    node,
                    channel,
                    KbResponse::Error(err(
                        ErrorCode::Unavailable,
                        format!("the owner could not store the result ({e}); retry later"),
                    )),
                );
                reload(node, program);
            }
        })
    });
}

/// After a failed write, rebuilds an owned program's KB from what is durable.
fn reload(node: &mut Node, program: ProgramId) {
    let store = node.store.clone();
    node.after(async move {
        let snap = store.read(store::load_snapshot).await;
        Box::new(move |node: &mut Node| {
            let (Ok(snap), Some(k)) = (snap, node.known.get(&program)) else {
                return;
            };
            let members = snap
                .members
                .iter()
                .filter(|(p, _)| *p == program)
                .map(|(_, m)| m.clone());
            let subs = snap.submissions.iter().filter(|s| s.program == program);
            let verdicts = snap.verdicts.iter().filter(|v| v.program == program);
            match Owned::restore(&k.view, members, subs, verdicts) {
                Ok(o) => {
                    node.own.insert(program, o);
                }
                Err(e) => tracing::error!(program = %program, error = %e, "cannot reload the KB"),
            }
        })
    });
}

/// Drops expired state.
pub(super) fn on_tick(node: &mut Node) {
    let now = crate::now();
    for o in node.own.values_mut() {
        o.registry.expire(now);
        o.seal_keys.retain(|_, (_, _, exp)| *exp >= now);
        o.undelivered.retain(|_, (_, _, exp)| *exp >= now);
    }
}

/// The oldest pending claim of each owned program, with what the verifier needs.
pub(super) fn next_claims(node: &Node) -> Vec<super::types::ClaimJob> {
    let mut jobs = Vec::new();
    for (program, owned) in &node.own {
        let Some(entry) = owned.kb.next_pending() else {
            continue;
        };
        let Some(signed) = owned.claims.get(&entry.seq) else {
            tracing::warn!(program = %program, seq = entry.seq, "a pending claim lost its submission");
            continue;
        };
        let (Ok(worker), Ok(submission)) = (entry.worker.parse::<PeerId>(), signed.verify()) else {
            continue;
        };
        // The share of the pool the worker would hold if the claim verified: only programs that
        // re-train large claims need it (it costs a copy of the KB).
        let share = if owned.program.verify.retrain_share.is_some() {
            share_if_verified(&owned.kb, entry.seq, &entry.worker)
        } else {
            0.0
        };
        jobs.push(super::types::ClaimJob {
            program: *program,
            seq: entry.seq,
            worker,
            submission: submission.value,
            share_if_verified: share,
        });
    }
    jobs
}

/// Applies the owner's verdict, stores it, then answers (durable before the reply).
pub(super) fn resolve(
    node: &mut Node,
    program: ProgramId,
    seq: u64,
    verdict: Verdict,
    reply: oneshot::Sender<Result<Entry, String>>,
) {
    let now = crate::now();
    let Some(owned) = node.own.get_mut(&program) else {
        let _ = reply.send(Err(format!("this node does not own {program}")));
        return;
    };
    let (entry, row) = match owned.resolve(program, seq, verdict, now) {
        Ok(x) => x,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    match &entry.check {
        Check::Failed(why) => {
            tracing::info!(program = %program, seq, worker = %entry.worker, value = entry.value, reason = %why, "claim rejected")
        }
        _ => {
            tracing::info!(program = %program, seq, worker = %entry.worker, value = entry.value, champion = entry.champion, "claim verified")
        }
    }
    let store = node.store.clone();
    node.after(async move {
        let res = store.write(move |tx| store::put_verdict(tx, &row)).await;
        Box::new(move |node: &mut Node| match res {
            Ok(()) => {
                let _ = reply.send(Ok(entry));
            }
            Err(e) => {
                tracing::error!(program = %program, error = %e, "cannot store a verdict; reloading the KB");
                let _ = reply.send(Err(format!("cannot store the verdict: {e}")));
                reload(node, program);
            }
        })
    });
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
