//! The composed libp2p behaviour and the swarm built on a transport seam.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use btd_protocol::wire::{
    protocols, ApprovalRequest, ApprovalResponse, BlobRequest, BlobResponse, KbRequest, KbResponse,
    MembershipRequest, MembershipResponse, MAX_MESSAGE_BYTES,
};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, MemoryTransport};
use libp2p::core::upgrade::Version;
use libp2p::core::Transport;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns, noise, ping, relay, tcp,
    yamux, PeerId, StreamProtocol, Swarm, SwarmBuilder,
};

use super::codec::WireCodec;

/// identify's protocol version string: peers with another major version are not btd peers.
pub const IDENTIFY_PROTOCOL: &str = "/btd/1.0.0";
/// Kademlia protocol name: a private DHT, not the public IPFS one.
pub const KAD_PROTOCOL: &str = "/btd/kad/1.0.0";

/// Which transports the swarm runs on. Production and tests run the same behaviour and event loop;
/// only this seam differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportKind {
    /// TCP (+ Noise + Yamux), QUIC, DNS and relay circuits.
    Production,
    /// In-process memory transport (+ Noise + Yamux) and relay circuits, for tests.
    Memory,
    /// A transport the caller builds (already authenticated and multiplexed) plus relay circuits:
    /// netsim's in-memory transport behind its fault layer.
    Custom(CustomTransport),
}

/// Builds an authenticated, multiplexed transport from the node's identity.
type TransportFactory =
    dyn Fn(&Keypair) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError> + Send + Sync;

/// A caller-supplied transport constructor for [`TransportKind::Custom`]. Two values are equal when
/// they share the same constructor.
#[derive(Clone)]
pub struct CustomTransport(pub(crate) Arc<TransportFactory>);

impl CustomTransport {
    /// Wraps a constructor; it is called once per swarm with the node's identity.
    pub fn new(
        build: impl Fn(&Keypair) -> Result<Boxed<(PeerId, StreamMuxerBox)>, BoxError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Self(Arc::new(build))
    }
}

impl std::fmt::Debug for CustomTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomTransport")
    }
}

