//! The owner's verdict on a claim from what it measured (sans-IO: the daemon fetches and evaluates,
//! this decides).

use super::{Direction, Verdict};
use crate::program::Verify;

/// What the owner measured for one claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// The metric re-evaluated from the claim's checkpoint on the validation split.
    pub value: f64,
    /// The metric on the owner-only holdout, when the program checks one.
    pub holdout: Option<f64>,
    /// Whether the owner measured on the platform and btd version the claim names (then the value
    /// must reproduce bit for bit).
    pub same_platform: bool,
    /// The metric a re-training reached, for a re-training spot check.
    pub retrained: Option<f64>,
}

/// [`Verdict::Measured`] with the owner's re-evaluated value when it matches the claim (bit-exact on
/// the same platform, within `verify.tolerance` otherwise), the holdout is not worse than the
/// validation value by more than `verify.max_holdout_gap`, and a re-training (when done) lands
/// within `verify.retrain_tolerance`. The reason of a failure quotes the numbers.
///
/// The value that counts is the measurement, never the claimed number: the platform a claim names
/// is the worker's word, and naming another one buys a tolerance to be *checked* within, not a
/// better score.
pub fn judge(verify: &Verify, direction: Direction, claimed: f64, m: &Measurement) -> Verdict {
    let reproduced = if m.same_platform {
        claimed.to_bits() == m.value.to_bits()
    } else {
        (claimed - m.value).abs() <= verify.tolerance
    };
    if !reproduced {
        let rule = if m.same_platform {
            "bit-exact on the same platform".to_string()
        } else {
            format!("tolerance {}", verify.tolerance)
        };
        return Verdict::Failed(format!(
            "metric did not reproduce: claimed {claimed:.6}, measured {:.6} ({rule})",
            m.value
        ));
    }
    if let (Some(max), Some(h)) = (verify.max_holdout_gap, m.holdout) {
        let gap = match direction {
            Direction::Minimize => h - m.value,
            Direction::Maximize => m.value - h,
        };
        if gap.is_nan() || gap > max {
            return Verdict::Failed(format!(
                "overfit to the validation split: {:.4} on it but {h:.4} on the owner's holdout \
                 (gap {gap:.4}, at most {max} allowed)",
                m.value
            ));
        }
    }
    if let Some(r) = m.retrained {
        let off = (claimed - r).abs();
        if off.is_nan() || off > verify.retrain_tolerance {
            return Verdict::Failed(format!(
                "re-training did not reproduce: claimed {claimed:.6}, the owner's re-training \
                 reached {r:.6} (tolerance {})",
                verify.retrain_tolerance
            ));
        }
    }
    Verdict::Measured { value: m.value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{CandleTask, Dataset, ModelPreset, Task};

    fn verify() -> Verify {
        Verify::default_for(&Task::Candle(CandleTask {
            preset: ModelPreset::Tiny,
            dataset: Dataset::Synthetic { seed: 0, bytes: 1 },
            seconds: None,
            steps: Some(1),
            seed: 0,
            eval_tokens: 256,
        }))
    }

    fn m(value: f64, holdout: Option<f64>, same_platform: bool) -> Measurement {
        Measurement {
            value,
            holdout,
            same_platform,
            retrained: None,
        }
    }

    #[test]
    fn honest_claims_verify() {
        let v = verify();
        let d = Direction::Minimize;
        assert_eq!(
            judge(&v, d, 2.5, &m(2.5, Some(2.6), true)),
            Verdict::Measured { value: 2.5 }
        );
        assert_eq!(
            judge(&v, d, 2.5, &m(2.50005, None, false)),
            Verdict::Measured { value: 2.50005 }
        );
        // A holdout better than the validation value is no sign of overfitting.
        assert_eq!(
            judge(&v, d, 2.5, &m(2.5, Some(1.0), true)),
            Verdict::Measured { value: 2.5 }
        );
    }

    #[test]
    fn a_fake_metric_is_caught_with_the_numbers() {
        let v = verify();
        let Verdict::Failed(why) = judge(&v, Direction::Minimize, 0.5, &m(3.1, None, false)) else {
            panic!("a fake claim verified");
        };
        assert!(why.contains("claimed 0.500000, measured 3.100000"), "{why}");
        // On the same platform even the last bit must match.
        let next = f64::from_bits(2.5f64.to_bits() + 1);
        let Verdict::Failed(why) = judge(&v, Direction::Minimize, 2.5, &m(next, None, true)) else {
            panic!("a one-ulp difference passed on the same platform");
        };
        assert!(why.contains("bit-exact"), "{why}");
    }

    #[test]
    fn another_platform_buys_a_tolerance_to_be_checked_within_never_a_better_score() {
        let v = verify();
        // The claim names another platform and a value a little better than the checkpoint
        // reaches: within the tolerance it verifies, but what counts is the measurement.
        assert_eq!(
            judge(&v, Direction::Minimize, 2.49995, &m(2.5, None, false)),
            Verdict::Measured { value: 2.5 }
        );
        // Better than the measurement by more than the tolerance: rejected, whatever the platform.
        let Verdict::Failed(why) = judge(&v, Direction::Minimize, 2.4, &m(2.5, None, false)) else {
            panic!("a claim far better than measured verified");
        };
        assert!(why.contains("claimed 2.400000, measured 2.500000"), "{why}");
    }

    #[test]
    fn overfitting_to_validation_is_caught_by_the_holdout() {
        let v = verify();
        let Verdict::Failed(why) = judge(&v, Direction::Minimize, 1.0, &m(1.0, Some(3.0), true))
        else {
            panic!("a val-trained claim verified");
        };
        assert!(why.contains("holdout"), "{why}");
        // NaN on the holdout never passes.
        assert!(matches!(
            judge(&v, Direction::Minimize, 1.0, &m(1.0, Some(f64::NAN), true)),
            Verdict::Failed(_)
        ));
        // Maximising: a holdout far below the validation value is the overfit.
        assert!(matches!(
            judge(&v, Direction::Maximize, 0.9, &m(0.9, Some(0.2), true)),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn retraining_must_land_close() {
        let v = verify();
        let mut x = m(2.0, None, true);
        x.retrained = Some(2.01);
        assert_eq!(
            judge(&v, Direction::Minimize, 2.0, &x),
            Verdict::Measured { value: 2.0 }
        );
        x.retrained = Some(2.5);
        let Verdict::Failed(why) = judge(&v, Direction::Minimize, 2.0, &x) else {
            panic!("a claim that re-trains far off verified");
        };
        assert!(why.contains("re-training"), "{why}");
    }
}
