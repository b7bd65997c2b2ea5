//! Tests for trace: content ids, validators, receipts and linking.

use std::collections::BTreeMap;

use libp2p_identity::Keypair;

use super::*;
use crate::dispatch::{Budget, ComputePacket, Decision, HardwareClass, Rung, SpendClass};
use crate::wire::codec::{decode, encode};
use crate::Timestamp;

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

fn keypair(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

fn fixed_bundle() -> ResultBundle {
    ResultBundle::new(
        "wave-1",
        vec![
            Output::of("metrics.csv", b"loss,0.5\n"),
            Output::of("run_manifest.json", b"{}"),
        ],
        BundleStatus::Completed,
        BTreeMap::from([("val_bpb".to_owned(), 1.05), ("steps".to_owned(), 1000.0)]),
    )
}

fn decision() -> Decision {
    Decision {
        id: "d1".into(),
        question: "Does it generalize?".into(),
        required_outputs: vec!["metrics.csv".into()],
    }
}

fn rung(class: SpendClass) -> Rung {
    Rung {
        id: "r1".into(),
        label: "Rung one".into(),
        spend_class: class,
        admitted: true,
        hardware: HardwareClass::H100,
    }
}

fn packet() -> ComputePacket {
    ComputePacket {
        id: "wave-1".into(),
        decision_id: "d1".into(),
        rung_id: "r1".into(),
        question: "Does it generalize on the holdout?".into(),
        success_bar: BTreeMap::new(),
        stop_condition: "Stop after one pass.".into(),
        required_outputs: vec!["metrics.csv".into(), "run_manifest.json".into()],
        budget: Budget {
            wall_clock_secs: Some(60),
            steps: None,
            spend_cap: Some(5.0),
        },
    }
}

fn receipt() -> ApprovalReceipt {
    ApprovalReceipt::issue(&keypair(1), "wave-1", "r1", T0, T0.plus_secs(60), 5.0).unwrap()
}

fn impact(bundle: &ResultBundle) -> ImpactRead {
    ImpactRead::new(bundle.id, NextAction::Keep, "Beats the champion; keep it.")
}

fn paths(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.path.as_str()).collect()
}

#[test]
fn result_bundle_id_is_golden() {
    // Changing the encoding or the hashed body changes this on purpose: that is a protocol change.
    // Checked by hand: SHA-256("btd/result-bundle/v1\0" || bincode-standard(packet_id, outputs,
    // status, metrics)), varint lengths, f64 little-endian, digests as 32 raw bytes.
    let b = fixed_bundle();
    assert_eq!(
        b.id.to_hex(),
        "a4f963b855612492ad876656d24c84f392ca798f7f409748a369c134861c6093"
    );
    assert_eq!(b.compute_id(), b.id);
    assert_eq!(b.validate(), vec![]);
}

#[test]
fn every_bundle_field_changes_the_id() {
    let b = fixed_bundle();
    let edits: Vec<fn(&mut ResultBundle)> = vec![
        |b| b.packet_id.push('x'),
        |b| b.outputs[0].name.push('x'),
        |b| b.outputs[0].sha256 = Digest::of(b"other"),
        |b| b.outputs.reverse(),
        |b| {
            b.outputs.pop();
        },
        |b| b.status = BundleStatus::TimedOut,
        |b| {
            b.metrics.insert("val_bpb".into(), 1.06);
        },
        |b| {
            b.metrics.insert("extra".into(), 0.0);
        },
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut c = b.clone();
        edit(&mut c);
        assert_ne!(c.compute_id(), b.id, "edit {i}");
        assert_eq!(paths(&c.validate()), ["bundle.id"], "edit {i}");
    }
}

#[test]
fn impact_read_id_tracks_every_field() {
    let b = fixed_bundle();
    let i = impact(&b);
    assert_eq!(i.compute_id(), i.id);
    assert_eq!(i.validate(), vec![]);
    let mut c = i.clone();
    c.bundle_id = Digest::of(b"x");
    assert_ne!(c.compute_id(), i.id);
    let mut c = i.clone();
    c.next_action = NextAction::Rerun;
    assert_ne!(c.compute_id(), i.id);
    let mut c = i.clone();
    c.summary.push('!');
    assert_ne!(c.compute_id(), i.id);
    c.summary = " ".into();
    c.id = c.compute_id();
    assert_eq!(paths(&c.validate()), ["impact.summary"]);
}

/// The owner's receipt for seq 7 with impact 0.25.
fn submit_receipt(
    check: crate::kb::Check,
    accepted: bool,
    champion: bool,
) -> crate::wire::SubmitReceipt {
    crate::wire::SubmitReceipt {
        seq: 7,
        accepted,
        champion,
        impact: 0.25,
        check,
        duplicate: false,
    }
}

