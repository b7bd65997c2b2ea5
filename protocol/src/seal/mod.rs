//! Sealing a message to an x25519 key: ephemeral ECDH + HKDF-SHA256 + ChaCha20-Poly1305.
//!
//! Used to deliver secrets (membership credentials) across relays: only the holder of the
//! recipient's [`SealKey`] can open a [`Sealed`] message, and the caller's `context` (for example
//! program id and device code) is bound into both the key derivation and the AEAD associated data,
//! so a sealed message cannot be replayed into another context.

use std::fmt;
use std::str::FromStr;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;
use x25519_dalek::{EphemeralSecret, PublicKey, SharedSecret, StaticSecret};
use zeroize::Zeroizing;

#[cfg(test)]
mod tests;

/// Largest plaintext [`seal`] accepts (64 KiB). Sealed messages carry small secrets such as
/// credentials; anything bigger travels as an artifact. The cap also bounds the work and memory an
/// unsolicited sealed message can cost the node that opens it.
pub const MAX_SEALED_PLAINTEXT: usize = 64 * 1024;

/// Poly1305 tag length: a ciphertext is the plaintext plus this many bytes.
const TAG_LEN: usize = 16;

/// HKDF info prefix for message keys; the caller's context follows it.
const SEAL_INFO: &[u8] = b"btd-seal-v1";

/// HKDF info for deriving a daemon's sealing key from its identity key.
const SEAL_KEY_INFO: &[u8] = b"btd-seal-key-v1";

/// Why a message could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The other side's x25519 key is a low-order point, so the shared secret would be public.
    #[error(
        "the x25519 public key is a low-order point, which would make the shared secret public; \
         the key is invalid or malicious, so nothing was sealed or opened"
    )]
    LowOrderKey,
    /// The message is over [`MAX_SEALED_PLAINTEXT`].
    #[error("the sealed message is {size} bytes, over the {max}-byte limit for sealed secrets")]
    TooLarge {
        /// Size of the offending plaintext or ciphertext.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Authentication failed: wrong key, wrong context, or the message was altered.
    #[error(
        "cannot open the sealed message: it was sealed to another key or for another context, or \
         it was altered on the way"
    )]
    OpenFailed,
    /// The identity key is not ed25519.
    #[error("the identity key is not an ed25519 key; btd identities must be ed25519")]
    NotEd25519,
}

/// A secret x25519 key that sealed messages are opened with. Zeroised on drop.
pub struct SealKey(StaticSecret);

/// The public half of a [`SealKey`], which senders seal to.
///
/// Shown and parsed as 64 hex characters; serialises as hex in human-readable formats and as 32
/// raw bytes in the wire codec.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SealPublicKey(pub [u8; 32]);

/// A message sealed to one [`SealPublicKey`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Sealed {
    /// The sender's one-time x25519 public key.
    ephemeral: [u8; 32],
    /// The AEAD nonce.
    nonce: [u8; 12],
    /// ChaCha20-Poly1305 ciphertext with its tag.
    ciphertext: Vec<u8>,
}

impl SealKey {
    /// A fresh random key.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self(StaticSecret::random_from_rng(rng))
    }

    /// The sealing key belonging to an ed25519 identity: HKDF-SHA256 over the ed25519 secret bytes
    /// with info `btd-seal-key-v1`. Deterministic, so a daemon's sealing key survives restarts
    /// without a second key file.
    pub fn from_identity(keypair: &libp2p_identity::Keypair) -> Result<Self, SealError> {
        let ed = keypair
            .clone()
            .try_into_ed25519()
            .map_err(|_| SealError::NotEd25519)?;
        let secret = ed.secret();
        let mut okm = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, secret.as_ref())
            .expand(SEAL_KEY_INFO, okm.as_mut())
            .map_err(|_| SealError::NotEd25519)?;
        Ok(Self(StaticSecret::from(*okm)))
    }

    /// The public key senders seal to.
    pub fn public(&self) -> SealPublicKey {
        SealPublicKey(PublicKey::from(&self.0).to_bytes())
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealKey(public: {})", self.public().short())
    }
}

/// Derives the AEAD key for one message, refusing non-contributory (low-order) exchanges.
fn message_key(
    shared: &SharedSecret,
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
    context: &[u8],
) -> Result<Zeroizing<[u8; 32]>, SealError> {
    if !shared.was_contributory() {
        return Err(SealError::LowOrderKey);
    }
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes())
        .expand_multi_info(&[SEAL_INFO, context], okm.as_mut())
        .map_err(|_| SealError::OpenFailed)?;
    Ok(okm)
}

/// Seals `plaintext` to `recipient`, bound to `context` (which the opener must pass again).
pub fn seal(
    recipient: &SealPublicKey,
    context: &[u8],
    plaintext: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Sealed, SealError> {
    if plaintext.len() > MAX_SEALED_PLAINTEXT {
        return Err(SealError::TooLarge {
            size: plaintext.len(),
            max: MAX_SEALED_PLAINTEXT,
        });
    }
    let secret = EphemeralSecret::random_from_rng(&mut *rng);
    let ephemeral = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(recipient.0));
    let key = message_key(&shared, &ephemeral, &recipient.0, context)?;
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    let ciphertext = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: context,
            },
        )
        .map_err(|_| SealError::TooLarge {
            size: plaintext.len(),
            max: MAX_SEALED_PLAINTEXT,
        })?;
    Ok(Sealed {
        ephemeral,
        nonce,
        ciphertext,
    })
}

/// Opens a message sealed to `key` under `context`.
pub fn open(key: &SealKey, context: &[u8], sealed: &Sealed) -> Result<Vec<u8>, SealError> {
    let max = MAX_SEALED_PLAINTEXT + TAG_LEN;
    if sealed.ciphertext.len() > max {
        return Err(SealError::TooLarge {
            size: sealed.ciphertext.len(),
            max,
        });
    }
    let shared = key.0.diffie_hellman(&PublicKey::from(sealed.ephemeral));
    let aead_key = message_key(&shared, &sealed.ephemeral, &key.public().0, context)?;
    ChaCha20Poly1305::new(Key::from_slice(aead_key.as_ref()))
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: context,
            },
        )
        .map_err(|_| SealError::OpenFailed)
}

/// A string that is not a 64-character hex x25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an x25519 sealing key as 64 hex characters, got {got:?}")]
pub struct SealPublicKeyParseError {
    /// The rejected input (truncated to 80 characters).
    pub got: String,
}

impl SealPublicKey {
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, for display only.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl FromStr for SealPublicKey {
    type Err = SealPublicKeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::hex32::parse_hex32(s, "an x25519 public key")
            .map(Self)
            .map_err(|_| SealPublicKeyParseError {
                got: s.chars().take(80).collect(),
            })
    }
}

impl fmt::Display for SealPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SealPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealPublicKey({})", self.short())
    }
}

impl Serialize for SealPublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::hex32::serialize_hex32(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for SealPublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::hex32::deserialize_hex32(d, "an x25519 public key").map(Self)
    }
}

impl schemars::JsonSchema for SealPublicKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SealPublicKey".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        crate::hex32::hex32_schema(
            "x25519 public key for sealed messages, 64 lower-case hex characters",
        )
    }
}
