//! `Signed<T>`: an ed25519 envelope whose payload can only be read through verification.
//!
//! The payload is kept as its canonical wire encoding and the signature covers
//! `b"btd-signed-v1\0" || T::DOMAIN || 0 || payload`. The per-type domain means a signature made
//! over one kind of message can never be accepted as another kind, even when both encode to the
//! same bytes.

use std::fmt;
use std::marker::PhantomData;

use libp2p_identity::{Keypair, PeerId, PublicKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wire::codec::{self, CodecError};

#[cfg(test)]
mod tests;

/// Prefix of every signed message, so btd signatures never collide with other uses of the key
/// (libp2p's own handshakes sign with the same identity key).
const SIGNING_PREFIX: &[u8] = b"btd-signed-v1\0";

/// Largest accepted encoded signer key. An ed25519 key in libp2p's protobuf encoding is 36 bytes;
/// the cap only stops a hostile envelope from making a node parse large blobs as keys.
pub const MAX_SIGNER_BYTES: usize = 128;

/// Largest accepted signature. An ed25519 signature is 64 bytes; same reason as
/// [`MAX_SIGNER_BYTES`].
pub const MAX_SIGNATURE_BYTES: usize = 128;

/// The domain a signable message kind signs under.
///
/// Every type carried in a [`Signed`] names its own domain, e.g. `"btd/approval-receipt"`. Domains
/// must be unique per message kind, non-empty, and contain no NUL byte (checked at compile time when
/// the type is used with [`Signed`]).
pub trait SignedDomain {
    /// The domain string.
    const DOMAIN: &'static str;
}

/// Why an envelope could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    /// The signature does not match the message and the claimed signer.
    #[error(
        "the signature does not verify: the message was altered, signed by another key, or signed \
         as a different kind of message"
    )]
    BadSignature,
    /// The signature is valid but made by someone other than the required signer. (Boxed: peer
    /// ids are large and this keeps every `Result` carrying the error small.)
    #[error("the message is signed by {got}, but only {expected} may sign it")]
    WrongSigner {
        /// The peer that had to sign.
        expected: Box<PeerId>,
        /// The peer that actually signed.
        got: Box<PeerId>,
    },
    /// The signer's public key is unreadable or too large.
    #[error("the signer's public key is not a valid libp2p public key: {0}")]
    BadKey(String),
    /// The signature verified but the payload is not a valid encoding of the expected type.
    #[error("the signed payload does not decode as the expected message: {0}")]
    Decode(CodecError),
    /// The value could not be encoded for signing.
    #[error("cannot encode the value to sign: {0}")]
    Encode(CodecError),
    /// The key refused to sign.
    #[error("the identity key could not sign: {0}")]
    Sign(String),
}

/// A value of type `T` signed by a libp2p identity key.
///
/// Fields are private: the only way to get the `T` back is [`Signed::verify`] or
/// [`Signed::verify_from`].
pub struct Signed<T> {
    payload: Vec<u8>,
    signer: Vec<u8>,
    signature: Vec<u8>,
    _t: PhantomData<fn() -> T>,
}

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified<T> {
    /// The decoded value.
    pub value: T,
    /// The peer whose key made the signature.
    pub signer: PeerId,
    /// That peer's public key.
    pub public_key: PublicKey,
}

/// Compile-time check that a domain is non-empty and NUL-free, so the signed message layout is
/// unambiguous.
const fn domain_is_valid(domain: &str) -> bool {
    let bytes = domain.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0 {
            return false;
        }
        i += 1;
    }
    true
}

fn signing_message<T: SignedDomain>(payload: &[u8]) -> Vec<u8> {
    const {
        assert!(
            domain_is_valid(T::DOMAIN),
            "SignedDomain::DOMAIN must be non-empty and NUL-free"
        )
    };
    let mut msg = Vec::with_capacity(SIGNING_PREFIX.len() + T::DOMAIN.len() + 1 + payload.len());
    msg.extend_from_slice(SIGNING_PREFIX);
    msg.extend_from_slice(T::DOMAIN.as_bytes());
    msg.push(0);
    msg.extend_from_slice(payload);
    msg
}

impl<T: SignedDomain + Serialize + DeserializeOwned> Signed<T> {
    /// Signs `value` with `keypair`.
    pub fn sign(keypair: &Keypair, value: &T) -> Result<Self, SignedError> {
        let payload = codec::encode(value).map_err(SignedError::Encode)?;
        let signature = keypair
            .sign(&signing_message::<T>(&payload))
            .map_err(|e| SignedError::Sign(e.to_string()))?;
        Ok(Self {
            payload,
            signer: keypair.public().encode_protobuf(),
            signature,
            _t: PhantomData,
        })
    }

