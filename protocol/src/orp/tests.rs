#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use super::*;
use crate::dispatch::{Action, Budget, ComputePacket, DispatchResult, Reason, SpendClass};
use crate::kb::Check;
use crate::trace::{
    ApprovalReceipt, BundleStatus, ImpactRead, NextAction, Output, ResultBundle, RunState,
};
use crate::wire::SubmitReceipt;
use crate::Timestamp;

const PROGRAM: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn packet() -> ComputePacket {
    ComputePacket {
        id: "demo:cpu".into(),
        decision_id: "demo".into(),
        rung_id: "cpu".into(),
        question: "lowest score".into(),
        success_bar: BTreeMap::new(),
        stop_condition: "budget".into(),
        required_outputs: vec!["output.log".into()],
        budget: Budget {
            wall_clock_secs: Some(20),
            ..Budget::default()
        },
    }
}

fn dispatch(action: Action, reason: Reason) -> DispatchResult {
    DispatchResult {
        action,
        reason,
        detail: "the policy says so".into(),
        decision_id: "demo".into(),
        packet_id: "demo:cpu".into(),
        rung_id: "cpu".into(),
        spend_class: SpendClass::LocalUnmetered,
        required_outputs: vec!["output.log".into()],
    }
}

fn bundle(status: BundleStatus) -> ResultBundle {
    ResultBundle::new(
        "demo:cpu",
        vec![Output::of("output.log", b"score: 5\n")],
        status,
        BTreeMap::from([("score".to_string(), 5.0)]),
    )
}

fn receipt(check: Check, accepted: bool) -> SubmitReceipt {
    SubmitReceipt {
        seq: 7,
        accepted,
        champion: accepted,
        impact: 1.0,
        check,
        duplicate: false,
    }
}

struct Round {
    state: RunState,
    dispatch: DispatchResult,
    bundle: Option<ResultBundle>,
    verdict: Option<SubmitReceipt>,
    impact: Option<ImpactRead>,
}

fn submitted(check: Check, accepted: bool) -> Round {
    let b = bundle(BundleStatus::Completed);
    let v = receipt(check, accepted);
    Round {
        state: RunState::Submitted,
        dispatch: dispatch(Action::RunLocal, Reason::LocalAllowed),
        impact: Some(ImpactRead::from_receipt(&b, "score", 5.0, &v)),
        bundle: Some(b),
        verdict: Some(v),
    }
}

fn held(action: Action, reason: Reason) -> Round {
    Round {
        state: RunState::Held,
        dispatch: dispatch(action, reason),
        bundle: None,
        verdict: None,
        impact: None,
    }
}

fn export(r: &Round) -> OrpExport {
    export_with(r, None)
}

fn export_with(r: &Round, approval: Option<&ApprovalReceipt>) -> OrpExport {
    let packet = packet();
    let outputs: Vec<String> = r
        .bundle
        .iter()
        .map(|_| "/runs/abc/round-00003/output.log".to_string())
        .collect();
    let input = RoundInput {
        program: PROGRAM,
        round: 3,
        member: "12D3KooWmember",
        state: r.state,
        started_at: Timestamp::from_millis(1_700_000_000_000),
        finished_at: Some(Timestamp::from_millis(1_700_000_002_500)),
        packet: &packet,
        dispatch: &r.dispatch,
        approval,
        parent_seq: Some(4),
        metric: "score",
        value: r.bundle.as_ref().map(|_| 5.0),
        bundle: r.bundle.as_ref(),
        verdict: r.verdict.as_ref(),
        impact: r.impact.as_ref(),
        trace: None,
        output_paths: &outputs,
        note: "score: 5",
    };
    export_round(
        &input,
        &ExportPlace {
            round_dir: "/runs/abc/round-00003",
            out_dir: "/runs/abc/round-00003/orp/",
            created_at: Timestamp::from_millis(1_700_000_010_000),
            tool_version: "0.1.0",
            command: "btd join PROGRAM --rounds 3",
        },
    )
    .unwrap()
}

fn statuses(p: &OrpPacket) -> Vec<GateStatus> {
    p.gates.iter().map(|g| g.status).collect()
}

