//! Reading metrics from a command's output.
//!
//! Output is split into lines at `\n` *and* `\r`: progress bars that redraw one terminal line with
//! `\r` (karpathy/autoresearch prints `step 00953 (100.0%) | loss: …` that way) become separate
//! lines, so a summary printed after them is still read line by line.

use std::collections::BTreeMap;

/// At most this many distinct keys are kept by [`parse_metrics`].
pub const MAX_METRICS: usize = 64;
/// Longest metric key, bytes.
pub const MAX_METRIC_KEY_BYTES: usize = 64;

/// The lines of `output`, split at `\n` and at `\r` (so `\r\n` yields an extra empty line).
pub(crate) fn lines(output: &str) -> impl DoubleEndedIterator<Item = &str> {
    output.split(['\n', '\r'])
}

/// Every `key: number` line of `output`, as a map.
///
/// A line counts when it is `key:`, optional blanks, a finite decimal number
/// (`[+-]?digits[.digits][e[+-]digits]`) and optional trailing blanks, nothing else; the key is
/// `[A-Za-z_][A-Za-z0-9_.-]{0,63}` and starts the line. For a key seen more than once, the last
/// value wins. At most [`MAX_METRICS`] distinct keys are kept: keys first seen after that are
/// ignored (values of kept keys still update). Lines are split as the module docs say, so the
/// autoresearch summary after `---` is read even after `\r` progress lines.
pub fn parse_metrics(output: &str) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    for line in lines(output) {
        let Some((key, value)) = metric_line(line) else {
            continue;
        };
        if metrics.len() < MAX_METRICS || metrics.contains_key(key) {
            metrics.insert(key.to_owned(), value);
        }
    }
    metrics
}

/// Whether `output` has a line that is exactly `FAIL` (blanks around it ignored): the program's
/// own verdict that the run failed (autoresearch prints it when the loss explodes).
pub fn saw_fail(output: &str) -> bool {
    lines(output).any(|line| line.trim() == "FAIL")
}

/// The value of the last line of `output` matching `^<metric>:\s*<number>` whose number is finite.
/// `<number>` is a decimal with optional sign, fraction and exponent (`-1.5e-3`); text after it on
/// the line is ignored. Lines are split as the module docs say (`\r` is a line break too).
pub fn parse_metric(output: &str, metric: &str) -> Option<f64> {
    lines(output)
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?.strip_prefix(':')?;
            let number = leading_number(rest.trim_start())?;
            number.parse::<f64>().ok().filter(|v| v.is_finite())
        })
        .next_back()
}

/// `(key, value)` when `line` is a strict `key: number` line.
fn metric_line(line: &str) -> Option<(&str, f64)> {
    let (key, rest) = line.split_once(':')?;
    if !valid_key(key) {
        return None;
    }
    let rest = rest.trim_start();
    let number = leading_number(rest)?;
    if !rest[number.len()..].trim().is_empty() {
        return None;
    }
    let value = number.parse::<f64>().ok().filter(|v| v.is_finite())?;
    Some((key, value))
}

fn valid_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && key.len() <= MAX_METRIC_KEY_BYTES
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The longest prefix of `s` of the form `[+-]?(digits[.digits?]|.digits)([eE][+-]?digits)?`.
fn leading_number(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_end = digits(i);
    let mut end = int_end;
    let mut mantissa_digits = int_end - i;
    if b.get(end) == Some(&b'.') {
        let frac_end = digits(end + 1);
        mantissa_digits += frac_end - (end + 1);
        if mantissa_digits > 0 {
            end = frac_end;
        }
    }
    if mantissa_digits == 0 {
        return None;
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        i = end + 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_end = digits(i);
        if exp_end > i {
            end = exp_end;
        }
    }
    Some(&s[..end])
}
