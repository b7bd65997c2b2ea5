//! The attacker's client, for tests and netsim: a peer that speaks btd's wire protocol with its own
//! code, so it can send anything a modified client could.
//!
//! - [`RawPeer`]: a bare libp2p peer with ANY identity that speaks btd's four request-response
//!   protocols in raw frames: well-formed messages of any content and signer
//!   ([`RawPeer::request`]), or any bytes at all, length prefix included ([`RawPeer::send_frame`]).
//!   Throwaway identities are one [`RawPeer::spawn`] each.
//! - [`Hostile`]: a real testkit node (a member, with credentials and a blob store) plus a
//!   [`RawPeer`]: it can join, submit and serve like a member, publish any bytes on the gossip
//!   topics ([`NodeHandle::raw_gossip`]), sign submissions and announcements with any key, and
//!   forge claims (e.g. on the champion's checkpoint digest).

use anyhow::{anyhow, Result};
use btd_protocol::signed::{Signed, SignedDomain};
use btd_protocol::wire::{self, MAX_MESSAGE_BYTES};
use libp2p::identity::Keypair;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

use super::TestNode;
pub use crate::net::raw::{frame, Proto, RawPeer};
use crate::net::TransportKind;

/// Signs `value` with any key (a forged submission, an announcement from a throwaway owner).
pub fn sign_as<T: SignedDomain + Serialize + DeserializeOwned>(
    key: &Keypair,
    value: &T,
) -> Result<Signed<T>> {
    Signed::sign(key, value).map_err(|e| anyhow!("sign: {e}"))
}

/// A hostile member: a real node (identity on the mesh, credentials, blob store) plus a raw peer
/// of its own identity for anything the node would not send.
#[derive(Debug)]
pub struct Hostile {
    /// The node.
    pub node: TestNode,
    /// Raw frames with the node's identity.
    pub raw: RawPeer,
}

impl Hostile {
    /// Wraps `node`; its raw peer shares its identity and runs on `transport`.
    pub fn new(node: TestNode, transport: &TransportKind) -> Result<Hostile> {
        let raw = RawPeer::spawn(node.key.clone(), transport, Duration::from_secs(10))?;
        Ok(Hostile { node, raw })
    }

    /// Its key (signs its submissions and its programs).
    pub fn key(&self) -> &Keypair {
        &self.node.key
    }

    /// Sends `request` on `proto` to `to` as this member, well-formed, unsanitised reply.
    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        to: &TestNode,
        proto: Proto,
        request: &Req,
    ) -> Result<Resp, String> {
        self.raw
            .request(to.peer_id(), to.dial_addr(), proto, request)
            .await
    }

    /// Publishes `count` validly signed programs of this node's key (a discovery flood); see
    /// [`flood_announcements`].
    pub async fn flood_announcements(
        &self,
        count: usize,
        manifest: impl Fn(usize) -> String,
    ) -> usize {
        flood_announcements(&self.node.handle, &self.node.key, count, manifest).await
    }
}

/// Publishes `count` validly signed programs on the programs topic through `node`, whose identity
/// `key` is (gossip authorship must match the signer), each a distinct manifest `manifest(i)`.
/// Returns how many were published.
pub async fn flood_announcements(
    node: &crate::node::NodeHandle,
    key: &Keypair,
    count: usize,
    manifest: impl Fn(usize) -> String,
) -> usize {
    let mut published = 0;
    for i in 0..count {
        let a = wire::ProgramAnnouncement {
            manifest: manifest(i),
            addresses: Vec::new(),
            published_at: node.now(),
        };
        let Ok(signed) = sign_as(key, &a) else {
            continue;
        };
        let Ok(bytes) = wire::encode(&signed) else {
            continue;
        };
        if node
            .raw_gossip(crate::net::Topic::Programs, bytes)
            .await
            .is_ok()
        {
            published += 1;
        }
    }
    published
}

/// Malformed frames of every kind (for `proto`-agnostic attacks): no frame, half a prefix, a
/// prefix of 4 GiB, one just over the cap, garbage, `valid` truncated, with trailing bytes, and a
/// frame shorter than it says. Each is named.
pub fn malformed_frames(valid: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut lying = u32::MAX.to_be_bytes().to_vec();
    lying.extend_from_slice(b"short");
    let over = u32::try_from(MAX_MESSAGE_BYTES + 1).unwrap_or(u32::MAX);
    let mut over_cap = over.to_be_bytes().to_vec();
    over_cap.extend_from_slice(&[0; 64]);
    let mut short = frame(valid);
    short.truncate(short.len().saturating_sub(3));
    vec![
        ("no frame at all", Vec::new()),
        ("half a length prefix", vec![0, 0]),
        ("a length prefix of 4 GiB", lying),
        ("a length just over the cap", over_cap),
        ("garbage", frame(&[0xfd; 300])),
        ("a truncated request", frame(&valid[..valid.len() / 2])),
        ("trailing bytes", frame(&[valid, &[0u8; 7][..]].concat())),
        ("a frame shorter than it says", short),
    ]
}
