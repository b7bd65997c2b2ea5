//! Every message the mesh carries, the versioned protocol names, and the codec.

pub mod codec;

pub use codec::{decode, encode, CodecError, MAX_MESSAGE_BYTES};
