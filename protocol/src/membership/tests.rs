use libp2p_identity::{Keypair, PeerId};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::wire::codec;
use crate::Timestamp;

pub(super) const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

pub(super) fn peer(seed: u8) -> PeerId {
    match Keypair::ed25519_from_bytes([seed; 32]) {
        Ok(k) => k.public().to_peer_id(),
        Err(e) => panic!("test key: {e}"),
    }
}

pub(super) fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(42)
}

pub(super) fn ms(n: u64) -> Timestamp {
    T0.plus_millis(n)
}

pub(super) fn code(auth: &DeviceAuthorization) -> String {
    auth.user_code.to_string()
}

/// An approved registry with one granted member: (registry, peer, grant).
pub(super) fn joined(seed: u8) -> (Registry, PeerId, Grant) {
    let mut r = rng();
    let mut reg = Registry::new(MembershipMode::Approval);
    let p = peer(seed);
    let auth = reg.request(p, T0, &mut r).unwrap();
    reg.approve(&code(&auth), T0, &mut r).unwrap();
    let grant = reg.poll(&auth.device_code, &p, ms(5000)).unwrap();
    (reg, p, grant)
}

pub(super) fn assert_user_code_shape(s: &str) {
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
