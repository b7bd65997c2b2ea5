//! Printing results: JSON for scripts, plain text for people, and the error type that maps to exit
//! codes.

use std::fmt;
use std::process::ExitCode;

use serde::Serialize;

/// Why a command failed, and therefore its exit code.
#[derive(Debug)]
pub(crate) enum CmdError {
    /// The input was read but rejected (exit 1).
    Rejected(anyhow::Error),
    /// The command line itself is wrong in a way clap cannot see (exit 2).
    Usage(String),
}

impl CmdError {
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            CmdError::Rejected(_) => ExitCode::from(1),
            CmdError::Usage(_) => ExitCode::from(2),
        }
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdError::Rejected(e) => write!(f, "{e:#}"),
            CmdError::Usage(m) => write!(f, "{m}"),
        }
    }
}

impl From<anyhow::Error> for CmdError {
    fn from(e: anyhow::Error) -> Self {
        CmdError::Rejected(e)
    }
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), CmdError> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| CmdError::Rejected(anyhow::anyhow!("cannot render JSON: {e}")))?;
    out!("{s}");
    Ok(())
}

/// Reads a whole text file with an error that names it.
pub(crate) fn read_text(path: &std::path::Path) -> Result<String, CmdError> {
    std::fs::read_to_string(path)
        .map_err(|e| CmdError::Rejected(anyhow::anyhow!("cannot read {}: {e}", path.display())))
}

/// The serde (wire/manifest) name of a unit enum value, e.g. `minimize` or `paid_metered`.
pub(crate) fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
    }
}

/// `println!` that ignores a closed stdout (e.g. `btd status | head`) instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
pub(crate) use out;

/// A value as text that parses back to the same `f64` (Rust's shortest round-trip form), for
/// numbers a user may copy into `--value`: `{:.6}` is not (the owner compares bit for bit).
pub(crate) fn exact(v: f64) -> String {
    format!("{v}")
}
