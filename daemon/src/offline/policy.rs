//! `btd policy explain`: evaluate compute dispatch for one packet and say why.

use crate::output::out;
use std::path::Path;

use anyhow::anyhow;
use btd_protocol::dispatch::{evaluate_dispatch, DispatchInput, DispatchResult, ProjectComputeMap};
use btd_protocol::trace::ApprovalReceipt;
use btd_protocol::Timestamp;

use crate::cli::ExplainArgs;
use crate::output::{name_of, print_json, read_text, CmdError};

pub(crate) fn explain(args: &ExplainArgs, json: bool) -> Result<(), CmdError> {
    let now = match args.now_ms {
        Some(ms) => Timestamp::from_millis(ms),
        None => wall_clock_now()?,
    };
    if !args.spent.is_finite() || args.spent < 0.0 {
        return Err(CmdError::Usage(format!(
            "--spent must be a finite number >= 0, got {}",
            args.spent
        )));
    }
    let approval = match &args.approval {
        Some(path) => Some(load_receipt(path)?),
        None => None,
    };
    for a in &args.approvers {
        a.parse::<libp2p_identity::PeerId>()
            .map_err(|e| CmdError::Usage(format!("--approver {a:?} is not a peer id: {e}")))?;
    }
    let trusted: Vec<String> = match (&approval, args.approvers.is_empty()) {
        (Some(r), true) => {
            if !json {
                eprintln!(
                    "btd: note: trusting the receipt's signer {}; pass --approver OWNER-PEER-ID to check who signed it",
                    r.approver
                );
            }
            vec![r.approver.clone()]
        }
        _ => args.approvers.clone(),
    };
    let result = match (&args.manifest, &args.map, &args.point) {
        (Some(manifest), None, None) => {
            let Some(rung_id) = args.rung.as_deref() else {
                return Err(CmdError::Usage(
                    "with a program manifest, say which rung: --rung RUNG-ID".to_string(),
                ));
            };
            let program = super::program::load(manifest)?;
            let packet = program
                .packet_for_rung(rung_id)
                .map_err(|e| CmdError::Rejected(anyhow!("{e}")))?;
            let rung = program
                .rung(rung_id)
                .map_err(|e| CmdError::Rejected(anyhow!("{e}")))?;
            let decision = program.decision();
            evaluate_dispatch(&DispatchInput {
                decision: &decision,
                rung,
                policy: &program.policy,
                packet: &packet,
                point: None,
                approval: approval.as_ref(),
                trusted_approvers: &trusted,
                spent_total: args.spent,
                now,
            })
        }
        (None, Some(map_path), Some(point_id)) => {
            let map = load_map(map_path)?;
            let built = map
                .packet_for_point(point_id, args.rung.as_deref())
                .map_err(|e| CmdError::Rejected(anyhow!("{e}")))?;
            evaluate_dispatch(&DispatchInput {
                decision: &built.decision,
                rung: &built.rung,
                policy: &built.policy,
                packet: &built.packet,
                point: Some(&built.point),
                approval: approval.as_ref(),
                trusted_approvers: &trusted,
                spent_total: args.spent,
                now,
            })
        }
        _ => {
            return Err(CmdError::Usage(
                "give either PROGRAM.toml --rung RUNG-ID, or --map MAP.toml --point POINT-ID"
                    .to_string(),
            ))
        }
    };
    if args.orp {
        // One JSON document whether or not --json is given: the gate is for machines.
        return print_json(&btd_protocol::orp::dispatch_gate(
            &result,
            &command_label(args),
        ));
    }
    if json {
        print_json(&result)
    } else {
        print_human(&result);
        Ok(())
    }
}

/// The what-if as a command line, for the ORP gate's `command`.
fn command_label(args: &ExplainArgs) -> String {
    let mut parts = vec!["btd policy explain".to_string()];
    if let Some(m) = &args.manifest {
        parts.push(m.display().to_string());
    }
    if let (Some(map), Some(point)) = (&args.map, &args.point) {
        parts.push(format!("--map {} --point {point}", map.display()));
    }
    if let Some(r) = &args.rung {
        parts.push(format!("--rung {r}"));
    }
    if let Some(a) = &args.approval {
        parts.push(format!("--approval {}", a.display()));
    }
    parts.join(" ")
}

fn print_human(r: &DispatchResult) {
    out!("{} ({})", name_of(&r.action), name_of(&r.reason));
    out!("  {}", r.detail);
    out!("  decision: {}", r.decision_id);
    out!("  packet:   {}", r.packet_id);
    out!("  rung:     {} ({})", r.rung_id, name_of(&r.spend_class));
    out!("  outputs:  {}", r.required_outputs.join(", "));
}

fn wall_clock_now() -> Result<Timestamp, CmdError> {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| CmdError::Rejected(anyhow!("the system clock is before 1970: {e}")))?;
    Ok(Timestamp::from_millis(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    ))
}

fn load_receipt(path: &Path) -> Result<ApprovalReceipt, CmdError> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| {
        CmdError::Rejected(anyhow!(
            "{} is not an approval receipt (see `btd schema approval-receipt`): {e}",
            path.display()
        ))
    })
}

fn load_map(path: &Path) -> Result<ProjectComputeMap, CmdError> {
    let text = read_text(path)?;
    let map: ProjectComputeMap = toml::from_str(&text).map_err(|e| {
        CmdError::Rejected(anyhow!(
            "{} is not a project compute map (see `btd schema project-compute-map`): {e}",
            path.display()
        ))
    })?;
    let problems = map.validate();
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        return Err(CmdError::Rejected(anyhow!(
            "{} has {} problem(s):\n{}",
            path.display(),
            problems.len(),
            lines.join("\n")
        )));
    }
    Ok(map)
}
