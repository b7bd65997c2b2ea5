//! `btd status` in pages: which results a status read carries ([`StatusQuery`]) and the rules that
//! turn a query into a window of the log, so the owner answers in O(page) whatever the log's length.

use serde::{Deserialize, Serialize};

use super::codec::MAX_MESSAGE_BYTES;
use super::messages::{bad, MessageError, MAX_RESULTS_PAGE};
use crate::kb::Entry;

/// Results per page when a status read names no limit.
pub const DEFAULT_STATUS_LIMIT: u32 = 20;

/// Which results a status read carries: page `page` (1 = the newest, or the oldest with
/// `oldest_first`) of `limit` results each. `limit` 0 asks for the summary alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusQuery {
    /// The page, from 1.
    pub page: u32,
    /// Results per page, at most [`MAX_RESULTS_PAGE`]; 0: no results, only the summary.
    pub limit: u32,
    /// Oldest first (seq 1 on page 1) instead of newest first.
    pub oldest_first: bool,
}

impl Default for StatusQuery {
    fn default() -> Self {
        StatusQuery {
            page: 1,
            limit: DEFAULT_STATUS_LIMIT,
            oldest_first: false,
        }
    }
}

/// Where a page lies in a log of seqs `1..=total`: the results with `after_seq < seq ≤
/// after_seq + take`, and whether another page follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusWindow {
    /// The page starts after this seq.
    pub after_seq: u64,
    /// How many results it holds.
    pub take: u64,
    /// Whether a later page (in the query's order) holds results.
    pub more: bool,
}

impl StatusQuery {
    /// The newest `limit` results (page 1, newest first).
    pub fn newest(limit: u32) -> Self {
        StatusQuery {
            limit,
            ..StatusQuery::default()
        }
    }

    /// The summary only.
    pub fn summary() -> Self {
        StatusQuery::newest(0)
    }

    /// Enforces the bounds: a page from 1, a limit up to [`MAX_RESULTS_PAGE`].
    pub fn check(&self) -> Result<(), MessageError> {
        if self.page == 0 {
            return Err(bad("page", "pages count from 1"));
        }
        if self.limit > MAX_RESULTS_PAGE {
            return Err(bad(
                "limit",
                format!("must be 0 to {MAX_RESULTS_PAGE}, got {}", self.limit),
            ));
        }
        Ok(())
    }

    /// The window of a log of `total` results this query reads (empty past the last page).
    pub fn window(&self, total: u64) -> StatusWindow {
        let limit = u64::from(self.limit);
        let skip = u64::from(self.page.saturating_sub(1)).saturating_mul(limit);
        if limit == 0 || skip >= total {
            return StatusWindow {
                after_seq: 0,
                take: 0,
                more: false,
            };
        }
        if self.oldest_first {
            let take = limit.min(total - skip);
            StatusWindow {
                after_seq: skip,
                take,
                more: skip + take < total,
            }
        } else {
            let end = total - skip;
            let after_seq = end.saturating_sub(limit);
            StatusWindow {
                after_seq,
                take: end - after_seq,
                more: after_seq > 0,
            }
        }
    }

    /// Puts a window's entries (read in seq order) in the query's order.
    pub fn order(&self, mut entries: Vec<Entry>) -> Vec<Entry> {
        if !self.oldest_first {
            entries.reverse();
        }
        entries
    }
}

/// The longest prefix of `results` that fits in one message beside a summary of `summary_bytes`
/// (with a tenth of the cap to spare), and whether any were cut. A summary's payouts grow with the
/// members paid and each entry may quote a reason, so a full page does not always fit.
pub fn fit_page(mut results: Vec<Entry>, summary_bytes: usize) -> (Vec<Entry>, bool) {
    let mut room = (MAX_MESSAGE_BYTES * 9 / 10).saturating_sub(summary_bytes);
    let fits = results
        .iter()
        .take_while(|e| match room.checked_sub(entry_bound(e)) {
            Some(left) => {
                room = left;
                true
            }
            None => false,
        })
        .count();
    let cut = fits < results.len();
    results.truncate(fits);
    (results, cut)
}