#[test]
fn impact_read_from_receipt_keeps_champions_and_accepted_results_and_discards_the_rest() {
    use crate::kb::Check;
    let b = fixed_bundle();
    let read = |check, accepted, champion| {
        let r = ImpactRead::from_receipt(
            &b,
            "val_bpb",
            1.05,
            &submit_receipt(check, accepted, champion),
        );
        assert_eq!(r.bundle_id, b.id);
        assert_eq!(r.id, r.compute_id());
        assert_eq!(r.validate(), vec![]);
        (r.next_action, r.summary)
    };
    assert_eq!(
        read(Check::Verified, true, true),
        (
            NextAction::Keep,
            "new champion: val_bpb 1.05 (seq 7, impact 0.25); the next rounds search around it"
                .into()
        )
    );
    assert_eq!(
        read(Check::NotNeeded, true, false),
        (
            NextAction::Keep,
            "accepted: val_bpb 1.05 (seq 7, impact 0.25) meets the acceptance rule".into()
        )
    );
    assert_eq!(
        read(Check::NotNeeded, false, false),
        (
            NextAction::Discard,
            "not accepted: val_bpb 1.05 (seq 7) does not beat the reference; the search stays \
             around the champion"
                .into()
        )
    );
}

#[test]
fn impact_read_from_receipt_puts_the_owners_check_before_the_keep_rule() {
    use crate::kb::Check;
    let b = fixed_bundle();
    // Pending: the KEEP rule would accept it (and may already call it champion), but nothing counts
    // until the owner has checked it; the worker keeps it meanwhile.
    let pending = ImpactRead::from_receipt(
        &b,
        "val_bpb",
        1.05,
        &submit_receipt(Check::Pending, true, true),
    );
    assert_eq!(pending.next_action, NextAction::Keep);
    assert!(
        pending
            .summary
            .starts_with("pending: val_bpb 1.05 (seq 7) would count; the owner is checking it"),
        "{}",
        pending.summary
    );
    // Rejected by the check: discarded even if the KEEP rule had accepted it.
    let failed = ImpactRead::from_receipt(
        &b,
        "val_bpb",
        1.05,
        &submit_receipt(Check::Failed("the holdout gap is 0.4".into()), true, true),
    );
    assert_eq!(failed.next_action, NextAction::Discard);
    assert_eq!(
        failed.summary,
        "rejected by the owner's check: val_bpb 1.05 (seq 7): the holdout gap is 0.4"
    );
    assert_ne!(pending.id, failed.id);
}

#[test]
fn bundle_validator_lists_every_problem() {
    let mut b = fixed_bundle();
    b.packet_id = "bad id".into();
    b.outputs.push(Output::of("metrics.csv", b"again"));
    b.outputs.push(Output::of("", b""));
    b.metrics.insert("nan".into(), f64::NAN);
    let problems = b.validate();
    assert_eq!(
        paths(&problems),
        [
            "bundle.packet_id",
            "bundle.outputs[2].name",
            "bundle.outputs[3].name",
            "bundle.metrics[\"nan\"]",
            "bundle.id",
        ]
    );
    assert!(
        problems[1].message.contains("already at [0]"),
        "{}",
        problems[1]
    );
}

#[test]
fn missing_outputs() {
    let b = fixed_bundle();
    let required: Vec<String> = ["metrics.csv", "a.md", "b.md", "a.md"]
        .map(String::from)
        .to_vec();
    assert_eq!(b.missing_outputs(&required), ["a.md", "b.md"]);
    assert!(b.missing_outputs(&[]).is_empty());
}

#[test]
fn serde_round_trips_and_names() {
    let b = fixed_bundle();
    assert_eq!(decode::<ResultBundle>(&encode(&b).unwrap()).unwrap(), b);
    let json = serde_json::to_value(&b).unwrap();
    assert_eq!(json["status"], "completed");
    assert_eq!(json["id"], b.id.to_hex());
    assert_eq!(
        serde_json::to_value(BundleStatus::TimedOut).unwrap(),
        "timed_out"
    );
    assert_eq!(
        serde_json::to_value(NextAction::Escalate).unwrap(),
        "escalate"
    );
    let r = receipt();
    assert_eq!(decode::<ApprovalReceipt>(&encode(&r).unwrap()).unwrap(), r);
    let back: ApprovalReceipt = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.verify(), Ok(()));
}

