//! The owner's side of the device flow: join requests, polls, approval, denial, revocation, and
//! delivering the credential sealed to the requester's key (pushed at once, with polling as the
//! fallback).

use libp2p_identity::PeerId;
use rand::{CryptoRng, RngCore};

use super::{err, Effects, OwnerError, ProgramOwner, Push, Record};
use crate::membership::{
    DecisionError, DeviceCode, Grant, MemberId, MembershipMode, PollError, RequestError,
};
use crate::seal;
use crate::wire::{
    grant_seal_context, ErrorCode, GrantDelivery, MembershipRequest, MembershipResponse, PollStatus,
};
use crate::Timestamp;

impl ProgramOwner {
    /// Serves a membership request from `peer` (the Noise-authenticated sender).
    ///
    /// - `Authorize`: a new device code bound to `peer` and its sealing key; in open membership
    ///   the member is stored at once and the sealed grant pushed.
    /// - `Poll`: RFC 8628 outcomes; an approved code yields the sealed grant once the member record
    ///   is durable; a grant already handed out (pushed and not acknowledged, or answered to an
    ///   earlier poll) is handed to the same peer again until its code's grace period ends
    ///   (expiry + [`crate::membership::EXPIRED_GRACE_SECS`]), never to another peer.
    /// - `PushGrant` goes from an owner to a worker, never to an owner: refused.
    pub fn on_membership(
        &mut self,
        peer: PeerId,
        request: MembershipRequest,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Effects<MembershipResponse> {
        match request {
            MembershipRequest::Authorize { seal_key, .. } => {
                let auth = match self.registry.request(peer, now, rng) {
                    Ok(a) => a,
                    Err(e) => return Effects::reply(request_error(&e)),
                };
                let expires = now.plus_secs(auth.expires_in);
                self.seal_keys
                    .insert(auth.device_code, (peer, seal_key, expires));
                let mut fx = Effects::reply(MembershipResponse::Authorization(auth.clone()));
                // The code is stored before the worker sees it, so an owner restart keeps it.
                fx.persist.extend(self.code_records());
                if self.registry.mode() == MembershipMode::Open {
                    // Approved at once: store the member, then push its grant.
                    fx.persist
                        .extend(self.member_record(&MemberId::from_peer(&peer)));
                    fx.push.extend(self.take_and_seal(&auth.device_code, rng));
                }
                fx
            }
            MembershipRequest::Poll { device_code, .. } => {
                match self.registry.poll(&device_code, &peer, now) {
                    Ok(grant) => match self.seal_grant(&grant, rng) {
                        Some(delivery) => {
                            // Kept for a repeat poll: the reply carrying it may be lost.
                            self.keep_delivery(&device_code, &delivery);
                            Effects::persist_then(
                                self.member_record(&grant.member).into_iter().collect(),
                                MembershipResponse::Granted(delivery),
                            )
                        }
                        None => Effects::reply(MembershipResponse::Error(err(
                            ErrorCode::Unavailable,
                            "cannot seal the credential; start the join again",
                        ))),
                    },
                    // A grant already handed out (pushed and not acknowledged, or answered to a
                    // poll whose reply may have been lost): the same sealed grant again, to the
                    // same peer only, once the member record written at approval is durable.
                    Err(PollError::NotFound) => match self.undelivered.get(&device_code) {
                        Some((p, d, _)) if *p == peer => Effects {
                            after_durable: true,
                            ..Effects::reply(MembershipResponse::Granted(d.clone()))
                        },
                        _ => Effects::reply(MembershipResponse::Poll(PollStatus::NotFound)),
                    },
                    Err(e) => Effects::reply(MembershipResponse::Poll(poll_status(&e))),
                }
            }
            MembershipRequest::PushGrant(_) => Effects::reply(MembershipResponse::Error(err(
                ErrorCode::Invalid,
                "grants are pushed by a program's owner to its workers, not to the owner",
            ))),
        }
    }

    /// `btd approve CODE`: issues the credential, stores the member, then pushes the sealed grant
    /// to the requester (a poll still finds it if the push is lost).
    pub fn approve(
        &mut self,
        user_code: &str,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Effects<String>, DecisionError> {
        let info = self.registry.approve(user_code, now, rng)?;
        let mut fx = Effects::persist_then(
            self.member_record(&info.member).into_iter().collect(),
            format!("approved {} for {}", info.member, self.program.name),
        );
        fx.persist.extend(self.code_records());
        fx.push.extend(self.take_and_seal(&info.device_code, rng));
        Ok(fx)
    }

    /// `btd deny CODE`: the worker's next poll says `access_denied`; the stored code is deleted.
    pub fn deny(
        &mut self,
        user_code: &str,
        now: Timestamp,
    ) -> Result<Effects<String>, DecisionError> {
        self.registry.deny(user_code, now)?;
        Ok(Effects::persist_then(
            self.code_records(),
            format!("denied {user_code} for {}", self.program.name),
        ))
    }

    /// `btd revoke`: permanent; the record is stored before the owner hears it is done.
    pub fn revoke(&mut self, member: &str, now: Timestamp) -> Result<Effects<()>, OwnerError> {
        let member: MemberId = member
            .parse()
            .map_err(|e| OwnerError::Refused(format!("{member:?} is not a member id: {e}")))?;
        self.registry
            .revoke(&member, now)
            .map_err(|e| OwnerError::Refused(e.to_string()))?;
        let mut records: Vec<Record> = self.member_record(&member).into_iter().collect();
        records.extend(self.code_records());
        Ok(Effects::persist_then(records, ()))
    }

    /// A pushed grant was acknowledged (`ok`) or failed (then the poll fallback delivers it).
    pub fn on_push_result(&mut self, device_code: &DeviceCode, ok: bool) {
        if ok {
            self.undelivered.remove(device_code);
        }
    }

    /// Whether a live (approvable) join request carries `user_code`.
    pub fn has_live_code(&self, user_code: &crate::membership::UserCode, now: Timestamp) -> bool {
        self.registry
            .pending(now)
            .any(|p| p.user_code == *user_code)
    }

    /// The member's record as it stands, to store.
    fn member_record(&self, member: &MemberId) -> Option<Record> {
        self.registry.member(member).map(|r| Record::Member {
            program: self.id,
            record: r.clone(),
        })
    }

    /// Takes the approved grant of `device_code`, seals it to its requester and keeps a copy until
    /// the push is acknowledged.
    fn take_and_seal(
        &mut self,
        device_code: &DeviceCode,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Option<Push> {
        let grant = self.registry.take_grant(device_code)?;
        let delivery = self.seal_grant(&grant, rng)?;
        let peer = self.keep_delivery(device_code, &delivery)?;
        Some(Push { peer, delivery })
    }

    /// Keeps a sealed grant for repeat polls of its requester until the code's grace period ends;
    /// returns the requester.
    fn keep_delivery(
        &mut self,
        device_code: &DeviceCode,
        delivery: &GrantDelivery,
    ) -> Option<PeerId> {
        let (peer, _, expires) = self.seal_keys.get(device_code).copied()?;
        let until = expires.plus_secs(crate::membership::EXPIRED_GRACE_SECS);
        self.undelivered
            .insert(*device_code, (peer, delivery.clone(), until));
        Some(peer)
    }

    /// Seals a grant's credential to the requester's key; the context binds it to this program and
    /// device code.
    fn seal_grant(
        &self,
        grant: &Grant,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Option<GrantDelivery> {
        let (_, key, _) = self.seal_keys.get(&grant.device_code)?;
        let ctx = grant_seal_context(&self.id, &grant.device_code);
        seal::seal(key, &ctx, grant.credential.as_bytes(), rng)
            .ok()
            .map(|sealed| GrantDelivery {
                program: self.id,
                device_code: grant.device_code,
                sealed,
            })
    }
}

fn request_error(e: &RequestError) -> MembershipResponse {
    MembershipResponse::Error(err(ErrorCode::Invalid, e.to_string()))
}

/// The RFC 8628 poll outcome on the wire.
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