/// An upper bound on an entry's encoded size in bytes (bincode, varint integers).
fn entry_bound(e: &Entry) -> usize {
    let reason = match &e.check {
        crate::kb::Check::Failed(why) => why.len(),
        _ => 0,
    };
    // seq ≤ 9, two length prefixes ≤ 9 each, two f64, two bools, the check's tag ≤ 5.
    64 + e.worker.len() + reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(page: u32, limit: u32, oldest_first: bool) -> StatusQuery {
        StatusQuery {
            page,
            limit,
            oldest_first,
        }
    }

    fn seqs(q: StatusQuery, total: u64) -> (Vec<u64>, bool) {
        let w = q.window(total);
        let mut s: Vec<u64> = (w.after_seq + 1..=w.after_seq + w.take).collect();
        if !q.oldest_first {
            s.reverse();
        }
        (s, w.more)
    }

    #[test]
    fn newest_first_pages_walk_back_from_the_last_result() {
        assert_eq!(seqs(q(1, 3, false), 7), (vec![7, 6, 5], true));
        assert_eq!(seqs(q(2, 3, false), 7), (vec![4, 3, 2], true));
        assert_eq!(seqs(q(3, 3, false), 7), (vec![1], false));
        assert_eq!(seqs(q(4, 3, false), 7), (vec![], false));
        assert_eq!(seqs(q(1, 100, false), 0), (vec![], false));
    }

    #[test]
    fn oldest_first_pages_walk_forward_from_seq_one() {
        assert_eq!(seqs(q(1, 3, true), 7), (vec![1, 2, 3], true));
        assert_eq!(seqs(q(3, 3, true), 7), (vec![7], false));
        assert_eq!(seqs(q(2, 7, true), 7), (vec![], false));
        assert_eq!(seqs(q(1, 7, true), 7), ((1..=7).collect(), false));
    }

    #[test]
    fn hostile_numbers_give_an_empty_page_not_an_overflow() {
        assert_eq!(
            seqs(q(u32::MAX, MAX_RESULTS_PAGE, false), u64::MAX).0.len(),
            1000
        );
        assert!(seqs(q(u32::MAX, MAX_RESULTS_PAGE, true), 10).0.is_empty());
        assert!(seqs(q(1, 0, false), 10).0.is_empty());
        assert!(q(0, 10, false).check().is_err());
        assert!(q(1, MAX_RESULTS_PAGE + 1, false).check().is_err());
        assert!(q(1, 0, false).check().is_ok());
    }

    #[test]
    fn every_result_is_on_exactly_one_page_in_either_order() {
        for total in [0u64, 1, 9, 10, 11, 100] {
            for limit in [1u32, 3, 10] {
                for oldest_first in [false, true] {
                    let mut seen = Vec::new();
                    for page in 1..=200 {
                        let (s, more) = seqs(q(page, limit, oldest_first), total);
                        seen.extend(s);
                        if !more {
                            break;
                        }
                    }
                    seen.sort_unstable();
                    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
                }
            }
        }
    }

    fn rejected(seq: u64) -> Entry {
        Entry {
            seq,
            worker: "w".repeat(crate::kb::MAX_WORKER_ID_LEN),
            value: 1.0,
            accepted: false,
            champion: false,
            impact: 0.0,
            check: crate::kb::Check::Failed("€".repeat(170)),
        }
    }

    #[test]
    fn a_page_beside_a_large_summary_is_cut_to_fit_the_message_cap() {
        let page: Vec<Entry> = (1..=u64::from(MAX_RESULTS_PAGE)).map(rejected).collect();
        // Beside a small summary a full page of maximal entries fits.
        let (all, cut) = fit_page(page.clone(), 1_000);
        assert_eq!((all.len(), cut), (page.len(), false));
        // Beside a summary of half the cap (payouts to thousands of members) it is cut, keeping
        // the first entries in the query's order, and the whole encodes under the cap.
        let (kept, cut) = fit_page(page.clone(), MAX_MESSAGE_BYTES / 2);
        assert!(cut && !kept.is_empty() && kept.len() < page.len());
        assert_eq!(kept[..], page[..kept.len()]);
        let bytes = crate::wire::encode(&kept).unwrap().len();
        assert!(bytes + MAX_MESSAGE_BYTES / 2 < MAX_MESSAGE_BYTES, "{bytes}");
        // A summary over the cap leaves no room at all.
        assert_eq!(fit_page(page, MAX_MESSAGE_BYTES).0.len(), 0);
    }

    #[test]
    fn the_entry_bound_covers_the_encoding() {
        let e = Entry {
            seq: u64::MAX,
            worker: "w".repeat(crate::kb::MAX_WORKER_ID_LEN),
            value: f64::MAX,
            accepted: true,
            champion: true,
            impact: f64::MIN,
            check: crate::kb::Check::Failed("€".repeat(170)),
        };
        let bytes = crate::wire::encode(&e).unwrap();
        assert!(
            bytes.len() <= entry_bound(&e),
            "{} > {}",
            bytes.len(),
            entry_bound(&e)
        );
    }
}
