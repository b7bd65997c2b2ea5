//! Membership's bounds against hostile joiners (pending-code caps, lock-out, eviction, expiry,
//! restore) and its failure paths (colliding codes, a broken RNG, absurd lifetimes); the helpers are
//! `tests.rs`'s.

use libp2p_identity::PeerId;

use super::tests::{code, ms, peer, rng, T0};
use super::*;
use crate::wire::codec;
use crate::Timestamp;

#[test]
fn pending_codes_are_capped_per_peer_and_in_total() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    let p = peer(1);
    for _ in 0..MAX_PENDING_PER_PEER {
        reg.request(p, T0, &mut r).unwrap();
    }
    assert_eq!(
        reg.request(p, T0, &mut r),
        Err(RequestError::TooManyPendingForPeer {
            limit: MAX_PENDING_PER_PEER
        })
    );
    // A denied code frees its peer's slot.
    let first = reg.pending(T0).next().unwrap();
    reg.deny(&first.user_code.to_string(), T0).unwrap();
    assert!(reg.request(p, T0, &mut r).is_ok());

    // A full table of open codes does not refuse a newcomer; it stays at its bound.
    while reg.code_counts(T0).0 < MAX_PENDING_TOTAL {
        reg.request(PeerId::random(), T0, &mut r).unwrap();
    }
    assert!(reg.request(PeerId::random(), T0, &mut r).is_ok());
    assert_eq!(reg.pending(T0).count(), MAX_PENDING_TOTAL);
    // Once they expire, memory is released.
    let later = T0.plus_secs(900).plus_millis(1);
    assert!(reg.request(PeerId::random(), later, &mut r).is_ok());
    assert_eq!(reg.pending(later).count(), 1);
    let gone = later.plus_secs(EXPIRED_GRACE_SECS).plus_millis(1);
    reg.expire(gone);
    assert_eq!(reg.code_counts(gone), (1, 0));
}

/// Hostile peers item 7: throwaway identities filling the join table must not lock out an honest
/// joiner. On the old registry (1024 codes, consumed ones counted) the honest request was refused.
#[test]
fn throwaway_identities_cannot_lock_out_an_honest_joiner() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    // 256 throwaway ids with 4 codes each fill the table, and 100 more keep pushing.
    for _ in 0..(MAX_PENDING_TOTAL / MAX_PENDING_PER_PEER + 100) {
        let p = PeerId::random();
        for _ in 0..MAX_PENDING_PER_PEER {
            reg.request(p, T0, &mut r).unwrap();
        }
    }
    assert_eq!(reg.code_counts(T0), (MAX_PENDING_TOTAL, 0));
    let honest = peer(7);
    let t = T0.plus_secs(1);
    let auth = reg.request(honest, t, &mut r).unwrap();
    // The attackers keep flooding, from ids holding 1..=4 codes; the honest peer holds one, so
    // the evictions hit attackers as long as any of them holds more than one.
    for _ in 0..MAX_PENDING_TOTAL / 2 {
        let p = PeerId::random();
        for _ in 0..2 {
            reg.request(p, t, &mut r).unwrap();
        }
    }
    assert_eq!(reg.code_counts(t), (MAX_PENDING_TOTAL, 0));
    assert!(reg
        .pending(t)
        .any(|req| req.user_code == auth.user_code && req.member == MemberId::from_peer(&honest)));
    // The owner approves the honest code and the worker gets its credential.
    reg.approve(&code(&auth), t, &mut r).unwrap();
    let grant = reg
        .poll(&auth.device_code, &honest, t.plus_secs(5))
        .unwrap();
    assert!(reg.verify(&grant.credential, &honest).is_ok());

    // 1024+ ids with one code each: a newcomer still gets a code, the oldest single code goes.
    let mut reg = Registry::new(MembershipMode::Approval);
    let first_peer = PeerId::random();
    let first = reg.request(first_peer, T0, &mut r).unwrap();
    for _ in 0..MAX_PENDING_TOTAL + 50 {
        reg.request(PeerId::random(), T0.plus_secs(1), &mut r)
            .unwrap();
    }
    let t = T0.plus_secs(2);
    let auth = reg.request(honest, t, &mut r).unwrap();
    assert!(reg.pending(t).any(|req| req.user_code == auth.user_code));
    assert!(!reg.pending(t).any(|req| req.user_code == first.user_code));
    assert_eq!(
        reg.poll(&first.device_code, &first_peer, t),
        Err(PollError::NotFound)
    );
    assert_eq!(reg.code_counts(t), (MAX_PENDING_TOTAL, 0));
}

