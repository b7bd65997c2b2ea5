//! `btd train --program ID`: the program's candle task from the running daemon (its verified
//! manifest; the dataset fetched from the owner by digest when this machine lacks it), trained with
//! the spec a worker round uses ([`crate::work::round_spec`]), so the owner's check reproduces it.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use btd_protocol::program::search::Hypothesis;
use btd_protocol::program::{CandleTask, Dataset, ModelPreset, ProgramId};
use btd_trainer::{Corpus, TrainSpec};

use super::TrainArgs;
use crate::control::Request;
use crate::output::{exact, CmdError};
use crate::work::TrainTaskView;

/// What `btd train --program` trains.
pub(super) struct ForProgram {
    /// The program's task as the daemon knows it.
    pub(super) view: TrainTaskView,
    /// The round's spec (with `--seed`, when given).
    pub(super) spec: TrainSpec,
    /// The program's corpus.
    pub(super) corpus: Corpus,
}

/// Asks the daemon at `home` for program `id`'s task, refuses flags that would change it, and
/// loads the program's corpus (`--data`, checked against the dataset's digest, or the daemon's
/// copy).
pub(super) fn prepare(
    args: &TrainArgs,
    id: &str,
    home: Option<PathBuf>,
) -> Result<ForProgram, CmdError> {
    let program: ProgramId = id.parse().map_err(|e| {
        CmdError::Usage(format!(
            "--program {id:?} is not a program id: {e} (see `btd programs`)"
        ))
    })?;
    let data = args
        .data
        .as_deref()
        .map(|p| {
            std::fs::canonicalize(p)
                .map_err(|e| CmdError::Usage(format!("--data {}: {e}", p.display())))
        })
        .transpose()?;
    // The task first: a refused flag costs no dataset download.
    let mut view = task(home.clone(), program, false)?;
    refuse_conflicts(args, &view)?;
    if data.is_none() && view.data.is_none() && matches!(view.task.dataset, Dataset::File { .. }) {
        view = task(home, program, true)?;
    }
    let mut spec = crate::work::round_spec(&view.task, &Hypothesis::new())
        .map_err(|e| CmdError::Rejected(anyhow!("program {program}'s task is unusable: {e}")))?;
    if let Some(seed) = args.seed {
        spec.seed = seed;
    }
    let file = data.as_deref().or(view.data.as_deref());
    let corpus = Corpus::for_dataset(&view.task.dataset, file)
        .map_err(|e| CmdError::Rejected(anyhow!("cannot use program {program}'s corpus: {e}")))?;
    Ok(ForProgram { view, spec, corpus })
}

