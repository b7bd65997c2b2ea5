//! SHA-256 digests and content-addressed ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest. Shown and parsed as 64 lower-case hex characters.
///
/// In human-readable formats (JSON, TOML) it serialises as that hex string; in the binary wire codec
/// as 32 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// SHA-256 of everything `reader` yields, read in 64 KiB chunks (large files need not fit in
    /// memory).
    pub fn of_reader(reader: impl std::io::Read) -> std::io::Result<Self> {
        let mut h = Hasher::default();
        h.read_from(reader)?;
        Ok(h.finish())
    }
}

/// An incremental SHA-256: feed bytes as they arrive, then [`Hasher::finish`].
#[derive(Debug, Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Adds everything `reader` yields (64 KiB at a time); returns how many bytes that was.
    pub fn read_from(&mut self, mut reader: impl std::io::Read) -> std::io::Result<u64> {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            self.0.update(&buf[..n]);
            total += n as u64;
        }
    }

    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

impl Digest {
    /// The content id of `value`: SHA-256 over a domain tag, a zero byte, and the value's canonical
    /// encoding (the wire codec). The domain tag keeps ids of different object kinds apart even if
    /// their encodings coincide.
    pub fn content_id<T: Serialize + ?Sized>(domain: &str, value: &T) -> Self {
        let mut h = Sha256::new();
        h.update(domain.as_bytes());
        h.update([0u8]);
        h.update(crate::wire::codec::canonical_bytes(value));
        Self(h.finalize().into())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, for display only (btd accepts full ids everywhere).
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

/// A string that is not a 64-character hex SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a SHA-256 digest as 64 hex characters, got {got:?}")]
pub struct DigestParseError {
    /// The rejected input (truncated to 80 characters).
    pub got: String,
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::hex32::parse_hex32(s, "a SHA-256 digest")
            .map(Self)
            .map_err(|_| DigestParseError {
                got: s.chars().take(80).collect(),
            })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::hex32::serialize_hex32(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::hex32::deserialize_hex32(d, "a SHA-256 digest").map(Self)
    }
}

impl schemars::JsonSchema for Digest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sha256Digest".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        crate::hex32::hex32_schema("SHA-256 digest, 64 lower-case hex characters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        assert_eq!(
            Digest::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Streaming gives the same digest, also across chunk boundaries.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(Digest::of_reader(&big[..]).unwrap(), Digest::of(&big));
    }

    #[test]
    fn parse_round_trip_and_rejects() {
        let d = Digest::of(b"x");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert_eq!(d.to_hex().to_uppercase().parse::<Digest>().unwrap(), d);
        assert!("abc".parse::<Digest>().is_err());
        assert!("zz".repeat(32).parse::<Digest>().is_err());
    }

    #[test]
    fn json_is_hex_and_content_ids_are_domain_separated() {
        let d = Digest::of(b"x");
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{}\"", d.to_hex()));
        assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), d);
        assert_ne!(
            Digest::content_id("a", &1u32),
            Digest::content_id("b", &1u32)
        );
        assert_eq!(
            Digest::content_id("a", &1u32),
            Digest::content_id("a", &1u32)
        );
    }
}
