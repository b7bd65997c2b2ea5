//! Announcements and discovery: program announcements and rung adverts on gossipsub, program
//! records in Kademlia, identify-driven address learning and relay reservations.

use btd_protocol::discovery::Offer;
use btd_protocol::program::ProgramId;
use btd_protocol::signed::Signed;
use btd_protocol::wire::{self, ProgramAnnouncement, RungAdvert};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use super::types::JoinEvent;
use super::{Known, Node};
use crate::net::{
    GossipMessage, Lookup, MessageAcceptance, OfferedRecord, PeerInfo, QueryId, Topic,
};
use crate::store::{self, ProgramRow};
/// Most DHT lookups for joins in flight.
const MAX_LOOKUPS: usize = 64;
// Programs remembered from the mesh are bounded by the discovery table (`node.known`,
// `btd_protocol::discovery`): per-owner and global caps, eviction instead of refusal; own, joined
// and joining programs are pinned.
/// Most peers whose rung adverts and agents are remembered.
const MAX_PEER_INFO: usize = 10_000;

pub(super) fn subscribe(node: &mut Node) -> anyhow::Result<()> {
    for topic in [Topic::Programs, Topic::Rungs] {
        node.net
            .subscribe(topic)
            .map_err(|e| anyhow::anyhow!("gossipsub subscribe: {e}"))?;
    }
    Ok(())
}

/// Re-signs and publishes every own program and this node's rung advert. Publishing with no
/// subscribed peer fails (libp2p's `NoPeersSubscribedToTopic`); that is expected and retried on the
/// next round.
pub(super) fn announce_all(node: &mut Node) {
    let ids: Vec<ProgramId> = node.owners.ids().collect();
    for id in ids {
        announce(node, id, true);
    }
    // Rung adverts reach every node, so N advertisers cost O(N²) deliveries per period: only
    // members advertise (what they can run is what owners want to know), right after joining and
    // then every RUNG_ADVERT_EVERY.
    let now = std::time::Instant::now();
    if !node.memberships.is_empty() && node.next_rung_advert.is_none_or(|t| now >= t) {
        node.next_rung_advert = Some(now + RUNG_ADVERT_EVERY);
        advertise_rungs(node);
    }
}

/// Period of a member's rung advert.
const RUNG_ADVERT_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Re-gossips own programs only (no DHT write, no rung advert): what a new subscriber needs.
pub(super) fn regossip_programs(node: &mut Node) {
    let ids: Vec<ProgramId> = node.owners.ids().collect();
    for id in ids {
        announce(node, id, false);
    }
}

/// Publishes one own program (fresh addresses and timestamp, same manifest and id) on gossip and,
/// with `dht`, stores it in the DHT.
pub(super) fn announce(node: &mut Node, id: ProgramId, dht: bool) {
    let Some(k) = node.known.get(&id) else {
        return;
    };
    let announcement = ProgramAnnouncement {
        manifest: k.view.manifest.clone(),
        addresses: node
            .my_addresses()
            .iter()
            .map(ToString::to_string)
            .collect(),
        published_at: node.clock.now(),
    };
    let Ok(signed) = Signed::sign(&node.key, &announcement) else {
        return;
    };
    let Ok(bytes) = wire::encode(&signed) else {
        return;
    };
    if let Ok(view) = wire::verify_announcement(&signed, node.clock.now()) {
        // Own programs are pinned: a refresh never evicts anything.
        node.known.pin(id);
        let (owner, at) = (view.owner, view.published_at);
        let known = Known {
            view,
            signed: signed.clone(),
        };
        node.known.offer(id, owner, at, known);
    }
    if let Err(e) = node.net.publish(Topic::Programs, bytes.clone()) {
        tracing::debug!(program = %id, error = %e, "announcement not published yet");
    }
    if !dht {
        return;
    }
    if let Err(e) = node.net.put_record(id.0.as_bytes(), bytes) {
        tracing::debug!(program = %id, error = %e, "cannot store the program record");
    }
}

fn advertise_rungs(node: &mut Node) {
    let advert = RungAdvert {
        rungs: node.rungs.clone(),
        programs: node.memberships.keys().copied().collect(),
        advertised_at: node.clock.now(),
    };
    let Ok(signed) = Signed::sign(&node.key, &advert) else {
        return;
    };
    let Ok(bytes) = wire::encode(&signed) else {
        return;
    };
    if let Err(e) = node.net.publish(Topic::Rungs, bytes) {
        tracing::debug!(error = %e, "rung advert not published yet");
    }
}