    /// Verifies the signature and decodes the payload; returns the value and the signer.
    pub fn verify(&self) -> Result<Verified<T>, SignedError> {
        if self.signature.len() > MAX_SIGNATURE_BYTES {
            return Err(SignedError::BadSignature);
        }
        let public_key = self.public_key()?;
        if !public_key.verify(&signing_message::<T>(&self.payload), &self.signature) {
            return Err(SignedError::BadSignature);
        }
        let value = codec::decode(&self.payload).map_err(SignedError::Decode)?;
        Ok(Verified {
            value,
            signer: public_key.to_peer_id(),
            public_key,
        })
    }

    /// Decodes the payload without checking the signature: only for an envelope whose signature
    /// was checked before it was stored (the owner's own log, read back from its disk).
    pub fn payload_unverified(&self) -> Result<T, SignedError> {
        codec::decode(&self.payload).map_err(SignedError::Decode)
    }

    /// Verifies the signature, requires it to come from `expected`, and decodes the payload.
    pub fn verify_from(&self, expected: &PeerId) -> Result<T, SignedError> {
        let verified = self.verify()?;
        if verified.signer != *expected {
            return Err(SignedError::WrongSigner {
                expected: Box::new(*expected),
                got: Box::new(verified.signer),
            });
        }
        Ok(verified.value)
    }
}

impl<T> Signed<T> {
    /// The peer the envelope claims as signer, without verifying anything. For routing and logging
    /// only; never trust it.
    pub fn signer_peer_id(&self) -> Result<PeerId, SignedError> {
        Ok(self.public_key()?.to_peer_id())
    }

    fn public_key(&self) -> Result<PublicKey, SignedError> {
        if self.signer.len() > MAX_SIGNER_BYTES {
            return Err(SignedError::BadKey(format!(
                "{} bytes, over the {MAX_SIGNER_BYTES}-byte limit",
                self.signer.len()
            )));
        }
        PublicKey::try_decode_protobuf(&self.signer).map_err(|e| SignedError::BadKey(e.to_string()))
    }
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            payload: self.payload.clone(),
            signer: self.signer.clone(),
            signature: self.signature.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.payload == other.payload
            && self.signer == other.signer
            && self.signature == other.signature
    }
}

impl<T> Eq for Signed<T> {}

impl<T> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let signer = self
            .signer_peer_id()
            .map_or_else(|_| "<bad key>".to_owned(), |p| p.to_base58());
        f.debug_struct("Signed")
            .field("type", &std::any::type_name::<T>())
            .field("claimed_signer", &signer)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// The serialised form: raw bytes in binary formats, hex strings in human-readable ones.
#[derive(Serialize, schemars::JsonSchema)]
struct ReprRef<'a> {
    /// Canonical encoding of the signed value.
    #[serde(with = "bytes_or_hex")]
    #[schemars(with = "String")]
    payload: &'a [u8],
    /// The signer's public key, libp2p protobuf encoding.
    #[serde(with = "bytes_or_hex")]
    #[schemars(with = "String")]
    signer: &'a [u8],
    /// The signature.
    #[serde(with = "bytes_or_hex")]
    #[schemars(with = "String")]
    signature: &'a [u8],
}

/// The owned counterpart of [`ReprRef`], for deserialising.
#[derive(Deserialize)]
struct Repr {
    #[serde(with = "bytes_or_hex")]
    payload: Vec<u8>,
    #[serde(with = "bytes_or_hex")]
    signer: Vec<u8>,
    #[serde(with = "bytes_or_hex")]
    signature: Vec<u8>,
}

mod bytes_or_hex {
    use std::fmt;

    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<B: AsRef<[u8]>, S: Serializer>(
        bytes: &B,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(bytes.as_ref()))
        } else {
            s.serialize_bytes(bytes.as_ref())
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            hex::decode(s).map_err(serde::de::Error::custom)
        } else {
            d.deserialize_byte_buf(BytesVisitor)
        }
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // Formats without a native byte-string type hand bytes over as a sequence.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

impl<T> Serialize for Signed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ReprRef {
            payload: &self.payload,
            signer: &self.signer,
            signature: &self.signature,
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Signed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = Repr::deserialize(d)?;
        Ok(Self {
            payload: r.payload,
            signer: r.signer,
            signature: r.signature,
            _t: PhantomData,
        })
    }
}

impl<T> schemars::JsonSchema for Signed<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Signed".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        ReprRef::json_schema(generator)
    }
}
