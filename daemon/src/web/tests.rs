//! What the dashboard's pages say, from KB answers built by hand.
#![allow(clippy::unwrap_used)]

use btd_protocol::kb::{Check, Entry};
use btd_protocol::program::{Program, ProgramId};
use btd_protocol::wire::{KbStatus, LedgerItem, VerifiedProgram};
use btd_protocol::Timestamp;

use super::view::{PeerRow, ProgramPage};
use crate::node::types::PeerView;

fn program(direction: &str, stop: &str) -> VerifiedProgram {
    let manifest = crate::testkit::shell_manifest("view", "open").replace(
        "direction = \"minimize\"",
        &format!("direction = \"{direction}\""),
    ) + stop;
    let program = Program::from_toml(&manifest).unwrap();
    VerifiedProgram {
        id: ProgramId(btd_protocol::Digest([7; 32])),
        owner: libp2p_identity::PeerId::random(),
        program,
        manifest,
        addresses: Vec::new(),
        published_at: Timestamp::from_millis(1_000_000),
    }
}

fn item(seq: u64, worker: &str, rung: &str, value: f64, check: Check) -> LedgerItem {
    LedgerItem {
        entry: Entry {
            seq,
            worker: worker.into(),
            value,
            accepted: !matches!(check, Check::Failed(_)),
            champion: false,
            impact: 0.0,
            check,
        },
        created_at: Timestamp::from_millis(seq * 1000),
        rung_id: rung.into(),
        hypothesis: Default::default(),
        code: None,
    }
}

fn status(submissions: u64, champion: Option<Entry>) -> KbStatus {
    KbStatus {
        program: ProgramId(btd_protocol::Digest([7; 32])),
        name: "view".into(),
        members: 2,
        submissions,
        accepted: 0,
        pending: 0,
        verified: 0,
        rejected: 0,
        champion,
        payouts: Default::default(),
        pool: btd_protocol::kb::Amount::from_whole_tokens(100).unwrap(),
        token: "OBOL".into(),
    }
}

fn items() -> Vec<LedgerItem> {
    vec![
        item(1, "alice", "h100", 3.0, Check::Verified),
        item(2, "bob", "rtx4090", 3.5, Check::Verified),
        item(3, "bob", "rtx4090", 3.2, Check::Pending),
        // A doctored claim: the best value, rejected by the check; it never ranks.
        item(
            4,
            "mallory",
            "h100",
            0.1,
            Check::Failed("metric did not reproduce".into()),
        ),
        item(5, "alice", "rtx4090", 3.4, Check::NotNeeded),
    ]
}

#[test]
fn leaderboards_rank_per_rung_and_never_count_rejected_claims() {
    let page = ProgramPage::build(
        &program("minimize", ""),
        Ok((status(5, None), items())),
        Timestamp::from_millis(9_000),
    );
    assert!(page.readable);
    let rungs: Vec<Option<&str>> = page
        .leaderboards
        .iter()
        .map(|b| b.rung.as_deref())
        .collect();
    assert_eq!(rungs, [None, Some("h100"), Some("rtx4090")]);
    let names = |i: usize| -> Vec<(String, f64, &'static str)> {
        page.leaderboards[i]
            .rows
            .iter()
            .map(|r| (r.worker.clone(), r.best, r.check))
            .collect()
    };
    assert_eq!(
        names(0),
        [
            ("alice".into(), 3.0, "verified"),
            ("bob".into(), 3.2, "pending")
        ]
    );
    assert_eq!(names(1), [("alice".into(), 3.0, "verified")]);
    // On the 4090, alice's unchecked 3.4 beats bob's verified 3.5 and shows as unchecked.
    assert_eq!(
        names(2),
        [("bob".into(), 3.2, "pending"), ("alice".into(), 3.4, "-")]
    );
    let mallory = page.members.iter().find(|m| m.worker == "mallory").unwrap();
    assert_eq!((mallory.results, mallory.rejected), (1, 1));
    let reason = page.results.iter().find(|r| r.seq == 4).unwrap();
    assert_eq!(reason.reason.as_deref(), Some("metric did not reproduce"));
    assert_eq!(reason.rung, "h100");
}

#[test]
fn a_maximised_metric_ranks_the_highest_first() {
    let page = ProgramPage::build(
        &program("maximize", ""),
        Ok((status(5, None), items())),
        Timestamp::from_millis(0),
    );
    let best: Vec<f64> = page.leaderboards[0].rows.iter().map(|r| r.best).collect();
    assert_eq!(best, [3.5, 3.4]);
}

#[test]
fn a_refused_read_shows_the_announcement_and_why_only() {
    let page = ProgramPage::build(
        &program("minimize", ""),
        Err("this node neither owns nor is a member".into()),
        Timestamp::from_millis(0),
    );
    assert!(!page.readable);
    assert_eq!(page.program.name, "view");
    assert!(page.status.is_none() && page.results.is_empty() && page.leaderboards.is_empty());
    let json = serde_json::to_string(&page).unwrap();
    assert!(json.contains("neither owns nor is a member"), "{json}");
}

#[test]
fn stop_conditions_report_their_progress() {
    let stop = "[stop]\nmax_submissions = 20\ntarget = 2.0\n";
    let champion = Entry {
        seq: 1,
        worker: "alice".into(),
        value: 3.5,
        accepted: true,
        champion: true,
        impact: 1.5,
        check: Check::Verified,
    };
    // Baseline 5 (the test manifest's), target 2, champion 3.5: half way.
    let page = ProgramPage::build(
        &program("minimize", stop),
        Ok((status(5, Some(champion)), items())),
        Timestamp::from_millis(0),
    );
    let s: Vec<(String, f64, bool)> = page
        .stop
        .iter()
        .map(|s| (s.what.clone(), s.progress, s.reached))
        .collect();
    assert_eq!(s[0], ("5 of 20 submissions".into(), 0.25, false));
    assert!(s[1].0.contains("target val_bpb <= 2"), "{s:?}");
    assert!((s[1].1 - 0.5).abs() < 1e-9 && !s[1].2, "{s:?}");
}

#[test]
fn a_peer_reached_only_through_a_circuit_is_relayed() {
    let peer = |addrs: &[&str]| {
        PeerRow::of(PeerView {
            peer_id: "p".into(),
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
            agent: None,
            rungs: Vec::new(),
        })
        .connection
    };
    assert_eq!(peer(&["/ip4/1.2.3.4/tcp/1/p2p/R/p2p-circuit"]), "relayed");
    assert_eq!(
        peer(&["/ip4/1.2.3.4/tcp/1/p2p/R/p2p-circuit", "/ip4/5.6.7.8/tcp/2"]),
        "direct"
    );
    assert_eq!(peer(&["/ip4/5.6.7.8/udp/2/quic-v1"]), "direct");
}
