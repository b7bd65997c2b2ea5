//! `btd schema`: JSON Schemas of every persisted or exchanged object.

use crate::output::out;
use anyhow::anyhow;
use btd_protocol::dispatch::{ComputePacket, ComputePoint, ProjectComputeMap};
use btd_protocol::program::Program;
use btd_protocol::trace::{ApprovalReceipt, ImpactRead, ResultBundle, TraceabilityRecord};

use crate::output::{print_json, CmdError};

/// The TOML manifest as owners write it (hand-written: the manifest has defaults and flat
/// `kind`-tagged tables that differ from the normalised [`Program`]).
const MANIFEST_SCHEMA: &str = include_str!("manifest.schema.json");

/// Names accepted by `btd schema NAME`, with one line each.
pub(crate) const NAMES: &[(&str, &str)] = &[
    (
        "program-manifest",
        "the research-program manifest (TOML) an owner writes",
    ),
    (
        "program",
        "a validated, normalised program as btd stores and announces it",
    ),
    ("compute-packet", "a bounded unit of work on one rung"),
    (
        "compute-point",
        "a place in a project where compute may reduce uncertainty",
    ),
    (
        "project-compute-map",
        "a project's catalog of compute points, rungs and policy",
    ),
    (
        "result-bundle",
        "the outputs (by digest), status and metrics of one run",
    ),
    ("impact-read", "how a result changes the next action"),
    (
        "approval-receipt",
        "a signed approval for one paid packet on one rung",
    ),
    (
        "traceability-record",
        "content-hash links: decision, rung, packet, receipt, bundle, impact",
    ),
];

pub(crate) fn schema_json(name: &str) -> Result<serde_json::Value, CmdError> {
    let schema = match name {
        "program-manifest" => {
            return serde_json::from_str(MANIFEST_SCHEMA).map_err(|e| {
                CmdError::Rejected(anyhow!("built-in manifest schema is broken: {e}"))
            })
        }
        "program" => schemars::schema_for!(Program),
        "compute-packet" => schemars::schema_for!(ComputePacket),
        "compute-point" => schemars::schema_for!(ComputePoint),
        "project-compute-map" => schemars::schema_for!(ProjectComputeMap),
        "result-bundle" => schemars::schema_for!(ResultBundle),
        "impact-read" => schemars::schema_for!(ImpactRead),
        "approval-receipt" => schemars::schema_for!(ApprovalReceipt),
        "traceability-record" => schemars::schema_for!(TraceabilityRecord),
        other => {
            let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            return Err(CmdError::Usage(format!(
                "no schema named {other:?}; known: {}",
                names.join(", ")
            )));
        }
    };
    serde_json::to_value(&schema)
        .map_err(|e| CmdError::Rejected(anyhow!("cannot render schema: {e}")))
}

pub(crate) fn run(name: Option<&str>) -> Result<(), CmdError> {
    match name {
        Some(n) => print_json(&schema_json(n)?),
        None => {
            for (n, what) in NAMES {
                out!("{n:<22} {what}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_schema_renders_as_an_object() {
        for (name, _) in NAMES {
            let v = schema_json(name).unwrap();
            assert!(v.is_object(), "{name}");
            assert!(
                v.get("properties").is_some() || v.get("oneOf").is_some(),
                "{name} has no properties: {v}"
            );
        }
        assert!(matches!(schema_json("nope"), Err(CmdError::Usage(_))));
    }
}
