use super::*;

fn conn(n: usize) -> ConnectionId {
    ConnectionId::new_unchecked(n)
}

fn peers(n: usize) -> Vec<PeerId> {
    (0..n).map(|_| PeerId::random()).collect()
}

#[test]
fn trims_the_least_recently_used_peers_not_spared_down_to_the_low_water_mark() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(60);
    // Bound 4, low-water mark 3.
    let mut c = Conns::new(4, false);
    assert_eq!(c.low_water(), 3);
    let p = peers(9);
    for (i, peer) in p.iter().enumerate().take(7) {
        c.established(*peer, conn(i), None, t0 + Duration::from_secs(i as u64));
    }
    // 0 has a request in flight, 1 is protected, 2 was used recently, 3 is a mesh peer,
    // 8 is new.
    c.request_started(p[0], t0);
    c.request_started(p[2], later - Duration::from_secs(1));
    c.request_ended(p[2], later - Duration::from_secs(1));
    c.set_keep(HashSet::from([p[1]]), HashSet::from([p[3]]));
    c.established(p[8], conn(80), None, later);
    let out = c.trim(later);
    // 8 connected, low-water 3: five to close, from the oldest not spared (4, 5, 6) only.
    assert_eq!(out, vec![p[4], p[5], p[6]]);
    // Closing peers are not counted again: once 1 and 3 are no longer spared, two more go.
    assert_eq!(c.counted(), 5);
    c.set_keep(HashSet::new(), HashSet::new());
    assert_eq!(c.trim(later), vec![p[1], p[3]]);
    assert_eq!(c.counted(), 3);
    for (i, peer) in out.iter().enumerate() {
        c.closed(*peer, conn(4 + i));
    }
    assert_eq!(c.peers.len(), 5, "1 and 3 are closing; 0, 2 and 8 stay");
}

#[test]
fn nothing_is_trimmed_at_or_under_the_low_water_mark() {
    let t0 = Instant::now();
    let mut c = Conns::with_grace(4, false, Duration::ZERO);
    for i in 0..3 {
        c.established(PeerId::random(), conn(i), None, t0);
    }
    assert!(!c.full());
    assert!(c.trim(t0 + Duration::from_secs(60)).is_empty());
}

#[test]
fn at_the_bound_new_peers_are_refused_unless_the_node_needs_them() {
    let t0 = Instant::now();
    let mut c = Conns::new(3, false);
    let p = peers(8);
    for (i, peer) in p.iter().enumerate().take(3) {
        assert!(
            c.admit(peer, i % 2 == 0, t0),
            "below the bound everyone gets in"
        );
        c.established(*peer, conn(i), None, t0);
    }
    assert!(c.full());
    // A stranger is refused both ways.
    assert!(!c.admit(&p[3], true, t0));
    assert!(!c.admit(&p[3], false, t0));
    // A second connection to a connected peer counts too: refused at the bound.
    assert!(!c.admit(&p[0], true, t0));
    // A peer with a request in flight, a protected peer, a peer dialled on purpose get in.
    c.request_started(p[4], t0);
    assert!(c.admit(&p[4], false, t0));
    c.set_keep(HashSet::from([p[5]]), HashSet::from([p[6]]));
    assert!(c.admit(&p[5], true, t0));
    assert!(
        !c.admit(&p[6], true, t0),
        "a mesh peer is only spared, not admitted"
    );
    c.want(p[7], t0);
    assert!(c.admit(&p[7], false, t0));
    assert!(
        !c.admit(&p[7], false, t0 + WANT_FOR),
        "an explicit dial is exempt for a while only"
    );
    // A node that serves admits every inbound connection, and still bounds its own dials.
    c.set_serving(true);
    assert!(c.admit(&p[3], true, t0));
    assert!(!c.admit(&p[3], false, t0));
}

#[test]
fn dials_in_flight_count_against_the_bound_until_they_end() {
    let t0 = Instant::now();
    let mut c = Conns::new(2, false);
    let p = peers(3);
    c.dialing(conn(1), p[0]);
    c.dialing(conn(2), p[0]);
    assert_eq!(c.counted(), 2, "two dials may become two connections");
    assert!(c.full());
    assert!(!c.admit(&p[2], false, t0));
    c.dial_failed(conn(2));
    assert!(c.admit(&p[2], false, t0));
    c.established(p[0], conn(1), None, t0);
    assert_eq!(c.counted(), 1, "established replaces the dial");
    c.dialing(conn(3), p[1]);
    c.established(p[1], conn(3), None, t0);
    c.established(p[1], conn(4), None, t0);
    assert_eq!(c.counted(), 3, "connections, not peers");
}

