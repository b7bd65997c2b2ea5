//! A bare libp2p peer for the attacker's client (`crate::testkit::hostile`, `testkit` feature):
//! ANY identity, btd's four request-response protocols in raw frames. Its swarm lives here so that
//! libp2p's events are matched only inside `net/`.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use anyhow::{anyhow, Result};
use btd_protocol::program::ProgramId;
use btd_protocol::seal::SealKey;
use btd_protocol::wire::{self, protocols, MembershipRequest};
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, yamux, Multiaddr, PeerId, StreamProtocol, SwarmBuilder};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::behaviour::BoxError;
use super::TransportKind;

/// One of btd's request-response protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// `/btd/membership/1`.
    Membership,
    /// `/btd/kb/1`.
    Kb,
    /// `/btd/approval/1`.
    Approval,
    /// `/btd/blob/1`.
    Blob,
}

impl Proto {
    /// All four.
    pub const ALL: [Proto; 4] = [Proto::Membership, Proto::Kb, Proto::Approval, Proto::Blob];
}

/// A frame as btd's codec writes it: a u32 big-endian length, then the bytes.
pub fn frame(bytes: &[u8]) -> Vec<u8> {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// Writes requests verbatim (the caller frames them, or not) and reads a framed reply, unchecked.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::Error::other("a raw peer serves nothing"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        super::codec::read_bytes(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(io::Error::other("a raw peer serves nothing"))
    }
}

type Rr = request_response::Behaviour<RawCodec>;

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct RawBehaviour {
    membership: Rr,
    kb: Rr,
    approval: Rr,
    blob: Rr,
}

fn rr(name: &'static str, timeout: Duration) -> Rr {
    request_response::Behaviour::with_codec(
        RawCodec,
        [(StreamProtocol::new(name), ProtocolSupport::Outbound)],
        request_response::Config::default().with_request_timeout(timeout),
    )
}

impl RawBehaviour {
    fn of(&mut self, p: Proto) -> &mut Rr {
        match p {
            Proto::Membership => &mut self.membership,
            Proto::Kb => &mut self.kb,
            Proto::Approval => &mut self.approval,
            Proto::Blob => &mut self.blob,
        }
    }
}

enum Cmd {
    Send {
        peer: PeerId,
        addr: Option<Multiaddr>,
        proto: Proto,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
}

/// A bare peer with any identity that sends raw btd requests (see the module docs). It stops when
/// dropped.
#[derive(Debug, Clone)]
pub struct RawPeer {
    peer_id: PeerId,
    tx: mpsc::Sender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl RawPeer {
    /// Starts a raw peer with identity `key` on `transport` (the memory transport of [`super`]'s
    /// nodes, or netsim's). Requests time out after `timeout`.
    pub fn spawn(key: Keypair, transport: &TransportKind, timeout: Duration) -> Result<RawPeer> {
        let peer_id = key.public().to_peer_id();
        let behaviour = |_: &Keypair| -> Result<RawBehaviour, BoxError> {
            Ok(RawBehaviour {
                membership: rr(protocols::MEMBERSHIP, timeout),
                kb: rr(protocols::KB, timeout),
                approval: rr(protocols::APPROVAL, timeout),
                blob: rr(protocols::BLOB, timeout),
            })
        };
        let idle =
            |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
        let builder = SwarmBuilder::with_existing_identity(key).with_tokio();
        let mut swarm = match transport {
            TransportKind::Custom(custom) => builder
                .with_other_transport(|key| (custom.0)(key))
                .map_err(|e| anyhow!("custom transport: {e}"))?
                .with_behaviour(behaviour)
                .map_err(|e| anyhow!("behaviour: {e}"))?
                .with_swarm_config(idle)
                .build(),
            _ => builder
                .with_other_transport(|key| -> Result<_, BoxError> {
                    Ok(MemoryTransport::default()
                        .upgrade(Version::V1)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default()))
                })
                .map_err(|e| anyhow!("memory transport: {e}"))?
                .with_behaviour(behaviour)
                .map_err(|e| anyhow!("behaviour: {e}"))?
                .with_swarm_config(idle)
                .build(),
        };
        let (tx, mut rx) = mpsc::channel::<Cmd>(64);
        tokio::spawn(async move {
            let mut pending: HashMap<(Proto, OutboundRequestId), oneshot::Sender<_>> =
                HashMap::new();
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(Cmd::Send { peer, addr, proto, bytes, reply }) => {
                            if let Some(a) = addr {
                                swarm.add_peer_address(peer, a);
                            }
                            let id = swarm.behaviour_mut().of(proto).send_request(&peer, bytes);
                            pending.insert((proto, id), reply);
                        }
                        None => break,
                    },
                    ev = swarm.select_next_some() => {
                        let (proto, ev) = match ev {
                            SwarmEvent::Behaviour(RawBehaviourEvent::Membership(e)) => (Proto::Membership, e),
                            SwarmEvent::Behaviour(RawBehaviourEvent::Kb(e)) => (Proto::Kb, e),
                            SwarmEvent::Behaviour(RawBehaviourEvent::Approval(e)) => (Proto::Approval, e),
                            SwarmEvent::Behaviour(RawBehaviourEvent::Blob(e)) => (Proto::Blob, e),
                            _ => continue,
                        };
                        let (id, result) = match ev {
                            request_response::Event::Message {
                                message: request_response::Message::Response { request_id, response },
                                ..
                            } => (request_id, Ok(response)),
                            request_response::Event::OutboundFailure { request_id, error, .. } => {
                                (request_id, Err(error.to_string()))
                            }
                            _ => continue,
                        };
                        if let Some(reply) = pending.remove(&(proto, id)) {
                            let _ = reply.send(result);
                        }
                    }
                }
            }
        });
        Ok(RawPeer { peer_id, tx })
    }

    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Sends `bytes` verbatim on `proto` to `peer` (reached at `addr` if given; frame them with
    /// [`frame`], or not) and returns the reply's bytes, or the transport's failure in words (a node
    /// that refuses a malformed frame resets the stream).
    pub async fn send_frame(
        &self,
        peer: PeerId,
        addr: Option<Multiaddr>,
        proto: Proto,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Send {
                peer,
                addr,
                proto,
                bytes,
                reply,
            })
            .await
            .map_err(|_| "the raw peer stopped".to_string())?;
        rx.await.map_err(|_| "the raw peer stopped".to_string())?
    }

    /// Sends a well-formed `request` (any content) and decodes the reply as `Resp`, unsanitised.
    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: PeerId,
        addr: Option<Multiaddr>,
        proto: Proto,
        request: &Req,
    ) -> Result<Resp, String> {
        let bytes = wire::encode(request).map_err(|e| e.to_string())?;
        let reply = self.send_frame(peer, addr, proto, frame(&bytes)).await?;
        wire::decode(&reply).map_err(|e| e.to_string())
    }

    /// Asks `owner` for a join code for `program`, as this identity.
    pub async fn ask_to_join(
        &self,
        key: &Keypair,
        owner: PeerId,
        addr: Option<Multiaddr>,
        program: ProgramId,
    ) -> Result<wire::MembershipResponse, String> {
        let seal_key = SealKey::from_identity(key)
            .map_err(|e| e.to_string())?
            .public();
        self.request(
            owner,
            addr,
            Proto::Membership,
            &MembershipRequest::Authorize { program, seal_key },
        )
        .await
    }
}
