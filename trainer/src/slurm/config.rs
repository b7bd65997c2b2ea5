//! A Slurm rung's settings (`[rungs.slurm]` in `config.toml`), checked before anything reaches
//! `sbatch`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SlurmError;

/// Longest accepted string in a rung's Slurm settings.
const MAX_SETTING_BYTES: usize = 128;
/// Default for [`SlurmConfig::max_queue_secs`]: one day.
pub const DEFAULT_MAX_QUEUE_SECS: u64 = 24 * 3600;
/// Default for [`SlurmConfig::poll_ms`].
pub const DEFAULT_POLL_MS: u64 = 2000;
/// Default for [`SlurmConfig::time_margin_secs`].
pub const DEFAULT_TIME_MARGIN_SECS: u64 = 60;

/// How a rung submits its rounds to Slurm (the `[rungs.slurm]` table of `config.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmConfig {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--gres`, e.g. `gpu:h100:1`.
    pub gres: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--mem`, e.g. `16G`.
    pub mem: Option<String>,
    /// The longest `--time` this rung may ask for, in seconds (the partition's limit); a packet
    /// whose budget needs more is refused before submission.
    pub max_time_secs: Option<u64>,
    /// Seconds added to the packet's budget for `--time` (start-up, evaluation, writing outputs);
    /// Slurm rounds the sum up to whole minutes.
    pub time_margin_secs: u64,
    /// How long a job may wait in the queue before btd cancels it and fails the round.
    pub max_queue_secs: u64,
    /// How often to ask `squeue` about the job, in milliseconds (at least 200).
    pub poll_ms: u64,
    /// The `btd` binary the compute nodes run for candle rounds (default: this daemon's own
    /// executable; it must be at the same path on the nodes).
    pub btd_path: Option<PathBuf>,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            partition: None,
            account: None,
            qos: None,
            gres: None,
            cpus_per_task: None,
            mem: None,
            max_time_secs: None,
            time_margin_secs: DEFAULT_TIME_MARGIN_SECS,
            max_queue_secs: DEFAULT_MAX_QUEUE_SECS,
            poll_ms: DEFAULT_POLL_MS,
            btd_path: None,
        }
    }
}

impl SlurmConfig {
    /// The text settings that are given, by their name (which is also their `sbatch` flag).
    pub(crate) fn text_settings(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("partition", &self.partition),
            ("account", &self.account),
            ("qos", &self.qos),
            ("gres", &self.gres),
            ("mem", &self.mem),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_deref().map(|v| (name, v)))
    }

    /// Checks every setting; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in self.text_settings() {
            check_setting(name, v)?;
        }
        if self.cpus_per_task == Some(0) || self.cpus_per_task.is_some_and(|c| c > 4096) {
            return Err("slurm.cpus_per_task must be 1 to 4096".into());
        }
        if self.max_time_secs == Some(0) {
            return Err("slurm.max_time_secs must be at least 1".into());
        }
        let week = crate::shell::MAX_TIMEOUT_SECS;
        if self.time_margin_secs > week || self.max_queue_secs > 30 * 24 * 3600 {
            return Err(
                "slurm.time_margin_secs must be at most a week and max_queue_secs at most 30 days"
                    .into(),
            );
        }
        if !(200..=600_000).contains(&self.poll_ms) {
            return Err("slurm.poll_ms must be 200 to 600000".into());
        }
        Ok(())
    }

    /// The `--time` for a packet whose budget is `budget_secs`, in whole minutes; refused when
    /// it exceeds [`SlurmConfig::max_time_secs`].
    pub fn time_limit_minutes(&self, budget_secs: u64) -> Result<u64, SlurmError> {
        let secs = budget_secs.saturating_add(self.time_margin_secs).max(1);
        if let Some(max) = self.max_time_secs {
            if secs > max {
                return Err(SlurmError::Invalid(format!(
                    "the packet needs {budget_secs} s plus a {} s margin, but this rung's Slurm \
                     time limit (max_time_secs) is {max} s",
                    self.time_margin_secs
                )));
            }
        }
        Ok(secs.div_ceil(60))
    }
}

fn check_setting(name: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= MAX_SETTING_BYTES
        && !v.starts_with('-')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:,=/+@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "slurm.{name} {v:?} must be 1 to {MAX_SETTING_BYTES} characters of letters, digits \
             and . _ : , = / + @ - (not starting with -)"
        ))
    }
}

/// Sbatch settings as `key = value` lines, for messages.
pub fn describe(cfg: &SlurmConfig) -> String {
    let mut parts: BTreeMap<&str, String> = cfg
        .text_settings()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    if let Some(c) = cfg.cpus_per_task {
        parts.insert("cpus", c.to_string());
    }
    if parts.is_empty() {
        "Slurm, default partition".into()
    } else {
        let p: Vec<String> = parts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!("Slurm, {}", p.join(", "))
    }
}
