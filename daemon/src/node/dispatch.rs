//! Routing on the node task: commands from [`super::NodeHandle`]s and btd's network events go to
//! the side that handles them. A peer's request for a program this node owns goes to the owner's
//! side (`owner.rs`, `spend.rs`, `blob.rs`) once the peer's budget allows it; answers to our own
//! requests come back with the tag they were sent with and go to the flow that sent them.

use btd_protocol::membership::DeviceCode;
use btd_protocol::program::ProgramId;
use btd_protocol::wire::{
    ApprovalResponse, BlobResponse, ErrorCode, KbResponse, MembershipRequest, MembershipResponse,
};
use libp2p::{Multiaddr, PeerId};

use super::handle::{Command, NodeError, Reply};
use super::owner::err;
use super::worker::PendingStatus;
use super::{blob, gossip, outbox, owner, publish, spend, worker, Node};
use crate::metrics::Limited;
use crate::net::{Answer, ConnectionId, Inbound, NetEvent, Tags};

/// What this node's outstanding requests were for (kept by [`crate::net::Net`] until answered).
#[derive(Debug)]
pub(crate) struct NodeTags;

impl Tags for NodeTags {
    type Membership = MembershipTag;
    type Kb = KbTag;
    type Approval = Reply<ApprovalResponse>;
    type Blob = Reply<BlobResponse>;
}

/// What a membership request was for.
#[derive(Debug)]
pub(crate) enum MembershipTag {
    /// A join's device authorization (worker side), with the join's id.
    Authorize(ProgramId, u64),
    /// A join's poll (worker side), with the join's id.
    Poll(ProgramId, u64),
    /// A grant pushed to a new member (owner side).
    Push(ProgramId, DeviceCode),
    /// A raw probe (tests, netsim).
    #[cfg(feature = "testkit")]
    Raw(Reply<MembershipResponse>),
}

/// What a KB request was for.
#[derive(Debug)]
pub(crate) enum KbTag {
    /// A send of outbox entries (one, or a batch; resent with the same nonces until the owner
    /// answers).
    Submit(Vec<u64>),
    /// A member's `btd status` (the summary and a page of results, one request).
    Status(PendingStatus),
    /// A request whose response goes back as it is (the champion read; testkit probes).
    Raw(Reply<KbResponse>),
}

