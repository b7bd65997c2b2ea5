//! `choose_rung`: which program rung a worker's advertised rungs run on.

use super::*;
use crate::program::Program;
use crate::wire::AdvertisedRung;

/// A shell program with an admitted CPU rung, an admitted paid H100 rung and a local RTX 4090 rung
/// the owner has not admitted.
fn program() -> Program {
    Program::from_toml(
        r#"
name = "p"
objective = "q"
required_outputs = ["metrics.json"]
[criteria]
metric = "val_bpb"
direction = "minimize"
accept = "beats-champion"
[reward]
pool = 100
token = "OBOL"
split = "by-impact"
[task]
kind = "shell"
command = "echo val_bpb: 1.0"
timeout_secs = 60
[[rungs]]
id = "cpu"
spend_class = "local_unmetered"
hardware = "cpu"
[[rungs]]
id = "paid-h100"
spend_class = "paid_metered"
hardware = "h100"
[[rungs]]
id = "local-4090"
spend_class = "local_unmetered"
hardware = "rtx4090"
admitted = false
"#,
    )
    .unwrap()
}

fn mine(id: &str, hardware: HardwareClass, spend_class: SpendClass) -> AdvertisedRung {
    AdvertisedRung {
        id: id.into(),
        hardware,
        spend_class,
        detail: String::new(),
    }
}

fn cpu() -> AdvertisedRung {
    mine("my-cpu", HardwareClass::Cpu, SpendClass::LocalUnmetered)
}

/// The ids of the chosen (program rung, node rung).
fn chosen(local: &[AdvertisedRung], wanted: Option<&str>) -> (String, String) {
    let (rung, l) = choose_rung(&program(), local, wanted).unwrap();
    (rung.id, l.id)
}

#[test]
fn a_match_by_hardware_and_spend_class_beats_an_earlier_match_by_hardware_alone() {
    // This node's own H100 comes first in its config, but the program lists H100s only as paid.
    let own_h100 = mine("own-h100", HardwareClass::H100, SpendClass::LocalUnmetered);
    assert_eq!(
        chosen(&[own_h100, cpu()], None),
        ("cpu".into(), "my-cpu".into())
    );
}

#[test]
fn without_an_exact_match_a_hardware_match_is_used_even_when_paid() {
    let own_h100 = mine("own-h100", HardwareClass::H100, SpendClass::LocalUnmetered);
    let (rung, l) = choose_rung(&program(), &[own_h100], None).unwrap();
    assert_eq!((rung.id.as_str(), l.id.as_str()), ("paid-h100", "own-h100"));
    assert_eq!(rung.spend_class, SpendClass::PaidMetered);
}

#[test]
fn the_first_matching_rung_in_config_order_wins() {
    let rented = mine("rented", HardwareClass::H100, SpendClass::PaidMetered);
    assert_eq!(
        chosen(&[rented.clone(), cpu()], None),
        ("paid-h100".into(), "rented".into())
    );
    assert_eq!(
        chosen(&[cpu(), rented], None),
        ("cpu".into(), "my-cpu".into())
    );
}

#[test]
fn rungs_the_owner_has_not_admitted_are_never_chosen_by_default() {
    let gpu = mine("gpu", HardwareClass::Rtx4090, SpendClass::LocalUnmetered);
    assert_eq!(
        chosen(&[gpu.clone(), cpu()], None),
        ("cpu".into(), "my-cpu".into())
    );
    let e = choose_rung(&program(), &[gpu], None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no admitted rung of the program matches this node's hardware (gpu (Rtx4090, \
         LocalUnmetered)); the program admits cpu (Cpu), paid-h100 (H100)"
    );
}

#[test]
fn a_named_rung_is_used_when_this_node_has_its_hardware() {
    let gpu = mine("gpu", HardwareClass::Rtx4090, SpendClass::LocalUnmetered);
    // Named, even a rung the owner has not admitted is chosen: dispatch then holds its packet.
    assert_eq!(
        chosen(&[cpu(), gpu], Some("local-4090")),
        ("local-4090".into(), "gpu".into())
    );
    assert_eq!(
        choose_rung(&program(), &[cpu()], Some("paid-h100")).unwrap_err(),
        RungChoiceError::Hardware {
            rung: "paid-h100".into(),
            hardware: HardwareClass::H100,
            advertised: "my-cpu (Cpu, LocalUnmetered)".into(),
        }
    );
    assert_eq!(
        choose_rung(&program(), &[cpu()], Some("paid-h100"))
            .unwrap_err()
            .to_string(),
        "program rung \"paid-h100\" needs H100 hardware; this node advertises my-cpu (Cpu, \
         LocalUnmetered)"
    );
}

#[test]
fn an_unknown_rung_name_lists_the_programs_rungs() {
    let e = choose_rung(&program(), &[cpu()], Some("tpu")).unwrap_err();
    assert!(matches!(e, RungChoiceError::Unknown(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "program has no rung \"tpu\"; its rungs are: cpu, paid-h100, local-4090"
    );
}

#[test]
fn a_node_without_rungs_matches_nothing() {
    let e = choose_rung(&program(), &[], None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no admitted rung of the program matches this node's hardware (); the program admits cpu \
         (Cpu), paid-h100 (H100)"
    );
}
