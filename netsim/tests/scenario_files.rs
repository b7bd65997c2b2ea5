//! Scenario parsing and validation, and node selectors: every shipped scenario loads, mistakes are
//! reported with what to fix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use btd_netsim::roles::{Layout, Role};
use btd_netsim::scenario::Fault;
use btd_netsim::{scenarios_dir, Scenario};

const MINIMAL: &str = r#"
name = "t"
seed = 1
[nodes]
relays = 1
workers = 4
revoked = 1
non_members = 2
observers = 3
"#;

#[test]
fn every_shipped_scenario_loads() {
    let mut n = 0;
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 4, "expected the shipped scenarios, found {n}");
}

#[test]
fn layout_and_selectors() {
    let s = Scenario::parse(MINIMAL, "inline").unwrap();
    assert_eq!(s.node_count(), 12);
    let l = Layout::new(&s);
    assert_eq!(l.role(0), Role::Owner);
    assert_eq!(l.role(1), Role::Relay);
    assert_eq!(l.with_role(Role::Worker), vec![2, 3, 4, 5]);
    assert_eq!(l.select("worker:1").unwrap(), vec![3]);
    assert_eq!(l.select("worker:1..3").unwrap(), vec![3, 4]);
    assert_eq!(l.select("owner, revoked").unwrap(), vec![0, 6]);
    assert_eq!(l.select("members").unwrap(), vec![2, 3, 4, 5, 6]);
    assert_eq!(l.select("non_members").unwrap(), vec![7, 8]);
    assert_eq!(l.select("all").unwrap().len(), 12);
    assert_eq!(l.label(4), "worker:2");
    assert!(l.select("worker:4").unwrap_err().contains("out of range"));
    assert!(l.select("wizards").unwrap_err().contains("unknown"));
}

#[test]
fn timeline_events_parse_strictly() {
    let ok = format!(
        "{MINIMAL}\n[[timeline]]\nat_ms = 10\nfault = \"crash\"\nnodes = \"owner\"\n\n\
         [[timeline]]\nat_ms = 20\nfault = \"heal\"\n"
    );
    let s = Scenario::parse(&ok, "inline").unwrap();
    assert!(matches!(
        s.timeline[0].fault,
        Fault::Crash { silent: true, .. }
    ));
    assert!(matches!(s.timeline[1].fault, Fault::Heal));

    let typo =
        format!("{MINIMAL}\n[[timeline]]\nat_ms = 10\nfault = \"crash\"\nnode = \"owner\"\n");
    let e = Scenario::parse(&typo, "inline").unwrap_err().to_string();
    assert!(e.contains("node"), "{e}");

    let order = format!(
        "{MINIMAL}\n[[timeline]]\nat_ms = 20\nfault = \"heal\"\n\n\
         [[timeline]]\nat_ms = 10\nfault = \"heal\"\n"
    );
    let e = Scenario::parse(&order, "inline").unwrap_err().to_string();
    assert!(e.contains("before the previous event"), "{e}");

    let sel =
        format!("{MINIMAL}\n[[timeline]]\nat_ms = 10\nfault = \"crash\"\nnodes = \"worker:9\"\n");
    let e = Scenario::parse(&sel, "inline").unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn inconsistent_scenarios_are_refused() {
    let err = |text: &str| Scenario::parse(text, "x").unwrap_err().to_string();
    let unknown = MINIMAL.replace("seed = 1", "seed = 1\ncolour = \"blue\"");
    assert!(err(&unknown).contains("colour"));
    let unreachable = "name = \"t\"\nseed = 1\n[nodes]\nworkers = 2\nunreachable_workers = 1\n";
    assert!(err(unreachable).contains("relay"));
    let no_threshold = format!("{MINIMAL}\n[program]\naccept = \"threshold\"\n");
    assert!(err(&no_threshold).contains("manifest"));
    let source = format!("{MINIMAL}\n[workload]\nsource = \"candle\"\n");
    assert!(err(&source).contains("synthetic"));
    // Adversaries need real training, and at least one honest worker.
    let cheats = "name = \"t\"\nseed = 1\n[nodes]\nworkers = 2\nfake_metric = 1\n";
    assert!(err(cheats).contains("train"));
    let all_cheats = format!("{cheats}val_trainers = 1\n[workload]\nsource = \"train\"\n");
    assert!(err(&all_cheats).contains("honest"));
    let ok = format!("{cheats}[workload]\nsource = \"train\"\n");
    let s = Scenario::parse(&ok, "x").unwrap();
    let manifest = s.program.manifest(&s.name, &s.workload);
    assert!(manifest.contains("kind = \"candle\"") && manifest.contains("[verify]"));
}