/// Hostile peers item 7: one peer in open mode re-joining over and over, or a peer whose requests
/// the owner keeps denying, leaves only consumed or denied codes behind; those neither count toward
/// the open table nor grow without bound.
#[test]
fn consumed_and_denied_codes_neither_lock_out_nor_grow() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Open);
    let rejoiner = peer(3);
    for i in 0..(2 * MAX_PENDING_TOTAL + 100) as u64 {
        let now = T0.plus_millis(i);
        let auth = reg.request(rejoiner, now, &mut r).unwrap();
        let (open, closed) = reg.code_counts(now);
        assert_eq!(open, 1);
        assert!(closed <= MAX_CLOSED_TOTAL, "{closed}");
        // Every other time it picks up its grant; otherwise the next join supersedes it.
        if i % 2 == 0 {
            assert!(reg.poll(&auth.device_code, &rejoiner, now).is_ok());
        }
    }
    let now = T0.plus_secs(10);
    let honest = peer(7);
    let auth = reg.request(honest, now, &mut r).unwrap();
    assert!(reg.poll(&auth.device_code, &honest, now).is_ok());

    reg.set_mode(MembershipMode::Approval);
    let denied = peer(4);
    for _ in 0..(2 * MAX_PENDING_TOTAL) {
        let auth = reg.request(denied, now, &mut r).unwrap();
        reg.deny(&code(&auth), now).unwrap();
    }
    // Each request trims the closed codes; the deny after the last one adds one more.
    let (open, closed) = reg.code_counts(now);
    assert!(open + closed <= MAX_PENDING_TOTAL + MAX_CLOSED_TOTAL);
    reg.expire(now);
    let (open, closed) = reg.code_counts(now);
    assert_eq!(
        open, 1,
        "only the rejoiner's last, undelivered grant is open"
    );
    assert!(closed <= MAX_CLOSED_TOTAL, "{closed}");
    assert!(reg.request(peer(8), now, &mut r).is_ok());

    // Open codes that expire become closed ones; `expire` brings them back under the bound.
    let mut reg = Registry::new(MembershipMode::Approval);
    let mut last = None;
    for i in 0..(MAX_PENDING_TOTAL + MAX_CLOSED_TOTAL) as u64 {
        let now = T0.plus_millis(i);
        last = Some(reg.request(PeerId::random(), now, &mut r).unwrap());
        let (open, closed) = reg.code_counts(now);
        assert!(open + closed <= MAX_PENDING_TOTAL + MAX_CLOSED_TOTAL);
    }
    let t = T0.plus_secs(905);
    reg.expire(t);
    assert_eq!(reg.code_counts(t), (0, MAX_CLOSED_TOTAL));
    // The newest expired codes are the ones still remembered (and answered as expired).
    let last = last.unwrap();
    assert!(matches!(
        reg.approve(&code(&last), t, &mut r),
        Err(DecisionError::Expired { .. })
    ));
}

#[test]
fn expire_drops_dead_codes() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    let a = reg.request(peer(1), T0, &mut r).unwrap();
    let b = reg.request(peer(2), T0.plus_secs(60), &mut r).unwrap();
    let listed: Vec<_> = reg.pending(T0.plus_secs(60)).collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].user_code, a.user_code);
    assert_eq!(listed[0].member, MemberId::from_peer(&peer(1)));
    assert_eq!(listed[0].expires_at, T0.plus_secs(900));
    assert_eq!(listed[1].user_code, b.user_code);

    // Just expired: still remembered, so the answers say "expired" (semantics §3), not "not found".
    reg.expire(T0.plus_secs(901));
    assert!(matches!(
        reg.approve(&code(&a), T0.plus_secs(901), &mut r),
        Err(DecisionError::Expired { .. })
    ));
    assert_eq!(
        reg.poll(&a.device_code, &peer(1), T0.plus_secs(901)),
        Err(PollError::ExpiredToken)
    );
    assert!(reg.approve(&code(&b), T0.plus_secs(901), &mut r).is_ok());

    // After the grace period the code is forgotten and its memory released.
    let gone = T0.plus_secs(900 + EXPIRED_GRACE_SECS).plus_millis(1);
    reg.expire(gone);
    assert_eq!(
        reg.approve(&code(&a), gone, &mut r),
        Err(DecisionError::NotFound {
            user_code: a.user_code
        })
    );
    assert_eq!(
        reg.poll(&a.device_code, &peer(1), gone),
        Err(PollError::NotFound)
    );
}

#[test]
fn colliding_codes_are_drawn_again() {
    let mut reg = Registry::new(MembershipMode::Approval);
    // The same seed twice replays the same draws, so the second request first draws taken codes.
    let a = reg.request(peer(1), T0, &mut rng()).unwrap();
    let b = reg.request(peer(2), T0, &mut rng()).unwrap();
    assert_ne!(a.device_code, b.device_code);
    assert_ne!(a.user_code, b.user_code);
}

/// An RNG that only ever returns zeros: every draw collides with the first.
struct ZeroRng;

impl rand::RngCore for ZeroRng {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        dest.fill(0);
        Ok(())
    }
}

impl rand::CryptoRng for ZeroRng {}

