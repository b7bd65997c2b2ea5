//! The one place btd touches bincode.
//!
//! Every message on the mesh and every canonical encoding used for content ids and signatures goes
//! through [`encode`] / [`decode`] / [`canonical_bytes`]. bincode is not self-describing, so the
//! encoding of a type is part of the protocol version: changing a field means a new protocol name
//! (see `wire::protocols`). Types carried here must not use serde attributes that need a
//! self-describing format (`untagged`, internally tagged enums, `flatten`, `skip_serializing_if`).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Hard cap on one encoded message (1 MiB). Larger payloads (datasets, checkpoints) travel as
/// chunked artifacts, never as one message. Decoding also refuses to allocate beyond this, so a
/// hostile length prefix cannot make a node reserve gigabytes.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_MESSAGE_BYTES>,
>;

const fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Size of the offending message (or a lower bound for it).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid encoding of the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A valid message followed by extra bytes.
    #[error("{0} unexpected trailing bytes after the message")]
    TrailingBytes(usize),
    /// The value could not be encoded (for example a map with a non-encodable key).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes `value` for the wire, refusing anything over [`MAX_MESSAGE_BYTES`].
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = bincode::serde::encode_to_vec(value, config()).map_err(|e| match e {
        bincode::error::EncodeError::UnexpectedEnd => CodecError::TooLarge {
            size: MAX_MESSAGE_BYTES + 1,
            max: MAX_MESSAGE_BYTES,
        },
        other => CodecError::Encode(other.to_string()),
    })?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(bytes)
}

/// Decodes exactly one `T` from `bytes`. Any byte string yields a value or an error, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// The canonical encoding of `value`, used for content ids and signatures.
///
/// Deterministic for btd's types (maps are `BTreeMap`s, floats are encoded by their bits). It has no
/// size limit: it is computed locally over values that are already bounded by their validators.
pub fn canonical_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let cfg = bincode::config::standard();
    // Encoding into a Vec only fails for types serde cannot express in bincode (e.g. `deserialize_any`
    // style types); none of btd's types are such, so an empty encoding would only ever hide a bug in a
    // test, never at run time. We still avoid a panic.
    let out = bincode::serde::encode_to_vec(value, cfg);
    debug_assert!(out.is_ok(), "type is not bincode-encodable: {out:?}");
    out.unwrap_or_default()
}
