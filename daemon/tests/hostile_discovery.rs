//! Discovery lock-out (issue #13, item 6), on real in-process nodes: the test plays peers that flood
//! validly signed program announcements (one key, and many throwaway keys) and put forged records
//! into the DHT, and checks that an honest node still discovers and joins a freshly published
//! program, with its known-program table, database and DHT store bounded, also after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use btd::store::Store;
use btd::testkit::{join_approved, spawn_node, wait_for, wait_known, TestNode, TestNodeOptions};
use btd_protocol::discovery::{MAX_PROGRAMS_PER_OWNER, MAX_UNPINNED_PROGRAMS};
use btd_protocol::program::{Program, ProgramId};
use btd_protocol::signed::Signed;
use btd_protocol::wire::{self, ProgramAnnouncement};
use btd_protocol::Timestamp;
use libp2p::identity::Keypair;

const T: Duration = Duration::from_secs(20);

/// The cap every node had before: a table of 10,000 programs refused every new one.
const OLD_CAP: usize = 10_000;

/// A program that needs no files on its owner; `name` makes each one a distinct program.
fn manifest(name: &str) -> String {
    btd::testkit::shell_manifest(name, "approval")
}

/// A validly signed announcement of program `name` by `key`: its id and its wire bytes.
fn announcement(key: &Keypair, name: &str, published_at: Timestamp) -> (ProgramId, Vec<u8>) {
    let manifest = manifest(name);
    let id = ProgramId::compute(&Program::from_toml(&manifest).unwrap(), &key.public());
    let signed = Signed::sign(
        key,
        &ProgramAnnouncement {
            manifest,
            addresses: Vec::new(),
            published_at,
        },
    )
    .unwrap();
    (id, wire::encode(&signed).unwrap())
}