#[test]
fn receipt_signs_and_verifies() {
    let r = receipt();
    assert_eq!(r.verify(), Ok(()));
    assert_eq!(r.validate(), vec![]);
    assert_eq!(r.approver, keypair(1).public().to_peer_id().to_base58());
    assert_eq!(r.is_valid_for("wave-1", "r1", T0), Ok(()));
    // ed25519 is deterministic, so the same inputs give the same receipt and id.
    assert_eq!(receipt(), r);
    assert_eq!(receipt().id(), r.id());
}

#[test]
fn tampering_with_any_field_breaks_the_receipt() {
    let r = receipt();
    let edits: Vec<fn(&mut ApprovalReceipt)> = vec![
        |r| r.packet_id = "wave-2".into(),
        |r| r.rung_id = "r2".into(),
        |r| r.granted_at = Timestamp::from_millis(0),
        |r| r.expires_at = r.expires_at.plus_secs(3600),
        |r| r.spend_cap = 500.0,
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut t = r.clone();
        edit(&mut t);
        assert_eq!(t.verify(), Err(ReceiptError::BadSignature), "edit {i}");
        assert_ne!(t.id(), r.id(), "edit {i}");
    }
    // Another peer's id as approver.
    let mut t = r.clone();
    t.approver = keypair(2).public().to_peer_id().to_base58();
    assert!(matches!(
        t.verify(),
        Err(ReceiptError::ApproverMismatch { .. })
    ));
    // Another key, and the matching peer id: the signature is not that key's.
    t.approver_public_key = hex::encode(keypair(2).public().encode_protobuf());
    assert_eq!(t.verify(), Err(ReceiptError::BadSignature));
    // Garbage signature and key.
    let mut t = r.clone();
    t.signature = "zz".into();
    assert_eq!(t.verify(), Err(ReceiptError::BadSignature));
    assert!(matches!(
        t.is_valid_for("wave-1", "r1", T0),
        Err(ReceiptError::Invalid(_))
    ));
    let mut t = r.clone();
    t.approver_public_key = "00ff".into();
    assert!(matches!(t.verify(), Err(ReceiptError::BadPublicKey(_))));
}

#[test]
fn receipt_window_and_ids() {
    let r = receipt();
    let end = r.expires_at;
    assert_eq!(
        r.is_valid_for("wave-1", "r1", Timestamp::from_millis(end.as_millis() - 1)),
        Ok(())
    );
    assert_eq!(
        r.is_valid_for("wave-1", "r1", end),
        Err(ReceiptError::Expired {
            expires_at: end,
            now: end
        })
    );
    assert!(matches!(
        r.is_valid_for("wave-1", "r1", Timestamp::from_millis(T0.as_millis() - 1)),
        Err(ReceiptError::NotYetValid { .. })
    ));
    assert!(matches!(
        r.is_valid_for("wave-2", "r1", T0),
        Err(ReceiptError::WrongPacket { .. })
    ));
    assert!(matches!(
        r.is_valid_for("wave-1", "r2", T0),
        Err(ReceiptError::WrongRung { .. })
    ));
}

#[test]
fn issue_rejects_bad_fields_listing_all() {
    let err = ApprovalReceipt::issue(&keypair(1), "", "bad rung", T0, T0, f64::NAN).unwrap_err();
    let ReceiptError::Invalid(problems) = &err else {
        panic!("expected Invalid, got {err:?}");
    };
    assert_eq!(
        paths(&problems.0),
        [
            "receipt.packet_id",
            "receipt.rung_id",
            "receipt.spend_cap",
            "receipt.expires_at",
        ]
    );
}

#[test]
fn link_local_and_paid() {
    let b = fixed_bundle();
    let i = impact(&b);
    let local = rung(SpendClass::LocalUnmetered);
    let rec = TraceabilityRecord::link(&decision(), &local, &packet(), None, &b, &i).unwrap();
    assert_eq!(rec.decision_id, "d1");
    assert_eq!(rec.packet, packet().content_digest());
    assert_eq!(rec.approval_receipt, None);
    assert_eq!(rec.validate(), vec![]);
    assert_eq!(
        rec.validate_against(&decision(), &local, &packet(), None, &b, &i),
        vec![]
    );

    let paid = rung(SpendClass::PaidMetered);
    let r = receipt();
    let rec2 = TraceabilityRecord::link(&decision(), &paid, &packet(), Some(&r), &b, &i).unwrap();
    assert_eq!(rec2.approval_receipt, Some(r.id()));
    assert_ne!(rec2.id, rec.id);
    assert_eq!(
        rec2.validate_against(&decision(), &paid, &packet(), Some(&r), &b, &i),
        vec![]
    );
    assert_eq!(
        decode::<TraceabilityRecord>(&encode(&rec2).unwrap()).unwrap(),
        rec2
    );

    let problems =
        TraceabilityRecord::link(&decision(), &paid, &packet(), None, &b, &i).unwrap_err();
    assert_eq!(paths(&problems), ["receipt"]);
    assert!(problems[0].message.contains("paid"), "{}", problems[0]);
}

