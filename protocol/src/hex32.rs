//! 32-byte values (digests, keys, codes, credentials) in serde: 64 lower-case hex characters in
//! human-readable formats (JSON, TOML), 32 raw bytes in the binary wire codec.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that is not a 64-character hex code. The input itself is not echoed, because it may be
/// a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {what} as 64 hex characters, got {len} characters that are not that")]
pub struct HexCodeParseError {
    /// What was being parsed.
    pub what: &'static str,
    /// Length of the rejected input.
    pub len: usize,
}

pub(crate) fn parse_hex32(s: &str, what: &'static str) -> Result<[u8; 32], HexCodeParseError> {
    let mut out = [0u8; 32];
    if s.len() != 64 || hex::decode_to_slice(s.to_ascii_lowercase(), &mut out).is_err() {
        return Err(HexCodeParseError { what, len: s.len() });
    }
    Ok(out)
}

pub(crate) fn serialize_hex32<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&hex::encode(bytes))
    } else {
        bytes.serialize(s)
    }
}

pub(crate) fn deserialize_hex32<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
) -> Result<[u8; 32], D::Error> {
    if d.is_human_readable() {
        let s = String::deserialize(d)?;
        parse_hex32(&s, what).map_err(serde::de::Error::custom)
    } else {
        <[u8; 32]>::deserialize(d)
    }
}

pub(crate) fn hex32_schema(description: &str) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": "^[0-9a-f]{64}$",
        "description": description
    })
}
