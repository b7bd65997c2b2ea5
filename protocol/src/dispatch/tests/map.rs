//! `ProjectComputeMap::packet_for_point`.

use super::*;

#[test]
fn default_rung_builds_a_dispatchable_packet() {
    let m = map();
    let pd = m
        .packet_for_point("adult-vs-developmental-rgc-opponent", None)
        .unwrap();
    assert_eq!(pd.decision.id, "adult-vs-developmental-rgc-opponent");
    assert_eq!(pd.decision.question, pd.point.question);
    assert_eq!(pd.rung, local_rung());
    assert_eq!(pd.policy, m.default_policy);
    assert_eq!(
        pd.packet.id,
        "adult-vs-developmental-rgc-opponent:local-4090-scout"
    );
    assert_eq!(pd.packet.decision_id, pd.decision.id);
    assert_eq!(pd.packet.rung_id, "local-4090-scout");
    assert_eq!(
        pd.packet.stop_condition,
        "Hold if the signal tracks protocol more than biology.; Stop after one holdout pass."
    );
    assert_eq!(pd.packet.required_outputs, pd.point.required_outputs);
    assert_eq!(pd.packet.budget, pd.point.budget);
    assert_eq!(pd.packet.validate(), vec![]);
    let r = evaluate_dispatch(&pd.input(None, &[], 0.0, NOW));
    assert_eq!(
        (r.action, r.reason),
        (Action::RunLocal, Reason::LocalAllowed)
    );
    // Deterministic.
    assert_eq!(
        m.packet_for_point("adult-vs-developmental-rgc-opponent", None)
            .unwrap(),
        pd
    );
}

#[test]
fn named_paid_rung_requests_approval() {
    let pd = map()
        .packet_for_point("adult-vs-developmental-rgc-opponent", Some("h100-transfer"))
        .unwrap();
    assert_eq!(
        pd.packet.id,
        "adult-vs-developmental-rgc-opponent:h100-transfer"
    );
    let r = evaluate_dispatch(&pd.input(None, &[], 0.0, NOW));
    assert_eq!(
        (r.action, r.reason),
        (Action::RequestPaidApproval, Reason::ApprovalRequired)
    );
    let rec = receipt(&pd.packet, &pd.rung, 25.0);
    let r = evaluate_dispatch(&pd.input(Some(&rec), &trusted(), 0.0, NOW));
    assert_eq!(
        (r.action, r.reason),
        (Action::RunPaid, Reason::ApprovalReceipt)
    );
}

#[test]
fn rung_in_map_but_not_permitted_is_held_by_dispatch() {
    let mut m = map();
    m.compute_points[0].permitted_rung_ids = vec!["local-4090-scout".into()];
    let pd = m
        .packet_for_point("adult-vs-developmental-rgc-opponent", Some("h100-transfer"))
        .unwrap();
    let r = evaluate_dispatch(&pd.input(None, &[], 0.0, NOW));
    assert_eq!(r.reason, Reason::RungNotAdmitted);
}

#[test]
fn unknown_ids_name_the_known_ones() {
    let m = map();
    let err = m.packet_for_point("nope", None).unwrap_err();
    assert!(matches!(err, MapError::UnknownPoint { .. }));
    let text = err.to_string();
    assert!(
        text.contains("\"nope\"") && text.contains("adult-vs-developmental-rgc-opponent"),
        "{text}"
    );
    let err = m
        .packet_for_point("adult-vs-developmental-rgc-opponent", Some("a100"))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"a100\"") && text.contains("local-4090-scout, h100-transfer"),
        "{text}"
    );
}

#[test]
fn invalid_map_is_refused_with_every_problem() {
    let mut m = map();
    m.project_id.clear();
    m.rungs[1].label.clear();
    let err = m
        .packet_for_point("adult-vs-developmental-rgc-opponent", None)
        .unwrap_err();
    let MapError::InvalidMap(problems) = &err else {
        panic!("expected InvalidMap, got {err:?}");
    };
    assert_eq!(problems.0.len(), 2);
    assert!(err.to_string().contains("map.rungs[1].label"), "{err}");
}

#[test]
fn long_ids_fall_back_to_a_hashed_packet_id() {
    let point_id = "p".repeat(100);
    let rung_id = "r".repeat(100);
    let id = crate::dispatch::map::point_packet_id(&point_id, &rung_id);
    assert!(id.starts_with("packet:") && id.len() == 7 + 64, "{id}");
    assert_eq!(
        id,
        crate::dispatch::map::point_packet_id(&point_id, &rung_id)
    );
    assert_ne!(id, crate::dispatch::map::point_packet_id(&point_id, "r"));
    assert_eq!(crate::dispatch::map::point_packet_id("a", "b"), "a:b");
}