#[test]
fn dispatch_verdicts_map_to_gates_as_orps_compute_wrapper_does() {
    let cases = [
        (Action::RunLocal, Reason::LocalAllowed, GateStatus::Pass, 0),
        (
            Action::RunPaid,
            Reason::ApprovalReceipt,
            GateStatus::Pass,
            0,
        ),
        (Action::HoldPacket, Reason::OverBudget, GateStatus::Fail, 1),
        (
            Action::RequestPaidApproval,
            Reason::ApprovalRequired,
            GateStatus::Skipped,
            0,
        ),
    ];
    for (action, reason, status, code) in cases {
        let g = dispatch_gate(&dispatch(action, reason), "btd policy explain");
        assert_eq!((g.status, g.exit_code), (status, code), "{action:?}");
        assert_eq!(g.gate_id, "cpu");
        assert_eq!(g.phase, Phase::ScopeLock);
        assert_eq!(g.command, "btd policy explain");
        let note = g.evidence_note.unwrap();
        assert!(note.contains("the policy says so"), "{note}");
        if action == Action::RequestPaidApproval {
            assert!(note.contains("waits for paid approval"), "{note}");
        }
    }
    let v = serde_json::to_value(dispatch_gate(
        &dispatch(Action::HoldPacket, Reason::OverBudget),
        "x",
    ))
    .unwrap();
    assert_eq!(v["status"], "fail");
    assert_eq!(v["phase"], "scope_lock");
    assert_eq!(v["evidence_status"], "process_only");
    assert!(v["evidence_note"]
        .as_str()
        .unwrap()
        .starts_with("hold_packet (over_budget)"));
}

#[test]
fn a_verified_accepted_round_passes_every_gate_and_is_accepted() {
    let e = export(&submitted(Check::Verified, true));
    let p = &e.packet;
    assert_eq!(p.packet_id, "pkt-btd-0123456789ab-round-00003");
    assert_eq!(p.run.run_id, "btd-0123456789ab-round-00003");
    assert_eq!(statuses(p), [GateStatus::Pass; 3]);
    assert_eq!(p.summary.overall_result, OverallResult::Pass);
    assert_eq!((p.summary.gates_passed, p.summary.gates_failed), (3, 0));
    assert_eq!(p.lifecycle.workflow_state, WorkflowState::Accepted);
    assert_eq!(p.lifecycle.claim_status, Some(ClaimStatus::Verified));
    assert_eq!(p.lifecycle.atom_status, Some(AtomStatus::Done));
    assert_eq!(p.gates[2].gate_id, CHECK_GATE_ID);
    assert_eq!(p.gates[2].phase, Phase::Verification);
    assert_eq!(p.gates[1].duration_ms, 2500);
    assert_eq!(p.run.duration_ms, 2500);
    assert_eq!(p.run.started_at_utc, "2023-11-14T22:13:20Z");
    assert_eq!(p.run.ended_at_utc, "2023-11-14T22:13:22Z");
    assert_eq!(p.created_at_utc, "2023-11-14T22:13:30Z");
    assert_eq!(
        p.run.deterministic_input_hash,
        format!("sha256:{}", packet().content_digest())
    );
    assert_eq!(p.atomic_context.board_id, PROGRAM);
    assert_eq!(p.atomic_context.problem_id, "demo");
    assert_eq!(p.atomic_context.atom_id, "round-00003");
    assert_eq!(p.atomic_context.dependencies, ["seq-4"]);

    // The packet, its summary, then one file per evidence object, each linked from its gate.
    let dir = "/runs/abc/round-00003/orp";
    let paths: Vec<&str> = e.files.iter().map(|f| f.path.as_str()).collect();
    let pid = &p.packet_id;
    assert_eq!(
        paths,
        [
            format!("{dir}/{pid}.json"),
            format!("{dir}/{pid}.md"),
            format!("{dir}/{pid}.result-bundle.json"),
            format!("{dir}/{pid}.impact-read.json"),
        ]
    );
    assert_eq!(p.artifacts.packet_json_path, paths[0]);
    assert_eq!(p.artifacts.packet_md_path, paths[1]);
    assert_eq!(
        p.gates[1].evidence_paths,
        [paths[2], "/runs/abc/round-00003/output.log"]
    );
    assert_eq!(p.gates[2].evidence_paths, [paths[3]]);
    assert!(p
        .protocol_boundary
        .evidence_paths
        .contains(&paths[2].to_string()));
    // The evidence files hold the objects themselves.
    let b: ResultBundle = serde_json::from_str(&e.files[2].contents).unwrap();
    assert_eq!(Some(b), submitted(Check::Verified, true).bundle);
    let json: OrpPacket = serde_json::from_str(&e.files[0].contents).unwrap();
    assert_eq!(&json, p);
    let md = &e.files[1].contents;
    assert!(
        md.contains("**PASS** (3 of 3 gates passed, 0 failed)"),
        "{md}"
    );
    assert!(md.contains("accepted / Verified"), "{md}");
}

