use libp2p_identity::{Keypair, PeerId};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::wire::codec;
use crate::Timestamp;

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

fn peer(seed: u8) -> PeerId {
    match Keypair::ed25519_from_bytes([seed; 32]) {
        Ok(k) => k.public().to_peer_id(),
        Err(e) => panic!("test key: {e}"),
    }
}

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(42)
}

fn ms(n: u64) -> Timestamp {
    T0.plus_millis(n)
}

fn code(auth: &DeviceAuthorization) -> String {
    auth.user_code.to_string()
}

/// An approved registry with one granted member: (registry, peer, grant).
fn joined(seed: u8) -> (Registry, PeerId, Grant) {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    let p = peer(seed);
    let auth = reg.request(p, T0, &mut r).unwrap();
    reg.approve(&code(&auth), T0, &mut r).unwrap();
    let grant = reg.poll(&auth.device_code, &p, ms(5000)).unwrap();
    (reg, p, grant)
}

fn assert_user_code_shape(s: &str) {
    assert_eq!(s.len(), 9, "{s}");
    for (i, c) in s.bytes().enumerate() {
        if i == 4 {
            assert_eq!(c, b'-', "{s}");
        } else {
            assert!(USER_CODE_ALPHABET.contains(&c), "{s}");
        }
    }
}

#[test]
fn request_reply_has_the_rfc_shape() {
    let mut reg = Registry::new(MembershipMode::Approval);
    let auth = reg.request(peer(1), T0, &mut rng()).unwrap();
    assert_eq!(auth.expires_in, 900);
    assert_eq!(auth.interval, 5);
    assert_user_code_shape(&auth.user_code.to_string());
    let hex = auth.device_code.to_string();
    assert_eq!(hex.len(), 64);
    assert_eq!(hex.parse::<DeviceCode>().unwrap(), auth.device_code);
    let back: DeviceAuthorization = codec::decode(&codec::encode(&auth).unwrap()).unwrap();
    assert_eq!(back, auth);
    let json = serde_json::to_value(&auth).unwrap();
    assert_eq!(json["device_code"], hex);
    assert_eq!(json["user_code"], auth.user_code.to_string());
    assert_eq!(json["expires_in"], 900);
}

#[test]
fn user_codes_use_only_the_alphabet() {
    let mut r = rng();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        let c = UserCode::generate(&mut r);
        assert_user_code_shape(&c.to_string());
        seen.extend(c.to_string().bytes().filter(|b| *b != b'-'));
    }
    // Every character of the alphabet shows up: the draw covers the whole alphabet.
    assert_eq!(seen.len(), USER_CODE_ALPHABET.len());
}

#[test]
fn user_code_parse_normalises() {
    let want = UserCode::parse("ABCD-EFGH").unwrap();
    assert_eq!(want.to_string(), "ABCD-EFGH");
    for input in ["abcd-efgh ", "ABCDEFGH", " abcdEFGH\n", "\tABCD-efgh"] {
        assert_eq!(UserCode::parse(input).unwrap(), want, "{input:?}");
    }
    assert_eq!(
        UserCode::parse("ABC"),
        Err(UserCodeError::WrongLength { got: 3 })
    );
    assert_eq!(
        UserCode::parse("ABCD-EFGHJ"),
        Err(UserCodeError::WrongLength { got: 10 })
    );
    assert_eq!(
        UserCode::parse("AB-CDEFGH"),
        Err(UserCodeError::WrongLength { got: 9 })
    );
    assert_eq!(
        UserCode::parse("ABCD-EFG0"),
        Err(UserCodeError::BadCharacter { ch: '0' })
    );
    assert_eq!(
        UserCode::parse("ABCDEFGI"),
        Err(UserCodeError::BadCharacter { ch: 'I' })
    );
    assert_eq!(
        UserCode::parse("ÄBCDEFGH"),
        Err(UserCodeError::BadCharacter { ch: 'Ä' })
    );
    let msg = UserCode::parse("ABCDEFGO").unwrap_err().to_string();
    assert!(msg.contains("ABCDEFGHJKMNPQRSTUVWXYZ23456789"), "{msg}");
    assert!(UserCode::parse("X")
        .unwrap_err()
        .to_string()
        .contains("XXXX-XXXX"));
    // Serde goes through the same parser.
    assert!(serde_json::from_str::<UserCode>("\"ABCD-EFG1\"").is_err());
    assert_eq!(
        serde_json::from_str::<UserCode>("\"abcdefgh\"").unwrap(),
        want
    );
}

