//! A submission's signature checked before the owner's core sees it, on any thread: the daemon
//! checks submissions in parallel, off the task that applies the KB rules in order, and hands
//! the core the proof ([`CheckedSubmission`]) so it does not check again.

use libp2p_identity::PeerId;

use crate::signed::{Signed, SignedError};
use crate::wire::{KbCall, Submission};

/// A submission whose signature was checked against the peer that sent it. Only
/// [`CheckedSubmission::check`] makes one, and the core uses it only for the same envelope from
/// the same peer: anything else is verified again.
#[derive(Debug, Clone)]
pub struct CheckedSubmission {
    peer: PeerId,
    envelope: Signed<Submission>,
    value: Submission,
}

impl CheckedSubmission {
    /// Verifies `signed` as sent by `peer` (the Noise-authenticated sender). Pure: any thread.
    pub fn check(peer: &PeerId, signed: &Signed<Submission>) -> Result<Self, SignedError> {
        let value = signed.verify_from(peer)?;
        Ok(CheckedSubmission {
            peer: *peer,
            envelope: signed.clone(),
            value,
        })
    }

    /// The checked value, when this check was made on `signed` from `peer`.
    pub(super) fn value_for(
        self,
        peer: &PeerId,
        signed: &Signed<Submission>,
    ) -> Option<Submission> {
        (self.peer == *peer && self.envelope == *signed).then_some(self.value)
    }
}

/// The signed submissions a KB call carries, in order (none for a read): what to check before
/// the call reaches the core.
pub fn submissions_of(call: &KbCall) -> Vec<&Signed<Submission>> {
    match call {
        KbCall::Submit(s) => vec![s],
        KbCall::SubmitCode { submission, .. } => vec![submission],
        KbCall::SubmitBatch(list) => list.iter().collect(),
        _ => Vec::new(),
    }
}