#[test]
fn a_paid_rounds_approval_receipt_is_evidence_of_its_dispatch_gate() {
    let key = libp2p_identity::Keypair::generate_ed25519();
    let receipt = ApprovalReceipt::issue(
        &key,
        "demo:cpu",
        "cpu",
        Timestamp::from_millis(0),
        Timestamp::from_secs(3600),
        2.0,
    )
    .unwrap();
    let mut r = submitted(Check::Verified, true);
    r.dispatch = dispatch(Action::RunPaid, Reason::ApprovalReceipt);
    let e = export_with(&r, Some(&receipt));
    let g = &e.packet.gates[0];
    assert_eq!(g.status, GateStatus::Pass);
    let path = format!(
        "/runs/abc/round-00003/orp/{}.approval-receipt.json",
        e.packet.packet_id
    );
    assert_eq!(g.evidence_paths, [path.as_str()]);
    let file = e.files.iter().find(|f| f.path == path).unwrap();
    let back: ApprovalReceipt = serde_json::from_str(&file.contents).unwrap();
    assert_eq!(back.id(), receipt.id());
    assert!(e.packet.protocol_boundary.evidence_paths.contains(&path));
}

#[test]
fn a_rejected_claim_blocks_the_round_with_the_owners_reason() {
    let e = export(&submitted(
        Check::Failed("metric did not reproduce: claimed 5, measured 50".into()),
        false,
    ));
    let p = &e.packet;
    assert_eq!(
        statuses(p),
        [GateStatus::Pass, GateStatus::Pass, GateStatus::Fail]
    );
    assert_eq!(p.gates[2].exit_code, 1);
    let note = p.gates[2].evidence_note.as_deref().unwrap();
    assert!(note.contains("metric did not reproduce"), "{note}");
    assert_eq!(p.summary.overall_result, OverallResult::Fail);
    assert_eq!((p.summary.gates_passed, p.summary.gates_failed), (2, 1));
    assert_eq!(p.lifecycle.workflow_state, WorkflowState::Blocked);
    assert_eq!(p.lifecycle.claim_status, Some(ClaimStatus::Blocked));

    // Not accepted by the KEEP rule (nothing to check): also blocked, with the impact read's words.
    let p = export(&submitted(Check::NotNeeded, false)).packet;
    assert_eq!(p.gates[2].status, GateStatus::Fail);
    let note = p.gates[2].evidence_note.as_deref().unwrap();
    assert!(note.contains("not accepted"), "{note}");
    assert_eq!(p.lifecycle.workflow_state, WorkflowState::Blocked);
}

#[test]
fn a_pending_check_is_in_review_and_inconclusive() {
    let p = export(&submitted(Check::Pending, true)).packet;
    assert_eq!(p.gates[2].status, GateStatus::Skipped);
    assert_eq!(p.summary.overall_result, OverallResult::Inconclusive);
    assert_eq!(p.lifecycle.workflow_state, WorkflowState::Reviewed);
    assert_eq!(p.lifecycle.claim_status, Some(ClaimStatus::InReview));
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["lifecycle"]["claim_status"], "In review");
    assert_eq!(v["summary"]["overall_result"], "INCONCLUSIVE");
    assert_eq!(v["kind"], "problem_scope");

    // Accepted where the program checks nothing: accepted, with no claim status.
    let p = export(&submitted(Check::NotNeeded, true)).packet;
    assert_eq!(p.summary.overall_result, OverallResult::Pass);
    assert_eq!(p.lifecycle.workflow_state, WorkflowState::Accepted);
    assert_eq!(p.lifecycle.claim_status, None);
}

