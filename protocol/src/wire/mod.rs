//! Every message the mesh carries, the versioned protocol names, and the codec.
//!
//! Gossip topics carry signed announcements ([`ProgramAnnouncement`], [`RungAdvert`]); point-to-point
//! exchanges use request-response protocols ([`MembershipRequest`], [`KbRequest`],
//! [`ApprovalRequest`]). All of them are encoded by [`codec`] (bincode, size-capped). bincode is not
//! self-describing, so a change to any message type means a new protocol name in [`protocols`].

mod code;
pub mod codec;
mod messages;
mod sanitize;
mod status;
#[cfg(test)]
mod tests;

pub use code::*;
pub use codec::{decode, encode, CodecError, MAX_MESSAGE_BYTES};
pub use messages::*;
pub use sanitize::*;
pub use status::*;

/// Versioned protocol names and gossip topics.
pub mod protocols {
    /// Device-code membership (request, poll, pushed grant).
    pub const MEMBERSHIP: &str = "/btd/membership/1";
    /// The owner's knowledge base (read, submit, status).
    pub const KB: &str = "/btd/kb/1";
    /// Paid-compute approval requests.
    pub const APPROVAL: &str = "/btd/approval/1";
    /// Content-addressed artifacts (datasets, checkpoints) in bounded chunks.
    pub const BLOB: &str = "/btd/blob/1";
    /// Gossip topic for signed program announcements.
    pub const TOPIC_PROGRAMS: &str = "btd/programs/1";
    /// Gossip topic for signed rung adverts.
    pub const TOPIC_RUNGS: &str = "btd/rungs/1";
}