impl PartialEq for CustomTransport {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CustomTransport {}

/// Tunables of the network stack.
#[derive(Debug, Clone)]
pub struct NetParams {
    /// Offer circuit relay to others.
    pub relay_server: bool,
    /// LAN discovery (production transport only).
    pub mdns: bool,
    /// Gossipsub heartbeat: 1 s in production; tests shorten it so meshes form quickly.
    pub gossip_heartbeat: Duration,
    /// request-response timeout (also enforced on the responder: never hold a request for a human).
    pub request_timeout: Duration,
    /// Idle connections are closed after this (libp2p's 10 s default drops request-only peers).
    pub idle_timeout: Duration,
    /// Ask peers whether we are publicly reachable (AutoNAT).
    pub autonat: bool,
    /// Per-peer request budget: burst size.
    pub rate_burst: f64,
    /// Per-peer request budget: sustained requests per second.
    pub rate_per_sec: f64,
    /// Per-peer artifact budget: burst, in chunks (of up to 512 KiB).
    pub blob_burst: f64,
    /// Per-peer artifact budget: sustained chunks per second.
    pub blob_per_sec: f64,
    /// The member's outbox: its bounds and retry pace (submissions to owners; `crate::node`).
    pub outbox: crate::node::OutboxParams,
    /// The connection bound: above this many connected peers the node closes the least recently
    /// used connections, sparing protected peers (gossip mesh, requests in flight, owners of
    /// joined programs, relays in use, connections younger than 10 s; `net/conns.rs`).
    pub max_peers: usize,
}

impl Default for NetParams {
    fn default() -> Self {
        Self {
            relay_server: false,
            mdns: false,
            gossip_heartbeat: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            autonat: true,
            // A worker submits after each training run and polls during joins: 20 requests/s
            // sustained with bursts of 60 is far above honest use and bounds abuse.
            rate_burst: 60.0,
            rate_per_sec: 20.0,
            // 64 chunks (32 MiB) at once, 32 chunks (16 MiB) per second sustained, per peer: a
            // checkpoint or dataset moves at disk speed while one peer cannot hog the uplink.
            blob_burst: 64.0,
            blob_per_sec: 32.0,
            outbox: crate::node::OutboxParams::default(),
            max_peers: DEFAULT_MAX_PEERS,
        }
    }
}

/// Largest DHT record kept or accepted from a peer: an announcement carries a manifest of up to
/// 64 KiB plus its signature and addresses.
pub const MAX_RECORD_BYTES: usize = 96 * 1024;
/// Most DHT records kept: the discovery table's unpinned programs plus room for own and joined
/// ones (every record is one the table holds; see `node/gossip.rs`).
const MAX_DHT_RECORDS: usize = 2 * btd_protocol::discovery::MAX_UNPINNED_PROGRAMS;

/// The default connection bound ([`NetParams::max_peers`]): room for both gossip meshes
/// (gossipsub keeps 6 to 12 peers per topic), Kademlia's neighbours and the peers a node works with.
pub const DEFAULT_MAX_PEERS: usize = 48;
/// Most established connections in total and per peer: bounds memory and file descriptors. A hard
/// cap that refuses connections; [`NetParams::max_peers`] is the bound kept in practice.
const MAX_CONNECTIONS: u32 = 512;
const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Kademlia's bucket size (its default, K = 20).
pub(crate) const KBUCKET_SIZE: usize = 20;
/// Most concurrent inbound/outbound streams per request-response protocol.
const MAX_STREAMS: usize = 128;

/// The request-response behaviour for one btd protocol.
pub type RrBehaviour<Req, Resp> = request_response::Behaviour<WireCodec<Req, Resp>>;

/// Everything a btd node speaks.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Connection caps.
    pub limits: connection_limits::Behaviour,
    /// The connection bound: admission and the connections it follows (`net/conns.rs`).
    pub(crate) conns: super::conns::Conns,
    /// Relay client: listen on and dial through circuits.
    pub relay_client: relay::client::Behaviour,
    /// Relay server (with `--relay-server`).
    pub relay: Toggle<relay::Behaviour>,
    /// Hole punching over relayed connections.
    pub dcutr: dcutr::Behaviour,
    /// Reachability probing.
    pub autonat: Toggle<autonat::Behaviour>,
    /// Peer info exchange (listen addresses, protocols).
    pub identify: identify::Behaviour,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// Program id → announcement records; peer routing.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Program announcements and rung adverts.
    pub gossipsub: gossipsub::Behaviour,
    /// `/btd/membership/1`.
    pub membership: RrBehaviour<MembershipRequest, MembershipResponse>,
    /// `/btd/kb/1`.
    pub kb: RrBehaviour<KbRequest, KbResponse>,
    /// `/btd/approval/1`.
    pub approval: RrBehaviour<ApprovalRequest, ApprovalResponse>,
    /// `/btd/blob/1`.
    pub blob: RrBehaviour<BlobRequest, BlobResponse>,
    /// LAN discovery.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

fn rr<Req, Resp>(name: &'static str, p: &NetParams) -> RrBehaviour<Req, Resp>
where
    Req: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    Resp: serde::Serialize
        + serde::de::DeserializeOwned
        + btd_protocol::wire::Sanitize
        + Send
        + 'static,
{
    request_response::Behaviour::with_codec(
        WireCodec::default(),
        [(StreamProtocol::new(name), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(p.request_timeout)
            .with_max_concurrent_streams(MAX_STREAMS),
    )
}

fn relay_config() -> relay::Config {
    let per_peer = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    // Per-peer limits only: NAT'd users share IPs, and tests run every node on 127.0.0.1.
    relay::Config {
        max_reservations: 256,
        max_reservations_per_peer: 4,
        reservation_duration: Duration::from_secs(3600),
        reservation_rate_limiters: Vec::new(),
        max_circuits: 256,
        max_circuits_per_peer: 16,
        // btd's KB traffic is small but sessions are long: half an hour and 64 MiB per circuit.
        max_circuit_duration: Duration::from_secs(1800),
        max_circuit_bytes: 64 << 20,
        circuit_src_rate_limiters: Vec::new(),
    }
    .reservation_rate_per_peer(per_peer(30), Duration::from_secs(60))
    .circuit_src_per_peer(per_peer(120), Duration::from_secs(60))
}

impl Behaviour {
    fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        p: &NetParams,
        with_mdns: bool,
    ) -> Result<Behaviour> {
        let peer_id = key.public().to_peer_id();
        let gossip_cfg = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(p.gossip_heartbeat)
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(MAX_MESSAGE_BYTES + 4096)
            .build()
            .map_err(|e| anyhow!("gossipsub config: {e}"))?;
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_cfg,
        )
        .map_err(|e| anyhow!("gossipsub: {e}"))?;
        let store = kad::store::MemoryStore::with_config(
            peer_id,
            kad::store::MemoryStoreConfig {
                max_records: MAX_DHT_RECORDS,
                max_value_bytes: MAX_RECORD_BYTES,
                ..Default::default()
            },
        );
        let mut kad_cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        // A peer's PutRecord (and AddProvider) is not stored as it arrives: it comes to the node
        // as `NetEvent::RecordOffered`, which stores only a valid signed announcement under its
        // own program id that the discovery table admits. Provider records are not used.
        kad_cfg.set_record_filtering(kad::StoreInserts::FilterBoth);
        // Peers enter the routing table only through `Net::add_dht_address`, which never makes
        // Kademlia dial a disconnected entry to test it (the connection bound, `net/conns.rs`).
        kad_cfg.set_kbucket_inserts(kad::BucketInserts::Manual);
        kad_cfg.set_periodic_bootstrap_interval(Some(std::time::Duration::from_secs(15 * 60)));
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_cfg);
        // Without a confirmed external address kad stays a client and never answers queries;
        // btd nodes serve the DHT from the start.
        kad.set_mode(Some(kad::Mode::Server));
        let mdns = if with_mdns {
            Some(mdns::tokio::Behaviour::new(
                mdns::Config::default(),
                peer_id,
            )?)
        } else {
            None
        };
        Ok(Behaviour {
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(MAX_CONNECTIONS))
                    .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER)),
            ),
            conns: super::conns::Conns::new(p.max_peers, p.relay_server),
            relay_client,
            relay: p
                .relay_server
                .then(|| relay::Behaviour::new(peer_id, relay_config()))
                .into(),
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat: p
                .autonat
                .then(|| autonat::Behaviour::new(peer_id, autonat::Config::default()))
                .into(),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(format!("btd/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            kad,
            gossipsub,
            membership: rr(protocols::MEMBERSHIP, p),
            kb: rr(protocols::KB, p),
            approval: rr(protocols::APPROVAL, p),
            blob: rr(protocols::BLOB, p),
            mdns: mdns.into(),
        })
    }
}