#[test]
fn held_rounds_fail_at_dispatch_and_a_paid_approval_wait_is_inconclusive() {
    let e = export(&held(Action::HoldPacket, Reason::OverBudget));
    let p = &e.packet;
    assert_eq!(
        statuses(p),
        [GateStatus::Fail, GateStatus::Skipped, GateStatus::Skipped]
    );
    assert_eq!(p.summary.overall_result, OverallResult::Fail);
    assert_eq!(p.lifecycle.workflow_state, WorkflowState::Blocked);
    assert_eq!(p.lifecycle.atom_status, Some(AtomStatus::Blocked));
    // Nothing ran: only the packet and its summary are written, no evidence objects.
    assert_eq!(e.files.len(), 2);
    assert!(p.protocol_boundary.evidence_paths.is_empty());
    assert!(p.gates.iter().all(|g| g.evidence_paths.is_empty()));

    let p = export(&held(Action::RequestPaidApproval, Reason::ApprovalRequired)).packet;
    assert_eq!(
        statuses(&p),
        [
            GateStatus::Skipped,
            GateStatus::Skipped,
            GateStatus::Skipped
        ]
    );
    assert_eq!(p.summary.overall_result, OverallResult::Inconclusive);
    assert_eq!(p.lifecycle.workflow_state, WorkflowState::Blocked);
}

#[test]
fn failed_runs_fail_or_error_at_the_run_gate() {
    let mut r = submitted(Check::Pending, true);
    r.state = RunState::Failed;
    r.verdict = None;
    r.bundle = Some(bundle(BundleStatus::TimedOut));
    r.impact = Some(ImpactRead::new(
        r.bundle.as_ref().unwrap().id,
        NextAction::Rerun,
        "the run produced no score",
    ));
    let p = export(&r).packet;
    assert_eq!(
        statuses(&p),
        [GateStatus::Pass, GateStatus::Fail, GateStatus::Skipped]
    );
    assert!(p.gates[1]
        .evidence_note
        .as_deref()
        .unwrap()
        .starts_with("timed out"));
    assert_eq!(p.summary.overall_result, OverallResult::Fail);
    assert_eq!(p.lifecycle.workflow_state, WorkflowState::Blocked);
    assert_eq!(p.gates[1].exit_code, 1);

    // A shell round keeps its command's exit status: that is the gate's exit code.
    let failed = ResultBundle::new(
        "demo:cpu",
        vec![Output::of("output.log", b"")],
        BundleStatus::Failed,
        BTreeMap::from([("exit_code".to_string(), 3.0)]),
    );
    r.bundle = Some(failed);
    assert_eq!(export(&r).packet.gates[1].exit_code, 3);

    // Failed before a bundle (e.g. the round's directory could not be made): an error, code 2.
    r.bundle = None;
    r.impact = None;
    let p = export(&r).packet;
    assert_eq!(p.gates[1].status, GateStatus::Error);
    assert_eq!(p.gates[1].exit_code, 2);
    assert_eq!(p.summary.gates_failed, 1);
}

#[test]
fn times_are_rfc3339_utc_and_ids_stay_in_orps_alphabet() {
    let mut r = submitted(Check::Verified, true);
    r.state = RunState::Running;
    let packet = packet();
    let input = RoundInput {
        program: "not hex/with spaces",
        round: 1,
        member: "m",
        state: r.state,
        started_at: Timestamp::from_millis(u64::MAX),
        finished_at: None,
        packet: &packet,
        dispatch: &r.dispatch,
        approval: None,
        parent_seq: None,
        metric: "score",
        value: None,
        bundle: None,
        verdict: None,
        impact: None,
        trace: None,
        output_paths: &[],
        note: "line one\nline two",
    };
    let e = export_round(
        &input,
        &ExportPlace {
            round_dir: "d",
            out_dir: "",
            created_at: Timestamp::from_millis(0),
            tool_version: "0.1.0",
            command: "c",
        },
    )
    .unwrap();
    let p = e.packet;
    assert_eq!(p.packet_id, "pkt-btd-not-hex-with-round-00001");
    assert_eq!(p.created_at_utc, "1970-01-01T00:00:00Z");
    assert_eq!(p.run.started_at_utc, "9999-12-31T23:59:59Z");
    assert_eq!(
        p.artifacts.packet_json_path,
        "pkt-btd-not-hex-with-round-00001.json"
    );
    // Running: a draft, its run gate skipped; control characters never reach a note.
    assert_eq!(p.lifecycle.workflow_state, WorkflowState::Draft);
    assert_eq!(p.gates[1].status, GateStatus::Skipped);
    assert!(!p.lifecycle.state_note.unwrap().contains('\n'));
    assert!(p.atomic_context.dependencies.is_empty());
}
