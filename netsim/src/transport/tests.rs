//! The fault layer on raw simulated connections (no Noise/Yamux): ordering, black holes,
//! partitions, latency, crashes, resets and connection limits. Timing is only ever checked as a
//! lower bound (a cut link can never deliver early) or as "nothing arrived yet".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportEvent};
use libp2p::core::{Endpoint, Transport};
use libp2p::Multiaddr;

use super::{SimStream, SimTransport};
use crate::world::{Shape, World};

/// Long enough for a pump to have delivered if it were going to.
const QUIET: Duration = Duration::from_millis(150);

fn addr(port: u64) -> Multiaddr {
    format!("/memory/{port}").parse().unwrap()
}

fn opts() -> DialOpts {
    DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::Reuse,
    }
}

/// Node 1 listens on /memory/7; returns its transport (keep it alive).
async fn listener(world: &Arc<World>) -> SimTransport {
    let mut t = SimTransport::new(world.clone(), 1);
    t.listen_on(ListenerId::next(), addr(7)).unwrap();
    let ev = futures::future::poll_fn(|cx| std::pin::Pin::new(&mut t).poll(cx)).await;
    assert!(matches!(ev, TransportEvent::NewAddress { .. }));
    t
}

async fn accept(t: &mut SimTransport) -> SimStream {
    loop {
        let ev = futures::future::poll_fn(|cx| std::pin::Pin::new(&mut *t).poll(cx)).await;
        if let TransportEvent::Incoming { upgrade, .. } = ev {
            return upgrade.await.unwrap();
        }
    }
}

/// Node 0 dials node 1: (dialer end, listener end, listener transport).
async fn pair(world: &Arc<World>) -> (SimStream, SimStream, SimTransport) {
    let mut l = listener(world).await;
    let mut d = SimTransport::new(world.clone(), 0);
    let a = d.dial(addr(7), opts()).unwrap().await.unwrap();
    let b = accept(&mut l).await;
    (a, b, l)
}

async fn read_n(s: &mut SimStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await.unwrap();
    buf
}

#[tokio::test]
async fn bytes_arrive_in_order_and_are_counted() {
    let world = Arc::new(World::new(2, 1));
    let (mut a, mut b, _l) = pair(&world).await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = async {
        a.write_all(&data).await.unwrap();
        a.close().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    assert_eq!(got, data);
    assert_eq!(world.traffic(0).bytes_out, data.len() as u64);
    assert_eq!(world.traffic(1).bytes_in, data.len() as u64);
    assert_eq!(world.traffic(0).connections, 1);
}

#[tokio::test]
async fn a_black_hole_holds_bytes_and_keeps_the_connection() {
    let world = Arc::new(World::new(2, 1));
    let (mut a, mut b, _l) = pair(&world).await;
    world.blackhole(0, 1, true);
    a.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 4];
    assert!(tokio::time::timeout(QUIET, b.read_exact(&mut buf))
        .await
        .is_err());
    world.blackhole(0, 1, false);
    assert_eq!(read_n(&mut b, 4).await, b"held");
    assert_eq!(world.open_connections(), 1);
}

#[tokio::test]
async fn a_partition_stalls_dials_until_it_heals() {
    let world = Arc::new(World::new(2, 1));
    let mut l = listener(&world).await;
    world.partition(&[vec![0], vec![1]]);
    let mut d = SimTransport::new(world.clone(), 0);
    let mut dial = d.dial(addr(7), opts()).unwrap();
    assert!(tokio::time::timeout(QUIET, &mut dial).await.is_err());
    world.heal();
    let mut a = dial.await.unwrap();
    let mut b = accept(&mut l).await;
    a.write_all(b"ok").await.unwrap();
    assert_eq!(read_n(&mut b, 2).await, b"ok");
}

