//! [`Amount`]: token amounts in integer micro-units.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-units per whole token: amounts carry six decimals so that payouts can be split exactly in
/// integers (semantics §2) while still reading naturally as tokens.
pub const MICROS_PER_TOKEN: u64 = 1_000_000;

/// Decimals shown and accepted; tied to [`MICROS_PER_TOKEN`].
const DECIMALS: usize = 6;

/// How much of a rejected input an error message repeats, so a huge input cannot flood a log.
const MAX_ECHO_CHARS: usize = 80;

/// An amount of the reward token in integer micro-units (10^-6). Displayed with exactly six
/// decimals, e.g. `66.666667`.
///
/// In human-readable formats (JSON, TOML) it serialises as that decimal string and also accepts a
/// plain number of tokens; in the binary wire codec it is the `u64` of micro-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub u64);

/// Why a text or number is not a valid [`Amount`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The input was empty.
    #[error("the amount is empty; write a number of tokens such as 100 or 12.5")]
    Empty,
    /// The input is not digits with an optional decimal point.
    #[error(
        "{got:?} is not an amount; write digits with an optional decimal point, such as 100 or \
         12.345678 (no sign, no exponent, no spaces)"
    )]
    Invalid {
        /// The rejected input (truncated).
        got: String,
    },
    /// More than six decimals.
    #[error(
        "{got:?} has more than 6 decimals; amounts are counted in millionths of a token, so round \
         it to at most 6 decimals"
    )]
    TooManyDecimals {
        /// The rejected input (truncated).
        got: String,
    },
    /// Larger than the largest representable amount.
    #[error("{got:?} is too large; the largest amount is 18446744073709.551615")]
    Overflow {
        /// The rejected input (truncated).
        got: String,
    },
    /// A negative number.
    #[error("the amount {got} is negative; amounts must be 0 or more")]
    Negative {
        /// The rejected input.
        got: String,
    },
    /// NaN or an infinity.
    #[error("the amount {got} is not a finite number; give a finite number of tokens")]
    NotFinite {
        /// The rejected input.
        got: String,
    },
}

fn echo(s: &str) -> String {
    s.chars().take(MAX_ECHO_CHARS).collect()
}

impl Amount {
    /// Nothing.
    pub const ZERO: Amount = Amount(0);

    /// The amount in micro-units.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// `tokens` whole tokens, or an overflow error.
    pub fn from_whole_tokens(tokens: u64) -> Result<Amount, AmountError> {
        tokens
            .checked_mul(MICROS_PER_TOKEN)
            .map(Amount)
            .ok_or_else(|| AmountError::Overflow {
                got: tokens.to_string(),
            })
    }

    /// Parses a decimal number of tokens: ASCII digits, optionally a `.` followed by one to six
    /// digits. No sign, exponent or surrounding spaces.
    pub fn from_decimal_str(s: &str) -> Result<Amount, AmountError> {
        if s.is_empty() {
            return Err(AmountError::Empty);
        }
        let invalid = || AmountError::Invalid { got: echo(s) };
        if s.starts_with('-') && s.len() > 1 {
            return Err(AmountError::Negative { got: echo(s) });
        }
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (s, None),
        };
        let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || frac.is_some_and(|f| !all_digits(f)) {
            return Err(invalid());
        }
        let frac = frac.unwrap_or("");
        if frac.len() > DECIMALS {
            return Err(AmountError::TooManyDecimals { got: echo(s) });
        }
        let overflow = || AmountError::Overflow { got: echo(s) };
        let mut micros: u64 = 0;
        for b in whole.bytes() {
            micros = micros
                .checked_mul(10)
                .and_then(|m| m.checked_add(u64::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        micros = micros.checked_mul(MICROS_PER_TOKEN).ok_or_else(overflow)?;
        // At most six digits, then scaled to six: cannot overflow.
        let frac_micros = frac
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(DECIMALS)
            .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
        micros
            .checked_add(frac_micros)
            .map(Amount)
            .ok_or_else(overflow)
    }

    /// Converts a floating-point number of tokens, rounding to the nearest micro-unit.
    pub fn from_tokens_f64(tokens: f64) -> Result<Amount, AmountError> {
        if !tokens.is_finite() {
            return Err(AmountError::NotFinite {
                got: tokens.to_string(),
            });
        }
        if tokens < 0.0 {
            return Err(AmountError::Negative {
                got: tokens.to_string(),
            });
        }
        let micros = (tokens * MICROS_PER_TOKEN as f64).round();
        // 2^64 is exactly representable; every f64 below it converts to u64 without loss of range.
        if micros >= 18_446_744_073_709_551_616.0 {
            return Err(AmountError::Overflow {
                got: tokens.to_string(),
            });
        }
        Ok(Amount(micros as u64))
    }

    /// The amount in tokens as a float (for display and statistics; may round).
    pub fn to_tokens_f64(self) -> f64 {
        self.0 as f64 / MICROS_PER_TOKEN as f64
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self + other`, saturating at the largest amount.
    pub fn saturating_add(self, other: Amount) -> Amount {
        Amount(self.0.saturating_add(other.0))
    }

    /// `self - other`, or `None` if it would be negative.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}",
            self.0 / MICROS_PER_TOKEN,
            self.0 % MICROS_PER_TOKEN
        )
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Amount::from_decimal_str(s)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(HumanVisitor)
        } else {
            Ok(Amount(u64::deserialize(d)?))
        }
    }
}

/// Accepts the decimal string, or a number of tokens as a JSON/TOML number.
struct HumanVisitor;

impl Visitor<'_> for HumanVisitor {
    type Value = Amount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "an amount of tokens as a decimal string with at most 6 decimals, e.g. \"12.5\"",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
        Amount::from_decimal_str(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
        Amount::from_whole_tokens(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(AmountError::Negative { got: v.to_string() })),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
        if !v.is_finite() {
            return Err(E::custom(AmountError::NotFinite { got: v.to_string() }));
        }
        if v == 0.0 {
            return Ok(Amount::ZERO);
        }
        // Rust prints the shortest decimal that reads back as the same f64 and never uses an
        // exponent, so parsing that text keeps the six-decimal rule exact: `12.5` is accepted,
        // `0.0000001` is refused instead of silently rounded.
        Amount::from_decimal_str(&v.to_string()).map_err(E::custom)
    }
}

impl schemars::JsonSchema for Amount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]{1,6})?$",
            "description": "an amount of tokens as a decimal string with at most 6 decimals (micro-units), e.g. \"66.666667\""
        })
    }
}
