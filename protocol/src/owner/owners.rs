//! Every program one node owns: routes inbound requests and the owner's commands to the right
//! [`ProgramOwner`], and prepares new programs for publishing.

use std::collections::HashMap;

use libp2p_identity::{Keypair, PeerId};
use rand::{CryptoRng, RngCore};

use super::{
    err, ClaimToCheck, Effects, OwnerError, OwnerRestoreError, ProgramOwner, SpendRequestView,
};
use crate::kb::{Entry, Verdict};
use crate::membership::{DecisionError, UserCode};
use crate::program::{Program, ProgramId};
use crate::signed::Signed;
use crate::wire::{
    ApprovalRequest, ApprovalResponse, ErrorCode, KbRequest, KbResponse, MembershipRequest,
    MembershipResponse, ProgramAnnouncement, VerifiedProgram,
};
use crate::Timestamp;

/// A program ready to publish: signed, verified as a receiver would, not yet owned.
#[derive(Debug)]
pub struct Published {
    /// The verified announcement (id, owner, program).
    pub view: VerifiedProgram,
    /// The signed announcement.
    pub signed: Signed<ProgramAnnouncement>,
    /// Its encoding, to store.
    pub encoded: Vec<u8>,
    /// The owner state to insert once the program is durable; `None` when this node already owns
    /// the program (same manifest, same key: the same id).
    pub owner: Option<ProgramOwner>,
}

/// The programs this node owns, with its identity (it signs announcements and receipts).
pub struct Owners {
    key: Keypair,
    me: PeerId,
    programs: HashMap<ProgramId, ProgramOwner>,
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners")
            .field("me", &self.me)
            .field("programs", &self.programs.len())
            .finish()
    }
}

fn unknown(program: &ProgramId) -> crate::wire::ErrorReply {
    err(
        ErrorCode::UnknownProgram,
        format!("this peer does not own program {program}"),
    )
}

impl Owners {
    /// No programs yet, for the node with identity `key`.
    pub fn new(key: Keypair) -> Owners {
        let me = key.public().to_peer_id();
        Owners {
            key,
            me,
            programs: HashMap::new(),
        }
    }

    /// The owner's peer id.
    pub fn me(&self) -> PeerId {
        self.me
    }

    /// Whether this node owns `program`.
    pub fn contains(&self, program: &ProgramId) -> bool {
        self.programs.contains_key(program)
    }

    /// One owned program.
    pub fn get(&self, program: &ProgramId) -> Option<&ProgramOwner> {
        self.programs.get(program)
    }