#[test]
fn approve_unknown_or_malformed_code() {
    let mut reg = Registry::new(MembershipMode::Approval);
    reg.request(peer(1), T0, &mut rng()).unwrap();
    let unknown = UserCode::parse("ZZZZ-ZZZZ").unwrap();
    assert_eq!(
        reg.approve("zzzz-zzzz", T0, &mut rng()),
        Err(DecisionError::NotFound { user_code: unknown })
    );
    assert_eq!(
        reg.deny("ZZZZZZZZ", T0),
        Err(DecisionError::NotFound { user_code: unknown })
    );
    assert!(matches!(
        reg.approve("nope", T0, &mut rng()),
        Err(DecisionError::InvalidCode(UserCodeError::WrongLength {
            got: 4
        }))
    ));
}

#[test]
fn expiry_is_strictly_after_900_seconds() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    let a = reg.request(peer(1), T0, &mut r).unwrap();
    let b = reg.request(peer(2), T0, &mut r).unwrap();
    let c = reg.request(peer(3), T0, &mut r).unwrap();
    let d = reg.request(peer(4), T0, &mut r).unwrap();
    let edge = T0.plus_secs(900);
    let after = edge.plus_millis(1);

    // Approve / deny: valid at the edge, expired 1 ms later.
    assert!(reg.approve(&code(&a), edge, &mut r).is_ok());
    assert_eq!(
        reg.approve(&code(&b), after, &mut r),
        Err(DecisionError::Expired {
            user_code: b.user_code
        })
    );
    assert_eq!(
        reg.deny(&code(&b), after),
        Err(DecisionError::Expired {
            user_code: b.user_code
        })
    );

    // Poll: pending at the edge, expired_token 1 ms later, even once approved.
    assert_eq!(
        reg.poll(&c.device_code, &peer(3), edge),
        Err(PollError::AuthorizationPending)
    );
    assert_eq!(
        reg.poll(&d.device_code, &peer(4), after),
        Err(PollError::ExpiredToken)
    );
    assert_eq!(
        reg.poll(&a.device_code, &peer(1), after),
        Err(PollError::ExpiredToken)
    );
    assert!(reg.pending(edge).count() == 3);
    assert_eq!(reg.pending(after).count(), 0);
}

#[test]
fn decided_codes_are_already_used() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    let a = reg.request(peer(1), T0, &mut r).unwrap();
    let b = reg.request(peer(2), T0, &mut r).unwrap();
    reg.approve(&code(&a), T0, &mut r).unwrap();
    reg.deny(&code(&b), T0).unwrap();
    let used_a = DecisionError::AlreadyUsed {
        user_code: a.user_code,
    };
    let used_b = DecisionError::AlreadyUsed {
        user_code: b.user_code,
    };
    assert_eq!(reg.approve(&code(&a), T0, &mut r), Err(used_a.clone()));
    assert_eq!(reg.deny(&code(&a), T0), Err(used_a.clone()));
    assert_eq!(reg.approve(&code(&b), T0, &mut r), Err(used_b.clone()));
    assert_eq!(reg.deny(&code(&b), T0), Err(used_b));
    // Still "already used" once the grant is delivered.
    reg.poll(&a.device_code, &peer(1), T0).unwrap();
    assert_eq!(reg.approve(&code(&a), T0, &mut r), Err(used_a));
}

#[test]
fn poll_before_approval_is_pending() {
    let mut reg = Registry::new(MembershipMode::Approval);
    let a = reg.request(peer(1), T0, &mut rng()).unwrap();
    assert_eq!(
        reg.poll(&a.device_code, &peer(1), T0),
        Err(PollError::AuthorizationPending)
    );
    assert_eq!(reg.pending(T0).count(), 1);
}

