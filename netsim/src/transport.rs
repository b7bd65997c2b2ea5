//! The simulated transport: an in-memory byte-stream transport (`/memory/N` addresses) whose every
//! connection runs through the [`World`]'s fault layer. Below Noise and Yamux, so faults act on
//! bytes exactly where a real network would: a black-holed link stalls encrypted frames, a crash
//! silences a connection, latency and bandwidth delay them.
//!
//! Each connection is two one-way pipes. A writer hands time-stamped chunks to a pump task (bounded
//! queue: a slow or cut link backs up into the writer, like a full TCP send buffer); the pump waits
//! while the link is cut, delays each chunk by latency, jitter and serialisation time (keeping
//! order), and delivers it to the reader.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc as fmpsc;
use futures::future::{BoxFuture, Ready};
use futures::{AsyncRead, AsyncWrite, FutureExt, Sink, StreamExt};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::upgrade::Version;
use libp2p::core::Transport;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{noise, yamux, Multiaddr, PeerId};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::world::{Fate, NodeIx, World};

/// Chunks queued in each direction of a connection before the writer waits.
const PIPE_CHUNKS: usize = 64;
/// Largest chunk one write hands to the pump.
const MAX_CHUNK: usize = 64 * 1024;
/// Inbound connections waiting to be accepted by a listener.
const BACKLOG: usize = 128;
/// A dial across a cut link gives up after this (a SYN that is never answered).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Ephemeral "ports" of dialers start here (never listened on).
const EPHEMERAL_BASE: u64 = 1 << 48;

/// A connection arriving at a listener.
#[derive(Debug)]
pub(crate) struct Incoming {
    stream: SimStream,
    from: Multiaddr,
}

struct Chunk {
    at: Instant,
    data: Vec<u8>,
}

/// One end of a simulated connection.
pub struct SimStream {
    world: Arc<World>,
    me: NodeIx,
    tx: fmpsc::Sender<Chunk>,
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl std::fmt::Debug for SimStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStream").field("node", &self.me).finish()
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.tx.poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Ready(Ok(())) => {}
        }
        let n = buf.len().min(MAX_CHUNK);
        let chunk = Chunk {
            at: Instant::now(),
            data: buf.get(..n).unwrap_or_default().to_vec(),
        };
        if Pin::new(&mut self.tx).start_send(chunk).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.world.count_out(self.me, n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.close_channel();
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.pos >= self.buf.len() {
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(0)),
                Poll::Ready(Some(data)) => {
                    self.buf = data;
                    self.pos = 0;
                }
            }
        }
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Poll::Ready(Ok(n))
    }
}

/// Removes the connection from the world when both pumps are done.
struct ConnGuard {
    world: Arc<World>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.world.close_conn(self.id);
    }
}

/// One direction of a connection.
struct Pipe {
    world: Arc<World>,
    from: NodeIx,
    from_inc: u64,
    to: NodeIx,
    to_inc: u64,
    guard: Arc<ConnGuard>,
}

async fn killed(kill: &mut watch::Receiver<bool>) {
    let _ = kill.wait_for(|k| *k).await;
}

