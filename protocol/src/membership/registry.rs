//! The owner's registry: pending device authorizations and the member table.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use super::codes::{Credential, DeviceCode, MemberId, UserCode, UserCodeError};
use super::{MembershipMode, DEVICE_CODE_EXPIRES_IN_SECS, POLL_INTERVAL_SECS, SLOW_DOWN_STEP_SECS};
use crate::{Digest, Timestamp};

/// Most open codes (undecided, or approved and not yet delivered, and not expired) held at once.
/// Any peer that can reach the owner may ask for a code and peer ids are free to make, so the table
/// is bounded; but a full table never refuses a newcomer: the new code evicts the oldest open code
/// of the peer holding the most open codes (see [`Registry::request`]). Consumed, denied and
/// expired codes do not count here; they are bounded by [`MAX_CLOSED_TOTAL`].
pub const MAX_PENDING_TOTAL: usize = 1024;

/// Most closed codes (delivered, denied or expired) remembered, so late polls and approvals get
/// their precise answer (`expired_token`, `access_denied`, "already used"). [`Registry::request`]
/// and [`Registry::expire`] forget the oldest closed codes past it; a forgotten code answers "not
/// found". With [`MAX_PENDING_TOTAL`] this bounds the whole table at
/// `MAX_PENDING_TOTAL + MAX_CLOSED_TOTAL` codes at every moment.
pub const MAX_CLOSED_TOTAL: usize = 1024;

/// Most open codes one peer may hold. A worker needs one; a few more let it restart and ask again
/// without waiting out the 15-minute expiry.
pub const MAX_PENDING_PER_PEER: usize = 4;

/// How long an expired code is still remembered (answered as expired), unless
/// [`MAX_CLOSED_TOTAL`] forgets it sooner.
pub const EXPIRED_GRACE_SECS: u64 = 300;

/// Attempts at drawing an unused random code before giving up. With 31^8 user codes and at most
/// [`MAX_PENDING_TOTAL`] live ones a second attempt is already rare; the bound only guards against
/// a broken RNG looping forever.
const MAX_CODE_ATTEMPTS: usize = 32;

/// The owner's answer to a join request (RFC 8628 device authorization response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceAuthorization {
    /// The worker's handle for polling; bound to the requesting peer.
    pub device_code: DeviceCode,
    /// The code the owner types to approve, `XXXX-XXXX`.
    pub user_code: UserCode,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Minimum seconds between polls.
    pub interval: u64,
}

/// What a worker gets once its request is approved: delivered exactly once. It holds the plaintext
/// credential, so it only ever travels inside a [`crate::seal::Sealed`] message to the worker's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Grant {
    /// The worker's member id (its peer id).
    pub member: MemberId,
    /// The worker's secret credential.
    pub credential: Credential,
    /// The device code this grant answers.
    pub device_code: DeviceCode,
}

/// What an approval did, for the owner's confirmation message and for pushing the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApprovedInfo {
    /// The new member.
    pub member: MemberId,
    /// The approved device code (pass it to [`Registry::take_grant`] to push the grant).
    pub device_code: DeviceCode,
    /// The approved user code.
    pub user_code: UserCode,
}

/// A join request waiting for the owner, as `btd approve` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PendingRequest {
    /// The code to approve or deny.
    pub user_code: UserCode,
    /// Who asked.
    pub member: MemberId,
    /// When they asked.
    pub requested_at: Timestamp,
    /// The last instant the code can be approved.
    pub expires_at: Timestamp,
}

/// A join request still waiting for the owner's decision, as the owner stores it so that a restart
/// does not lose it ([`Registry::undecided_codes`], [`Registry::restore_codes`]). It holds no
/// secret: the device code only works from `peer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UndecidedCode {
    /// The worker's polling handle.
    pub device_code: DeviceCode,
    /// The code the owner types.
    pub user_code: UserCode,
    /// The requesting peer (base58).
    pub peer: String,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// The last instant it can be approved.
    pub expires_at: Timestamp,
}