    /// Ids of the owned programs (unordered).
    pub fn ids(&self) -> impl Iterator<Item = ProgramId> + '_ {
        self.programs.keys().copied()
    }

    /// How many programs this node owns.
    pub fn len(&self) -> usize {
        self.programs.len()
    }

    /// Whether it owns none.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// Adds (or replaces, after a reload from the store) an owned program.
    pub fn insert(&mut self, owner: ProgramOwner) {
        self.programs.insert(owner.id(), owner);
    }

    /// Rebuilds an owned program from its verified announcement and stored log.
    pub fn restore(
        &self,
        view: &VerifiedProgram,
        signed: Signed<ProgramAnnouncement>,
        log: impl IntoIterator<Item = super::Record>,
    ) -> Result<ProgramOwner, OwnerRestoreError> {
        ProgramOwner::restore(view.id, view.owner, view.program.clone(), signed, log)
    }

    /// `btd publish`: validates the manifest, signs the announcement (listing `addresses`) and
    /// verifies it exactly as a receiver will. The caller stores it and then [`Owners::insert`]s
    /// the owner state.
    pub fn publish(
        &self,
        manifest: String,
        addresses: Vec<String>,
        now: Timestamp,
    ) -> Result<Published, OwnerError> {
        let program =
            Program::from_toml(&manifest).map_err(|e| OwnerError::Refused(e.to_string()))?;
        let announcement = ProgramAnnouncement {
            manifest,
            addresses,
            published_at: now,
        };
        let signed = Signed::sign(&self.key, &announcement)
            .map_err(|e| OwnerError::Refused(format!("cannot sign the announcement: {e}")))?;
        let view = crate::wire::verify_announcement(&signed, now)
            .map_err(|e| OwnerError::Refused(e.to_string()))?;
        let encoded = crate::wire::encode(&signed)
            .map_err(|e| OwnerError::Refused(format!("the announcement is too large: {e}")))?;
        let owner = if self.contains(&view.id) {
            None
        } else {
            Some(
                ProgramOwner::new(view.id, self.me, program, signed.clone())
                    .map_err(|e| OwnerError::Refused(e.to_string()))?,
            )
        };
        Ok(Published {
            view,
            signed,
            encoded,
            owner,
        })
    }

    /// An inbound membership request for a program this node may own.
    pub fn on_membership(
        &mut self,
        peer: PeerId,
        request: MembershipRequest,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Effects<MembershipResponse> {
        let program = match &request {
            MembershipRequest::Authorize { program, .. }
            | MembershipRequest::Poll { program, .. } => *program,
            MembershipRequest::PushGrant(d) => d.program,
        };
        match self.programs.get_mut(&program) {
            Some(o) => o.on_membership(peer, request, now, rng),
            None => Effects::reply(MembershipResponse::Error(unknown(&program))),
        }
    }

    /// An inbound KB request.
    pub fn on_kb(
        &mut self,
        peer: PeerId,
        request: KbRequest,
        now: Timestamp,
    ) -> Effects<KbResponse> {
        self.on_kb_checked(peer, request, Vec::new(), now)
    }

    /// [`Owners::on_kb`] with a submission's signature already checked (see
    /// [`super::CheckedSubmission`]).
    pub fn on_kb_checked(
        &mut self,
        peer: PeerId,
        request: KbRequest,
        checked: Vec<super::CheckedSubmission>,
        now: Timestamp,
    ) -> Effects<KbResponse> {
        match self.programs.get_mut(&request.program) {
            Some(o) => o.on_kb_checked(peer, request, checked, now),
            None => Effects::reply(KbResponse::Error(unknown(&request.program))),
        }
    }

    /// An inbound paid-compute request.
    pub fn on_approval(
        &mut self,
        peer: PeerId,
        request: &ApprovalRequest,
        now: Timestamp,
    ) -> ApprovalResponse {
        match self.programs.get_mut(&request.program) {
            Some(o) => o.on_approval(peer, request, &self.key, now),
            None => ApprovalResponse::Error(unknown(&request.program)),
        }
    }

    /// `btd approve` / `btd deny` by user code. Codes are unique per program, not across programs:
    /// the program with a live code is asked first; a code that is not live anywhere goes to every
    /// program, so an expired or used code gets its own error rather than "not found".
    pub fn decide(
        &mut self,
        user_code: &str,
        approve: bool,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Effects<String>, OwnerError> {
        let parsed = UserCode::parse(user_code).map_err(|e| OwnerError::Refused(e.to_string()))?;
        let live: Vec<ProgramId> = self
            .programs
            .iter()
            .filter(|(_, o)| o.has_live_code(&parsed, now))
            .map(|(id, _)| *id)
            .collect();
        let mut ids = if live.is_empty() {
            self.programs.keys().copied().collect()
        } else {
            live
        };
        ids.sort();
        let mut last = DecisionError::NotFound { user_code: parsed };
        for id in ids {
            let Some(o) = self.programs.get_mut(&id) else {
                continue;
            };
            let outcome = if approve {
                o.approve(user_code, now, rng)
            } else {
                o.deny(user_code, now)
            };
            match outcome {
                Ok(fx) => return Ok(fx),
                Err(DecisionError::NotFound { .. }) => {}
                Err(e) => last = e,
            }
        }
        Err(OwnerError::Refused(last.to_string()))
    }

    /// `btd revoke`.
    pub fn revoke(
        &mut self,
        program: &ProgramId,
        member: &str,
        now: Timestamp,
    ) -> Result<Effects<()>, OwnerError> {
        self.get_mut(program)?.revoke(member, now)
    }

    /// `btd approve-spend` / `btd deny-spend`.
    pub fn decide_spend(
        &mut self,
        program: &ProgramId,
        member: &str,
        packet_id: &str,
        approve: bool,
        minutes: u64,
        now: Timestamp,
    ) -> Result<String, OwnerError> {
        let key = self.key.clone();
        self.get_mut(program)?
            .decide_spend(member, packet_id, approve, minutes, &key, now)
    }

    /// `btd approvals`: the spend requests of every owned program.
    pub fn spend_requests(&self) -> Vec<SpendRequestView> {
        let mut out: Vec<SpendRequestView> = self
            .programs
            .values()
            .flat_map(ProgramOwner::spend_requests)
            .collect();
        out.sort_by_key(|a| a.program);
        out
    }

    /// The oldest claim waiting for a check in each owned program.
    pub fn next_claims(&self) -> Vec<ClaimToCheck> {
        let mut out: Vec<ClaimToCheck> = self
            .programs
            .values()
            .filter_map(ProgramOwner::next_claim)
            .collect();
        out.sort_by_key(|a| a.program);
        out
    }

    /// Applies the owner's verdict on a pending claim.
    pub fn on_verdict(
        &mut self,
        program: &ProgramId,
        seq: u64,
        verdict: Verdict,
        now: Timestamp,
    ) -> Result<Effects<Entry>, OwnerError> {
        self.get_mut(program)?.on_verdict(seq, verdict, now)
    }

    /// A pushed grant was acknowledged or failed.
    pub fn on_push_result(
        &mut self,
        program: &ProgramId,
        device_code: &crate::membership::DeviceCode,
        ok: bool,
    ) {
        if let Some(o) = self.programs.get_mut(program) {
            o.on_push_result(device_code, ok);
        }
    }

    /// Drops expired join state in every owned program.
    pub fn tick(&mut self, now: Timestamp) {
        for o in self.programs.values_mut() {
            o.tick(now);
        }
    }

    fn get_mut(&mut self, program: &ProgramId) -> Result<&mut ProgramOwner, OwnerError> {
        self.programs
            .get_mut(program)
            .ok_or(OwnerError::NotOwned(*program))
    }
}