/// Gossip: application-level validation of every message before it is forwarded.
pub(super) fn on_message(node: &mut Node, message: GossipMessage) {
    let verdict = match message.topic {
        Some(Topic::Programs) => on_program_message(node, message.source, &message.data),
        Some(Topic::Rungs) => on_rungs_message(node, message.source, &message.data),
        None => MessageAcceptance::Ignore,
    };
    if verdict == MessageAcceptance::Reject {
        tracing::debug!(from = %message.propagation_source, "rejected a gossip message");
    }
    node.net
        .validate(&message.id, &message.propagation_source, verdict);
}

/// A new listener of the programs topic: an owner re-gossips its programs (rate limited by the
/// tick) so the newcomer learns them without waiting for the periodic announcement. Nobody else
/// re-announces: every re-announcement floods the whole mesh.
pub(super) fn on_subscribed(node: &mut Node, topic: Topic) {
    if topic == Topic::Programs && !node.owners.is_empty() {
        node.regossip_programs = true;
    }
}

pub(super) fn on_program_message(
    node: &mut Node,
    source: Option<PeerId>,
    data: &[u8],
) -> MessageAcceptance {
    let Ok(signed) = wire::decode::<Signed<ProgramAnnouncement>>(data) else {
        return MessageAcceptance::Reject;
    };
    accept_announcement(node, source, signed)
}

/// Verifies an announcement (from gossip or the DHT) and records the program if it is new or newer.
pub(super) fn accept_announcement(
    node: &mut Node,
    source: Option<PeerId>,
    signed: Signed<ProgramAnnouncement>,
) -> MessageAcceptance {
    let view = match wire::verify_announcement(&signed, node.clock.now()) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "invalid program announcement");
            return MessageAcceptance::Reject;
        }
    };
    // Gossip authorship must match the owner's signature: nobody re-signs someone else's program.
    if source.is_some_and(|s| s != view.owner) {
        return MessageAcceptance::Reject;
    }
    admit(node, view, signed)
}

/// Offers a verified announcement to the discovery table: a new program is always admitted (the
/// table evicts to make room, never refuses), a known one is replaced only by a newer
/// announcement. What is kept is stored; what is evicted is forgotten (memory, database, DHT).
fn admit(
    node: &mut Node,
    view: wire::VerifiedProgram,
    signed: Signed<ProgramAnnouncement>,
) -> MessageAcceptance {
    let id = view.id;
    // Own programs are never replaced by remote copies.
    if node.owners.contains(&id)
        || node
            .known
            .published_at(&id)
            .is_some_and(|at| at >= view.published_at)
    {
        return MessageAcceptance::Accept;
    }
    let Ok(bytes) = wire::encode(&signed) else {
        return MessageAcceptance::Ignore;
    };
    let (owner, published_at) = (view.owner, view.published_at);
    let row = ProgramRow {
        id,
        owner: owner.to_string(),
        announcement: bytes,
        published_at,
        own: false,
    };
    let name = view.program.name.clone();
    let evicted = match node
        .known
        .offer(id, owner, published_at, Known { view, signed })
    {
        Offer::Stale => return MessageAcceptance::Accept,
        Offer::Newer => None,
        Offer::New { evicted } => {
            tracing::info!(program = %id, name = %name, owner = %owner, "program discovered");
            evicted
        }
    };
    if let Some(e) = evicted {
        tracing::debug!(program = %e.id, "known-program table full; forgot the oldest program of the busiest owner");
        node.net.forget_record(e.id.0.as_bytes());
        node.program_writes.ops.insert(e.id, None);
    }
    node.program_writes.ops.insert(id, Some(row));
    flush_program_writes(node);
    match evicted {
        // The owner is over its cap: the program is kept (the owner's oldest went instead) but not
        // forwarded, so one key's flood stops at the first hop.
        Some(e) if e.owner == owner => MessageAcceptance::Ignore,
        _ => MessageAcceptance::Accept,
    }
}

/// Known-program rows waiting to be written. The database follows the discovery table: one write
/// is in flight at a time, in order, with the latest operation per program, so a program evicted
/// right after it was admitted never outlives its eviction on disk (independent writes could land
/// in any order).
#[derive(Default)]
pub(crate) struct ProgramWrites {
    /// Per program: store this row (`Some`) or delete it (`None`).
    ops: std::collections::HashMap<ProgramId, Option<ProgramRow>>,
    /// Delete the stored programs beyond the newest `MAX_UNPINNED_PROGRAMS` (at start).
    prune: bool,
    in_flight: bool,
}