/// One member as the owner stores it: never the credential itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MemberRecord {
    /// The member (its peer id in base58); its credential is valid only from this peer.
    pub member: MemberId,
    /// SHA-256 of the member's credential.
    pub credential_hash: Digest,
    /// When the credential was issued.
    pub joined_at: Timestamp,
    /// When the owner revoked the member, if it did. Revocation is permanent.
    pub revoked_at: Option<Timestamp>,
}

/// Why a join request was refused.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, thiserror::Error,
)]
#[serde(rename_all = "snake_case")]
pub enum RequestError {
    /// The owner revoked this peer; it cannot join again.
    #[error("the owner revoked this peer's membership; it cannot join this program again")]
    Revoked,
    /// The owner holds too many codes right now. This registry no longer refuses a request for
    /// that (a full table evicts instead, see [`MAX_PENDING_TOTAL`]); the variant stays so that
    /// answers of older owners still decode.
    #[error("the owner has too many join requests waiting ({limit}); try again in a few minutes")]
    TooManyPending {
        /// The limit.
        limit: usize,
    },
    /// This peer already holds too many undecided codes.
    #[error(
        "this peer already has {limit} join requests waiting; use one of them, or wait until they \
         expire (15 minutes)"
    )]
    TooManyPendingForPeer {
        /// The limit.
        limit: usize,
    },
    /// No unused code could be drawn (only with a broken RNG).
    #[error("could not draw an unused join code; the random number generator looks broken")]
    CodeGeneration,
}

/// The answers to a poll other than a grant (RFC 8628 §3.5 error codes).
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, thiserror::Error,
)]
#[serde(rename_all = "snake_case")]
pub enum PollError {
    /// The owner has not decided yet; poll again after the interval.
    #[error("authorization pending: the owner has not approved this join request yet")]
    AuthorizationPending,
    /// Polled faster than the interval; the interval is now `interval` seconds.
    #[error("slow down: poll at most once every {interval} seconds")]
    SlowDown {
        /// The new minimum gap between polls, in seconds.
        interval: u64,
    },
    /// The owner denied the request.
    #[error("access denied: the owner denied this join request")]
    AccessDenied,
    /// The code expired before it was approved.
    #[error("expired token: the join code expired; request a new one")]
    ExpiredToken,
    /// No such code for this peer, or its grant was already delivered.
    #[error(
        "unknown device code: it was not issued to this peer, or its credential was already \
         delivered; request a new code"
    )]
    NotFound,
}

/// Why an approve or deny failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// The input is not a well-formed user code.
    #[error("{0}")]
    InvalidCode(UserCodeError),
    /// No request has this code.
    #[error("no join request has the code {user_code}; check the code the worker shows")]
    NotFound {
        /// The code looked up.
        user_code: UserCode,
    },
    /// The code expired.
    #[error("the join code {user_code} has expired; the worker must request a new one")]
    Expired {
        /// The code looked up.
        user_code: UserCode,
    },
    /// The request was already approved or denied.
    #[error("the join code {user_code} was already approved or denied")]
    AlreadyUsed {
        /// The code looked up.
        user_code: UserCode,
    },
}

/// Why a credential was not accepted.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, thiserror::Error,
)]
#[serde(rename_all = "snake_case")]
pub enum AuthError {
    /// Not a credential of this peer.
    #[error(
        "membership required: this peer is not a member of the program; join with a device code \
         and ask the owner to approve it"
    )]
    MembershipRequired,
    /// The member was revoked.
    #[error("membership revoked: the owner revoked this member")]
    Revoked,
}

/// Why a revocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// No member has this id.
    #[error("{member} is not a member; see the member list for the ids")]
    NotAMember {
        /// The id looked up.
        member: MemberId,
    },
}