#[test]
fn link_lists_every_inconsistency() {
    let mut b = ResultBundle::new(
        "wave-9",
        vec![Output::of("metrics.csv", b"x")],
        BundleStatus::Completed,
        BTreeMap::new(),
    );
    let i = ImpactRead::new(Digest::of(b"another bundle"), NextAction::Hold, "Later.");
    let r = ApprovalReceipt::issue(&keypair(1), "wave-2", "r9", T0, T0.plus_secs(1), 1.0).unwrap();
    let mut p = packet();
    p.decision_id = "d2".into();
    let problems = TraceabilityRecord::link(
        &decision(),
        &rung(SpendClass::PaidMetered),
        &p,
        Some(&r),
        &b,
        &i,
    )
    .unwrap_err();
    assert_eq!(
        paths(&problems),
        [
            "packet.decision_id",
            "bundle.packet_id",
            "impact.bundle_id",
            "receipt.packet_id",
            "receipt.rung_id",
            "bundle.outputs",
        ]
    );
    assert!(
        problems[5].message.contains("run_manifest.json"),
        "{}",
        problems[5]
    );

    // A failed run need not hold every output.
    b.status = BundleStatus::Failed;
    b.packet_id = "wave-1".into();
    b.id = b.compute_id();
    let i = impact(&b);
    assert!(TraceabilityRecord::link(
        &decision(),
        &rung(SpendClass::LocalUnmetered),
        &packet(),
        None,
        &b,
        &i
    )
    .is_ok());
}

#[test]
fn link_rejects_a_tampered_receipt() {
    let b = fixed_bundle();
    let i = impact(&b);
    let mut r = receipt();
    r.spend_cap = 99.0;
    let problems = TraceabilityRecord::link(
        &decision(),
        &rung(SpendClass::PaidMetered),
        &packet(),
        Some(&r),
        &b,
        &i,
    )
    .unwrap_err();
    assert_eq!(paths(&problems), ["receipt.signature"]);
}

#[test]
fn record_ids_and_validate_against() {
    let b = fixed_bundle();
    let i = impact(&b);
    let local = rung(SpendClass::LocalUnmetered);
    let rec = TraceabilityRecord::link(&decision(), &local, &packet(), None, &b, &i).unwrap();
    let edits: Vec<fn(&mut TraceabilityRecord)> = vec![
        |r| r.decision_id.push('x'),
        |r| r.decision = Digest::of(b"1"),
        |r| r.rung = Digest::of(b"2"),
        |r| r.packet = Digest::of(b"3"),
        |r| r.approval_receipt = Some(Digest::of(b"4")),
        |r| r.bundle = Digest::of(b"5"),
        |r| r.impact_read = Digest::of(b"6"),
    ];
    for (n, edit) in edits.iter().enumerate() {
        let mut c = rec.clone();
        edit(&mut c);
        assert_ne!(c.compute_id(), rec.id, "edit {n}");
        assert_eq!(paths(&c.validate()), ["record.id"], "edit {n}");
    }

    // The record checked against different objects says which differ.
    let mut other_packet = packet();
    other_packet.budget.steps = Some(5);
    let mut other_decision = decision();
    other_decision.question = "Another question?".into();
    let problems = rec.validate_against(&other_decision, &local, &other_packet, None, &b, &i);
    assert_eq!(paths(&problems), ["record.decision", "record.packet"]);
    let r = receipt();
    let problems = rec.validate_against(&decision(), &local, &packet(), Some(&r), &b, &i);
    assert_eq!(paths(&problems), ["record.approval_receipt"]);
}

#[test]
fn json_schemas_generate() {
    let schema = schemars::schema_for!(TraceabilityRecord);
    let json = serde_json::to_value(&schema).unwrap();
    assert!(json["properties"]["approval_receipt"].is_object(), "{json}");
    let schema = serde_json::to_value(schemars::schema_for!(ResultBundle)).unwrap();
    assert!(schema.to_string().contains("timed_out"), "{schema}");
    let _ = schemars::schema_for!(ApprovalReceipt);
    let _ = schemars::schema_for!(Problem);
    let _ = schemars::schema_for!(crate::dispatch::PointDispatch);
}
