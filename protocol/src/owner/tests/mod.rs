//! Unit tests of the owner core: every owner rule driven directly, without a swarm or a store.

mod code;
mod fairness;
mod kb;
mod membership;
mod restore;
mod spend;

use std::collections::BTreeMap;

use libp2p_identity::{Keypair, PeerId};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::{Effects, Owners, Record};
use crate::hash::Digest;
use crate::kb::Check;
use crate::membership::{Credential, UserCode};
use crate::program::ProgramId;
use crate::seal::SealKey;
use crate::signed::Signed;
use crate::trace::Output;
use crate::wire::{
    grant_seal_context, Claim, KbCall, KbRequest, KbResponse, MembershipRequest,
    MembershipResponse, Submission, SubmitReceipt,
};
use crate::Timestamp;

/// The instant every test starts at (2026-01-01).
pub(super) const T0: Timestamp = Timestamp(1_767_225_600_000);

/// Knobs of the test manifest.
#[derive(Clone)]
pub(super) struct Manifest {
    pub(super) name: &'static str,
    pub(super) open: bool,
    /// A candle task whose claims the owner checks (else a shell task, counted on receipt).
    pub(super) checks: bool,
    pub(super) retrain_share: Option<f64>,
    pub(super) stop: &'static str,
    pub(super) approved_paid: &'static str,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            name: "owner-core",
            open: false,
            checks: true,
            retrain_share: None,
            stop: "",
            approved_paid: "",
        }
    }
}

impl Manifest {
    pub(super) fn toml(&self) -> String {
        let task = if self.checks {
            "[task]\nkind = \"candle\"\npreset = \"tiny\"\nsteps = 50\nseed = 7\n\
             [task.dataset]\nkind = \"synthetic\"\nseed = 1\nbytes = 65536\n"
                .to_string()
        } else {
            "[task]\nkind = \"shell\"\ncommand = \"echo val_bpb: 1\"\ntimeout_secs = 10\n"
                .to_string()
        };
        let verify = match self.retrain_share {
            Some(s) => format!("[verify]\nretrain_share = {s}\n"),
            None => String::new(),
        };
        format!(
            "name = \"{name}\"\nobjective = \"lowest val_bpb\"\nmembership = \"{mode}\"\n\
             baseline = 4.0\nrequired_outputs = [\"checkpoint.safetensors\"]\n\n[criteria]\nmetric = \"val_bpb\"\ndirection = \"minimize\"\n\
             accept = \"beats-champion\"\n\n[reward]\npool = 100\ntoken = \"OBOL\"\n\
             split = \"by-impact\"\n\n{task}\n\
             [[rungs]]\nid = \"cpu\"\nlabel = \"CPU\"\nspend_class = \"local_unmetered\"\nhardware = \"cpu\"\n\n\
             [[rungs]]\nid = \"paid-h100\"\nlabel = \"H100\"\nspend_class = \"paid_metered\"\nhardware = \"h100\"\n\n\
             [policy.paid]\ndefault_action = \"require_explicit_approval\"\napproved_rungs = [{paid}]\n\
             max_spend_per_packet = 5.0\nmax_total_spend = 100.0\n\n[stop]\n{stop}\n\n{verify}",
            name = self.name,
            mode = if self.open { "open" } else { "approval" },
            paid = self.approved_paid,
            stop = self.stop,
        )
    }
}

/// A worker: its identity, sealing key and (once joined) credential.
pub(super) struct Worker {
    pub(super) key: Keypair,
    pub(super) peer: PeerId,
    pub(super) seal: SealKey,
    pub(super) credential: Option<Credential>,
}

impl Worker {
    pub(super) fn new() -> Worker {
        let key = Keypair::generate_ed25519();
        let seal = SealKey::from_identity(&key).expect("an ed25519 key derives a sealing key");
        Worker {
            peer: key.public().to_peer_id(),
            key,
            seal,
            credential: None,
        }
    }

