//! Random interleavings of the handshake never panic and never deliver two grants for one code.

use std::collections::{BTreeMap, BTreeSet};

use libp2p_identity::{Keypair, PeerId};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::Timestamp;

const PEERS: u8 = 4;

#[derive(Debug, Clone)]
enum Op {
    Request { peer: u8 },
    Approve { code: usize },
    ApproveText { text: String },
    Deny { code: usize },
    Poll { code: usize, peer: u8 },
    TakeGrant { code: usize },
    Advance { ms: u64 },
    Expire,
    Revoke { peer: u8 },
    SetMode { open: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PEERS).prop_map(|peer| Op::Request { peer }),
        3 => any::<usize>().prop_map(|code| Op::Approve { code }),
        1 => "[a-zA-Z0-9 -]{0,11}".prop_map(|text| Op::ApproveText { text }),
        2 => any::<usize>().prop_map(|code| Op::Deny { code }),
        5 => (any::<usize>(), 0..PEERS).prop_map(|(code, peer)| Op::Poll { code, peer }),
        2 => any::<usize>().prop_map(|code| Op::TakeGrant { code }),
        3 => prop_oneof![0..10_000u64, 0..1_000_000u64].prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Expire),
        1 => (0..PEERS).prop_map(|peer| Op::Revoke { peer }),
        1 => any::<bool>().prop_map(|open| Op::SetMode { open }),
    ]
}

fn peers() -> Vec<PeerId> {
    (0..PEERS)
        .map(|i| match Keypair::ed25519_from_bytes([i + 1; 32]) {
            Ok(k) => k.public().to_peer_id(),
            Err(e) => panic!("test key: {e}"),
        })
        .collect()
}

proptest! {
    #[test]
    fn interleavings_never_double_grant(
        seed in any::<u64>(),
        open in any::<bool>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let peers = peers();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mode = if open { MembershipMode::Open } else { MembershipMode::Approval };
        let mut reg = Registry::new(mode);
        let mut now = Timestamp::from_secs(1_700_000_000);
        // Every authorization handed out: (reply, requesting peer index).
        let mut auths: Vec<(DeviceAuthorization, usize)> = Vec::new();
        let mut grants: BTreeMap<DeviceCode, usize> = BTreeMap::new();
        let mut credentials: BTreeSet<crate::Digest> = BTreeSet::new();
        let mut revoked: BTreeSet<usize> = BTreeSet::new();
        let mut delivered: Vec<(Credential, usize)> = Vec::new();
        // Device codes a credential was issued for (by approval, or at request in open mode).
        let mut issued: BTreeSet<DeviceCode> = BTreeSet::new();

        for op in ops {
            let mut on_grant = |grant: Grant, owner: usize, reg: &Registry| {
                prop_assert!(issued.contains(&grant.device_code), "grant without approval");
                *grants.entry(grant.device_code).or_default() += 1;
                prop_assert_eq!(grants[&grant.device_code], 1, "two grants for one device code");
                prop_assert!(credentials.insert(grant.credential.hash()), "credential reused");
                prop_assert_eq!(&grant.member, &MemberId::from_peer(&peers[owner]));
                prop_assert!(!revoked.contains(&owner), "grant delivered to a revoked peer");
                // A freshly delivered credential is the member's current one.
                prop_assert_eq!(reg.verify(&grant.credential, &peers[owner]), Ok(grant.member.clone()));
                let other = (owner + 1) % peers.len();
                prop_assert_eq!(
                    reg.verify(&grant.credential, &peers[other]),
                    Err(AuthError::MembershipRequired)
                );
                delivered.push((grant.credential, owner));
                Ok(())
            };
            match op {
                Op::Request { peer } => {
                    let i = usize::from(peer);
                    match reg.request(peers[i], now, &mut rng) {
                        Ok(auth) => {
                            prop_assert!(!revoked.contains(&i));
                            prop_assert_eq!(auth.expires_in, DEVICE_CODE_EXPIRES_IN_SECS);
                            if reg.mode() == MembershipMode::Open {
                                issued.insert(auth.device_code);
                            }
                            auths.push((auth, i));
                        }
                        Err(RequestError::Revoked) => prop_assert!(revoked.contains(&i)),
                        Err(RequestError::TooManyPendingForPeer { .. }) => {}
                        Err(e) => prop_assert!(false, "unexpected request error {e}"),
                    }
                }
                Op::Approve { code } => {
                    if let Some((auth, _)) = auths.get(code % auths.len().max(1)) {
                        let res = reg.approve(&auth.user_code.to_string(), now, &mut rng);
                        if let Ok(info) = res {
                            prop_assert_eq!(info.device_code, auth.device_code);
                            prop_assert!(issued.insert(auth.device_code), "approved twice");
                        }
                    }
                }
                Op::ApproveText { text } => {
                    let _ = reg.approve(&text, now, &mut rng);
                }
                Op::Deny { code } => {
                    if let Some((auth, _)) = auths.get(code % auths.len().max(1)) {
                        let _ = reg.deny(&auth.user_code.to_string(), now);
                    }
                }
                Op::Poll { code, peer } => {
                    if let Some((auth, owner)) = auths.get(code % auths.len().max(1)) {
                        let i = usize::from(peer);
                        match reg.poll(&auth.device_code, &peers[i], now) {
                            Ok(grant) => {
                                prop_assert_eq!(i, *owner, "grant to a peer the code is not bound to");
                                on_grant(grant, *owner, &reg)?;
                            }
                            Err(e) => {
                                if i != *owner {
                                    prop_assert_eq!(e, PollError::NotFound);
                                }
                            }
                        }
                    }
                }
                Op::TakeGrant { code } => {
                    if let Some((auth, owner)) = auths.get(code % auths.len().max(1)) {
                        if let Some(grant) = reg.take_grant(&auth.device_code) {
                            on_grant(grant, *owner, &reg)?;
                        }
                    }
                }
                Op::Advance { ms } => now = now.plus_millis(ms),
                Op::Expire => reg.expire(now),
                Op::Revoke { peer } => {
                    let i = usize::from(peer);
                    if reg.revoke(&MemberId::from_peer(&peers[i]), now).is_ok() {
                        revoked.insert(i);
                    }
                }
                Op::SetMode { open } => reg.set_mode(if open {
                    MembershipMode::Open
                } else {
                    MembershipMode::Approval
                }),
            }
            prop_assert!(reg.pending(now).count() <= MAX_PENDING_TOTAL);
            let (open, closed) = reg.code_counts(now);
            prop_assert!(open <= MAX_PENDING_TOTAL);
            prop_assert!(open + closed <= MAX_PENDING_TOTAL + MAX_CLOSED_TOTAL);
            prop_assert!(reg.members().count() <= peers.len());
        }
        for (credential, owner) in &delivered {
            // Revoked members' credentials are dead (`Revoked`, or `MembershipRequired` when a later
            // join had already replaced them).
            if revoked.contains(owner) {
                prop_assert!(reg.verify(credential, &peers[*owner]).is_err());
            }
        }
    }
}