#[test]
fn a_broken_rng_gives_an_error_not_a_hang() {
    let mut reg = Registry::new(MembershipMode::Approval);
    let a = reg.request(peer(1), T0, &mut ZeroRng).unwrap();
    assert_eq!(a.user_code.to_string(), "AAAA-AAAA");
    assert_eq!(
        reg.request(peer(2), T0, &mut ZeroRng),
        Err(RequestError::CodeGeneration)
    );
}

#[test]
fn value_types_serialise_as_documented() {
    assert_eq!(
        serde_json::to_string(&MembershipMode::Open).unwrap(),
        "\"open\""
    );
    assert_eq!(
        serde_json::from_str::<MembershipMode>("\"approval\"").unwrap(),
        MembershipMode::Approval
    );
    let c = Credential::generate(&mut rng());
    assert_eq!(format!("{c:?}"), "Credential(<redacted>)");
    assert_eq!(c.to_hex().parse::<Credential>().unwrap(), c);
    let err = "00".parse::<Credential>().unwrap_err().to_string();
    assert!(err.contains("credential"), "{err}");
    assert_eq!(codec::encode(&c).unwrap().len(), 32);
    assert_eq!(
        codec::decode::<Credential>(&codec::encode(&c).unwrap()).unwrap(),
        c
    );
    assert_eq!(c.hash(), crate::Digest::of(c.as_bytes()));

    let m = MemberId::from_peer(&peer(1));
    assert_eq!(m.peer_id().unwrap(), peer(1));
    assert_eq!(m.as_str().parse::<MemberId>().unwrap(), m);
    assert!("alice".parse::<MemberId>().is_err());
    assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));

    let poll = serde_json::to_string(&PollError::SlowDown { interval: 10 }).unwrap();
    assert_eq!(poll, r#"{"slow_down":{"interval":10}}"#);
    assert_eq!(
        serde_json::to_string(&PollError::AuthorizationPending).unwrap(),
        "\"authorization_pending\""
    );
}

#[test]
fn a_worker_bounds_the_owners_poll_interval_and_refuses_absurd_code_lifetimes() {
    assert_eq!(poll_interval_secs(0), 1);
    assert_eq!(poll_interval_secs(POLL_INTERVAL_SECS), POLL_INTERVAL_SECS);
    assert_eq!(poll_interval_secs(u64::MAX), MAX_POLL_INTERVAL_SECS);
    let auth = |expires_in| DeviceAuthorization {
        device_code: DeviceCode([1; 32]),
        user_code: "ABCD-EFGH".parse().expect("valid user code"),
        expires_in,
        interval: POLL_INTERVAL_SECS,
    };
    assert!(check_authorization(&auth(DEVICE_CODE_EXPIRES_IN_SECS)).is_ok());
    for bad in [0, MAX_DEVICE_CODE_EXPIRES_IN_SECS + 1, u64::MAX] {
        let why = check_authorization(&auth(bad)).expect_err("refused");
        assert!(why.contains("broken or hostile"), "{why}");
    }
}

/// Stored undecided codes come back undecided with their expiry, approvable by their user code, and
/// within the table's bounds: at most `MAX_PENDING_PER_PEER` per peer (the newest), none of a
/// revoked peer, none colliding with a live code.
#[test]
fn restored_codes_are_undecided_and_bounded_like_new_ones() {
    let mut r = rng();
    let mut before = Registry::new(MembershipMode::Approval);
    let flooder = peer(1);
    let honest = peer(2);
    for i in 0..MAX_PENDING_PER_PEER as u64 {
        before.request(flooder, ms(i), &mut r).unwrap();
    }
    let auth = before.request(honest, ms(100), &mut r).unwrap();
    let mut stored: Vec<UndecidedCode> = before.undecided_codes().collect();
    assert_eq!(stored.len(), MAX_PENDING_PER_PEER + 1);
    // A doctored store: one more code of the flooder (older than the others) and a bad peer id.
    let mut extra = stored[0].clone();
    extra.device_code = DeviceCode([9; 32]);
    extra.user_code = "ZZZZ-ZZZZ".parse().unwrap();
    extra.issued_at = Timestamp(0);
    extra.peer = flooder.to_base58();
    stored.push(extra.clone());
    let mut bad = stored[0].clone();
    bad.device_code = DeviceCode([8; 32]);
    bad.user_code = "YYYY-YYYY".parse().unwrap();
    bad.peer = "not a peer".into();
    stored.push(bad);

    let mut after = Registry::new(MembershipMode::Approval);
    let restored = after.restore_codes(stored);
    assert_eq!(restored.len(), MAX_PENDING_PER_PEER + 1);
    assert!(
        !restored.contains(&extra.device_code),
        "the oldest over the bound is left out"
    );
    assert_eq!(
        after.undecided_codes().collect::<Vec<_>>(),
        before.undecided_codes().collect::<Vec<_>>()
    );
    // The honest code is approvable and its poll gets the grant.
    after.approve(&code(&auth), ms(200), &mut r).unwrap();
    assert!(after.poll(&auth.device_code, &honest, ms(6000)).is_ok());
}