    /// Opens a sealed grant addressed to this worker.
    pub(super) fn open(&mut self, d: &crate::wire::GrantDelivery) -> Credential {
        let ctx = grant_seal_context(&d.program, &d.device_code);
        let plain = crate::seal::open(&self.seal, &ctx, &d.sealed).expect("sealed to this worker");
        let bytes: [u8; 32] = plain.try_into().expect("a 32-byte credential");
        let c = Credential::from_bytes(bytes);
        self.credential = Some(c.clone());
        c
    }

    /// The digest of the checkpoint this worker trained for `nonce` (distinct per worker).
    pub(super) fn checkpoint(&self, nonce: u8) -> Digest {
        Digest::of(&[&[nonce, 1, 2, 3][..], &self.peer.to_bytes()].concat())
    }

    /// A signed submission with a fresh nonce (and a claim of its own checkpoint when `claim`).
    pub(super) fn submission(
        &self,
        program: ProgramId,
        value: f64,
        nonce: u8,
        claim: bool,
        now: Timestamp,
    ) -> Signed<Submission> {
        let claim = claim.then(|| self.checkpoint(nonce));
        self.claiming(program, value, nonce, claim, now)
    }

    /// A signed submission with a fresh nonce claiming the checkpoint `checkpoint`, if any.
    pub(super) fn claiming(
        &self,
        program: ProgramId,
        value: f64,
        nonce: u8,
        checkpoint: Option<Digest>,
        now: Timestamp,
    ) -> Signed<Submission> {
        let digest = checkpoint.unwrap_or_else(|| self.checkpoint(nonce));
        let sub = Submission {
            program,
            nonce: [nonce; 16],
            value,
            rung_id: "cpu".into(),
            outputs: vec![Output {
                name: "checkpoint.safetensors".into(),
                sha256: digest,
            }],
            metrics: BTreeMap::new(),
            hypothesis: BTreeMap::from([("lr".to_string(), 1e-3)]),
            created_at: now,
            claim: checkpoint.map(|checkpoint| Claim {
                checkpoint,
                checkpoint_bytes: 4,
                seed: 7,
                steps: 50,
                device: "cpu: test".into(),
                btd_version: "0.1.0".into(),
            }),
        };
        Signed::sign(&self.key, &sub).expect("signs")
    }

    /// A KB request from this worker.
    pub(super) fn kb(&self, program: ProgramId, call: KbCall) -> KbRequest {
        KbRequest {
            program,
            credential: self
                .credential
                .clone()
                .unwrap_or_else(|| Credential::from_bytes([9; 32])),
            call,
        }
    }
}

/// An owner with one published program, a deterministic RNG and every record it asked to persist.
pub(super) struct World {
    pub(super) owners: Owners,
    pub(super) id: ProgramId,
    pub(super) rng: ChaCha20Rng,
    pub(super) log: Vec<Record>,
    pub(super) announcement: Signed<crate::wire::ProgramAnnouncement>,
    pub(super) view: crate::wire::VerifiedProgram,
}

impl World {
    pub(super) fn new(m: &Manifest) -> World {
        World::with_toml(m.toml())
    }

    /// An owner of the program `toml` describes.
    pub(super) fn with_toml(toml: String) -> World {
        let mut owners = Owners::new(Keypair::generate_ed25519());
        let published = owners
            .publish(toml, vec![], T0)
            .expect("the test manifest is valid");
        let id = published.view.id;
        owners.insert(published.owner.expect("a new program"));
        World {
            owners,
            id,
            rng: ChaCha20Rng::seed_from_u64(7),
            log: Vec::new(),
            announcement: published.signed,
            view: published.view,
        }
    }

    /// Keeps what the effects asked to persist (as the daemon would, before replying).
    pub(super) fn apply<R>(&mut self, fx: Effects<R>) -> Effects<R> {
        self.log.extend(fx.persist.iter().cloned());
        fx
    }

    /// Completes a ledger read from the stored records, as the daemon does from its store.
    pub(super) fn complete(&self, mut fx: Effects<KbResponse>) -> Effects<KbResponse> {
        if let Some(read) = fx.read.take() {
            fx.reply = read.answer(|seq| self.stored(seq));
        }
        fx
    }

