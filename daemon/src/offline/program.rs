//! `btd program check`.

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
    println!("{}: valid program {:?}", path.display(), p.name);
    println!("  objective:  {}", p.objective);
    let accept = match p.criteria.accept {
        AcceptRule::BeatsChampion => "beats-champion".to_string(),
        AcceptRule::Threshold { threshold } => format!("threshold {threshold}"),
    };
    println!(
        "  criteria:   {} ({}), accept {accept}",
        p.criteria.metric,
        name_of(&p.criteria.direction)
    );
    match p.baseline {
        Some(b) => println!("  baseline:   {b}"),
        None => println!("  baseline:   none"),
    }
    println!(
        "  reward:     {} {}, split {}",
        p.reward.pool,
        p.reward.token,
        name_of(&p.reward.split)
    );
    println!("  membership: {}", name_of(&p.membership));
    match &p.task {
        Task::Candle(t) => {
            let dataset = match &t.dataset {
                Dataset::File { sha256 } => format!("file sha256 {sha256}"),
                Dataset::Synthetic { seed, bytes } => {
                    format!("synthetic corpus (seed {seed}, {bytes} bytes)")
                }
            };
            println!(
                "  task:       candle, preset {}, {dataset}, seed {}, eval {} tokens",
                name_of(&t.preset),
                t.seed,
                t.eval_tokens
            );
        }
        Task::Shell(t) => println!(
            "  task:       shell `{}` (timeout {} s)",
            t.command, t.timeout_secs
        ),
    }
    for r in &p.rungs {
        println!(
            "  rung:       {} \"{}\": {}, {}{}",
            r.id,
            r.label,
            name_of(&r.hardware),
            name_of(&r.spend_class),
            if r.admitted { "" } else { ", not admitted" }
        );
    }
    println!(
        "  policy:     local {}, paid {} (pre-approved: {})",
        name_of(&p.policy.local.default_action),
        name_of(&p.policy.paid.default_action),
        if p.policy.paid.approved_rungs.is_empty() {
            "none".to_string()
        } else {
            p.policy.paid.approved_rungs.join(", ")
        }
    );
    println!("  outputs:    {}", p.required_outputs.join(", "));
    println!("  stop:       {}", p.stop_condition_text());
    println!("  (the program id is assigned by `btd publish`: it covers the owner's public key)");
}