#[tokio::test]
async fn latency_delays_every_write() {
    let world = Arc::new(World::new(2, 1));
    let (mut a, mut b, _l) = pair(&world).await;
    world.set_default_shape(Shape {
        latency: Duration::from_millis(80),
        ..Shape::default()
    });
    let t = tokio::time::Instant::now();
    a.write_all(b"x").await.unwrap();
    read_n(&mut b, 1).await;
    assert!(t.elapsed() >= Duration::from_millis(80));
}

#[tokio::test]
async fn bandwidth_caps_throughput() {
    let world = Arc::new(World::new(2, 1));
    let (mut a, mut b, _l) = pair(&world).await;
    // 32 KiB at 64 KiB/s needs at least half a second on the wire.
    world.set_shape(
        0,
        1,
        Some(Shape {
            bandwidth: Some(64 * 1024),
            ..Shape::default()
        }),
    );
    let t = tokio::time::Instant::now();
    let data = vec![7u8; 32 * 1024];
    let (w, r) = tokio::join!(a.write_all(&data), read_n(&mut b, data.len()));
    w.unwrap();
    assert_eq!(r, data);
    assert!(t.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn a_silent_crash_tells_the_peer_nothing_until_the_node_restarts() {
    let world = Arc::new(World::new(2, 1));
    let (mut a, b, l) = pair(&world).await;
    world.crash(1, true);
    drop(b);
    drop(l);
    // The peer's writes vanish and its reads see neither data nor end of stream.
    a.write_all(b"into the void").await.unwrap();
    let mut buf = [0u8; 1];
    assert!(tokio::time::timeout(QUIET, a.read(&mut buf)).await.is_err());
    // After a restart the next segment is answered with a reset.
    world.restart(1);
    let _ = a.write_all(b"hello?").await;
    let n = a.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_loud_crash_resets_connections_at_once() {
    let world = Arc::new(World::new(2, 1));
    let (mut a, _b, _l) = pair(&world).await;
    world.crash(1, false);
    let mut buf = [0u8; 1];
    assert_eq!(a.read(&mut buf).await.unwrap_or(0), 0);
}

#[tokio::test]
async fn a_reset_ends_connections_between_groups() {
    let world = Arc::new(World::new(2, 1));
    let (mut a, mut b, _l) = pair(&world).await;
    assert_eq!(world.reset(&[0], &[1]), 1);
    let mut buf = [0u8; 1];
    assert_eq!(a.read(&mut buf).await.unwrap_or(0), 0);
    assert_eq!(b.read(&mut buf).await.unwrap_or(0), 0);
}

#[tokio::test]
async fn the_connection_limit_refuses_dials_except_to_servers() {
    let world = Arc::new(World::new(3, 1));
    world.limit_connections(Some(1), &[2]);
    let (_a, _b, _l) = pair(&world).await;
    let mut d = SimTransport::new(world.clone(), 0);
    let second = d.dial(addr(7), opts()).unwrap().await;
    assert!(second.is_err());
    let mut server = SimTransport::new(world.clone(), 2);
    server.listen_on(ListenerId::next(), addr(9)).unwrap();
    let _ = futures::future::poll_fn(|cx| std::pin::Pin::new(&mut server).poll(cx)).await;
    assert!(d.dial(addr(9), opts()).unwrap().await.is_ok());
}

#[tokio::test]
async fn dials_to_nobody_or_foreign_addresses_fail() {
    let world = Arc::new(World::new(2, 1));
    let mut d = SimTransport::new(world.clone(), 0);
    assert!(d.dial(addr(42), opts()).unwrap().await.is_err());
    let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    assert!(d.dial(tcp, opts()).is_err());
    let circuit: Multiaddr =
        "/memory/7/p2p/12D3KooWDDu1ypdJvERHxX7Le8P32dFQ3nZH9b47Vrsbt1V1zEqq/p2p-circuit"
            .parse()
            .unwrap();
    assert!(d.dial(circuit, opts()).is_err());
}