impl Pipe {
    /// Moves chunks from the writer to the reader through the fault layer until either side is
    /// gone or the connection is reset.
    async fn run(
        self,
        mut rx: fmpsc::Receiver<Chunk>,
        tx: mpsc::Sender<Vec<u8>>,
        mut kill: watch::Receiver<bool>,
    ) {
        let mut epoch = self.world.subscribe();
        let mut last = Instant::now();
        let mut wire_free = Instant::now();
        loop {
            let next = tokio::select! {
                biased;
                () = killed(&mut kill) => return,
                c = rx.next() => c,
            };
            let Some(chunk) = next else { break };
            // A crashed incarnation sends nothing, not even the close frames of its dying swarm.
            if self.world.is_dead(self.from, self.from_inc) {
                continue;
            }
            // Latency counts from the write; a chunk held by a cut link leaves when it reopens.
            let mut sent = chunk.at;
            let shape = loop {
                if let Some(s) = self.world.passable(self.from, self.to) {
                    break s;
                }
                tokio::select! {
                    biased;
                    () = killed(&mut kill) => return,
                    r = epoch.changed() => if r.is_err() { return },
                }
                sent = Instant::now();
            };
            let len = chunk.data.len() as u64;
            if let Some(bw) = shape.bandwidth.filter(|b| *b > 0) {
                let start = sent.max(wire_free);
                wire_free = start + Duration::from_nanos(len.saturating_mul(1_000_000_000) / bw);
                sent = wire_free;
            }
            let at = (sent + shape.latency + self.world.jitter(shape.jitter)).max(last);
            last = at;
            if at > Instant::now() {
                tokio::select! {
                    biased;
                    () = killed(&mut kill) => return,
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            if !self.deliver(&tx, &mut kill, chunk.data).await {
                return;
            }
        }
        // The writer closed its side. A crashed writer's peer hears nothing: hold the pipe open
        // until the reader goes away or the connection is reset.
        if self.world.is_dead(self.from, self.from_inc) {
            tokio::select! {
                () = killed(&mut kill) => {}
                () = tx.closed() => {}
            }
        }
    }

    /// Hands one chunk to the reader; false when the pipe must end.
    async fn deliver(
        &self,
        tx: &mpsc::Sender<Vec<u8>>,
        kill: &mut watch::Receiver<bool>,
        data: Vec<u8>,
    ) -> bool {
        match self.world.fate(self.to, self.to_inc) {
            Fate::Vanished => return true,
            Fate::Reset => {
                self.world.kill_conn(self.guard.id);
                return false;
            }
            Fate::Alive => {}
        }
        let n = data.len();
        let sent = tokio::select! {
            biased;
            () = killed(kill) => return false,
            r = tx.send(data) => r.is_ok(),
        };
        if sent {
            self.world.count_in(self.to, n);
            return true;
        }
        // The reader is gone: a silent crash swallows bytes, anything else ends the connection.
        self.world.fate(self.to, self.to_inc) == Fate::Vanished
    }
}

/// Opens a connection from `a` to `b` and returns (a's end, b's end); `None` when a connection
/// limit refuses it.
fn connect(world: &Arc<World>, a: NodeIx, b: NodeIx) -> Option<(SimStream, SimStream)> {
    let (id, kill) = world.open_conn(a, b)?;
    let guard = Arc::new(ConnGuard {
        world: world.clone(),
        id,
    });
    let (a_inc, b_inc) = (world.incarnation(a), world.incarnation(b));
    let end = |me: NodeIx, me_inc: u64, peer: NodeIx, peer_inc: u64| {
        let (tx, pump_rx) = fmpsc::channel(PIPE_CHUNKS);
        let pipe = Pipe {
            world: world.clone(),
            from: me,
            from_inc: me_inc,
            to: peer,
            to_inc: peer_inc,
            guard: guard.clone(),
        };
        (tx, pipe, pump_rx)
    };
    let (a_tx, a_pipe, a_pump_rx) = end(a, a_inc, b, b_inc);
    let (b_tx, b_pipe, b_pump_rx) = end(b, b_inc, a, a_inc);
    let (to_b, b_rx) = mpsc::channel(PIPE_CHUNKS);
    let (to_a, a_rx) = mpsc::channel(PIPE_CHUNKS);
    tokio::spawn(a_pipe.run(a_pump_rx, to_b, kill.clone()));
    tokio::spawn(b_pipe.run(b_pump_rx, to_a, kill));
    let stream = |me, tx, rx| SimStream {
        world: world.clone(),
        me,
        tx,
        rx,
        buf: Vec::new(),
        pos: 0,
    };
    Some((stream(a, a_tx, a_rx), stream(b, b_tx, b_rx)))
}

struct Listener {
    world: Arc<World>,
    id: ListenerId,
    port: u64,
    token: u64,
    rx: mpsc::Receiver<Incoming>,
    announced: bool,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.world.unregister_listener(self.port, self.token);
    }
}

/// The raw simulated transport of one node (before Noise and Yamux).
pub struct SimTransport {
    world: Arc<World>,
    me: NodeIx,
    listeners: VecDeque<Listener>,
}

impl std::fmt::Debug for SimTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTransport")
            .field("node", &self.me)
            .finish()
    }
}

