//! `btd program check`.

use crate::output::out;
use std::path::Path;

use anyhow::anyhow;
use btd_protocol::kb::AcceptRule;
use btd_protocol::program::{Dataset, Program, Task};

use crate::output::{name_of, print_json, read_text, CmdError};

/// Reads and validates a manifest, with errors that name the file.
pub(crate) fn load(path: &Path) -> Result<Program, CmdError> {
    let text = read_text(path)?;
    Program::from_toml(&text).map_err(|e| CmdError::Rejected(anyhow!("{}: {e}", path.display())))
}

pub(crate) fn check(path: &Path, json: bool) -> Result<(), CmdError> {
    let text = read_text(path)?;
    match Program::from_toml(&text) {
        Ok(p) => {
            if json {
                print_json(&serde_json::json!({ "valid": true, "program": p }))
            } else {
                print_summary(path, &p);
                Ok(())
            }
        }
        Err(errors) => {
            if json {
                print_json(&serde_json::json!({ "valid": false, "errors": errors.0 }))?;
            }
            Err(CmdError::Rejected(anyhow!("{}: {errors}", path.display())))
        }
    }
}

fn print_summary(path: &Path, p: &Program) {
    out!("{}: valid program {:?}", path.display(), p.name);
    out!("  objective:  {}", p.objective);
    let accept = match p.criteria.accept {
        AcceptRule::BeatsChampion => "beats-champion".to_string(),
        AcceptRule::Threshold { threshold } => format!("threshold {threshold}"),
    };
    let m = p.criteria.min_improvement;
    let margin = match (m.absolute > 0.0, m.relative > 0.0) {
        (false, false) => "none".to_string(),
        (true, false) => format!("{}", m.absolute),
        (false, true) => format!("{} relative", m.relative),
        (true, true) => format!("max({}, {} relative)", m.absolute, m.relative),
    };
    out!(
        "  criteria:   {} ({}), accept {accept}, min improvement {margin}",
        p.criteria.metric,
        name_of(&p.criteria.direction)
    );
    match p.baseline {
        Some(b) => out!("  baseline:   {b}"),
        None => out!("  baseline:   none"),
    }
    out!(
        "  reward:     {} {}, split {}",
        p.reward.pool,
        p.reward.token,
        name_of(&p.reward.split)
    );
    out!("  membership: {}", name_of(&p.membership));
    match &p.task {
        Task::Candle(t) => {
            let dataset = match &t.dataset {
                Dataset::File { sha256 } => format!("file sha256 {sha256}"),
                Dataset::Synthetic { seed, bytes } => {
                    format!("synthetic corpus (seed {seed}, {bytes} bytes)")
                }
            };
            out!(
                "  task:       candle, preset {}, {dataset}, seed {}, eval {} tokens",
                name_of(&t.preset),
                t.seed,
                t.eval_tokens
            );
        }
        Task::Shell(t) => out!(
            "  task:       shell `{}` (timeout {} s)",
            t.command,
            t.timeout_secs
        ),
    }
    for (name, sp) in &p.search.params {
        out!(
            "  search:     {name} in [{}, {}] ({}{}{})",
            sp.min,
            sp.max,
            name_of(&sp.scale),
            if sp.integer { ", whole numbers" } else { "" },
            sp.start
                .map_or_else(String::new, |s| format!(", starts at {s}"))
        );
    }
    for r in &p.rungs {
        out!(
            "  rung:       {} \"{}\": {}, {}{}",
            r.id,
            r.label,
            name_of(&r.hardware),
            name_of(&r.spend_class),
            if r.admitted { "" } else { ", not admitted" }
        );
    }
    out!(
        "  policy:     local {}, paid {} (pre-approved: {})",
        name_of(&p.policy.local.default_action),
        name_of(&p.policy.paid.default_action),
        if p.policy.paid.approved_rungs.is_empty() {
            "none".to_string()
        } else {
            p.policy.paid.approved_rungs.join(", ")
        }
    );
    out!("  outputs:    {}", p.required_outputs.join(", "));
    out!("  stop:       {}", p.stop_condition_text());
    out!("  (the program id is assigned by `btd publish`: it covers the owner's public key)");
}