/// The daemon's answer to [`Request::TrainTask`].
fn task(home: Option<PathBuf>, program: ProgramId, fetch: bool) -> Result<TrainTaskView, CmdError> {
    let h = crate::home::Home::resolve(home).map_err(|e| CmdError::Usage(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CmdError::Rejected(anyhow!("cannot start the async runtime: {e}")))?;
    let v = rt
        .block_on(crate::client::call(
            &h.socket_path(),
            &Request::TrainTask { program, fetch },
            |_| {},
        ))
        .map_err(CmdError::Rejected)?;
    serde_json::from_value(v)
        .map_err(|e| CmdError::Rejected(anyhow!("unexpected answer from the daemon: {e}")))
}

/// Refuses every flag that would train something other than the program's task (the owner's check
/// would not reproduce it), naming the program's value.
fn refuse_conflicts(args: &TrainArgs, view: &TrainTaskView) -> Result<(), CmdError> {
    let t = &view.task;
    let id = view.program;
    let refuse = |flag: String, theirs: String| {
        Err(CmdError::Usage(format!(
            "{flag} conflicts with program {id}: {theirs}. Drop it: with --program the program's \
             task decides the model, data, budget and eval budget, so that the owner's check \
             reproduces the result"
        )))
    };
    if let Some(p) = args.preset.map(ModelPreset::from) {
        if p != t.preset {
            return refuse(
                format!("--preset {p}"),
                format!("it trains the {} preset", t.preset),
            );
        }
    }
    if let Some(s) = args.steps {
        if Some(s) != t.steps {
            return refuse(format!("--steps {s}"), budget(t));
        }
    }
    if let Some(s) = args.seconds {
        if Some(s) != t.seconds.map(|x| x as f64) {
            return refuse(format!("--seconds {s}"), budget(t));
        }
    }
    if let Some(e) = args.eval_tokens {
        if e != t.eval_tokens {
            return refuse(
                format!("--eval-tokens {e}"),
                format!("it scores {} validation bytes", t.eval_tokens),
            );
        }
    }
    if let (Some(d), Dataset::Synthetic { .. }) = (&args.data, &t.dataset) {
        return refuse(
            format!("--data {}", d.display()),
            "it trains on btd's synthetic corpus".into(),
        );
    }
    Ok(())
}

/// The task's training budget in words.
fn budget(t: &CandleTask) -> String {
    match (t.steps, t.seconds) {
        (Some(n), Some(s)) => format!("its budget is {n} steps or {s} s, whichever ends first"),
        (Some(n), None) => format!("its budget is {n} steps"),
        (None, Some(s)) => format!("its budget is {s} s"),
        (None, None) => "it names no budget".into(),
    }
}

/// The `program:` line (and a note when this node cannot submit yet).
pub(super) fn print_task(view: &TrainTaskView, spec: &TrainSpec) {
    let t = &view.task;
    println!(
        "program:    {} ({}): {} preset, {}, seed {}, {} scored on {} validation bytes",
        view.name,
        view.program,
        t.preset,
        budget(t).trim_start_matches("its budget is "),
        spec.seed,
        view.metric,
        t.eval_tokens
    );
    if view.own {
        println!("note:       this node owns the program: members' daemons submit to it");
    } else if !view.member {
        println!(
            "note:       this node is not a member of the program: `btd join {}` before submitting",
            view.program
        );
    }
}

/// The command that submits the checkpoint, with its value in a form that parses back exactly.
/// For a program's task the daemon claims what the owner will measure; without one, the value
/// shown is this run's (its own eval budget), which a program may score differently.
pub(super) fn submit_hint(
    program: Option<ProgramId>,
    checkpoint: &Path,
    val_bpb: f64,
    eval_tokens: u64,
) -> String {
    match program {
        Some(id) => format!(
            "btd submit {id} --checkpoint {}   # val_bpb {} on the program's {eval_tokens} \
             validation bytes: the daemon scores it as the owner will and claims that",
            checkpoint.display(),
            exact(val_bpb)
        ),
        None => format!(
            "btd submit PROGRAM --checkpoint {}   # val_bpb {} on {eval_tokens} validation \
             bytes; the daemon scores it with the program's own eval budget (or train with \
             --program)",
            checkpoint.display(),
            exact(val_bpb)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value in the submit line parses back to the same f64, bit for bit (`{:.6}` would not).
    #[test]
    fn the_submit_line_value_parses_back_exactly() {
        let id = ProgramId(btd_protocol::Digest([3; 32]));
        for v in [
            2.446_768_912_345_678,
            0.1 + 0.2,
            1.0 / 3.0,
            1e-7,
            7.999_999_999_999_999,
            f64::from_bits(2.5f64.to_bits() + 1),
        ] {
            for program in [Some(id), None] {
                let line = submit_hint(program, Path::new("/tmp/x.safetensors"), v, 2048);
                let token = line
                    .split("val_bpb ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap();
                let back: f64 = token.parse().unwrap();
                assert_eq!(back.to_bits(), v.to_bits(), "{line}");
                assert_ne!(
                    format!("{v:.6}").parse::<f64>().unwrap().to_bits(),
                    v.to_bits(),
                    "{v} is not a value 6 decimals lose"
                );
            }
        }
        let line = submit_hint(Some(id), Path::new("/c.safetensors"), 2.5, 2048);
        assert!(
            line.starts_with(&format!("btd submit {id} --checkpoint /c.safetensors ")),
            "{line}"
        );
    }
}