#[test]
fn polling_too_fast_slows_down_and_the_interval_grows() {
    let mut reg = Registry::new(MembershipMode::Approval);
    let p = peer(1);
    let dc = reg.request(p, T0, &mut rng()).unwrap().device_code;
    let pending = Err(PollError::AuthorizationPending);
    assert_eq!(reg.poll(&dc, &p, ms(0)), pending);
    // Exactly the interval later is on time.
    assert_eq!(reg.poll(&dc, &p, ms(5_000)), pending);
    // 1 ms early: slow down, interval 10 s.
    assert_eq!(
        reg.poll(&dc, &p, ms(9_999)),
        Err(PollError::SlowDown { interval: 10 })
    );
    // The old 5 s gap is no longer enough: interval 15 s.
    assert_eq!(
        reg.poll(&dc, &p, ms(14_999)),
        Err(PollError::SlowDown { interval: 15 })
    );
    assert_eq!(
        reg.poll(&dc, &p, ms(14_999 + 14_999)),
        Err(PollError::SlowDown { interval: 20 })
    );
    // Keeping the new interval is fine.
    assert_eq!(reg.poll(&dc, &p, ms(29_998 + 20_000)), pending);
    assert_eq!(reg.poll(&dc, &p, ms(29_998 + 40_000)), pending);
}

#[test]
fn deny_gives_access_denied() {
    let mut reg = Registry::new(MembershipMode::Approval);
    let a = reg.request(peer(1), T0, &mut rng()).unwrap();
    reg.deny(&code(&a), T0).unwrap();
    assert_eq!(
        reg.poll(&a.device_code, &peer(1), T0),
        Err(PollError::AccessDenied)
    );
    assert_eq!(reg.take_grant(&a.device_code), None);
    assert_eq!(reg.members().count(), 0);
}

#[test]
fn the_credential_is_delivered_once() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    let p = peer(1);
    let a = reg.request(p, T0, &mut r).unwrap();
    let info = reg.approve(&code(&a), ms(1000), &mut r).unwrap();
    assert_eq!(info.member, MemberId::from_peer(&p));
    assert_eq!(info.device_code, a.device_code);
    assert_eq!(info.user_code, a.user_code);
    assert_eq!(reg.pending(ms(1000)).count(), 0);

    let grant = reg.poll(&a.device_code, &p, ms(2000)).unwrap();
    assert_eq!(grant.member, MemberId::from_peer(&p));
    assert_eq!(grant.device_code, a.device_code);
    assert_eq!(reg.verify(&grant.credential, &p), Ok(grant.member.clone()));
    assert_eq!(
        reg.poll(&a.device_code, &p, ms(10_000)),
        Err(PollError::NotFound)
    );
    assert_eq!(reg.take_grant(&a.device_code), None);
    let record = reg.member(&grant.member).unwrap();
    assert_eq!(record.credential_hash, grant.credential.hash());
    assert_eq!(record.joined_at, ms(1000));
}

#[test]
fn take_grant_consumes_like_a_poll() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    let p = peer(1);
    let a = reg.request(p, T0, &mut r).unwrap();
    assert_eq!(reg.take_grant(&a.device_code), None);
    reg.approve(&code(&a), T0, &mut r).unwrap();
    let grant = reg.take_grant(&a.device_code).unwrap();
    assert_eq!(reg.verify(&grant.credential, &p).unwrap(), grant.member);
    assert_eq!(reg.take_grant(&a.device_code), None);
    assert_eq!(reg.poll(&a.device_code, &p, T0), Err(PollError::NotFound));
}