/// Starts the next write of known programs unless one is in flight.
fn flush_program_writes(node: &mut Node) {
    let w = &mut node.program_writes;
    if w.in_flight || (w.ops.is_empty() && !w.prune) {
        return;
    }
    w.in_flight = true;
    let ops: Vec<(ProgramId, Option<ProgramRow>)> = w.ops.drain().collect();
    let prune = std::mem::take(&mut w.prune);
    let store = node.store.clone();
    node.after(async move {
        let res = store
            .write(move |tx| {
                if prune {
                    store::prune_programs(tx, btd_protocol::discovery::MAX_UNPINNED_PROGRAMS)?;
                }
                for (id, op) in &ops {
                    match op {
                        Some(row) => store::put_program(tx, row)?,
                        None => store::delete_programs(tx, std::slice::from_ref(id))?,
                    }
                }
                Ok(())
            })
            .await;
        Box::new(move |node: &mut Node| {
            node.program_writes.in_flight = false;
            if let Err(e) = res {
                tracing::warn!(error = %e, "cannot store known programs");
            }
            flush_program_writes(node);
        })
    });
}

/// Programs the discovery table let go: out of the DHT part this node keeps and out of the
/// database.
fn forget(node: &mut Node, gone: Vec<ProgramId>) {
    for g in gone {
        node.net.forget_record(g.0.as_bytes());
        node.program_writes.ops.insert(g, None);
    }
    flush_program_writes(node);
}

/// A program this node is joining: never evicted while the join runs.
pub(super) fn pin(node: &mut Node, program: ProgramId) {
    node.known.pin(program);
}

/// A join that did not complete: the program is an ordinary known program again (unless owned or
/// joined), under the caps; the table may evict one program to stay within them.
pub(super) fn unpin(node: &mut Node, program: ProgramId) {
    if node.owners.contains(&program) || node.memberships.contains_key(&program) {
        return;
    }
    if let Some(e) = node.known.unpin(program) {
        forget(node, vec![e.id]);
    }
}

/// Drops stored programs the bounded restore left out (see `Node::restore`), and any beyond the
/// newest `MAX_UNPINNED_PROGRAMS` the store did not even load.
pub(super) fn forget_stored(node: &mut Node, gone: Vec<ProgramId>) {
    node.program_writes.prune = true;
    forget(node, gone);
}

/// A peer asks this node to keep a DHT record. Kept only if it is a valid signed announcement
/// stored under its own program id and the discovery table holds exactly that announcement;
/// anything else (garbage, a forged or replayed record under another program's key) is dropped.
pub(super) fn on_record_offered(node: &mut Node, peer: PeerId, record: OfferedRecord) {
    // Checking a record costs a signature verification and a manifest parse: offers share the
    // peer's request budget, so a peer cannot make a node verify records faster than it answers
    // requests.
    if !node.requests.take(peer) {
        node.metrics
            .rate_limited(crate::metrics::Limited::DhtRecord);
        tracing::debug!(peer = %peer, "DHT record offer over the peer's request budget dropped");
        return;
    }
    let verified = wire::decode::<Signed<ProgramAnnouncement>>(record.value())
        .ok()
        .and_then(|signed| {
            let view = wire::verify_announcement(&signed, node.clock.now()).ok()?;
            (view.id.0.as_bytes() == record.key()).then_some((view, signed))
        });
    let Some((view, signed)) = verified else {
        tracing::debug!(peer = %peer, "invalid DHT record dropped");
        return;
    };
    let (id, at) = (view.id, view.published_at);
    admit(node, view, signed);
    if node.owners.contains(&id) || node.known.published_at(&id) != Some(at) {
        return;
    }
    if let Err(e) = node.net.store_record(record) {
        tracing::debug!(program = %id, error = %e, "cannot keep the DHT record");
    }
}

fn on_rungs_message(node: &mut Node, source: Option<PeerId>, data: &[u8]) -> MessageAcceptance {
    let Ok(signed) = wire::decode::<Signed<RungAdvert>>(data) else {
        return MessageAcceptance::Reject;
    };
    let Ok(v) = signed.verify() else {
        return MessageAcceptance::Reject;
    };
    if source != Some(v.signer) || v.value.check(node.clock.now()).is_err() {
        return MessageAcceptance::Reject;
    }
    let newer = node
        .peer_rungs
        .get(&v.signer)
        .is_none_or(|(at, _)| *at < v.value.advertised_at);
    let room = node.peer_rungs.len() < MAX_PEER_INFO || node.peer_rungs.contains_key(&v.signer);
    if newer && room {
        node.peer_rungs
            .insert(v.signer, (v.value.advertised_at, v.value.rungs));
    }
    MessageAcceptance::Accept
}