/// The error type of transport and behaviour constructors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn boxed(b: Result<Behaviour>) -> Result<Behaviour, BoxError> {
    b.map_err(Into::into)
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Behaviour")
    }
}

/// Builds the swarm for `kind`. Its transport counts bytes in `metrics` (libp2p's bandwidth
/// counters; only the first swarm built on a registry does, see
/// [`crate::metrics::Metrics::bandwidth_registry`]).
pub fn build_swarm(
    key: Keypair,
    kind: TransportKind,
    p: &NetParams,
    metrics: &crate::metrics::Metrics,
) -> Result<Swarm<Behaviour>> {
    let idle = p.idle_timeout;
    // `with_bandwidth_metrics` changes the builder's type: both arms continue identically.
    macro_rules! finish {
        ($builder:expr, $mdns:expr) => {{
            let builder = $builder;
            match metrics.bandwidth_registry() {
                Some(mut registry) => {
                    let builder = builder.with_bandwidth_metrics(&mut registry);
                    drop(registry);
                    builder
                        .with_behaviour(|key, relay_client| {
                            boxed(Behaviour::new(key, relay_client, p, $mdns))
                        })
                        .map_err(|e| anyhow!("behaviour: {e}"))?
                        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                        .build()
                }
                None => builder
                    .with_behaviour(|key, relay_client| {
                        boxed(Behaviour::new(key, relay_client, p, $mdns))
                    })
                    .map_err(|e| anyhow!("behaviour: {e}"))?
                    .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
                    .build(),
            }
        }};
    }
    let swarm = match kind {
        TransportKind::Production => finish!(
            SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )?
                .with_quic()
                .with_dns()?
                .with_relay_client(noise::Config::new, yamux::Config::default)?,
            p.mdns
        ),
        TransportKind::Memory => finish!(
            SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_other_transport(|key| -> Result<_, BoxError> {
                    Ok(MemoryTransport::default()
                        .upgrade(Version::V1)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default()))
                })
                .map_err(|e| anyhow!("memory transport: {e}"))?
                .with_relay_client(noise::Config::new, yamux::Config::default)?,
            false
        ),
        TransportKind::Custom(custom) => finish!(
            SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_other_transport(|key| (custom.0)(key))
                .map_err(|e| anyhow!("custom transport: {e}"))?
                .with_relay_client(noise::Config::new, yamux::Config::default)?,
            false
        ),
    };
    Ok(swarm)
}