#[test]
fn a_poll_from_another_peer_is_not_found_and_changes_nothing() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    let (p, q) = (peer(1), peer(2));
    let a = reg.request(p, T0, &mut r).unwrap();
    assert_eq!(
        reg.poll(&a.device_code, &p, ms(0)),
        Err(PollError::AuthorizationPending)
    );
    // The intruder polls fast; the real peer is neither slowed down nor affected.
    for t in [1, 2, 3, 4_000] {
        assert_eq!(
            reg.poll(&a.device_code, &q, ms(t)),
            Err(PollError::NotFound)
        );
    }
    assert_eq!(
        reg.poll(&a.device_code, &p, ms(5_000)),
        Err(PollError::AuthorizationPending)
    );
    reg.approve(&code(&a), ms(6_000), &mut r).unwrap();
    assert_eq!(
        reg.poll(&a.device_code, &q, ms(6_001)),
        Err(PollError::NotFound)
    );
    let grant = reg.poll(&a.device_code, &p, ms(10_000)).unwrap();
    assert_eq!(
        reg.verify(&grant.credential, &q),
        Err(AuthError::MembershipRequired)
    );
    assert!(reg.verify(&grant.credential, &p).is_ok());
}

#[test]
fn open_mode_grants_at_the_first_poll() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Open);
    let p = peer(1);
    let a = reg.request(p, T0, &mut r).unwrap();
    assert_eq!(reg.pending(T0).count(), 0);
    assert_eq!(
        reg.approve(&code(&a), T0, &mut r),
        Err(DecisionError::AlreadyUsed {
            user_code: a.user_code
        })
    );
    let grant = reg.poll(&a.device_code, &p, T0).unwrap();
    assert_eq!(
        reg.verify(&grant.credential, &p),
        Ok(MemberId::from_peer(&p))
    );
    assert_eq!(
        reg.poll(&a.device_code, &p, ms(5000)),
        Err(PollError::NotFound)
    );
    // The mode can change; requests then wait for approval.
    reg.set_mode(MembershipMode::Approval);
    assert_eq!(reg.mode(), MembershipMode::Approval);
    let b = reg.request(peer(2), T0, &mut r).unwrap();
    assert_eq!(
        reg.poll(&b.device_code, &peer(2), T0),
        Err(PollError::AuthorizationPending)
    );
}

#[test]
fn revocation_takes_effect_on_the_next_verify_and_is_permanent() {
    let (mut reg, p, grant) = joined(1);
    let member = grant.member.clone();
    assert_eq!(reg.verify(&grant.credential, &p), Ok(member.clone()));
    reg.revoke(&member, ms(7000)).unwrap();
    assert_eq!(reg.verify(&grant.credential, &p), Err(AuthError::Revoked));
    assert!(reg.is_revoked(&member));
    // Revoking again keeps the first time.
    reg.revoke(&member, ms(9000)).unwrap();
    assert_eq!(reg.member(&member).unwrap().revoked_at, Some(ms(7000)));
    // Later requests are refused.
    assert_eq!(
        reg.request(p, ms(10_000), &mut rng()),
        Err(RequestError::Revoked)
    );
    // Unknown member.
    let stranger = MemberId::from_peer(&peer(9));
    assert_eq!(
        reg.revoke(&stranger, T0),
        Err(RevokeError::NotAMember { member: stranger })
    );
}

#[test]
fn revoking_denies_waiting_and_undelivered_requests() {
    let mut r = rng();
    let (mut reg, p, grant) = joined(1);
    let again = reg.request(p, ms(6000), &mut r).unwrap();
    let third = reg.request(p, ms(6000), &mut r).unwrap();
    reg.approve(&code(&third), ms(6000), &mut r).unwrap();
    reg.revoke(&grant.member, ms(7000)).unwrap();
    assert_eq!(
        reg.poll(&again.device_code, &p, ms(8000)),
        Err(PollError::AccessDenied)
    );
    assert_eq!(
        reg.poll(&third.device_code, &p, ms(8000)),
        Err(PollError::AccessDenied)
    );
    assert_eq!(reg.take_grant(&third.device_code), None);
    assert_eq!(reg.pending(ms(8000)).count(), 0);
}

#[test]
fn unknown_credentials_need_membership() {
    let (reg, p, _) = joined(1);
    let forged = Credential::generate(&mut ChaCha20Rng::seed_from_u64(99));
    assert_eq!(reg.verify(&forged, &p), Err(AuthError::MembershipRequired));
    assert!(AuthError::MembershipRequired
        .to_string()
        .contains("membership required"));
}

