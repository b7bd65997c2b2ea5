//! Building dispatchable objects from a [`ProjectComputeMap`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    ComputePacket, ComputePoint, Decision, DispatchInput, Policy, ProjectComputeMap, Rung,
};
use crate::trace::problem::MAX_ID_BYTES;
use crate::trace::{ApprovalReceipt, Problems};
use crate::{Digest, Timestamp};

/// Domain tag for the fallback packet id of [`ProjectComputeMap::packet_for_point`].
const POINT_PACKET_ID_DOMAIN: &str = "btd/point-packet-id/v1";

/// Why [`ProjectComputeMap::packet_for_point`] could not build a packet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    /// The map itself has problems.
    #[error("compute map is invalid, {}; fix the map first", .0)]
    InvalidMap(Problems),
    /// No point has this id.
    #[error("compute map {project_id:?} has no point {point_id:?}; known points: {}", list(.known))]
    UnknownPoint {
        /// The map's project id.
        project_id: String,
        /// The id asked for.
        point_id: String,
        /// The ids the map has.
        known: Vec<String>,
    },
    /// No rung has this id.
    #[error("compute map {project_id:?} has no rung {rung_id:?}; known rungs: {}", list(.known))]
    UnknownRung {
        /// The map's project id.
        project_id: String,
        /// The id asked for.
        rung_id: String,
        /// The ids the map has.
        known: Vec<String>,
    },
}

fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(", ")
    }
}

/// The objects that dispatch one compute point on one rung (see
/// [`ProjectComputeMap::packet_for_point`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PointDispatch {
    /// The point.
    pub point: ComputePoint,
    /// Decision built from the point: id = point id, its question and required outputs.
    pub decision: Decision,
    /// The rung chosen (the point's default when none is named).
    pub rung: Rung,
    /// The map's default policy.
    pub policy: Policy,
    /// The packet built from the point.
    pub packet: ComputePacket,
}

impl PointDispatch {
    /// The [`DispatchInput`] for these objects, with the point's permitted rungs in force.
    pub fn input<'a>(
        &'a self,
        approval: Option<&'a ApprovalReceipt>,
        trusted_approvers: &'a [String],
        spent_total: f64,
        now: Timestamp,
    ) -> DispatchInput<'a> {
        DispatchInput {
            decision: &self.decision,
            rung: &self.rung,
            policy: &self.policy,
            packet: &self.packet,
            point: Some(&self.point),
            approval,
            trusted_approvers,
            spent_total,
            now,
        }
    }
}

/// The deterministic id of the packet for `point_id` on `rung_id`: `"<point>:<rung>"`, or, when that
/// would exceed [`MAX_ID_BYTES`], `"packet:"` followed by the hex content id of the pair.
pub(crate) fn point_packet_id(point_id: &str, rung_id: &str) -> String {
    let id = format!("{point_id}:{rung_id}");
    if id.len() <= MAX_ID_BYTES {
        id
    } else {
        format!(
            "packet:{}",
            Digest::content_id(POINT_PACKET_ID_DOMAIN, &(point_id, rung_id))
        )
    }
}

impl ProjectComputeMap {
    /// Builds the decision, rung, policy and packet for dispatching `point_id` on `rung_id` (the
    /// point's default rung when `None`).
    ///
    /// The decision's id is the point id; the packet's id is `"<point>:<rung>"` (`@` is not an id
    /// character; a too-long pair falls back to `"packet:<sha256 hex>"`). The packet takes the
    /// point's question, required outputs and budget, its stop conditions joined with `"; "`, and
    /// an empty success bar. The rung is not checked against the point's permitted rungs here:
    /// [`super::evaluate_dispatch`] does that and says so.
    ///
    /// Fails when the map is invalid (listing every problem) or the point or rung is unknown
    /// (naming the known ids).
    pub fn packet_for_point(
        &self,
        point_id: &str,
        rung_id: Option<&str>,
    ) -> Result<PointDispatch, MapError> {
        Problems::check(self.validate()).map_err(MapError::InvalidMap)?;
        let point = self.point(point_id).ok_or_else(|| MapError::UnknownPoint {
            project_id: self.project_id.clone(),
            point_id: point_id.to_owned(),
            known: self.point_ids(),
        })?;
        let rung_id = rung_id.unwrap_or(&point.default_rung_id);
        let rung = self.rung(rung_id).ok_or_else(|| MapError::UnknownRung {
            project_id: self.project_id.clone(),
            rung_id: rung_id.to_owned(),
            known: self.rung_ids(),
        })?;
        let decision = Decision {
            id: point.id.clone(),
            question: point.question.clone(),
            required_outputs: point.required_outputs.clone(),
        };
        let packet = ComputePacket {
            id: point_packet_id(&point.id, &rung.id),
            decision_id: decision.id.clone(),
            rung_id: rung.id.clone(),
            question: point.question.clone(),
            success_bar: BTreeMap::new(),
            stop_condition: point.stop_conditions.join("; "),
            required_outputs: point.required_outputs.clone(),
            budget: point.budget.clone(),
        };
        Ok(PointDispatch {
            point: point.clone(),
            decision,
            rung: rung.clone(),
            policy: self.default_policy.clone(),
            packet,
        })
    }
}