/// Why a persisted member table could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// A record names something that is not a peer id.
    #[error("member record {member:?} is not a libp2p peer id; the member file is corrupt")]
    BadMemberId {
        /// The bad id.
        member: MemberId,
    },
    /// Two records share a credential hash.
    #[error("two member records share the credential hash {hash}; the member file is corrupt")]
    DuplicateCredential {
        /// The repeated hash.
        hash: Digest,
    },
    /// Two records name the same member.
    #[error("{member} appears twice in the member file; the member file is corrupt")]
    DuplicateMember {
        /// The repeated member.
        member: MemberId,
    },
}

/// Where one device code stands.
#[derive(Debug)]
enum State {
    /// Waiting for the owner.
    Pending,
    /// Approved; the credential waits to be delivered once.
    Approved(Credential),
    /// Denied (by the owner, or by revoking the peer).
    Denied,
    /// The grant was delivered (or superseded); kept until expiry so the code is not reused.
    Consumed,
}

#[derive(Debug)]
struct Entry {
    peer: PeerId,
    member: MemberId,
    user_code: UserCode,
    issued_at: Timestamp,
    expires_at: Timestamp,
    interval_secs: u64,
    last_poll: Option<Timestamp>,
    state: State,
}

impl Entry {
    fn is_expired(&self, now: Timestamp) -> bool {
        now > self.expires_at
    }

    /// Undecided, or approved but not yet delivered (expired or not).
    fn is_open(&self) -> bool {
        matches!(self.state, State::Pending | State::Approved(_))
    }

    /// Holds a slot of its peer and of the global open table: open and not expired.
    fn holds_slot(&self, now: Timestamp) -> bool {
        self.is_open() && !self.is_expired(now)
    }
}

/// The owner's membership state: pending device codes and members.
///
/// Pure: the caller passes the time and an RNG. Members are keyed by the SHA-256 of their credential,
/// with at most one record per member: a member that joins again (say after losing its credential
/// file) gets a new credential and the old one stops working.
#[derive(Debug)]
pub struct Registry {
    mode: MembershipMode,
    codes: BTreeMap<DeviceCode, Entry>,
    by_user_code: BTreeMap<UserCode, DeviceCode>,
    members: BTreeMap<Digest, MemberRecord>,
    by_member: BTreeMap<MemberId, Digest>,
}

impl Registry {
    /// An empty registry.
    pub fn new(mode: MembershipMode) -> Self {
        Self {
            mode,
            codes: BTreeMap::new(),
            by_user_code: BTreeMap::new(),
            members: BTreeMap::new(),
            by_member: BTreeMap::new(),
        }
    }

    /// A registry with a persisted member table (from [`Registry::export_members`]). Pending codes
    /// are not persisted: a restart makes waiting workers request again.
    pub fn restore(
        mode: MembershipMode,
        records: impl IntoIterator<Item = MemberRecord>,
    ) -> Result<Self, RestoreError> {
        let mut reg = Self::new(mode);
        for record in records {
            if record.member.peer_id().is_err() {
                return Err(RestoreError::BadMemberId {
                    member: record.member,
                });
            }
            if reg.members.contains_key(&record.credential_hash) {
                return Err(RestoreError::DuplicateCredential {
                    hash: record.credential_hash,
                });
            }
            if reg.by_member.contains_key(&record.member) {
                return Err(RestoreError::DuplicateMember {
                    member: record.member,
                });
            }
            reg.by_member
                .insert(record.member.clone(), record.credential_hash);
            reg.members.insert(record.credential_hash, record);
        }
        Ok(reg)
    }

    /// The member table, for persistence. Holds credential hashes only.
    pub fn export_members(&self) -> Vec<MemberRecord> {
        self.members().cloned().collect()
    }

    /// The membership mode.
    pub fn mode(&self) -> MembershipMode {
        self.mode
    }

    /// Changes the mode. Requests already waiting stay waiting.
    pub fn set_mode(&mut self, mode: MembershipMode) {
        self.mode = mode;
    }