#[test]
fn rejoining_replaces_the_credential() {
    let mut r = rng();
    let (mut reg, p, first) = joined(1);
    let a = reg.request(p, ms(6000), &mut r).unwrap();
    reg.approve(&code(&a), ms(6000), &mut r).unwrap();
    let second = reg.take_grant(&a.device_code).unwrap();
    assert_ne!(first.credential, second.credential);
    assert_eq!(
        reg.verify(&first.credential, &p),
        Err(AuthError::MembershipRequired)
    );
    assert!(reg.verify(&second.credential, &p).is_ok());
    assert_eq!(reg.members().count(), 1);
}

#[test]
fn a_newer_approval_supersedes_an_undelivered_one() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    let p = peer(1);
    let a = reg.request(p, T0, &mut r).unwrap();
    let b = reg.request(p, T0, &mut r).unwrap();
    reg.approve(&code(&a), T0, &mut r).unwrap();
    reg.approve(&code(&b), T0, &mut r).unwrap();
    assert_eq!(reg.poll(&a.device_code, &p, T0), Err(PollError::NotFound));
    let grant = reg.poll(&b.device_code, &p, T0).unwrap();
    assert!(reg.verify(&grant.credential, &p).is_ok());
}

#[test]
fn the_owner_stores_only_credential_hashes() {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    let p = peer(1);
    let a = reg.request(p, T0, &mut r).unwrap();
    reg.approve(&code(&a), T0, &mut r).unwrap();
    // Before delivery, the plaintext is held but never printed.
    let grant_preview = format!("{reg:?}");
    let grant = reg.take_grant(&a.device_code).unwrap();
    let secret_hex = grant.credential.to_hex();
    assert!(!grant_preview.contains(&secret_hex));
    assert!(!format!("{:?}", grant.credential).contains(&secret_hex));

    let table = reg.export_members();
    let json = serde_json::to_string(&table).unwrap();
    assert!(!json.contains(&secret_hex));
    assert!(json.contains(&grant.credential.hash().to_hex()));
    let bin = codec::encode(&table).unwrap();
    assert!(!bin
        .windows(32)
        .any(|w| w == grant.credential.as_bytes().as_slice()));
    assert!(!format!("{reg:?}").contains(&secret_hex));
}

#[test]
fn member_table_restores() {
    let (mut reg, p, grant) = joined(1);
    let mut r = rng();
    let q = peer(2);
    let b = reg.request(q, T0, &mut r).unwrap();
    reg.approve(&code(&b), T0, &mut r).unwrap();
    let g2 = reg.take_grant(&b.device_code).unwrap();
    reg.revoke(&g2.member, ms(100)).unwrap();

    let json = serde_json::to_string(&reg.export_members()).unwrap();
    let records: Vec<MemberRecord> = serde_json::from_str(&json).unwrap();
    let back = Registry::restore(MembershipMode::Open, records.clone()).unwrap();
    assert_eq!(back.mode(), MembershipMode::Open);
    assert_eq!(back.export_members(), reg.export_members());
    assert_eq!(back.verify(&grant.credential, &p), Ok(grant.member.clone()));
    assert_eq!(back.verify(&g2.credential, &q), Err(AuthError::Revoked));

    let mut dup = records.clone();
    dup.push(records[0].clone());
    assert!(matches!(
        Registry::restore(MembershipMode::Approval, dup),
        Err(RestoreError::DuplicateCredential { .. })
    ));
    let mut dup_member = records.clone();
    dup_member.push(MemberRecord {
        credential_hash: crate::Digest::of(b"other"),
        ..records[0].clone()
    });
    assert!(matches!(
        Registry::restore(MembershipMode::Approval, dup_member),
        Err(RestoreError::DuplicateMember { .. })
    ));
    let bad: MemberRecord = serde_json::from_value(serde_json::json!({
        "member": "alice",
        "credential_hash": crate::Digest::of(b"x").to_hex(),
        "joined_at": 1,
        "revoked_at": null
    }))
    .unwrap();
    assert!(matches!(
        Registry::restore(MembershipMode::Approval, [bad]),
        Err(RestoreError::BadMemberId { .. })
    ));
}

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
