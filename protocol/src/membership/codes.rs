//! The values of the handshake: device codes, user codes, credentials and member ids.

use std::fmt;
use std::str::FromStr;

use libp2p_identity::PeerId;
use rand::{CryptoRng, Rng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

use super::USER_CODE_ALPHABET;
pub use crate::hex32::HexCodeParseError;
use crate::hex32::{deserialize_hex32, hex32_schema, parse_hex32, serialize_hex32};
use crate::Digest;

/// The worker's handle on one join request: 32 random bytes, shown as 64 hex characters.
///
/// Bound to the peer that requested it; serialises like [`Digest`] (hex in JSON, 32 bytes on the
/// wire).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceCode(pub [u8; 32]);

impl DeviceCode {
    /// A fresh random device code.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Self(b)
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for DeviceCode {
    type Err = HexCodeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s, "a device code").map(Self)
    }
}

impl fmt::Display for DeviceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for DeviceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceCode({})", hex::encode(&self.0[..6]))
    }
}

impl Serialize for DeviceCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex32(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for DeviceCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_hex32(d, "a device code").map(Self)
    }
}

impl schemars::JsonSchema for DeviceCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeviceCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        hex32_schema("device code: 32 random bytes as 64 lower-case hex characters")
    }
}

/// Length of a user code, without the hyphen.
const USER_CODE_LEN: usize = 8;

/// The short code the owner types to approve a join request: 8 characters from
/// [`USER_CODE_ALPHABET`], shown as `XXXX-XXXX`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserCode([u8; USER_CODE_LEN]);

/// Why a string is not a user code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserCodeError {
    /// Not 8 characters (after trimming and dropping the middle hyphen).
    #[error(
        "a user code has 8 characters, shown as XXXX-XXXX (the hyphen is optional); got {got} \
         characters"
    )]
    WrongLength {
        /// How many characters were given.
        got: usize,
    },
    /// A character outside the alphabet.
    #[error(
        "{ch:?} cannot appear in a user code: user codes use only the characters \
         ABCDEFGHJKMNPQRSTUVWXYZ23456789 (no 0, 1, I, L or O), with an optional hyphen in the middle"
    )]
    BadCharacter {
        /// The offending character.
        ch: char,
    },
}

impl UserCode {
    /// A fresh random user code; each character is uniform over [`USER_CODE_ALPHABET`].
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut out = [0u8; USER_CODE_LEN];
        for c in &mut out {
            let i = rng.gen_range(0..USER_CODE_ALPHABET.len());
            *c = USER_CODE_ALPHABET.get(i).copied().unwrap_or(b'A');
        }
        Self(out)
    }

    /// Parses what a person typed: surrounding whitespace is trimmed, letters are upper-cased, and a
    /// hyphen in the middle is optional (`"abcd-efgh "` and `"ABCDEFGH"` are the same code).
    pub fn parse(input: &str) -> Result<Self, UserCodeError> {
        let mut chars: Vec<char> = input
            .trim()
            .chars()
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if chars.len() == USER_CODE_LEN + 1 && chars.get(USER_CODE_LEN / 2) == Some(&'-') {
            chars.remove(USER_CODE_LEN / 2);
        }
        if chars.len() != USER_CODE_LEN {
            return Err(UserCodeError::WrongLength { got: chars.len() });
        }
        let mut out = [0u8; USER_CODE_LEN];
        for (slot, ch) in out.iter_mut().zip(chars) {
            match u8::try_from(ch) {
                Ok(b) if USER_CODE_ALPHABET.contains(&b) => *slot = b,
                _ => return Err(UserCodeError::BadCharacter { ch }),
            }
        }
        Ok(Self(out))
    }
}

impl FromStr for UserCode {
    type Err = UserCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for UserCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = self.0.split_at(USER_CODE_LEN / 2);
        // Only alphabet bytes are ever stored, so both halves are ASCII.
        write!(
            f,
            "{}-{}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        )
    }
}

impl fmt::Debug for UserCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserCode({self})")
    }
}

impl Serialize for UserCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UserCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for UserCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UserCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}$",
            "description": "user code the owner types to approve a join request, XXXX-XXXX"
        })
    }
}

/// A member's secret: 32 random bytes. The owner keeps only its SHA-256 ([`Credential::hash`]).
///
/// `Debug` never prints it, there is deliberately no `Display` (use [`Credential::to_hex`] where the
/// secret really must be written out), and it is zeroised on drop.
#[derive(Clone)]
pub struct Credential([u8; 32]);

impl Credential {
    /// A fresh random credential.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Self(b)
    }

    /// A credential from its raw bytes (e.g. read back from the worker's credential file).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw secret bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The secret as 64 lower-case hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// SHA-256 of the secret: what the owner stores and looks credentials up by.
    pub fn hash(&self) -> Digest {
        Digest::of(&self.0)
    }
}

impl Drop for Credential {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PartialEq for Credential {
    /// Compares without an early exit, so timing does not reveal how many leading bytes match.
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for Credential {}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl FromStr for Credential {
    type Err = HexCodeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s, "a credential").map(Self)
    }
}

impl Serialize for Credential {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex32(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Credential {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_hex32(d, "a credential").map(Self)
    }
}

impl schemars::JsonSchema for Credential {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Credential".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        hex32_schema("member credential (secret): 32 random bytes as 64 lower-case hex characters")
    }
}

/// A member's identity in the KB: its libp2p peer id in base58. Never a self-declared name.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct MemberId(String);

/// A string that is not a libp2p peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{got:?} is not a member id: member ids are libp2p peer ids in base58 (e.g. 12D3KooW...)")]
pub struct MemberIdError {
    /// The rejected input (truncated to 80 characters).
    pub got: String,
}

impl MemberId {
    /// The member id of `peer`.
    pub fn from_peer(peer: &PeerId) -> Self {
        Self(peer.to_base58())
    }

    /// The base58 peer id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The peer id this member id names.
    pub fn peer_id(&self) -> Result<PeerId, MemberIdError> {
        self.0.parse().map_err(|_| MemberIdError {
            got: self.0.chars().take(80).collect(),
        })
    }
}

impl From<PeerId> for MemberId {
    fn from(peer: PeerId) -> Self {
        Self::from_peer(&peer)
    }
}

impl FromStr for MemberId {
    type Err = MemberIdError;

    /// Accepts only valid peer ids, normalised to their canonical base58 form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let peer: PeerId = s.trim().parse().map_err(|_| MemberIdError {
            got: s.chars().take(80).collect(),
        })?;
        Ok(Self::from_peer(&peer))
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
