//! The CI scenarios: each runs the real btd node core for 9–40 nodes with faults and must pass
//! every invariant. They run one at a time (the lock below; under nextest they are also in the
//! `netsim` test group, see `.config/nextest.toml`) on a 2-worker runtime, like a 2-core machine.
//! A failure prints the report and the seed; replay with `NETSIM_SEED=<seed>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use btd_netsim::{effective_seed, scenarios_dir, Scenario};

/// Scenario runs must not overlap: each one uses the whole (2-core) machine.
static ALONE: Mutex<()> = Mutex::new(());

fn run(name: &str) {
    let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let path = scenarios_dir().join(format!("{name}.toml"));
    let s = Scenario::load(&path).unwrap();
    let seed = effective_seed(&s).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(btd_netsim::run(&s, seed))
        .unwrap_or_else(|e| panic!("{e:#}"));
    rt.shutdown_background();
    println!("{report}");
    assert!(
        report.passed,
        "scenario {name} failed (seed {seed}; replay with NETSIM_SEED={seed}):\n{report}"
    );
}

#[test]
fn owner_crash_and_restart_mid_workload() {
    run("owner-crash");
}

#[test]
fn partition_heals_and_members_converge() {
    run("partition-heal");
}

#[test]
fn non_members_and_revoked_members_get_no_kb_content() {
    run("kb-gating");
}

#[test]
fn fake_and_val_trained_claims_are_caught_and_honest_ones_verify() {
    run("adversaries");
}

#[test]
fn hostile_peers_attacking_at_once_get_nothing_and_the_owner_keeps_serving() {
    run("hostile");
}

#[test]
fn connections_stay_within_the_daemons_own_bound() {
    run("conn-bound");
}