#[test]
fn relays_in_use_and_relayed_for_peers_are_kept() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(60);
    // Bound 1, low-water 1: one of the four may stay.
    let mut c = Conns::with_grace(1, false, Duration::ZERO);
    let [relay, behind, served, other] = [0; 4].map(|_| PeerId::random());
    c.established(relay, conn(1), None, t0);
    c.established(behind, conn(2), Some(relay), t0);
    c.established(served, conn(3), None, t0);
    c.established(other, conn(4), None, t0 + Duration::from_secs(1));
    c.relay_started(served);
    // Three to close; only `behind` and `other` may go.
    let mut out = c.trim(later);
    out.sort();
    let mut want = vec![behind, other];
    want.sort();
    assert_eq!(out, want);
    // Once the relayed connection and the reservation are gone, one of the two goes too.
    c.closed(behind, conn(2));
    c.closed(other, conn(4));
    c.relay_ended(served);
    assert_eq!(c.trim(later).len(), 1);
    assert_eq!(c.counted(), 1);
}

#[test]
fn request_counts_survive_a_peer_not_yet_connected() {
    let t0 = Instant::now();
    let mut c = Conns::with_grace(1, false, Duration::ZERO);
    let [p, q] = [0; 2].map(|_| PeerId::random());
    c.established(q, conn(2), None, t0);
    c.request_started(p, t0);
    c.established(p, conn(1), None, t0);
    // Two connected, low-water 1: only q may go while p's request is in flight.
    assert_eq!(c.trim(t0), vec![q]);
    c.closed(q, conn(2));
    c.request_ended(p, t0);
    c.established(q, conn(3), None, t0);
    let out = c.trim(t0);
    assert_eq!(out.len(), 1);
    c.closed(out[0], if out[0] == p { conn(1) } else { conn(3) });
    assert!(c.requests.is_empty());
    assert_eq!(c.peers.len(), 1);
}

#[test]
fn the_table_of_explicit_dials_is_bounded() {
    let t0 = Instant::now();
    let mut c = Conns::new(8, false);
    for i in 0..1000u64 {
        c.want(PeerId::random(), t0 + Duration::from_secs(i));
    }
    assert!(c.wanted.len() <= 4 * 16, "{}", c.wanted.len());
    // All at once: none has expired, the oldest make room.
    for _ in 0..1000 {
        c.want(PeerId::random(), t0);
    }
    assert!(c.wanted.len() <= 4 * 16, "{}", c.wanted.len());
}

#[test]
fn trimmed_connections_count_against_admission_until_they_are_gone() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(60);
    // Bound 4, low-water mark 3.
    let mut c = Conns::new(4, false);
    let p = peers(7);
    for (i, peer) in p.iter().enumerate().take(4) {
        c.established(*peer, conn(i), None, t0 + Duration::from_secs(i as u64));
    }
    assert_eq!(c.trim(later), vec![p[0]]);
    // The trim closes 0, but until its connection is gone it still holds a slot: a new peer is
    // refused, and the next trim does not close another peer for it.
    assert_eq!((c.counted(), c.open()), (3, 4));
    assert!(!c.admit(&p[5], true, later));
    assert!(c.trim(later).is_empty());
    c.closed(p[0], conn(0));
    assert!(c.admit(&p[5], true, later));
    // A trimmed peer that connects again before its old connection is gone: the new connection
    // is live (counted and trimmable), the old one only open.
    assert_eq!(c.trim(later), Vec::<PeerId>::new());
    c.established(p[4], conn(40), None, later);
    assert_eq!(c.trim(later + Duration::from_secs(60)), vec![p[1]]);
    c.established(p[1], conn(11), None, later + Duration::from_secs(60));
    assert_eq!((c.counted(), c.open()), (4, 5));
    c.closed(p[1], conn(1));
    assert_eq!((c.counted(), c.open()), (4, 4));
    assert_eq!(c.peers[&p[1]].live(), 1);
}

#[test]
fn upkeep_dials_stop_at_the_low_water_mark_unless_a_record_query_runs() {
    let t0 = Instant::now();
    // Bound 8, low-water mark 6.
    let mut c = Conns::new(8, false);
    let p = peers(10);
    for (i, peer) in p.iter().enumerate().take(5) {
        assert!(c.admit(peer, false, t0), "below the mark a dial gets out");
        c.established(*peer, conn(i), None, t0);
    }
    c.dialing(conn(5), p[5]);
    assert_eq!(c.open(), c.low_water());
    // At the mark: Kademlia's upkeep dial is refused, an inbound connection still admitted.
    assert!(!c.admit(&p[6], false, t0));
    assert!(c.admit(&p[6], true, t0));
    // A needed peer is dialled whatever the count.
    c.request_started(p[7], t0);
    assert!(c.admit(&p[7], false, t0));
    // While a lookup or publish runs, its dials go up to the bound, and no further.
    c.set_looking(true);
    assert!(c.admit(&p[6], false, t0));
    c.established(p[6], conn(6), None, t0);
    c.established(p[8], conn(8), None, t0);
    assert!(c.full());
    assert!(!c.admit(&p[9], false, t0));
    c.set_looking(false);
    c.closed(p[8], conn(8));
    assert!(
        !c.admit(&p[9], false, t0),
        "above the mark, with no query, still refused"
    );
}
