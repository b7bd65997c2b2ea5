//! `btd kb replay`: a what-if simulator over a program's KB rules.

use crate::output::out;
use std::path::Path;

use anyhow::anyhow;
use btd_protocol::kb::{Entry, Kb};
use serde::{Deserialize, Serialize};

use crate::output::{print_json, read_text, CmdError};

/// One input line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    worker: String,
    value: f64,
}

/// A line that was not applied.
#[derive(Debug, Serialize)]
struct Invalid {
    line: usize,
    error: String,
}

#[derive(Debug, Serialize)]
struct ChampionView<'a> {
    seq: u64,
    worker: &'a str,
    value: f64,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    results: &'a [Entry],
    champion: Option<ChampionView<'a>>,
    payouts: btd_protocol::kb::Payouts,
    invalid: Vec<Invalid>,
}

pub(crate) fn run(manifest: &Path, submissions: &Path, json: bool) -> Result<(), CmdError> {
    let program = super::program::load(manifest)?;
    let text = read_text(submissions)?;
    let mut kb = Kb::new(program.rules()).map_err(|errs| {
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        CmdError::Rejected(anyhow!(
            "the program's KB rules are invalid: {}",
            msgs.join("; ")
        ))
    })?;
    let mut invalid = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let parsed: Line = match serde_json::from_str(raw) {
            Ok(l) => l,
            Err(e) => {
                invalid.push(Invalid {
                    line: line_no,
                    error: format!(
                        "not a {{\"worker\": \"...\", \"value\": <number>}} object: {e}"
                    ),
                });
                continue;
            }
        };
        if let Err(e) = kb.submit(&parsed.worker, parsed.value) {
            invalid.push(Invalid {
                line: line_no,
                error: e.to_string(),
            });
        }
    }
    for inv in &invalid {
        eprintln!(
            "btd: {}:{}: skipped: {}",
            submissions.display(),
            inv.line,
            inv.error
        );
    }
    let report = Report {
        results: &kb.entries(),
        champion: kb.champion().map(|c| ChampionView {
            seq: c.seq,
            worker: &c.worker,
            value: c.value,
        }),
        payouts: kb.payouts(),
        invalid,
    };
    if json {
        return print_json(&report);
    }
    print_table(&program, &report);
    Ok(())
}

fn print_table(program: &btd_protocol::program::Program, r: &Report<'_>) {
    let worker_w = r
        .results
        .iter()
        .map(|e| e.worker.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    out!(
        "{:>5}  {:<worker_w$}  {:>14}  {:<8}  {:<8}  {:>12}",
        "seq",
        "worker",
        program.criteria.metric,
        "accepted",
        "champion",
        "impact"
    );
    for e in r.results {
        out!(
            "{:>5}  {:<worker_w$}  {:>14}  {:<8}  {:<8}  {:>12.6}",
            e.seq,
            e.worker,
            e.value,
            if e.accepted { "yes" } else { "no" },
            if e.champion { "yes" } else { "" },
            e.impact
        );
    }
    match &r.champion {
        Some(c) => out!("champion: #{} {} {}", c.seq, c.worker, c.value),
        None => out!("champion: none"),
    }
    if r.payouts.is_empty() {
        out!(
            "payouts: none (pool {} {})",
            program.reward.pool,
            program.reward.token
        );
    } else {
        out!(
            "payouts ({} {}, {}):",
            program.reward.pool,
            program.reward.token,
            crate::output::name_of(&program.reward.split)
        );
        for (worker, amount) in r.payouts.iter() {
            out!("  {worker:<worker_w$}  {amount:>16}");
        }
    }
}
