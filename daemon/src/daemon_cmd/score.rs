//! `btd submit --checkpoint`: the value to claim, scored by the daemon the way the owner's
//! verifier will score the checkpoint (the program's validation split and eval budget).

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use btd_protocol::program::ProgramId;

use crate::control::Request;
use crate::output::{exact, out, CmdError};
use crate::work::ScoreView;

/// The value to claim for `program`: `given`, else the daemon's score of `checkpoint` (printed, in
/// text mode; the daemon fetches the program's dataset if it lacks it). With both, the checkpoint
/// is scored too when the daemon has the dataset, and a warning on stderr shows both numbers when
/// they differ (the owner would reject the claim). `None` when there is neither.
pub(super) fn claim_value(
    home_dir: Option<PathBuf>,
    program: ProgramId,
    given: Option<f64>,
    checkpoint: Option<&Path>,
    json: bool,
) -> Result<Option<f64>, CmdError> {
    let Some(path) = checkpoint else {
        return Ok(given);
    };
    let checkpoint = super::absolute("--checkpoint", path)?;
    let scored = super::call(
        home_dir,
        Request::Score {
            program,
            checkpoint,
            // A check of a given value does not wait for a dataset download.
            local_only: given.is_some(),
        },
    )
    .and_then(super::parse::<ScoreView>);
    match (given, scored) {
        (None, Ok(s)) => {
            if !json {
                out!(
                    "scored:     {} {} over {} validation bytes, as the owner will measure it; \
                     claiming that",
                    s.metric,
                    exact(s.value),
                    s.tokens
                );
            }
            Ok(Some(s.value))
        }
        (None, Err(e)) => Err(CmdError::Rejected(anyhow!(
            "cannot score {} the way the owner will: {e}; give the value with --value",
            path.display()
        ))),
        (Some(v), Ok(s)) => {
            if let Some(w) = mismatch_warning(v, &s) {
                eprintln!("btd: warning: {w}");
            }
            Ok(Some(v))
        }
        (Some(v), Err(e)) => {
            eprintln!(
                "btd: note: --value was not checked against the owner's scoring ({e}); leave out \
                 --value to have the checkpoint scored and that value claimed"
            );
            Ok(Some(v))
        }
    }
}

/// The warning for a `--value` that is not what the owner will measure, with both numbers.
fn mismatch_warning(given: f64, s: &ScoreView) -> Option<String> {
    (given.to_bits() != s.value.to_bits()).then(|| {
        format!(
            "--value {} is not what the owner will measure for this checkpoint: {} {} over {} \
             validation bytes ({:.3e} apart). The owner rejects a claim that does not reproduce \
             (bit for bit on this platform); leave out --value to claim the measured value",
            exact(given),
            s.metric,
            exact(s.value),
            s.tokens,
            (given - s.value).abs()
        )
    })
}

/// The submit answer for `--json`, with the value claimed when the daemon scored it.
pub(super) fn with_value(mut v: serde_json::Value, scored: Option<f64>) -> serde_json::Value {
    if let (Some(value), Some(obj)) = (scored, v.as_object_mut()) {
        obj.insert("value".into(), serde_json::json!(value));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warning_shows_both_numbers_so_they_parse_back_exactly() {
        let measured = 2.446_768_912_345_678_f64;
        let s = ScoreView {
            program: ProgramId(btd_protocol::Digest([1; 32])),
            metric: "val_bpb".into(),
            value: measured,
            tokens: 2048,
            eval_tokens: 2048,
            checkpoint_sha256: btd_protocol::Digest([2; 32]),
        };
        assert_eq!(mismatch_warning(measured, &s), None);
        let typed = 2.446769;
        let w = mismatch_warning(typed, &s).unwrap();
        let numbers: Vec<f64> = w
            .split_whitespace()
            .filter_map(|t| t.parse::<f64>().ok())
            .collect();
        assert!(
            numbers.iter().any(|n| n.to_bits() == typed.to_bits()),
            "{w}"
        );
        assert!(
            numbers.iter().any(|n| n.to_bits() == measured.to_bits()),
            "{w}"
        );
        // One ulp apart still warns.
        let next = f64::from_bits(measured.to_bits() + 1);
        assert!(mismatch_warning(next, &s).is_some());
    }
}
