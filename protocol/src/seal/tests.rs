use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::wire::codec;

const CTX: &[u8] = b"program-id|device-code";

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(7)
}

fn identity(seed: u8) -> libp2p_identity::Keypair {
    match libp2p_identity::Keypair::ed25519_from_bytes([seed; 32]) {
        Ok(k) => k,
        Err(e) => panic!("test key: {e}"),
    }
}

#[test]
fn round_trip() {
    let mut r = rng();
    let key = SealKey::generate(&mut r);
    let sealed = seal(&key.public(), CTX, b"the credential", &mut r).unwrap();
    assert_eq!(open(&key, CTX, &sealed).unwrap(), b"the credential");
    assert!(!sealed
        .ciphertext
        .windows(b"credential".len())
        .any(|w| w == b"credential"));
    // Empty plaintext and the largest allowed one both work.
    let empty = seal(&key.public(), CTX, b"", &mut r).unwrap();
    assert_eq!(open(&key, CTX, &empty).unwrap(), b"");
    let big = vec![0xab; MAX_SEALED_PLAINTEXT];
    let sealed = seal(&key.public(), CTX, &big, &mut r).unwrap();
    assert_eq!(open(&key, CTX, &sealed).unwrap(), big);
}

#[test]
fn two_seals_of_the_same_message_differ() {
    let mut r = rng();
    let key = SealKey::generate(&mut r);
    let a = seal(&key.public(), CTX, b"x", &mut r).unwrap();
    let b = seal(&key.public(), CTX, b"x", &mut r).unwrap();
    assert_ne!(a.ephemeral, b.ephemeral);
    assert_ne!(a.ciphertext, b.ciphertext);
}

#[test]
fn wrong_key_fails() {
    let mut r = rng();
    let key = SealKey::generate(&mut r);
    let other = SealKey::generate(&mut r);
    let sealed = seal(&key.public(), CTX, b"secret", &mut r).unwrap();
    assert_eq!(open(&other, CTX, &sealed), Err(SealError::OpenFailed));
}

#[test]
fn tampering_fails() {
    let mut r = rng();
    let key = SealKey::generate(&mut r);
    let sealed = seal(&key.public(), CTX, b"secret", &mut r).unwrap();

    let mut t = sealed.clone();
    t.ciphertext[0] ^= 1;
    assert_eq!(open(&key, CTX, &t), Err(SealError::OpenFailed));

    let mut t = sealed.clone();
    let last = t.ciphertext.len() - 1;
    t.ciphertext[last] ^= 1;
    assert_eq!(open(&key, CTX, &t), Err(SealError::OpenFailed));

    let mut t = sealed.clone();
    t.ciphertext.truncate(3);
    assert_eq!(open(&key, CTX, &t), Err(SealError::OpenFailed));

    let mut t = sealed.clone();
    t.nonce[0] ^= 1;
    assert_eq!(open(&key, CTX, &t), Err(SealError::OpenFailed));

    let mut t = sealed.clone();
    t.ephemeral[0] ^= 1;
    assert_eq!(open(&key, CTX, &t), Err(SealError::OpenFailed));

    let mut t = sealed.clone();
    t.ephemeral = SealKey::generate(&mut r).public().0;
    assert_eq!(open(&key, CTX, &t), Err(SealError::OpenFailed));

    assert_eq!(
        open(&key, b"program-id|other-code", &sealed),
        Err(SealError::OpenFailed)
    );
    assert_eq!(open(&key, b"", &sealed), Err(SealError::OpenFailed));
    assert_eq!(open(&key, CTX, &sealed).unwrap(), b"secret");
}

#[test]
fn from_identity_is_deterministic_and_per_identity() {
    let a1 = SealKey::from_identity(&identity(1)).unwrap();
    let a2 = SealKey::from_identity(&identity(1)).unwrap();
    let b = SealKey::from_identity(&identity(2)).unwrap();
    assert_eq!(a1.public(), a2.public());
    assert_ne!(a1.public(), b.public());
    // A message sealed to the derived key opens after a "restart".
    let mut r = rng();
    let sealed = seal(&a1.public(), CTX, b"hi", &mut r).unwrap();
    drop(a1);
    assert_eq!(open(&a2, CTX, &sealed).unwrap(), b"hi");
    assert_eq!(open(&b, CTX, &sealed), Err(SealError::OpenFailed));
}

#[test]
fn low_order_keys_are_rejected() {
    let mut r = rng();
    let key = SealKey::generate(&mut r);
    // u = 0 and u = 1 are low-order points: the shared secret is all zeros for any scalar.
    let mut one = [0u8; 32];
    one[0] = 1;
    for bad in [[0u8; 32], one] {
        assert_eq!(
            seal(&SealPublicKey(bad), CTX, b"x", &mut r),
            Err(SealError::LowOrderKey)
        );
        let mut sealed = seal(&key.public(), CTX, b"x", &mut r).unwrap();
        sealed.ephemeral = bad;
        assert_eq!(open(&key, CTX, &sealed), Err(SealError::LowOrderKey));
    }
}

#[test]
fn oversize_is_rejected() {
    let mut r = rng();
    let key = SealKey::generate(&mut r);
    let too_big = vec![0u8; MAX_SEALED_PLAINTEXT + 1];
    assert!(matches!(
        seal(&key.public(), CTX, &too_big, &mut r),
        Err(SealError::TooLarge { .. })
    ));
    let mut sealed = seal(&key.public(), CTX, b"x", &mut r).unwrap();
    sealed.ciphertext = vec![0u8; MAX_SEALED_PLAINTEXT + TAG_LEN + 1];
    assert!(matches!(
        open(&key, CTX, &sealed),
        Err(SealError::TooLarge { .. })
    ));
}

#[test]
fn serde_round_trips() {
    let mut r = rng();
    let key = SealKey::generate(&mut r);
    let sealed = seal(&key.public(), CTX, b"payload", &mut r).unwrap();
    let back: Sealed = codec::decode(&codec::encode(&sealed).unwrap()).unwrap();
    assert_eq!(back, sealed);
    assert_eq!(open(&key, CTX, &back).unwrap(), b"payload");

    let public = key.public();
    let bytes = codec::encode(&public).unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(codec::decode::<SealPublicKey>(&bytes).unwrap(), public);
    let json = serde_json::to_string(&public).unwrap();
    assert_eq!(json, format!("\"{}\"", public.to_hex()));
    assert_eq!(
        serde_json::from_str::<SealPublicKey>(&json).unwrap(),
        public
    );
    assert_eq!(public.to_hex().parse::<SealPublicKey>().unwrap(), public);
    assert!("zz".parse::<SealPublicKey>().is_err());
}

#[test]
fn debug_does_not_leak_the_secret() {
    let key = SealKey::generate(&mut rng());
    let d = format!("{key:?}");
    assert!(d.starts_with("SealKey(public: "));
    assert!(!d.contains(&hex::encode(key.0.to_bytes())));
}
