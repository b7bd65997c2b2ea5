//! The metric `val_bpb` (bits per byte), as in karpathy/autoresearch (semantics §5).

/// Why `val_bpb` could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BpbError {
    /// The two input slices differ in length.
    #[error(
        "{losses} losses but {byte_lens} byte lengths: they must pair up one per target token"
    )]
    LengthMismatch {
        /// Number of losses given.
        losses: usize,
        /// Number of byte lengths given.
        byte_lens: usize,
    },
    /// Every target token had byte length 0, so there is nothing to divide by.
    #[error("no target token has a non-zero byte length")]
    NoBytes,
    /// A loss is NaN, infinite or negative.
    #[error("loss #{index} is {value}, not a finite non-negative number of nats")]
    BadLoss {
        /// Position of the loss.
        index: usize,
        /// The offending value.
        value: f64,
    },
}

/// Bits per byte: the sum of per-token cross-entropy (nats) over target tokens whose byte length is
/// non-zero, divided by `ln 2 ×` the total byte length of those tokens. Tokens of byte length 0
/// (special tokens) are excluded from both sums. Sums are taken in f64.
///
/// ```
/// # use btd_protocol::metric::val_bpb;
/// let bpb = val_bpb(&[2.0, 9.0, 1.0], &[4, 0, 6]).unwrap();
/// assert!((bpb - 0.432809).abs() < 1e-6);
/// ```
pub fn val_bpb(losses_nats: &[f64], byte_lens: &[u32]) -> Result<f64, BpbError> {
    if losses_nats.len() != byte_lens.len() {
        return Err(BpbError::LengthMismatch {
            losses: losses_nats.len(),
            byte_lens: byte_lens.len(),
        });
    }
    let mut nats = 0.0f64;
    let mut bytes = 0u64;
    for (index, (&loss, &len)) in losses_nats.iter().zip(byte_lens).enumerate() {
        if !loss.is_finite() || loss < 0.0 {
            return Err(BpbError::BadLoss { index, value: loss });
        }
        if len == 0 {
            continue;
        }
        nats += loss;
        bytes += u64::from(len);
    }
    if bytes == 0 {
        return Err(BpbError::NoBytes);
    }
    Ok(nats / (std::f64::consts::LN_2 * bytes as f64))
}

/// `val_bpb` for a byte-level tokenizer, where every target token is exactly one byte: the mean loss
/// in nats divided by ln 2.
pub fn val_bpb_bytes(losses_nats: &[f64]) -> Result<f64, BpbError> {
    let lens = vec![1u32; losses_nats.len()];
    val_bpb(losses_nats, &lens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semantics_example() {
        let v = val_bpb(&[2.0, 9.0, 1.0], &[4, 0, 6]).unwrap();
        assert!((v - 3.0 / (std::f64::consts::LN_2 * 10.0)).abs() < 1e-15);
        assert_eq!(format!("{v:.6}"), "0.432809");
    }

    #[test]
    fn byte_level_is_mean_over_ln2() {
        let v = val_bpb_bytes(&[1.0, 2.0, 3.0]).unwrap();
        assert!((v - 2.0 / std::f64::consts::LN_2).abs() < 1e-12);
        // An untrained 256-way byte model: ln(256) nats per byte = 8 bits.
        let v = val_bpb_bytes(&[256f64.ln(); 10]).unwrap();
        assert!((v - 8.0).abs() < 1e-12);
    }

    #[test]
    fn errors() {
        assert_eq!(
            val_bpb(&[1.0], &[1, 2]),
            Err(BpbError::LengthMismatch {
                losses: 1,
                byte_lens: 2
            })
        );
        assert_eq!(val_bpb(&[1.0, 2.0], &[0, 0]), Err(BpbError::NoBytes));
        assert_eq!(val_bpb(&[], &[]), Err(BpbError::NoBytes));
        assert!(matches!(
            val_bpb(&[f64::NAN], &[1]),
            Err(BpbError::BadLoss { index: 0, .. })
        ));
        assert!(matches!(
            val_bpb(&[1.0, -1.0], &[1, 1]),
            Err(BpbError::BadLoss { index: 1, .. })
        ));
    }
}
