//! Validators: every problem, with paths and actionable messages.

use super::*;

fn paths(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.path.as_str()).collect()
}

#[test]
fn fixtures_are_valid() {
    assert_eq!(decision().validate(), vec![]);
    assert_eq!(local_rung().validate(), vec![]);
    assert_eq!(policy().validate(), vec![]);
    assert_eq!(packet(&decision(), &paid_rung()).validate(), vec![]);
    assert_eq!(point(&[&local_rung()]).validate(), vec![]);
    assert_eq!(map().validate(), vec![]);
}

#[test]
fn id_rules() {
    let mut d = decision();
    d.id = String::new();
    let p = d.validate();
    assert_eq!(paths(&p), ["decision.id"]);
    assert!(p[0].message.contains("must not be empty"), "{}", p[0]);

    d.id = "a".repeat(MAX_ID_BYTES);
    assert_eq!(d.validate(), vec![]);
    d.id.push('a');
    let p = d.validate();
    assert!(p[0].message.contains("128-byte limit"), "{}", p[0]);

    d.id = "has space/and slash".into();
    let p = d.validate();
    assert_eq!(p.len(), 1);
    assert!(
        p[0].message.contains("' '") && p[0].message.contains("'/'"),
        "{}",
        p[0]
    );
    assert!(p[0].message.contains("A-Z a-z 0-9 . _ : -"), "{}", p[0]);
    assert_eq!(
        p[0].to_string(),
        format!("decision.id: {}", p[0].message),
        "Display is path: message"
    );

    d.id = "Ok.id_with:all-chars09".into();
    assert_eq!(d.validate(), vec![]);
}

#[test]
fn packet_lists_every_problem() {
    let mut p = packet(&decision(), &local_rung());
    p.id = String::new();
    p.decision_id = "bad id".into();
    p.rung_id = "é".into();
    p.question = "   ".into();
    p.success_bar.insert("auroc_min".into(), f64::NAN);
    p.required_outputs = vec!["a".into(), String::new(), "a".into()];
    p.budget.spend_cap = Some(-1.0);
    let problems = p.validate();
    assert_eq!(
        paths(&problems),
        [
            "packet.id",
            "packet.decision_id",
            "packet.rung_id",
            "packet.question",
            "packet.success_bar[\"auroc_min\"]",
            "packet.required_outputs[1]",
            "packet.required_outputs[2]",
            "packet.budget.spend_cap",
        ]
    );
    assert!(
        problems[6].message.contains("already at [0]"),
        "{}",
        problems[6]
    );
    assert!(problems[7].message.contains("0 or more"), "{}", problems[7]);
    // Boundedness is not validity.
    let mut q = packet(&decision(), &local_rung());
    q.stop_condition.clear();
    q.budget = Budget::default();
    assert_eq!(q.validate(), vec![]);
}

#[test]
fn policy_problems() {
    let mut p = policy();
    p.paid.approved_rungs = vec![String::new(), "ok".into()];
    p.paid.max_spend_per_packet = Some(f64::INFINITY);
    p.paid.max_total_spend = Some(-0.5);
    assert_eq!(
        paths(&p.validate()),
        [
            "policy.paid.approved_rungs[0]",
            "policy.paid.max_spend_per_packet",
            "policy.paid.max_total_spend",
        ]
    );
}

#[test]
fn rung_and_decision_text() {
    let mut r = local_rung();
    r.label = String::new();
    r.id = "x y".into();
    assert_eq!(paths(&r.validate()), ["rung.id", "rung.label"]);
    let mut d = decision();
    d.question = "\n".into();
    d.required_outputs.push("metrics.csv".into());
    assert_eq!(
        paths(&d.validate()),
        ["decision.question", "decision.required_outputs[2]"]
    );
}

#[test]
fn point_problems() {
    let mut p = point(&[&local_rung()]);
    p.default_rung_id = "h100-transfer".into();
    p.permitted_rung_ids.push(String::new());
    p.stop_conditions.push(" ".into());
    p.label.clear();
    let problems = p.validate();
    assert_eq!(
        paths(&problems),
        [
            "point.label",
            "point.permitted_rung_ids[1]",
            "point.default_rung_id",
            "point.stop_conditions[2]",
        ]
    );
    assert!(
        problems[2].message.contains("not in permitted_rung_ids"),
        "{}",
        problems[2]
    );
}

#[test]
fn map_problems() {
    let mut m = map();
    m.rungs.push(local_rung());
    let mut second = m.compute_points[0].clone();
    second.permitted_rung_ids.push("ghost".into());
    second.default_rung_id = "phantom".into();
    second.permitted_rung_ids.push("phantom".into());
    m.compute_points.push(second);
    m.default_policy.paid.max_total_spend = Some(f64::NAN);
    let problems = m.validate();
    assert_eq!(
        paths(&problems),
        [
            "map.rungs[2].id",
            "map.default_policy.paid.max_total_spend",
            "map.compute_points[1].id",
            "map.compute_points[1].default_rung_id",
            "map.compute_points[1].permitted_rung_ids[2]",
            "map.compute_points[1].permitted_rung_ids[3]",
        ]
    );
    assert!(problems[0].message.contains("unique"), "{}", problems[0]);
    assert!(
        problems[3].message.contains("\"phantom\"")
            && problems[3]
                .message
                .contains("local-4090-scout, h100-transfer"),
        "{}",
        problems[3]
    );
}

#[test]
fn problems_as_error() {
    assert_eq!(Problems::check(vec![]), Ok(()));
    let err = Problems::check(decision_with_two_problems()).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("2 problems: decision.id: "), "{text}");
    assert!(
        text.contains("; decision.question: must not be empty"),
        "{text}"
    );
    let json = serde_json::to_string(&err).unwrap();
    assert!(
        json.starts_with("[{\"path\":\"decision.id\",\"message\":"),
        "{json}"
    );
}

fn decision_with_two_problems() -> Vec<Problem> {
    let mut d = decision();
    d.id.clear();
    d.question.clear();
    d.validate()
}
