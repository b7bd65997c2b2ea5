//! Validators: each returns every problem it finds, with a path rooted at the object's kind
//! (`decision`, `rung`, `policy`, `packet`, `point`, `map`).
//!
//! What is left to boundedness (semantics §4 rule 3, see [`ComputePacket::unbounded_reasons`]) is not
//! a validation problem: a packet may be valid yet unbounded (no stop condition, no required
//! outputs, no wall-clock or step budget, no spend cap on a paid rung).

use std::collections::BTreeMap;

use super::{
    Budget, ComputePacket, ComputePoint, Decision, Policy, ProjectComputeMap, Rung, SpendClass,
};
use crate::trace::problem::{
    at, check_amount, check_finite, check_id, check_names, check_text, index, Problem,
};

impl Decision {
    /// Every problem with this decision (empty when valid).
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.validate_at("decision", &mut out);
        out
    }

    pub(crate) fn validate_at(&self, path: &str, out: &mut Vec<Problem>) {
        check_id(out, at(path, "id"), &self.id);
        check_text(out, at(path, "question"), &self.question);
        check_names(out, &at(path, "required_outputs"), &self.required_outputs);
    }
}

impl Rung {
    /// Every problem with this rung (empty when valid).
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.validate_at("rung", &mut out);
        out
    }

    pub(crate) fn validate_at(&self, path: &str, out: &mut Vec<Problem>) {
        check_id(out, at(path, "id"), &self.id);
        check_text(out, at(path, "label"), &self.label);
    }
}

impl Policy {
    /// Every problem with this policy (empty when valid).
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.validate_at("policy", &mut out);
        out
    }

    pub(crate) fn validate_at(&self, path: &str, out: &mut Vec<Problem>) {
        let paid = at(path, "paid");
        let approved = at(&paid, "approved_rungs");
        for (i, id) in self.paid.approved_rungs.iter().enumerate() {
            check_id(out, index(&approved, i), id);
        }
        if let Some(cap) = self.paid.max_spend_per_packet {
            check_amount(out, at(&paid, "max_spend_per_packet"), cap);
        }
        if let Some(cap) = self.paid.max_total_spend {
            check_amount(out, at(&paid, "max_total_spend"), cap);
        }
    }
}

impl Budget {
    /// Every problem with this budget (empty when valid), rooted at `budget`.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.validate_at("budget", &mut out);
        out
    }

    pub(crate) fn validate_at(&self, path: &str, out: &mut Vec<Problem>) {
        if let Some(cap) = self.spend_cap {
            check_amount(out, at(path, "spend_cap"), cap);
        }
    }

    /// Whether it limits wall-clock time or steps (a limit of 0 does not count).
    pub fn has_time_or_step_limit(&self) -> bool {
        self.wall_clock_secs.is_some_and(|s| s > 0) || self.steps.is_some_and(|s| s > 0)
    }
}

fn check_success_bar(out: &mut Vec<Problem>, path: &str, bar: &BTreeMap<String, f64>) {
    for (name, value) in bar {
        let entry = format!("{path}[{name:?}]");
        if name.trim().is_empty() {
            out.push(Problem::new(entry.clone(), "bar name must not be empty"));
        }
        check_finite(out, entry, *value);
    }
}

impl ComputePacket {
    /// Every problem with this packet (empty when valid). Boundedness is checked separately, by
    /// [`ComputePacket::unbounded_reasons`].
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.validate_at("packet", &mut out);
        out
    }

    pub(crate) fn validate_at(&self, path: &str, out: &mut Vec<Problem>) {
        check_id(out, at(path, "id"), &self.id);
        check_id(out, at(path, "decision_id"), &self.decision_id);
        check_id(out, at(path, "rung_id"), &self.rung_id);
        check_text(out, at(path, "question"), &self.question);
        check_success_bar(out, &at(path, "success_bar"), &self.success_bar);
        check_names(out, &at(path, "required_outputs"), &self.required_outputs);
        self.budget.validate_at(&at(path, "budget"), out);
    }

    /// Why this packet is not bounded on a rung of `spend_class` (empty when it is), in words.
    ///
    /// Bounded (semantics §4 rule 3) = a non-empty question, a non-empty stop condition, at least
    /// one required output, a wall-clock and/or step budget above zero, and, on a paid rung, a spend
    /// cap.
    pub fn unbounded_reasons(&self, spend_class: SpendClass) -> Vec<String> {
        let mut out = Vec::new();
        if self.question.trim().is_empty() {
            out.push("it has no question (set packet.question)".to_owned());
        }
        if self.stop_condition.trim().is_empty() {
            out.push("it has no stop condition (set packet.stop_condition)".to_owned());
        }
        if self.required_outputs.is_empty() {
            out.push(
                "it requires no outputs (list at least one in packet.required_outputs)".to_owned(),
            );
        }
        if !self.budget.has_time_or_step_limit() {
            out.push(
                "it has no wall-clock or step limit (set packet.budget.wall_clock_secs or \
                 packet.budget.steps above 0)"
                    .to_owned(),
            );
        }
        if spend_class == SpendClass::PaidMetered && self.budget.spend_cap.is_none() {
            out.push(
                "it runs on a paid rung without a spend cap (set packet.budget.spend_cap)"
                    .to_owned(),
            );
        }
        out
    }

    /// Whether this packet is bounded on a rung of `spend_class`.
    pub fn is_bounded(&self, spend_class: SpendClass) -> bool {
        self.unbounded_reasons(spend_class).is_empty()
    }
}

