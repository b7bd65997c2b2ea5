//! Membership: the device-code handshake (RFC 8628 semantics carried over the mesh), credentials
//! and revocation (semantics §3).
//!
//! This is the owner's side, as a pure state machine: every call takes `now` and, where it needs
//! randomness, an RNG. A worker asks for a code ([`Registry::request`]), the owner approves or
//! denies it by its user code ([`Registry::approve`], [`Registry::deny`]), and the worker polls
//! ([`Registry::poll`]) until it gets its [`Grant`] exactly once. Members then present their
//! [`Credential`], which the owner checks with [`Registry::verify`]; the owner stores only its
//! SHA-256.

use serde::{Deserialize, Serialize};

mod codes;
mod registry;

#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use codes::{
    Credential, DeviceCode, HexCodeParseError, MemberId, MemberIdError, UserCode, UserCodeError,
};
pub use registry::{
    ApprovedInfo, AuthError, DecisionError, DeviceAuthorization, Grant, MemberRecord,
    PendingRequest, PollError, Registry, RequestError, RestoreError, RevokeError, UndecidedCode,
    EXPIRED_GRACE_SECS, MAX_CLOSED_TOTAL, MAX_PENDING_PER_PEER, MAX_PENDING_TOTAL,
};

/// How long a device code lives: 15 minutes, the usual RFC 8628 value, long enough for the owner
/// to notice the request and type the code.
pub const DEVICE_CODE_EXPIRES_IN_SECS: u64 = 900;

/// The initial minimum gap between polls, as RFC 8628 suggests.
pub const POLL_INTERVAL_SECS: u64 = 5;

/// How much the poll interval grows on each `slow_down` (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP_SECS: u64 = 5;

/// Longest poll interval a worker accepts from an owner (initial or after `slow_down`). The
/// numbers come from a remote peer: larger ones are cut to this, so a hostile owner can neither
/// overflow the worker's timers nor park its poll forever (the pushed grant still arrives).
pub const MAX_POLL_INTERVAL_SECS: u64 = 300;

/// Longest code lifetime a worker accepts from an owner; an authorization that claims more (or
/// zero) is refused as broken, so a join never waits on a remote number without bound.
pub const MAX_DEVICE_CODE_EXPIRES_IN_SECS: u64 = 24 * 3600;

/// The poll interval a worker uses for an owner's `interval` (initial or `slow_down`): at least one
/// second, at most [`MAX_POLL_INTERVAL_SECS`].
pub fn poll_interval_secs(remote: u64) -> u64 {
    remote.clamp(1, MAX_POLL_INTERVAL_SECS)
}

/// Checks a device authorization received from an owner: the code's lifetime must be 1 to
/// [`MAX_DEVICE_CODE_EXPIRES_IN_SECS`] seconds. Returns the problem in words.
pub fn check_authorization(auth: &DeviceAuthorization) -> Result<(), String> {
    if auth.expires_in == 0 || auth.expires_in > MAX_DEVICE_CODE_EXPIRES_IN_SECS {
        return Err(format!(
            "the owner's join code claims to live {} s (a valid code lives 1 to {MAX_DEVICE_CODE_EXPIRES_IN_SECS} s); the owner is broken or hostile",
            auth.expires_in
        ));
    }
    Ok(())
}

/// The characters of a user code: upper-case letters and digits without 0, 1, I, L and O, which
/// people confuse when reading a code off one screen and typing it into another.
pub const USER_CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// Whether joining needs the owner's approval.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MembershipMode {
    /// Every request is approved at once.
    Open,
    /// The owner approves or denies each request by its user code.
    #[default]
    Approval,
}