/// identify: learn addresses for the DHT, and reserve a relay slot on bootstrap peers that relay.
pub(super) fn on_identify(node: &mut Node, info: PeerInfo) {
    let peer_id = info.peer;
    if node.agents.len() < MAX_PEER_INFO || node.agents.contains_key(&peer_id) {
        // Remote text: cut by characters (String::truncate would panic inside a UTF-8 sequence).
        let agent: String = info.agent_version.chars().take(64).collect();
        node.agents.insert(peer_id, agent);
    }
    if info.protocol_version != crate::net::behaviour::IDENTIFY_PROTOCOL {
        return;
    }
    for addr in &info.listen_addrs {
        node.net.add_dht_address(peer_id, addr.clone());
    }
    if info.relay && !node.reserved.contains(&peer_id) {
        if let Some(addr) = node.bootstrap.get(&peer_id).cloned() {
            let base: Multiaddr = addr
                .iter()
                .filter(|p| !matches!(p, Protocol::P2p(_)))
                .collect();
            let circuit = base.with(Protocol::P2p(peer_id)).with(Protocol::P2pCircuit);
            match node.net.listen_on(circuit.clone()) {
                Ok(()) => {
                    tracing::info!(relay = %peer_id, "reserving a relay slot");
                    node.reserved.insert(peer_id);
                }
                Err(e) => tracing::warn!(%circuit, error = %e, "cannot listen through relay"),
            }
        }
    }
}

/// Joins waiting for a DHT lookup.
#[derive(Default)]
pub(crate) struct Lookups {
    pending: std::collections::HashMap<QueryId, (ProgramId, mpsc::Sender<JoinEvent>)>,
}

/// Looks a program id up in the DHT for `btd join`.
pub(super) fn lookup(node: &mut Node, program: ProgramId, events: mpsc::Sender<JoinEvent>) {
    if node.lookups.pending.len() >= MAX_LOOKUPS {
        let _ = events.try_send(JoinEvent::Failed {
            reason: "too many lookups in progress; retry shortly".into(),
        });
        return;
    }
    let q = node.net.get_record(program.0.as_bytes());
    node.lookups.pending.insert(q, (program, events));
}

/// A step of a join's DHT lookup.
pub(super) fn on_lookup(node: &mut Node, id: QueryId, step: Lookup) {
    let Some((program, events)) = node.lookups.pending.remove(&id) else {
        return;
    };
    match step {
        Lookup::Found { value, last } => {
            let ok = wire::decode::<Signed<ProgramAnnouncement>>(&value)
                .ok()
                .filter(|s| {
                    wire::verify_announcement(s, node.clock.now())
                        .map(|v| v.id == program)
                        .unwrap_or(false)
                });
            match ok {
                Some(signed) => {
                    accept_announcement(node, None, signed);
                    node.net.finish_query(id);
                    super::worker::start_authorize(node, program, events);
                }
                None if !last => {
                    // A bad record from one peer: keep waiting for others.
                    node.lookups.pending.insert(id, (program, events));
                }
                None => {
                    let _ = events.try_send(JoinEvent::Failed {
                        reason: format!(
                            "program {program} was found on the mesh but its record is invalid"
                        ),
                    });
                }
            }
        }
        Lookup::NotFound => {
            if node.known.contains(&program) {
                super::worker::start_authorize(node, program, events);
            } else {
                let _ = events.try_send(JoinEvent::Failed {
                    reason: format!(
                        "program {program} is not known on the mesh (is the owner's daemon running and connected? try --bootstrap)"
                    ),
                });
            }
        }
        Lookup::Failed(e) => {
            if node.known.contains(&program) {
                super::worker::start_authorize(node, program, events);
            } else {
                let _ = events.try_send(JoinEvent::Failed {
                    reason: format!(
                        "program {program} was not found on the mesh ({e}); check the id and that this daemon is connected (`btd peers`)"
                    ),
                });
            }
        }
    }
}

/// LAN discovery: remember what mDNS found, and dial it while under the connection bound.
pub(super) fn on_discovered(node: &mut Node, list: Vec<(PeerId, Multiaddr)>) {
    for (peer, addr) in list {
        node.net.add_dht_address(peer, addr.clone());
        if !node.net.at_bound() && !node.net.is_connected(&peer) {
            let _ = node.net.dial(addr);
        }
    }
}
