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
    /// The metric each of the owner's re-trainings reached, one per seed
    /// ([`Verify::retrain_seed_list`]), for a re-training spot check; empty when none ran.
    pub retrained: Vec<f64>,
}

impl Measurement {
    /// The mean of the re-trainings, `None` when none ran. NaN when one of them is.
    pub fn retrained_mean(&self) -> Option<f64> {
        if self.retrained.is_empty() {
            return None;
        }
        let sum: f64 = self.retrained.iter().sum();
        Some(sum / self.retrained.len() as f64)
    }
}

/// [`Verdict::Measured`] with the owner's value when the re-evaluation matches the claim (bit-exact
/// on the same platform, within `verify.tolerance` otherwise), the holdout is not worse than the
/// validation value by more than `verify.max_holdout_gap`, and the mean of the re-trainings (when
/// done) lands within `verify.retrain_tolerance` of the claim. The reason of a failure quotes the
/// numbers.
///
/// The value that counts is the owner's measurement, never the claimed number: the platform a claim
/// names is the worker's word, and naming another one buys a tolerance to be *checked* within, not
/// a better score. After a re-training check it is the mean of the `verify.retrain_seeds`
/// re-trainings, so the KEEP rule sees what the configuration reaches on average, not what one
/// lucky seed reached.
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
        let (c, v) = differing(claimed, m.value);
        return Verdict::Failed(format!(
            "metric did not reproduce: claimed {c}, measured {v}, {:.3e} apart ({rule})",
            (claimed - m.value).abs()
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
    if let Some(mean) = m.retrained_mean() {
        let off = (claimed - mean).abs();
        if !mean.is_finite() || off.is_nan() || off > verify.retrain_tolerance {
            let runs = m.retrained.len();
            let (c, mean) = differing(claimed, mean);
            return Verdict::Failed(format!(
                "re-training did not reproduce: claimed {c}, the owner's {runs} \
                 re-training{} reached {mean} on average (tolerance {})",
                if runs == 1 { "" } else { "s" },
                verify.retrain_tolerance
            ));
        }
        return Verdict::Measured { value: mean };
    }
    Verdict::Measured { value: m.value }
}

/// Two values as text that shows that they differ: 6 decimals, or every digit (Rust's shortest
/// round-trip form) when 6 decimals would print the same number for both.
fn differing(a: f64, b: f64) -> (String, String) {
    let (x, y) = (format!("{a:.6}"), format!("{b:.6}"));
    if x != y || a.to_bits() == b.to_bits() {
        (x, y)
    } else {
        (format!("{a}"), format!("{b}"))
    }
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
            retrained: Vec::new(),
        }
    }

    #[test]
    fn a_rejection_shows_numbers_that_differ() {
        let v = verify();
        let d = Direction::Minimize;
        // A value typed with the 6 decimals `btd train` prints, against the exact one.
        let exact = 2.446_768_912_345;
        let Verdict::Failed(why) = judge(&v, d, 2.446769, &m(exact, None, true)) else {
            panic!("not rejected");
        };
        assert!(
            why.starts_with(
                "metric did not reproduce: claimed 2.446769, measured 2.446768912345, 8.76"
            ) && why.contains("e-8 apart (bit-exact on the same platform)"),
            "{why}"
        );
        // Where 6 decimals already differ, they are what is shown.
        let Verdict::Failed(why) = judge(&v, d, 0.5, &m(3.102119, None, true)) else {
            panic!("not rejected");
        };
        assert!(
            why.starts_with("metric did not reproduce: claimed 0.500000, measured 3.102119"),
            "{why}"
        );
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
        x.retrained = vec![2.01];
        assert_eq!(
            judge(&v, Direction::Minimize, 2.0, &x),
            Verdict::Measured { value: 2.01 }
        );
        x.retrained = vec![2.5];
        let Verdict::Failed(why) = judge(&v, Direction::Minimize, 2.0, &x) else {
            panic!("a claim that re-trains far off verified");
        };
        assert!(why.contains("re-training"), "{why}");
    }

    /// The noise attacker: a worker tries seeds until one lands lucky and claims it. The owner
    /// re-trains k seeds and what counts is their mean, which the lucky run does not move far.
    #[test]
    fn a_lucky_seed_counts_only_as_part_of_the_k_seed_mean() {
        let v = verify();
        // The claim's own seed reproduces exactly (2.00); two other seeds land at 2.03 and 2.04.
        let mut x = m(2.0, None, true);
        x.retrained = vec![2.0, 2.03, 2.04];
        let Verdict::Measured { value } = judge(&v, Direction::Minimize, 2.0, &x) else {
            panic!("an honest claim within tolerance of the mean failed");
        };
        assert!((value - 2.0233333333333334).abs() < 1e-12, "{value}");
        // The mean, not the best run nor the claim's run, is compared: one matching seed out of
        // three does not save a claim whose configuration does not reach it.
        x.retrained = vec![2.0, 2.2, 2.2];
        let Verdict::Failed(why) = judge(&v, Direction::Minimize, 2.0, &x) else {
            panic!("a claim far from the k-seed mean verified");
        };
        assert!(
            why.contains("3 re-trainings reached 2.133333 on average"),
            "{why}"
        );
        // A NaN run never passes.
        x.retrained = vec![2.0, f64::NAN, 2.0];
        assert!(matches!(
            judge(&v, Direction::Minimize, 2.0, &x),
            Verdict::Failed(_)
        ));
    }
}
