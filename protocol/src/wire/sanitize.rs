//! Bounds on the text in replies a node receives: every remote string is cleaned and cut before
//! anything stores or shows it.

use super::messages::{
    ApprovalResponse, BlobResponse, ErrorReply, KbResponse, KbStatus, MembershipResponse,
    SubmitOutcome, SubmitReceipt, MAX_ID_BYTES, MAX_TEXT_BYTES,
};
use crate::kb::Entry;

/// Makes remote text safe to store and show: control characters (newlines, escapes, NULs) become
/// spaces and the text is cut at a character boundary to at most `max` bytes, ending in `…` when it
/// was cut. Every string a peer sends that a node keeps or prints goes through this (see
/// [`Sanitize`]), so a hostile peer can neither grow a stored record past its bound nor rewrite a
/// terminal.
pub fn sanitize_text(s: &str, max: usize) -> String {
    const CUT: char = '…';
    let clean = |c: char| if c.is_control() { ' ' } else { c };
    if s.len() <= max {
        return s.chars().map(clean).collect();
    }
    let room = max.saturating_sub(CUT.len_utf8());
    let mut out = String::with_capacity(max);
    for c in s.chars().map(clean) {
        if out.len() + c.len_utf8() > room {
            break;
        }
        out.push(c);
    }
    if CUT.len_utf8() <= max {
        out.push(CUT);
    }
    out
}

/// Bounds the free text in a reply received from a peer, before anything stores or shows it.
///
/// Requests are bounded by their `check`s, which refuse; a reply cannot be refused usefully (the
/// request was ours), so its text is cut to [`MAX_TEXT_BYTES`] (verdict reasons to
/// [`crate::kb::MAX_VERDICT_REASON_BYTES`]) and stripped of control characters instead. The
/// daemon's codec applies it to every reply it decodes.
pub trait Sanitize {
    /// Cuts and cleans every remote string in `self`.
    fn sanitize(&mut self);
}

impl Sanitize for ErrorReply {
    fn sanitize(&mut self) {
        self.message = sanitize_text(&self.message, MAX_TEXT_BYTES);
    }
}

impl Sanitize for Entry {
    fn sanitize(&mut self) {
        self.worker = sanitize_text(&self.worker, crate::kb::MAX_WORKER_ID_LEN);
        if let crate::kb::Check::Failed(why) = &mut self.check {
            *why = crate::kb::bound_reason(why);
        }
    }
}

impl Sanitize for MembershipResponse {
    fn sanitize(&mut self) {
        if let MembershipResponse::Error(e) = self {
            e.sanitize();
        }
    }
}

impl Sanitize for KbStatus {
    fn sanitize(&mut self) {
        self.name = sanitize_text(&self.name, MAX_TEXT_BYTES);
        self.token = sanitize_text(&self.token, MAX_ID_BYTES);
        let max = crate::kb::MAX_WORKER_ID_LEN;
        self.payouts = std::mem::take(&mut self.payouts).map_workers(|w| sanitize_text(w, max));
        if let Some(c) = &mut self.champion {
            c.sanitize();
        }
    }
}

impl Sanitize for KbResponse {
    fn sanitize(&mut self) {
        match self {
            KbResponse::Champion(Some(c)) => c.entry.sanitize(),
            KbResponse::Results { entries, .. } => entries.iter_mut().for_each(Entry::sanitize),
            KbResponse::Status(s) => s.sanitize(),
            KbResponse::StatusPage {
                status, results, ..
            } => {
                status.sanitize();
                results.iter_mut().for_each(Entry::sanitize);
            }
            KbResponse::Submitted(r) => r.sanitize(),
            KbResponse::SubmittedBatch(list) => {
                for outcome in list {
                    match outcome {
                        SubmitOutcome::Submitted(r) => r.sanitize(),
                        SubmitOutcome::Refused(e) => e.sanitize(),
                    }
                }
            }
            KbResponse::Error(e) => e.sanitize(),
            KbResponse::Ledger { items, .. } => items.iter_mut().for_each(Sanitize::sanitize),
            KbResponse::Code(Some(c)) => c.sanitize(),
            KbResponse::Program(_) | KbResponse::Champion(None) | KbResponse::Code(None) => {}
        }
    }
}

impl Sanitize for SubmitReceipt {
    fn sanitize(&mut self) {
        if let crate::kb::Check::Failed(why) = &mut self.check {
            *why = crate::kb::bound_reason(why);
        }
    }
}

impl Sanitize for ApprovalResponse {
    fn sanitize(&mut self) {
        match self {
            ApprovalResponse::Denied { reason } => *reason = sanitize_text(reason, MAX_TEXT_BYTES),
            ApprovalResponse::Error(e) => e.sanitize(),
            ApprovalResponse::Granted(_) | ApprovalResponse::Pending => {}
        }
    }
}

impl Sanitize for BlobResponse {
    fn sanitize(&mut self) {
        if let BlobResponse::Error(e) = self {
            e.sanitize();
        }
    }
}