    /// A worker (`peer`) asks to join. In open mode the request is approved at once and the grant
    /// waits for the first poll (or [`Registry::take_grant`]).
    ///
    /// Refused only for a revoked peer or one already holding [`MAX_PENDING_PER_PEER`] open codes.
    /// When [`MAX_PENDING_TOTAL`] open codes are held, the oldest open code of the peer holding the
    /// most open codes is forgotten to make room, so throwaway identities cannot lock honest
    /// joiners out: they can only push each other out (and, by sheer volume, shorten how long any
    /// code waits).
    pub fn request(
        &mut self,
        peer: PeerId,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<DeviceAuthorization, RequestError> {
        self.expire(now);
        let member = MemberId::from_peer(&peer);
        if self.is_revoked(&member) {
            return Err(RequestError::Revoked);
        }
        let mut open_by_peer: BTreeMap<PeerId, usize> = BTreeMap::new();
        for e in self.codes.values().filter(|e| e.holds_slot(now)) {
            *open_by_peer.entry(e.peer).or_default() += 1;
        }
        if open_by_peer.get(&peer).copied().unwrap_or(0) >= MAX_PENDING_PER_PEER {
            return Err(RequestError::TooManyPendingForPeer {
                limit: MAX_PENDING_PER_PEER,
            });
        }
        if open_by_peer.values().sum::<usize>() >= MAX_PENDING_TOTAL {
            self.evict_open(&open_by_peer, now);
        }
        let device_code = (0..MAX_CODE_ATTEMPTS)
            .map(|_| DeviceCode::generate(rng))
            .find(|c| !self.codes.contains_key(c))
            .ok_or(RequestError::CodeGeneration)?;
        let user_code = (0..MAX_CODE_ATTEMPTS)
            .map(|_| UserCode::generate(rng))
            .find(|c| !self.by_user_code.contains_key(c))
            .ok_or(RequestError::CodeGeneration)?;
        self.codes.insert(
            device_code,
            Entry {
                peer,
                member,
                user_code,
                issued_at: now,
                expires_at: now.plus_secs(DEVICE_CODE_EXPIRES_IN_SECS),
                interval_secs: POLL_INTERVAL_SECS,
                last_poll: None,
                state: State::Pending,
            },
        );
        self.by_user_code.insert(user_code, device_code);
        if self.mode == MembershipMode::Open {
            self.issue(&device_code, now, rng);
        }
        self.trim_closed(now, MAX_CLOSED_TOTAL);
        Ok(DeviceAuthorization {
            device_code,
            user_code,
            expires_in: DEVICE_CODE_EXPIRES_IN_SECS,
            interval: POLL_INTERVAL_SECS,
        })
    }

    /// The owner approves the request with this user code: the credential is issued now (the
    /// registry stores its hash) and handed out once, by the next poll or [`Registry::take_grant`].
    pub fn approve(
        &mut self,
        user_code: &str,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<ApprovedInfo, DecisionError> {
        let (device_code, user_code) = self.decidable(user_code, now)?;
        let member = self
            .issue(&device_code, now, rng)
            .ok_or(DecisionError::NotFound { user_code })?;
        Ok(ApprovedInfo {
            member,
            device_code,
            user_code,
        })
    }

    /// The owner denies the request with this user code; the worker's next poll says so.
    pub fn deny(&mut self, user_code: &str, now: Timestamp) -> Result<(), DecisionError> {
        let (device_code, _) = self.decidable(user_code, now)?;
        if let Some(entry) = self.codes.get_mut(&device_code) {
            entry.state = State::Denied;
        }
        Ok(())
    }

    /// Finds a request the owner may still decide on.
    fn decidable(
        &self,
        input: &str,
        now: Timestamp,
    ) -> Result<(DeviceCode, UserCode), DecisionError> {
        let user_code = UserCode::parse(input).map_err(DecisionError::InvalidCode)?;
        let (device_code, entry) = self
            .by_user_code
            .get(&user_code)
            .and_then(|dc| self.codes.get(dc).map(|e| (*dc, e)))
            .ok_or(DecisionError::NotFound { user_code })?;
        if entry.is_expired(now) {
            return Err(DecisionError::Expired { user_code });
        }
        if !matches!(entry.state, State::Pending) {
            return Err(DecisionError::AlreadyUsed { user_code });
        }
        Ok((device_code, user_code))
    }

    /// Issues a credential for a pending code: stores its hash (replacing the member's previous
    /// credential) and parks the plaintext in the entry until delivered.
    fn issue(
        &mut self,
        device_code: &DeviceCode,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Option<MemberId> {
        let member = self.codes.get(device_code)?.member.clone();
        let credential = Credential::generate(rng);
        let hash = credential.hash();
        if let Some(old) = self.by_member.insert(member.clone(), hash) {
            self.members.remove(&old);
        }
        self.members.insert(
            hash,
            MemberRecord {
                member: member.clone(),
                credential_hash: hash,
                joined_at: now,
                revoked_at: None,
            },
        );
        // An older approved-but-undelivered code of the same member now holds a dead credential.
        for entry in self.codes.values_mut() {
            if entry.member == member && matches!(entry.state, State::Approved(_)) {
                entry.state = State::Consumed;
            }
        }
        if let Some(entry) = self.codes.get_mut(device_code) {
            entry.state = State::Approved(credential);
        }
        Some(member)
    }

    /// The worker `peer` polls with its device code.
    ///
    /// `slow_down` only answers polls that would otherwise be `authorization_pending`; a poll exactly
    /// `interval` seconds after the previous one is on time.
    pub fn poll(
        &mut self,
        device_code: &DeviceCode,
        peer: &PeerId,
        now: Timestamp,
    ) -> Result<Grant, PollError> {
        let entry = match self.codes.get_mut(device_code) {
            Some(e) if e.peer == *peer => e,
            _ => return Err(PollError::NotFound),
        };
        if matches!(entry.state, State::Consumed) {
            return Err(PollError::NotFound);
        }
        if entry.is_expired(now) {
            return Err(PollError::ExpiredToken);
        }
        let previous = entry.last_poll.replace(now);
        match entry.state {
            State::Consumed => Err(PollError::NotFound),
            State::Denied => Err(PollError::AccessDenied),
            State::Approved(_) => take(device_code, entry).ok_or(PollError::NotFound),
            State::Pending => {
                let min_gap_ms = entry.interval_secs.saturating_mul(1000);
                match previous {
                    Some(prev) if now.millis_since(prev) < min_gap_ms => {
                        entry.interval_secs =
                            entry.interval_secs.saturating_add(SLOW_DOWN_STEP_SECS);
                        Err(PollError::SlowDown {
                            interval: entry.interval_secs,
                        })
                    }
                    _ => Err(PollError::AuthorizationPending),
                }
            }
        }
    }

    /// Takes the grant of an approved code to push it to the worker at once. Consumes it exactly
    /// like a successful poll: afterwards polls answer `not found`. `None` if there is no
    /// undelivered grant for this code.
    pub fn take_grant(&mut self, device_code: &DeviceCode) -> Option<Grant> {
        let entry = self.codes.get_mut(device_code)?;
        take(device_code, entry)
    }

    /// Checks a credential presented by `peer`; returns the member it belongs to.
    pub fn verify(&self, credential: &Credential, peer: &PeerId) -> Result<MemberId, AuthError> {
        let record = self
            .members
            .get(&credential.hash())
            .filter(|r| r.member == MemberId::from_peer(peer))
            .ok_or(AuthError::MembershipRequired)?;
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        Ok(record.member.clone())
    }

    /// Revokes a member, permanently: its credential fails from the next check on, its waiting
    /// requests are denied and its later requests refused. Revoking twice keeps the first time.
    pub fn revoke(&mut self, member: &MemberId, now: Timestamp) -> Result<(), RevokeError> {
        let record = self
            .by_member
            .get(member)
            .and_then(|h| self.members.get_mut(h))
            .ok_or_else(|| RevokeError::NotAMember {
                member: member.clone(),
            })?;
        record.revoked_at.get_or_insert(now);
        for entry in self.codes.values_mut() {
            if entry.member == *member && entry.is_open() {
                entry.state = State::Denied;
            }
        }
        Ok(())
    }

    /// Whether `member` was revoked.
    pub fn is_revoked(&self, member: &MemberId) -> bool {
        self.member(member).is_some_and(|r| r.revoked_at.is_some())
    }

    /// The record of one member, if any.
    pub fn member(&self, member: &MemberId) -> Option<&MemberRecord> {
        self.by_member.get(member).and_then(|h| self.members.get(h))
    }

    /// All members, revoked ones included, ordered by member id.
    pub fn members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.by_member.values().filter_map(|h| self.members.get(h))
    }

    /// Requests still waiting for the owner's decision at `now`, oldest first.
    pub fn pending(&self, now: Timestamp) -> impl Iterator<Item = PendingRequest> {
        let mut out: Vec<PendingRequest> = self
            .codes
            .values()
            .filter(|e| matches!(e.state, State::Pending) && !e.is_expired(now))
            .map(|e| PendingRequest {
                user_code: e.user_code,
                member: e.member.clone(),
                requested_at: e.issued_at,
                expires_at: e.expires_at,
            })
            .collect();
        out.sort_by(|a, b| (a.requested_at, &a.user_code).cmp(&(b.requested_at, &b.user_code)));
        out.into_iter()
    }

    /// The codes still waiting for the owner's decision (expired ones included until they are
    /// forgotten), by device code: what the owner persists so a restart keeps them.
    pub fn undecided_codes(&self) -> impl Iterator<Item = UndecidedCode> + '_ {
        self.undecided_device_codes()
            .filter_map(|dc| self.undecided_code(dc))
    }

    /// The device codes of [`Self::undecided_codes`], without building the records (the owner
    /// compares them with what it stored on every request; a peer id in base58 is costly).
    pub fn undecided_device_codes(&self) -> impl Iterator<Item = &DeviceCode> + '_ {
        self.codes
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Pending))
            .map(|(dc, _)| dc)
    }

    /// Whether `device_code` is waiting for the owner's decision.
    pub fn is_undecided(&self, device_code: &DeviceCode) -> bool {
        self.codes
            .get(device_code)
            .is_some_and(|e| matches!(e.state, State::Pending))
    }

    /// The record of one undecided code.
    pub fn undecided_code(&self, device_code: &DeviceCode) -> Option<UndecidedCode> {
        let e = self.codes.get(device_code)?;
        matches!(e.state, State::Pending).then(|| UndecidedCode {
            device_code: *device_code,
            user_code: e.user_code,
            peer: e.peer.to_base58(),
            issued_at: e.issued_at,
            expires_at: e.expires_at,
        })
    }

    /// Puts back undecided codes persisted before a restart, as undecided, with their original
    /// expiry. The table's bounds hold as for new requests: a code whose peer is not a peer id or
    /// is revoked, or whose device or user code is already in use, is skipped, and at most
    /// [`MAX_PENDING_PER_PEER`] per peer and [`MAX_PENDING_TOTAL`] in all are kept (the newest).
    /// Returns the device codes restored.
    pub fn restore_codes(
        &mut self,
        codes: impl IntoIterator<Item = UndecidedCode>,
    ) -> Vec<DeviceCode> {
        let mut codes: Vec<UndecidedCode> = codes.into_iter().collect();
        // Newest first, so the bounds keep the newest.
        codes.sort_by_key(|c| std::cmp::Reverse((c.issued_at, c.device_code)));
        let mut per_peer: BTreeMap<PeerId, usize> = BTreeMap::new();
        for e in self.codes.values().filter(|e| e.is_open()) {
            *per_peer.entry(e.peer).or_default() += 1;
        }
        let mut restored = Vec::new();
        for c in codes {
            let Ok(peer) = c.peer.parse::<PeerId>() else {
                continue;
            };
            let member = MemberId::from_peer(&peer);
            let held = per_peer.get(&peer).copied().unwrap_or(0);
            if self.is_revoked(&member)
                || self.codes.contains_key(&c.device_code)
                || self.by_user_code.contains_key(&c.user_code)
                || held >= MAX_PENDING_PER_PEER
                || per_peer.values().sum::<usize>() >= MAX_PENDING_TOTAL
            {
                continue;
            }
            *per_peer.entry(peer).or_default() += 1;
            self.codes.insert(
                c.device_code,
                Entry {
                    peer,
                    member,
                    user_code: c.user_code,
                    issued_at: c.issued_at,
                    expires_at: c.expires_at,
                    interval_secs: POLL_INTERVAL_SECS,
                    last_poll: None,
                    state: State::Pending,
                },
            );
            self.by_user_code.insert(c.user_code, c.device_code);
            restored.push(c.device_code);
        }
        restored
    }

    /// Forgets the oldest open code (then the smallest device code) among the peers holding the
    /// most open codes. `open_by_peer` counts the open codes per peer at `now`.
    fn evict_open(&mut self, open_by_peer: &BTreeMap<PeerId, usize>, now: Timestamp) {
        let Some(most) = open_by_peer.values().copied().max() else {
            return;
        };
        let victim = self
            .codes
            .iter()
            .filter(|(_, e)| e.holds_slot(now) && open_by_peer.get(&e.peer) == Some(&most))
            .min_by_key(|(dc, e)| (e.issued_at, **dc))
            .map(|(dc, _)| *dc);
        if let Some(dc) = victim {
            self.forget(&dc);
        }
    }

    /// Forgets the oldest closed codes (delivered, denied or expired) until at most `keep` remain.
    fn trim_closed(&mut self, now: Timestamp, keep: usize) {
        let mut closed: Vec<(Timestamp, DeviceCode)> = self
            .codes
            .iter()
            .filter(|(_, e)| !e.holds_slot(now))
            .map(|(dc, e)| (e.issued_at, *dc))
            .collect();
        if closed.len() <= keep {
            return;
        }
        closed.sort_unstable();
        let excess = closed.len() - keep;
        for (_, dc) in closed.into_iter().take(excess) {
            self.forget(&dc);
        }
    }

    /// Removes one code and its user code.
    fn forget(&mut self, device_code: &DeviceCode) {
        if let Some(e) = self.codes.remove(device_code) {
            self.by_user_code.remove(&e.user_code);
        }
    }

    /// How many codes the registry holds: (open, closed) at `now`. Open ones are at most
    /// [`MAX_PENDING_TOTAL`]; after [`Registry::expire`] closed ones are at most
    /// [`MAX_CLOSED_TOTAL`], and between calls all together at most the sum of the two.
    pub fn code_counts(&self, now: Timestamp) -> (usize, usize) {
        let open = self.codes.values().filter(|e| e.holds_slot(now)).count();
        (open, self.codes.len() - open)
    }

    /// Forgets codes that expired more than [`EXPIRED_GRACE_SECS`] before `now`, with any
    /// undelivered credential. Until then an expired code is remembered, so a late poll is answered
    /// `expired_token` and a late approval "expired" (semantics §3), not "not found". Also keeps at
    /// most [`MAX_CLOSED_TOTAL`] closed codes, forgetting the oldest. Call it now and then;
    /// [`Registry::request`] also does.
    pub fn expire(&mut self, now: Timestamp) {
        let by_user_code = &mut self.by_user_code;
        self.codes.retain(|_, e| {
            let keep = now <= e.expires_at.plus_secs(EXPIRED_GRACE_SECS);
            if !keep {
                by_user_code.remove(&e.user_code);
            }
            keep
        });
        self.trim_closed(now, MAX_CLOSED_TOTAL);
    }
}

/// Delivers the grant of an approved entry, leaving it consumed.
fn take(device_code: &DeviceCode, entry: &mut Entry) -> Option<Grant> {
    match std::mem::replace(&mut entry.state, State::Consumed) {
        State::Approved(credential) => Some(Grant {
            member: entry.member.clone(),
            credential,
            device_code: *device_code,
        }),
        other => {
            entry.state = other;
            None
        }
    }
}