impl Node {
    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peers());
            }
            Command::Dial(addr, reply) => {
                let dialed = self.net.dial(addr);
                let _ = reply.send(dialed.map_err(|e| NodeError::Unreachable(e.to_string())));
            }
            Command::PublishWith {
                manifest,
                files,
                reply,
            } => publish::publish(self, manifest, files, reply),
            Command::Programs(reply) => {
                let _ = reply.send(self.programs());
            }
            Command::Join { program, events } => worker::join(self, program, events),
            Command::Decide {
                user_code,
                approve,
                reply,
            } => owner::decide(self, &user_code, approve, reply),
            Command::Members { program, reply } => {
                let _ = reply.send(owner::members(self, &program));
            }
            Command::Revoke {
                program,
                member,
                reply,
            } => owner::revoke(self, program, &member, reply),
            Command::Submit {
                program,
                result,
                reply,
                delivered,
            } => outbox::submit(self, program, result, reply, delivered),
            Command::Outbox { program, reply } => outbox::list(self, program, reply),
            Command::Status {
                program,
                query,
                reply,
            } => worker::status(self, program, query, reply),
            #[cfg(feature = "testkit")]
            Command::RawMembership {
                peer,
                request,
                reply,
            } => self
                .net
                .request_membership(peer, request, MembershipTag::Raw(reply)),
            #[cfg(feature = "testkit")]
            Command::InjectMembershipAnswer {
                peer,
                program,
                poll,
                response,
                reply,
            } => {
                // As the answer to the join in progress.
                let join = self.joins.get(&program).map_or(0, |j| j.id);
                worker::on_membership_answer(self, peer, program, join, poll, Ok(response));
                let _ = reply.send(Ok(()));
            }
            #[cfg(feature = "testkit")]
            Command::InjectAnnouncement {
                source,
                data,
                reply,
            } => {
                let verdict = gossip::on_program_message(self, source, &data);
                let _ = reply.send(Ok(verdict == crate::net::MessageAcceptance::Accept));
            }
            #[cfg(feature = "testkit")]
            Command::RawPutRecord { key, value, reply } => match self.net.put_record(&key, value) {
                Ok(query) => {
                    self.raw_puts.insert(query, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(NodeError::Refused(e.to_string())));
                }
            },
            #[cfg(feature = "testkit")]
            Command::LocalRecord { key, reply } => {
                let found = self.net.local_record(&key);
                let _ = reply.send(Ok((found, self.net.local_record_count())));
            }
            #[cfg(feature = "testkit")]
            Command::RawGossip { topic, data, reply } => {
                let published = self.net.publish(topic, data);
                let _ = reply.send(published.map_err(|e| NodeError::Unreachable(e.to_string())));
            }
            #[cfg(feature = "testkit")]
            Command::PoisonBlobs { response, reply } => {
                self.poisoned_blobs = response;
                let _ = reply.send(Ok(()));
            }
            Command::Kb {
                peer,
                request,
                reply,
            } => self.net.request_kb(peer, request, KbTag::Raw(reply)),
            Command::OwnerRead {
                program,
                call,
                reply,
            } => match self.owners.get(&program).and_then(|o| o.read_own(&call)) {
                Some(mut fx) => match fx.read.take() {
                    Some(read) => owner::complete_read(self, read, fx.reply, move |_, resp| {
                        let _ = reply.send(Some(resp));
                    }),
                    None => {
                        let _ = reply.send(Some(fx.reply));
                    }
                },
                None => {
                    let _ = reply.send(None);
                }
            },
            Command::Program { program, reply } => {
                let _ = reply.send(self.known.get(&program).map(|k| k.view.clone()));
            }
            Command::Credential { program, reply } => {
                let _ = reply.send(
                    self.memberships
                        .get(&program)
                        .map(|m| (m.owner, m.credential.clone())),
                );
            }
            Command::RequestSpend {
                program,
                packet,
                reply,
            } => spend::request(self, program, packet, reply),
            Command::SpendRequests(reply) => {
                let _ = reply.send(spend::list(self));
            }
            Command::DecideSpend {
                program,
                member,
                packet_id,
                approve,
                minutes,
                reply,
            } => {
                let _ = reply.send(spend::decide(
                    self, program, &member, &packet_id, approve, minutes,
                ));
            }
            Command::Blob {
                peer,
                request,
                reply,
            } => self.net.request_blob(peer, request, reply),
            Command::NextClaims(reply) => owner::next_claims(self, reply),
            Command::Resolve {
                program,
                seq,
                verdict,
                reply,
            } => owner::resolve(self, program, seq, verdict, reply),
            Command::Shutdown => {}
        }
    }

    pub(super) fn on_net_event(&mut self, event: NetEvent<NodeTags>) {
        match event {
            NetEvent::Inbound { peer, request } => self.on_inbound(peer, request),
            NetEvent::Membership(answer) => self.on_membership_answer(answer),
            NetEvent::Kb(answer) => self.on_kb_answer(answer),
            NetEvent::Approval(Answer { tag, result, .. }) => {
                let _ = tag.send(result.map_err(NodeError::Unreachable));
            }
            NetEvent::Blob(Answer { tag, result, .. }) => {
                if let Ok(BlobResponse::Chunk { data, .. }) = &result {
                    self.metrics.blob_fetched(data.len());
                }
                let _ = tag.send(result.map_err(NodeError::Unreachable));
            }
            NetEvent::Gossip(message) => gossip::on_message(self, message),
            NetEvent::Subscribed { topic, .. } => gossip::on_subscribed(self, topic),
            NetEvent::Identified(info) => gossip::on_identify(self, info),
            NetEvent::Lookup { query, step } => gossip::on_lookup(self, query, step),
            NetEvent::RecordOffered { peer, record } => {
                gossip::on_record_offered(self, peer, record)
            }
            NetEvent::Stored { query, result } => self.on_stored(query, result),
            NetEvent::Discovered(list) => gossip::on_discovered(self, list),
            NetEvent::ListenAddr(address) => self.on_listen_addr(address),
            NetEvent::Connected {
                peer,
                connection,
                addr,
            } => self.on_connected(peer, connection, addr),
            NetEvent::Disconnected { peer, connection } => self.on_disconnected(peer, connection),
        }
    }

    /// A peer's request: within its budget, to the side that serves it.
    fn on_inbound(&mut self, peer: PeerId, request: Inbound) {
        const SLOW_DOWN: &str = "too many requests; slow down";
        match request {
            Inbound::Membership(req, to) => {
                if !self.requests.take(peer) {
                    self.metrics.rate_limited(Limited::Membership);
                    let busy = MembershipResponse::Error(err(ErrorCode::RateLimited, SLOW_DOWN));
                    self.net.respond(to, busy);
                    return;
                }
                match req {
                    MembershipRequest::PushGrant(delivery) => {
                        worker::on_push_grant(self, peer, delivery, to)
                    }
                    req => owner::on_membership_request(self, peer, req, to),
                }
            }
            Inbound::Kb(req, to) => {
                // A batch costs one request per result.
                let cost = btd_protocol::owner::submissions_of(&req.call).len().max(1);
                if !self.requests.take_n(peer, cost) {
                    self.metrics.rate_limited(Limited::Kb);
                    let busy = KbResponse::Error(err(ErrorCode::RateLimited, SLOW_DOWN));
                    self.net.respond(to, busy);
                    return;
                }
                owner::on_kb_request(self, peer, req, to)
            }
            Inbound::Approval(req, to) => {
                if !self.requests.take(peer) {
                    self.metrics.rate_limited(Limited::Approval);
                    let busy = ApprovalResponse::Error(err(ErrorCode::RateLimited, "slow down"));
                    self.net.respond(to, busy);
                    return;
                }
                spend::on_request(self, peer, req, to)
            }
            Inbound::Blob(req, to) => {
                if !self.blob_requests.take(peer) {
                    self.metrics.rate_limited(Limited::Blob);
                    let why = "too many artifact requests; slow down".to_string();
                    return blob::refuse(self, to, ErrorCode::RateLimited, why);
                }
                blob::on_request(self, peer, req, to)
            }
        }
    }

    fn on_membership_answer(&mut self, a: Answer<MembershipTag, MembershipResponse>) {
        match a.tag {
            MembershipTag::Authorize(program, join) => {
                worker::on_membership_answer(self, a.peer, program, join, false, a.result)
            }
            MembershipTag::Poll(program, join) => {
                worker::on_membership_answer(self, a.peer, program, join, true, a.result)
            }
            MembershipTag::Push(program, code) => {
                let acked = match &a.result {
                    Ok(resp) => matches!(resp, MembershipResponse::Ack),
                    Err(error) => {
                        tracing::debug!(program = %program, error = %error, "grant push failed; the worker's poll will fetch it");
                        false
                    }
                };
                owner::on_push_result(self, program, code, acked)
            }
            #[cfg(feature = "testkit")]
            MembershipTag::Raw(reply) => {
                let _ = reply.send(a.result.map_err(NodeError::Unreachable));
            }
        }
    }

    fn on_kb_answer(&mut self, a: Answer<KbTag, KbResponse>) {
        match a.tag {
            KbTag::Submit(ids) => outbox::on_answer(self, a.peer, ids, a.result),
            KbTag::Status(s) => worker::on_status_answer(self, s, a.result),
            KbTag::Raw(reply) => {
                let _ = reply.send(a.result.map_err(NodeError::Unreachable));
            }
        }
    }

    /// A DHT store finished: own programs are re-stored at every announcement, so only a test's
    /// raw store waits for the outcome.
    fn on_stored(&mut self, query: crate::net::QueryId, result: Result<(), String>) {
        #[cfg(feature = "testkit")]
        if let Some(reply) = self.raw_puts.remove(&query) {
            let _ = reply.send(result.map_err(NodeError::Unreachable));
            return;
        }
        if let Err(e) = result {
            tracing::debug!(?query, error = %e, "a DHT store found no peer");
        }
    }

    fn on_listen_addr(&mut self, address: Multiaddr) {
        tracing::info!(%address, "listening");
        // A relay server is run on a machine its operator says is reachable: its listen
        // addresses are its external addresses (libp2p's relay only serves once it has
        // confirmed external addresses).
        let circuit = address
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit));
        if self.relay_server && !circuit {
            self.net.add_external_address(address);
        }
        self.announce_soon = true;
    }

    fn on_connected(&mut self, peer: PeerId, connection: ConnectionId, addr: Multiaddr) {
        tracing::debug!(peer = %peer, %addr, "connected");
        self.connections
            .entry(peer)
            .or_default()
            .push((connection, addr));
        outbox::on_connected(self, peer);
    }

    fn on_disconnected(&mut self, peer: PeerId, connection: ConnectionId) {
        tracing::debug!(peer = %peer, "connection closed");
        if let Some(list) = self.connections.get_mut(&peer) {
            list.retain(|(c, _)| *c != connection);
            if list.is_empty() {
                self.connections.remove(&peer);
            }
        }
        if !self.net.is_connected(&peer) {
            self.reserved.remove(&peer);
        }
    }
}
