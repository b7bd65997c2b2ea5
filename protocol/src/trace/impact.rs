//! What a worker's result means for its next step: [`ImpactRead::from_receipt`] reads the owner's
//! [`SubmitReceipt`] (the KEEP rule's verdict and where the owner's check stands).

use crate::kb::Check;
use crate::wire::SubmitReceipt;

use super::{ImpactRead, NextAction, ResultBundle};

impl ImpactRead {
    /// The impact read of `bundle`, whose objective `metric` came out at `value`, given the owner's
    /// `receipt` for it. In order: a claim still `pending` the owner's check is kept (it would
    /// count); one the check rejected is discarded; a new champion is kept (the search moves to it);
    /// one the KEEP rule accepted is kept; anything else is discarded (the search stays around the
    /// champion).
    pub fn from_receipt(
        bundle: &ResultBundle,
        metric: &str,
        value: f64,
        receipt: &SubmitReceipt,
    ) -> ImpactRead {
        let (action, summary) = if receipt.check == Check::Pending {
            (
                NextAction::Keep,
                format!(
                    "pending: {metric} {value} (seq {}) would count; the owner is checking it",
                    receipt.seq
                ),
            )
        } else if let Check::Failed(why) = &receipt.check {
            (
                NextAction::Discard,
                format!(
                    "rejected by the owner's check: {metric} {value} (seq {}): {why}",
                    receipt.seq
                ),
            )
        } else if receipt.champion {
            (
                NextAction::Keep,
                format!(
                    "new champion: {metric} {value} (seq {}, impact {}); the next rounds search around it",
                    receipt.seq, receipt.impact
                ),
            )
        } else if receipt.accepted {
            (
                NextAction::Keep,
                format!(
                    "accepted: {metric} {value} (seq {}, impact {}) meets the acceptance rule",
                    receipt.seq, receipt.impact
                ),
            )
        } else {
            (
                NextAction::Discard,
                format!(
                    "not accepted: {metric} {value} (seq {}) does not beat the reference; the search stays around the champion",
                    receipt.seq
                ),
            )
        };
        ImpactRead::new(bundle.id, action, summary)
    }
}