/// `/memory/N` (optionally followed by `/p2p/ID`) → N.
fn memory_port(addr: &Multiaddr, allow_p2p: bool) -> Option<u64> {
    let mut it = addr.iter();
    let Some(Protocol::Memory(port)) = it.next() else {
        return None;
    };
    match it.next() {
        None => Some(port),
        Some(Protocol::P2p(_)) if allow_p2p && it.next().is_none() => Some(port),
        _ => None,
    }
}

impl SimTransport {
    /// The transport of node `me` in `world`.
    pub fn new(world: Arc<World>, me: NodeIx) -> Self {
        Self {
            world,
            me,
            listeners: VecDeque::new(),
        }
    }

    /// This transport with Noise and Yamux on top, boxed for [`btd::net::behaviour::CustomTransport`].
    pub fn authenticated(
        world: Arc<World>,
        me: NodeIx,
        key: &Keypair,
    ) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
        Ok(SimTransport::new(world, me)
            .upgrade(Version::V1)
            .authenticate(noise::Config::new(key)?)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed())
    }
}

async fn dial(world: Arc<World>, me: NodeIx, port: u64) -> io::Result<SimStream> {
    let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
    let (peer, incoming) = world.lookup(port).ok_or_else(refused)?;
    let mut epoch = world.subscribe();
    let wait = async {
        while world.passable(me, peer).is_none() {
            if epoch.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(DIAL_TIMEOUT, wait)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?;
    tracing::trace!(from = me, to = peer, "dial");
    let (mine, theirs) = connect(&world, me, peer).ok_or_else(refused)?;
    let from = Multiaddr::empty().with(Protocol::Memory(EPHEMERAL_BASE + me as u64));
    incoming
        .try_send(Incoming {
            stream: theirs,
            from,
        })
        .map_err(|_| refused())?;
    Ok(mine)
}

impl Transport for SimTransport {
    type Output = SimStream;
    type Error = io::Error;
    type ListenerUpgrade = Ready<io::Result<SimStream>>;
    type Dial = BoxFuture<'static, io::Result<SimStream>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let port = memory_port(&addr, false).ok_or(TransportError::MultiaddrNotSupported(addr))?;
        let (tx, rx) = mpsc::channel(BACKLOG);
        let (port, token) = self
            .world
            .register_listener(self.me, port, tx)
            .ok_or_else(|| TransportError::Other(io::ErrorKind::AddrInUse.into()))?;
        self.listeners.push_back(Listener {
            world: self.world.clone(),
            id,
            port,
            token,
            rx,
            announced: false,
        });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        match self.listeners.iter_mut().find(|l| l.id == id) {
            Some(l) => {
                l.world.unregister_listener(l.port, l.token);
                l.rx.close();
                true
            }
            None => false,
        }
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let port = memory_port(&addr, true).ok_or(TransportError::MultiaddrNotSupported(addr))?;
        Ok(dial(self.world.clone(), self.me, port).boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let mut closed = None;
        let mut event = None;
        for (i, l) in self.listeners.iter_mut().enumerate() {
            let addr = Multiaddr::empty().with(Protocol::Memory(l.port));
            if !l.announced {
                l.announced = true;
                event = Some(TransportEvent::NewAddress {
                    listener_id: l.id,
                    listen_addr: addr,
                });
                break;
            }
            match l.rx.poll_recv(cx) {
                Poll::Pending => {}
                Poll::Ready(Some(inc)) => {
                    event = Some(TransportEvent::Incoming {
                        listener_id: l.id,
                        upgrade: futures::future::ready(Ok(inc.stream)),
                        local_addr: addr,
                        send_back_addr: inc.from,
                    });
                    break;
                }
                Poll::Ready(None) => {
                    closed = Some(i);
                    event = Some(TransportEvent::ListenerClosed {
                        listener_id: l.id,
                        reason: Ok(()),
                    });
                    break;
                }
            }
        }
        if let Some(i) = closed {
            self.listeners.remove(i);
        }
        match event {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests;