impl ComputePoint {
    /// Every problem with this point on its own (empty when valid). Whether its rungs exist is
    /// checked by [`ProjectComputeMap::validate`].
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.validate_at("point", &mut out);
        out
    }

    pub(crate) fn validate_at(&self, path: &str, out: &mut Vec<Problem>) {
        check_id(out, at(path, "id"), &self.id);
        check_text(out, at(path, "label"), &self.label);
        check_text(out, at(path, "question"), &self.question);
        check_id(out, at(path, "default_rung_id"), &self.default_rung_id);
        let permitted = at(path, "permitted_rung_ids");
        for (i, id) in self.permitted_rung_ids.iter().enumerate() {
            check_id(out, index(&permitted, i), id);
        }
        if !self.default_rung_id.is_empty()
            && !self.permitted_rung_ids.contains(&self.default_rung_id)
        {
            out.push(Problem::new(
                at(path, "default_rung_id"),
                format!(
                    "default rung {:?} is not in permitted_rung_ids; add it there or pick a \
                     permitted rung as the default",
                    self.default_rung_id
                ),
            ));
        }
        check_names(out, &at(path, "required_outputs"), &self.required_outputs);
        let stops = at(path, "stop_conditions");
        for (i, stop) in self.stop_conditions.iter().enumerate() {
            if stop.trim().is_empty() {
                out.push(Problem::new(
                    index(&stops, i),
                    "must not be empty; remove it or say when to stop",
                ));
            }
        }
        self.budget.validate_at(&at(path, "budget"), out);
    }
}

impl ProjectComputeMap {
    /// Every problem with this map (empty when valid): its own fields, each rung, the default
    /// policy, each point, unique rung and point ids, and every rung a point names exists here.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        self.validate_at("map", &mut out);
        out
    }

    pub(crate) fn validate_at(&self, path: &str, out: &mut Vec<Problem>) {
        check_id(out, at(path, "project_id"), &self.project_id);
        check_text(out, at(path, "label"), &self.label);
        let rungs = at(path, "rungs");
        for (i, rung) in self.rungs.iter().enumerate() {
            let here = index(&rungs, i);
            rung.validate_at(&here, out);
            if let Some(first) = self
                .rungs
                .iter()
                .position(|r| r.id == rung.id)
                .filter(|&j| j < i)
            {
                out.push(Problem::new(
                    at(&here, "id"),
                    format!(
                        "rung id {:?} is already used by {rungs}[{first}]; rung ids must be unique",
                        rung.id
                    ),
                ));
            }
        }
        self.default_policy
            .validate_at(&at(path, "default_policy"), out);
        let points = at(path, "compute_points");
        for (i, point) in self.compute_points.iter().enumerate() {
            let here = index(&points, i);
            point.validate_at(&here, out);
            if let Some(first) = self
                .compute_points
                .iter()
                .position(|p| p.id == point.id)
                .filter(|&j| j < i)
            {
                out.push(Problem::new(
                    at(&here, "id"),
                    format!(
                        "point id {:?} is already used by {points}[{first}]; point ids must be \
                         unique",
                        point.id
                    ),
                ));
            }
            if !point.default_rung_id.is_empty() && self.rung(&point.default_rung_id).is_none() {
                out.push(Problem::new(
                    at(&here, "default_rung_id"),
                    self.unknown_rung_message(&point.default_rung_id),
                ));
            }
            let permitted = at(&here, "permitted_rung_ids");
            for (j, id) in point.permitted_rung_ids.iter().enumerate() {
                if !id.is_empty() && self.rung(id).is_none() {
                    out.push(Problem::new(
                        index(&permitted, j),
                        self.unknown_rung_message(id),
                    ));
                }
            }
        }
    }

    fn unknown_rung_message(&self, id: &str) -> String {
        format!(
            "names rung {id:?}, which is not in this map's rungs (known: {}); add the rung or fix \
             the id",
            self.rung_ids().join(", ")
        )
    }

    /// The rung with this id, if the map has one.
    pub fn rung(&self, id: &str) -> Option<&Rung> {
        self.rungs.iter().find(|r| r.id == id)
    }

    /// The compute point with this id, if the map has one.
    pub fn point(&self, id: &str) -> Option<&ComputePoint> {
        self.compute_points.iter().find(|p| p.id == id)
    }

    /// The ids of the map's rungs, in order.
    pub fn rung_ids(&self) -> Vec<String> {
        self.rungs.iter().map(|r| r.id.clone()).collect()
    }

    /// The ids of the map's compute points, in order.
    pub fn point_ids(&self) -> Vec<String> {
        self.compute_points.iter().map(|p| p.id.clone()).collect()
    }
}
