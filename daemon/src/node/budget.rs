//! Per-peer token buckets: bounded work per remote peer (requests, artifact chunks) and this
//! node's own pace towards each owner (the outbox).

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;

/// Most peers tracked by one [`Budgets`] (the least recently used forgotten first).
const MAX_PEERS: usize = 4096;

/// One peer's bucket.
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token bucket per peer: `burst` tokens at most, refilled at `per_sec`.
pub(crate) struct Budgets {
    burst: f64,
    per_sec: f64,
    peers: HashMap<PeerId, Bucket>,
}

impl Budgets {
    /// Buckets of `burst` tokens refilled at `per_sec` tokens a second.
    pub(crate) fn new((burst, per_sec): (f64, f64)) -> Self {
        Self {
            burst,
            per_sec,
            peers: HashMap::new(),
        }
    }

    /// Takes one token from `peer`'s bucket; false means "rate limited".
    pub(crate) fn take(&mut self, peer: PeerId) -> bool {
        self.take_n(peer, 1)
    }

    /// Takes `n` tokens at once from `peer`'s bucket (a batch of `n` results costs what `n`
    /// requests cost), or none: false means "rate limited". A peer not seen before starts with a
    /// full bucket; at [`MAX_PEERS`] the least recently used bucket is forgotten to make room.
    pub(crate) fn take_n(&mut self, peer: PeerId, n: usize) -> bool {
        let n = n.max(1) as f64;
        let now = Instant::now();
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&peer) {
            if let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(p, _)| *p)
            {
                self.peers.remove(&oldest);
            }
        }
        let b = self.peers.entry(peer).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.last = now;
        if b.tokens >= n {
            b.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_refill_per_peer() {
        // Burst 3, refill 1/s: three requests pass at once, the fourth is rate limited.
        let mut budgets = Budgets::new((3.0, 1.0));
        let (a, b) = (PeerId::random(), PeerId::random());
        assert!((0..3).all(|_| budgets.take(a)));
        assert!(!budgets.take(a));
        // Another peer has its own budget.
        assert!(budgets.take(b));
        // Time refills it: 1.5 s gives one and a half tokens.
        if let Some(bucket) = budgets.peers.get_mut(&a) {
            bucket.last -= Duration::from_millis(1500);
        }
        assert!(budgets.take(a));
        assert!(!budgets.take(a));
    }

    #[test]
    fn a_batch_takes_all_its_tokens_or_none() {
        let mut budgets = Budgets::new((5.0, 0.0));
        let a = PeerId::random();
        assert!(!budgets.take_n(a, 6), "more than the burst");
        assert!(budgets.take_n(a, 4), "the refused batch took nothing");
        assert!(budgets.take(a));
        assert!(!budgets.take(a));
    }
}