    /// A stored result read back from the records.
    pub(super) fn stored(&self, seq: u64) -> Option<super::StoredResult> {
        self.log.iter().find_map(|r| match r {
            Record::Submission(s) if s.program == self.id && s.entry.seq == seq => {
                super::StoredResult::decode(&s.signed, s.code.as_deref()).ok()
            }
            _ => None,
        })
    }

    /// The next claim to check with its code chain read from the records.
    pub(super) fn next_claim(&self) -> Option<super::ClaimToCheck> {
        let mut claim = self.owners.get(&self.id)?.next_claim()?;
        if claim.has_code {
            claim.chain = super::code_chain(claim.seq, |s| self.stored(s)?.code)?;
        }
        Some(claim)
    }

    pub(super) fn membership(
        &mut self,
        w: &Worker,
        req: MembershipRequest,
        now: Timestamp,
    ) -> Effects<MembershipResponse> {
        let fx = self.owners.on_membership(w.peer, req, now, &mut self.rng);
        self.apply(fx)
    }

    pub(super) fn kb(&mut self, w: &Worker, call: KbCall, now: Timestamp) -> Effects<KbResponse> {
        self.kb_checked(w, call, None, now)
    }

    /// [`World::kb`] with a submission checked beforehand (as the daemon does off the core's task).
    pub(super) fn kb_checked(
        &mut self,
        w: &Worker,
        call: KbCall,
        checked: Option<crate::owner::CheckedSubmission>,
        now: Timestamp,
    ) -> Effects<KbResponse> {
        let req = w.kb(self.id, call);
        let fx = self
            .owners
            .on_kb_checked(w.peer, req, checked.into_iter().collect(), now);
        let fx = self.apply(fx);
        self.complete(fx)
    }

    /// Asks to join; returns the user code.
    pub(super) fn authorize(
        &mut self,
        w: &Worker,
        now: Timestamp,
    ) -> (
        crate::membership::DeviceCode,
        UserCode,
        Effects<MembershipResponse>,
    ) {
        let req = MembershipRequest::Authorize {
            program: self.id,
            seal_key: w.seal.public(),
        };
        let fx = self.membership(w, req, now);
        match &fx.reply {
            MembershipResponse::Authorization(a) => (a.device_code, a.user_code, fx.clone()),
            other => panic!("expected an authorization, got {other:?}"),
        }
    }

    /// Joins `w` through the device flow, approving as the owner; `w` holds its credential after.
    pub(super) fn join(&mut self, w: &mut Worker, now: Timestamp) {
        let (_, user_code, _) = self.authorize(w, now);
        let fx = self
            .owners
            .decide(&user_code.to_string(), true, now, &mut self.rng)
            .expect("approves");
        let fx = self.apply(fx);
        let push = fx.push.first().expect("the grant is pushed");
        w.open(&push.delivery);
    }

    pub(super) fn submit(
        &mut self,
        w: &Worker,
        value: f64,
        nonce: u8,
        now: Timestamp,
    ) -> Effects<KbResponse> {
        let s = w.submission(self.id, value, nonce, true, now);
        self.kb(w, KbCall::Submit(s), now)
    }
}

/// The receipt in a reply, or a panic naming what came instead.
pub(super) fn receipt(fx: &Effects<KbResponse>) -> SubmitReceipt {
    match &fx.reply {
        KbResponse::Submitted(r) => r.clone(),
        other => panic!("expected a receipt, got {other:?}"),
    }
}

/// The error in a reply: its code and message.
pub(super) fn error(fx: &Effects<KbResponse>) -> (crate::wire::ErrorCode, String) {
    match &fx.reply {
        KbResponse::Error(e) => (e.code, e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Whether a receipt's claim waits for the check.
pub(super) fn is_pending(r: &SubmitReceipt) -> bool {
    r.check == Check::Pending
}
