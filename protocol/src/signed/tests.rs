use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Note {
    text: String,
    n: u32,
}

impl SignedDomain for Note {
    const DOMAIN: &'static str = "btd/test-note";
}

/// Encodes exactly like `Other` but signs under a different domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ping(u32);

impl SignedDomain for Ping {
    const DOMAIN: &'static str = "btd/test-ping";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Other(u32);

impl SignedDomain for Other {
    const DOMAIN: &'static str = "btd/test-other";
}

fn key(seed: u8) -> Keypair {
    match Keypair::ed25519_from_bytes([seed; 32]) {
        Ok(k) => k,
        Err(e) => panic!("test key: {e}"),
    }
}

fn note() -> Note {
    Note {
        text: "hello".into(),
        n: 7,
    }
}

#[test]
fn sign_verify_round_trip() {
    let k = key(1);
    let s = Signed::sign(&k, &note()).unwrap();
    let v = s.verify().unwrap();
    assert_eq!(v.value, note());
    assert_eq!(v.signer, k.public().to_peer_id());
    assert_eq!(v.public_key, k.public());
    assert_eq!(s.verify_from(&k.public().to_peer_id()).unwrap(), note());
    assert_eq!(s.signer_peer_id().unwrap(), k.public().to_peer_id());
}

#[test]
fn tampered_payload_fails() {
    let mut s = Signed::sign(&key(1), &note()).unwrap();
    let last = s.payload.len() - 1;
    s.payload[last] ^= 1;
    assert_eq!(s.verify(), Err(SignedError::BadSignature));
}

#[test]
fn tampered_signature_fails() {
    let mut s = Signed::sign(&key(1), &note()).unwrap();
    s.signature[0] ^= 1;
    assert_eq!(s.verify(), Err(SignedError::BadSignature));
    s.signature.truncate(10);
    assert_eq!(s.verify(), Err(SignedError::BadSignature));
    s.signature = vec![0; MAX_SIGNATURE_BYTES + 1];
    assert_eq!(s.verify(), Err(SignedError::BadSignature));
}

#[test]
fn swapped_or_broken_signer_fails() {
    let mut s = Signed::sign(&key(1), &note()).unwrap();
    s.signer = key(2).public().encode_protobuf();
    assert_eq!(s.verify(), Err(SignedError::BadSignature));
    s.signer[5] ^= 0xff;
    assert!(s.verify().is_err());
    s.signer = vec![1, 2, 3];
    assert!(matches!(s.verify(), Err(SignedError::BadKey(_))));
    assert!(matches!(s.signer_peer_id(), Err(SignedError::BadKey(_))));
    s.signer = vec![0; MAX_SIGNER_BYTES + 1];
    assert!(matches!(s.verify(), Err(SignedError::BadKey(_))));
}

#[test]
fn signature_for_one_domain_is_refused_for_another() {
    assert_eq!(
        codec::encode(&Ping(9)).unwrap(),
        codec::encode(&Other(9)).unwrap()
    );
    let ping = Signed::sign(&key(1), &Ping(9)).unwrap();
    let bytes = codec::encode(&ping).unwrap();
    let as_other: Signed<Other> = codec::decode(&bytes).unwrap();
    assert_eq!(as_other.verify(), Err(SignedError::BadSignature));
    let back: Signed<Ping> = codec::decode(&bytes).unwrap();
    assert_eq!(back.verify().unwrap().value, Ping(9));
}

#[test]
fn verify_from_wrong_peer_fails() {
    let s = Signed::sign(&key(1), &note()).unwrap();
    let other = key(2).public().to_peer_id();
    assert_eq!(
        s.verify_from(&other),
        Err(SignedError::WrongSigner {
            expected: Box::new(other),
            got: Box::new(key(1).public().to_peer_id())
        })
    );
}

#[test]
fn survives_wire_codec_and_json() {
    let s = Signed::sign(&key(3), &note()).unwrap();
    let bytes = codec::encode(&s).unwrap();
    let back: Signed<Note> = codec::decode(&bytes).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.verify().unwrap().value, note());

    let json = serde_json::to_string(&s).unwrap();
    let back: Signed<Note> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert_eq!(
        back.clone()
            .verify_from(&key(3).public().to_peer_id())
            .unwrap(),
        note()
    );
}

#[test]
fn payload_that_does_not_decode_is_reported() {
    // A valid signature over bytes that are not a `Note`.
    let s = Signed::sign(&key(1), &Ping(3)).unwrap();
    let forged: Signed<Note> = Signed {
        payload: s.payload.clone(),
        signer: s.signer.clone(),
        signature: key(1).sign(&signing_message::<Note>(&s.payload)).unwrap(),
        _t: PhantomData,
    };
    assert!(matches!(forged.verify(), Err(SignedError::Decode(_))));
}

#[test]
fn debug_does_not_dump_the_payload() {
    let s = Signed::sign(&key(1), &note()).unwrap();
    let d = format!("{s:?}");
    assert!(d.contains("claimed_signer"));
    assert!(!d.contains("hello"));
}