fn now() -> Timestamp {
    Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

async fn node(store: Store, bootstrap: Option<&TestNode>, key: Option<Keypair>) -> TestNode {
    spawn_node(
        store,
        TestNodeOptions {
            key,
            bootstrap: bootstrap
                .map(|b| b.dial_addr().unwrap())
                .into_iter()
                .collect(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Programs `node` knows, per owner.
async fn per_owner(node: &TestNode) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for p in node.handle.programs().await.unwrap() {
        *out.entry(p.owner).or_default() += 1;
    }
    out
}

/// Waits until the store holds exactly the programs the node knows (its writes have landed), and
/// returns that number.
async fn stored_programs(node: &TestNode, store: &Store) -> usize {
    wait_for(T, "the store to match the known programs", || async {
        let known = node.handle.programs().await.ok()?.len();
        let stored = store.read(btd::store::count_programs).await.ok()?;
        (known == stored).then_some(stored)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_signed_announcements_cannot_lock_out_a_fresh_program() {
    let store = Store::open_in_memory().unwrap();
    let victim = node(store.clone(), None, None).await;
    let owner = node(Store::open_in_memory().unwrap(), Some(&victim), None).await;

    // One key floods more validly signed programs than the old cap; then throwaway keys, one
    // program each, more than the table holds. Fed the way gossip hands them to the node.
    let flooder = Keypair::generate_ed25519();
    let at = now();
    for n in 0..OLD_CAP + 50 {
        let (_, bytes) = announcement(&flooder, &format!("flood-{n}"), at);
        victim
            .handle
            .inject_announcement(None, bytes)
            .await
            .unwrap();
    }
    for n in 0..MAX_UNPINNED_PROGRAMS + 100 {
        let key = Keypair::generate_ed25519();
        let (_, bytes) = announcement(&key, &format!("sybil-{n}"), at);
        victim
            .handle
            .inject_announcement(None, bytes)
            .await
            .unwrap();
    }
    let counts = per_owner(&victim).await;
    let flooder_id = flooder.public().to_peer_id().to_string();
    assert!(counts.get(&flooder_id).copied().unwrap_or(0) <= MAX_PROGRAMS_PER_OWNER);
    let known = counts.values().sum::<usize>();
    assert!(known <= MAX_UNPINNED_PROGRAMS, "{known} programs known");
    assert!(stored_programs(&victim, &store).await <= MAX_UNPINNED_PROGRAMS);

    // A freshly published honest program is still discovered, over real gossip, and joined.
    let program = owner.handle.publish(manifest("honest")).await.unwrap();
    wait_known(&victim.handle, program, T).await.unwrap();
    join_approved(&owner.handle, &victim.handle, program, T)
        .await
        .unwrap();

    // Another wave of throwaway keys, a full table's worth: the joined program is pinned and stays.
    for n in 0..MAX_UNPINNED_PROGRAMS + 10 {
        let key = Keypair::generate_ed25519();
        let (_, bytes) = announcement(&key, &format!("wave-{n}"), now());
        victim
            .handle
            .inject_announcement(None, bytes)
            .await
            .unwrap();
    }
    let list = victim.handle.programs().await.unwrap();
    assert!(list.iter().any(|p| p.id == program && p.member));
    assert!(
        list.len() <= MAX_UNPINNED_PROGRAMS + 1,
        "{} programs",
        list.len()
    );
    assert!(stored_programs(&victim, &store).await <= MAX_UNPINNED_PROGRAMS + 1);

    // After a restart the restored table is bounded too, and still holds the joined program.
    let key = victim.key.clone();
    victim.stop().await;
    let victim = node(store.clone(), Some(&owner), Some(key)).await;
    let list = victim.handle.programs().await.unwrap();
    assert!(list.iter().any(|p| p.id == program && p.member));
    assert!(
        list.len() <= MAX_UNPINNED_PROGRAMS + 1,
        "{} restored",
        list.len()
    );
    assert!(stored_programs(&victim, &store).await <= MAX_UNPINNED_PROGRAMS + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_flooding_over_gossip_keeps_at_most_its_cap() {
    let victim = node(Store::open_in_memory().unwrap(), None, None).await;
    let hostile = node(Store::open_in_memory().unwrap(), Some(&victim), None).await;
    let extra = MAX_PROGRAMS_PER_OWNER + 8;
    let at = now();
    // Published by the hostile node itself (gossip author = signer), in order on one connection.
    let mut last = None;
    for n in 0..extra {
        let (id, bytes) = announcement(&hostile.key, &format!("gossip-flood-{n}"), at);
        wait_for(T, "a subscribed peer", || {
            let (h, b) = (hostile.handle.clone(), bytes.clone());
            async move { h.raw_gossip(btd::net::Topic::Programs, b).await.ok() }
        })
        .await
        .unwrap();
        last = Some(id);
    }
    // The last one arrives last (one connection, messages in order) and is the newest: kept.
    wait_known(&victim.handle, last.unwrap(), T).await.unwrap();
    let counts = per_owner(&victim).await;
    let held = counts[&hostile.peer_id().to_string()];
    assert_eq!(held, MAX_PROGRAMS_PER_OWNER, "{held} of {extra} kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_dht_records_are_not_stored_but_valid_ones_are() {
    let victim = node(Store::open_in_memory().unwrap(), None, None).await;
    let hostile = node(Store::open_in_memory().unwrap(), Some(&victim), None).await;
    // Wait until the hostile node's DHT knows the victim (identify adds it).
    let (valid_id, valid) = announcement(&hostile.key, "dht-valid", now());
    // Garbage under a random key.
    let junk_key = vec![7u8; 32];
    wait_for(T, "a DHT peer", || {
        let h = hostile.handle.clone();
        let k = junk_key.clone();
        async move {
            h.raw_put_record(k, b"not an announcement".to_vec())
                .await
                .ok()
        }
    })
    .await
    .unwrap();
    // A valid announcement under another program's key (poisoning a lookup for that program).
    let other = Keypair::generate_ed25519();
    let (other_id, _) = announcement(&other, "dht-valid", now());
    hostile
        .handle
        .raw_put_record(other_id.0.as_bytes().to_vec(), valid.clone())
        .await
        .unwrap();
    // A correctly signed announcement under its own id, timestamped in the future.
    let (future_id, future) = announcement(
        &hostile.key,
        "dht-future",
        Timestamp::from_millis(now().as_millis() + 3_600_000),
    );
    hostile
        .handle
        .raw_put_record(future_id.0.as_bytes().to_vec(), future)
        .await
        .unwrap();
    // The valid record under its own id.
    hostile
        .handle
        .raw_put_record(valid_id.0.as_bytes().to_vec(), valid.clone())
        .await
        .unwrap();

    // The victim acknowledged every put; it kept only the valid one (and learned the program).
    let (got, _) = victim.handle.local_record(junk_key).await.unwrap();
    assert_eq!(got, None, "garbage stored");
    let (got, _) = victim
        .handle
        .local_record(other_id.0.as_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(got, None, "a record under another program's id stored");
    let (got, _) = victim
        .handle
        .local_record(future_id.0.as_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(got, None, "a future-dated announcement stored");
    let (got, _) = victim
        .handle
        .local_record(valid_id.0.as_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(valid.as_slice()));
    wait_known(&victim.handle, valid_id, T).await.unwrap();

    // A flood of valid records from one key: the DHT store keeps only what the table holds.
    for n in 0..MAX_PROGRAMS_PER_OWNER + 8 {
        let (id, bytes) = announcement(&hostile.key, &format!("dht-flood-{n}"), now());
        hostile
            .handle
            .raw_put_record(id.0.as_bytes().to_vec(), bytes)
            .await
            .unwrap();
    }
    let (_, records) = victim.handle.local_record(Vec::new()).await.unwrap();
    assert!(records <= MAX_PROGRAMS_PER_OWNER, "{records} records kept");
}

/// Checking an offered DHT record costs a signature check and a manifest parse, so offers share
/// the offering peer's request budget: a peer offering records from throwaway keys as fast as it
/// can gets at most the budget's burst plus its refill checked and kept (all 300 before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dht_record_offers_share_the_peers_request_budget() {
    let victim = node(Store::open_in_memory().unwrap(), None, None).await;
    let hostile = node(Store::open_in_memory().unwrap(), Some(&victim), None).await;
    let params = btd::testkit::test_params(false);
    let offers = 300;
    let records: Vec<(ProgramId, Vec<u8>)> = (0..offers)
        .map(|n| announcement(&Keypair::generate_ed25519(), &format!("offer-{n}"), now()))
        .collect();
    let started = std::time::Instant::now();
    for (id, bytes) in records {
        hostile
            .handle
            .raw_put_record(id.0.as_bytes().to_vec(), bytes)
            .await
            .unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (_, kept) = victim.handle.local_record(Vec::new()).await.unwrap();
    let budget = params.rate_burst + params.rate_per_sec * elapsed;
    assert!(
        budget < f64::from(offers),
        "the offers took too long ({elapsed:.1} s) to test the budget"
    );
    assert!(
        kept as f64 <= budget,
        "{kept} of {offers} offers kept in {elapsed:.1} s (budget {budget:.0})"
    );
    assert!(kept > 0, "no offer kept at all");
}
