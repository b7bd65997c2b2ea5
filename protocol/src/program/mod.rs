//! The research program: its manifest, validation and content-addressed id (semantics §1).
//!
//! A manifest is TOML written by the owner. [`Program::from_toml`] validates it into a typed
//! [`Program`] or returns *every* problem found, each naming the field, the line where the TOML parser
//! knows it, and the allowed values. The program id is the SHA-256 of the canonical encoding of the
//! program together with the owner's public key, so the same manifest published by two owners gives
//! two programs. The full field reference is `docs/program.md`.

pub(crate) mod datetime;
mod parse;
pub mod search;
#[cfg(test)]
mod tests;
mod walk;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dispatch::{Budget, ComputePacket, Decision, Policy, Rung, SpendClass};
use crate::kb::{AcceptRule, Amount, Direction, MinImprovement, Rules, Split};
use crate::membership::MembershipMode;
use crate::{Digest, Timestamp};

/// The manifest format version this build reads.
pub const MANIFEST_VERSION: u32 = 1;

/// A validated research program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Program {
    /// Manifest format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Short slug, `[a-z0-9][a-z0-9-]{0,62}`.
    pub name: String,
    /// The exact question, in words.
    pub objective: String,
    /// How members are admitted.
    pub membership: MembershipMode,
    /// The objective metric and acceptance rule.
    pub criteria: Criteria,
    /// Reference value before any champion exists.
    pub baseline: Option<f64>,
    /// The reward pool and how it is split.
    pub reward: Reward,
    /// What a worker runs.
    pub task: Task,
    /// The hypothesis search space (`[task.search]`; empty: every worker runs the task as written).
    pub search: search::SearchSpace,
    /// Compute rungs the program knows about.
    pub rungs: Vec<Rung>,
    /// Spend policy.
    pub policy: Policy,
    /// Outputs every result must include.
    pub required_outputs: Vec<String>,
    /// When the program stops taking work.
    pub stop: StopConditions,
    /// How the owner checks claims before they count (`[verify]`).
    pub verify: Verify,
}

/// How the owner checks a claim before it counts (`[verify]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Verify {
    /// What the owner does with a claim the KEEP rule would accept.
    pub mode: VerifyMode,
    /// Largest difference between the claimed and the re-measured value accepted when the owner's
    /// evaluation runs on another device model or btd version (on the same, it must be bit-exact).
    pub tolerance: f64,
    /// Largest amount by which the metric on the owner-only holdout may be worse than on the
    /// validation split; `None` (`holdout = false`) turns the holdout check off.
    pub max_holdout_gap: Option<f64>,
    /// Re-train (same config, seed and steps) claims that would give their worker at least this
    /// share of the pool (0–1); `None`: never re-train.
    pub retrain_share: Option<f64>,
    /// Largest difference between the claimed value and the mean of the owner's re-trainings.
    pub retrain_tolerance: f64,
    /// How many seeds a re-training check trains with (1 to [`MAX_RETRAIN_SEEDS`]): the claim's seed
    /// and `retrain_seeds − 1` derived from it ([`Verify::retrain_seed_list`]). The mean of the runs
    /// is compared with the claim and is the value that counts, so a lucky seed cannot win.
    pub retrain_seeds: u32,
    /// Largest artifact (checkpoint, dataset) moved for this program, bytes.
    pub max_artifact_bytes: u64,
    /// How long the owner keeps trying to fetch a claim's checkpoint before rejecting it, seconds.
    pub fetch_timeout_secs: u64,
}

/// What the owner does with a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Fetch the checkpoint and re-evaluate it (candle tasks; the default for them).
    Reevaluate,
    /// No check: claims count when received (shell tasks without `rerun`).
    None,
    /// Run the claim's code again (shell tasks): the owner re-runs the claimed patch in a fresh
    /// copy of its parent's tree, with the claim's seed (and `retrain_seeds − 1` more), in a
    /// sandbox, with the owner-only holdout as `BTD_HOLDOUT`, and compares the mean within
    /// `tolerance`.
    Rerun,
}

impl Verify {
    /// Defaults: re-evaluate with a 1e-4 tolerance and a 0.25 holdout gap for candle tasks; no
    /// check for shell tasks (and, when a shell program asks for `rerun`, one seed).
    pub fn default_for(task: &Task) -> Verify {
        Verify {
            mode: match task {
                Task::Candle(_) => VerifyMode::Reevaluate,
                Task::Shell(_) => VerifyMode::None,
            },
            tolerance: DEFAULT_VERIFY_TOLERANCE,
            max_holdout_gap: Some(DEFAULT_HOLDOUT_GAP),
            retrain_share: None,
            retrain_tolerance: DEFAULT_RETRAIN_TOLERANCE,
            retrain_seeds: DEFAULT_RETRAIN_SEEDS,
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
            fetch_timeout_secs: DEFAULT_FETCH_TIMEOUT_SECS,
        }
    }

    /// Whether claims wait for the owner's check.
    pub fn checks(&self) -> bool {
        self.mode != VerifyMode::None
    }

    /// The seeds a re-training check of a claim trained with `claim_seed` uses: the claim's seed
    /// first, then `retrain_seeds − 1` others derived from it (SplitMix64 of the seed and the run's
    /// index), all distinct. Deterministic, so anyone can repeat the owner's check.
    pub fn retrain_seed_list(&self, claim_seed: u64) -> Vec<u64> {
        let k = self.retrain_seeds.clamp(1, MAX_RETRAIN_SEEDS) as usize;
        let mut seeds = vec![claim_seed];
        let mut i: u64 = 0;
        while seeds.len() < k {
            i += 1;
            let s = splitmix64(claim_seed ^ i.wrapping_mul(0xA076_1D64_78BD_642F));
            if !seeds.contains(&s) {
                seeds.push(s);
            }
        }
        seeds
    }
}

/// SplitMix64's output function: a well-mixed 64-bit value from `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Default `verify.tolerance` (bits per byte).
pub const DEFAULT_VERIFY_TOLERANCE: f64 = 1e-4;
/// Default `verify.max_holdout_gap` (bits per byte).
pub const DEFAULT_HOLDOUT_GAP: f64 = 0.25;
/// Default `verify.retrain_tolerance` (bits per byte).
pub const DEFAULT_RETRAIN_TOLERANCE: f64 = 0.05;
/// Default `verify.retrain_seeds`: three runs, so the value that counts is a mean and one lucky seed
/// cannot carry a claim (docs/program.md, "Noise").
pub const DEFAULT_RETRAIN_SEEDS: u32 = 3;
/// Largest `verify.retrain_seeds`: each seed is a full re-training by the owner.
pub const MAX_RETRAIN_SEEDS: u32 = 8;
/// Default `verify.max_artifact_bytes` (256 MiB).
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 256 << 20;
/// Default `verify.fetch_timeout_secs`.
pub const DEFAULT_FETCH_TIMEOUT_SECS: u64 = 300;
/// Largest `[task] eval_tokens` (2^27): the trainer holds one 8-byte loss per scored token, and
/// both the manifest parser and the trainer (`btd_trainer::config::MAX_EVAL_TOKENS`, the same
/// constant) refuse more, so a program the owner can publish is one its workers can evaluate.
pub const MAX_EVAL_TOKENS: u64 = 1 << 27;

/// The objective metric and acceptance rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Criteria {
    /// Metric name, e.g. `val_bpb`.
    pub metric: String,
    /// Which way it improves.
    pub direction: Direction,
    /// The acceptance rule (with its threshold in threshold mode).
    pub accept: AcceptRule,
    /// How much a new champion must improve on the reference (`min_improvement`,
    /// `min_improvement_relative`; defaults from [`Criteria::default_min_improvement`]).
    pub min_improvement: MinImprovement,
}

/// Default `criteria.min_improvement` for candle tasks (bits per byte): about twice the run-to-run
/// standard deviation of `val_bpb` across seeds measured for the presets (docs/benchmarks.md,
/// "Run-to-run noise"), so a different seed alone does not take the champion.
pub const DEFAULT_MIN_IMPROVEMENT_BPB: f64 = 0.035;

impl Criteria {
    /// The default minimum improvement for `task`: [`DEFAULT_MIN_IMPROVEMENT_BPB`] for candle tasks
    /// (whose metric, `val_bpb`, btd knows the noise of); none for shell tasks, whose metric's scale
    /// btd cannot know (declare one).
    pub fn default_min_improvement(task: &Task) -> MinImprovement {
        match task {
            Task::Candle(_) => MinImprovement {
                absolute: DEFAULT_MIN_IMPROVEMENT_BPB,
                relative: 0.0,
            },
            Task::Shell(_) => MinImprovement::NONE,
        }
    }
}

/// The reward pool. Nothing transfers funds: btd computes the split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reward {
    /// Pool size.
    pub pool: Amount,
    /// Display symbol, e.g. `OBOL`.
    pub token: String,
    /// How the pool is split.
    pub split: Split,
}

/// What a worker runs for one compute packet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Train btd's byte-level GPT with candle and report `val_bpb`.
    Candle(CandleTask),
    /// Run one bounded shell command and parse `<metric>: <number>` from its output.
    Shell(ShellTask),
}

/// A candle training task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CandleTask {
    /// Model size preset.
    pub preset: ModelPreset,
    /// The corpus.
    pub dataset: Dataset,
    /// Wall-clock budget per packet, seconds.
    pub seconds: Option<u64>,
    /// Step budget per packet.
    pub steps: Option<u64>,
    /// Base seed; workers derive their own from it.
    pub seed: u64,
    /// Validation token budget for `val_bpb`.
    pub eval_tokens: u64,
}

/// Model size presets of btd's trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelPreset {
    /// Learns within 30 s on 2 CPU cores.
    Tiny,
    /// A few minutes on a CPU, seconds on a GPU.
    Small,
    /// GPU-sized.
    Base,
}

impl std::fmt::Display for ModelPreset {
    /// As the manifest spells it: `tiny`, `small`, `base`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelPreset::Tiny => "tiny",
            ModelPreset::Small => "small",
            ModelPreset::Base => "base",
        })
    }
}

/// The corpus a candle task trains on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    /// A UTF-8 text file identified by its SHA-256; workers refuse a file that does not match.
    File {
        /// The file's digest.
        sha256: Digest,
    },
    /// btd's built-in deterministic synthetic corpus (for tests and the demo).
    Synthetic {
        /// Generator seed.
        seed: u64,
        /// Corpus size in bytes.
        bytes: u64,
    },
}

/// A shell task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShellTask {
    /// The command line, run by `sh -c`.
    pub command: String,
    /// Hard wall-clock limit, seconds; the process group is killed after it.
    pub timeout_secs: u64,
    /// The source tree the command runs in (`[task.source]`), when the program ships one.
    pub source: Option<SourceBundle>,
}

/// A shell program's source tree (`[task.source]`): a canonical tar the owner publishes (`btd
/// source pack DIR` makes it and prints its digest), fetched by members over the mesh like a
/// dataset. Each round runs the command in a fresh copy of the tree: the bundle plus the patch
/// chain of the result it builds on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SourceBundle {
    /// SHA-256 of the tar.
    pub sha256: Digest,
    /// Globs (relative to the tree) of the files a code hypothesis may change, e.g. `train.py`.
    pub editable: Vec<String>,
    /// A command run once per worker and bundle (cached) before the first round, e.g. to install
    /// dependencies or prepare data; it runs in the setup directory (`BTD_SETUP_DIR`).
    pub setup: Option<String>,
    /// Wall-clock limit of `setup`, seconds.
    pub setup_timeout_secs: u64,
}

/// Default `[task.source] setup_timeout_secs`: one hour.
pub const DEFAULT_SETUP_TIMEOUT_SECS: u64 = 3600;

/// When the program stops taking work. All optional; the first reached applies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StopConditions {
    /// Stop after this many submissions.
    pub max_submissions: Option<u64>,
    /// Stop at this instant.
    pub deadline: Option<Timestamp>,
    /// Stop once the champion reaches this value.
    pub target: Option<f64>,
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `criteria.direction` or `rungs[1].id`.
    pub field: String,
    /// 1-based line in the manifest, where known.
    pub line: Option<usize>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Every problem found in a manifest (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ManifestErrors(pub Vec<FieldError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "the manifest has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

/// A program's content-addressed id: SHA-256 over the canonical encoding of the owner's public key
/// and the program.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProgramId(pub Digest);

impl ProgramId {
    /// The id for `program` published by the owner whose libp2p public key (protobuf encoding) is
    /// `owner_key`.
    pub fn compute(program: &Program, owner_key: &libp2p_identity::PublicKey) -> Self {
        Self(Digest::content_id(
            "btd/program/v1",
            &(owner_key.encode_protobuf(), program),
        ))
    }

    /// First 12 hex characters, for display.
    pub fn short(&self) -> String {
        self.0.short()
    }
}

impl fmt::Display for ProgramId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ProgramId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProgramId({})", self.0.short())
    }
}

impl FromStr for ProgramId {
    type Err = crate::hash::DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().parse()?))
    }
}

impl schemars::JsonSchema for ProgramId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProgramId".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Digest as schemars::JsonSchema>::json_schema(g)
    }
}

/// A rung id the program does not declare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("program has no rung {rung:?}; its rungs are: {known}")]
pub struct UnknownRung {
    /// The requested id.
    pub rung: String,
    /// The declared ids, comma separated.
    pub known: String,
}

impl Program {
    /// Parses and validates a TOML manifest, returning every problem found.
    pub fn from_toml(text: &str) -> Result<Program, ManifestErrors> {
        parse::parse_manifest(text)
    }

    /// The program's id when published by `owner_key`.
    pub fn id(&self, owner_key: &libp2p_identity::PublicKey) -> ProgramId {
        ProgramId::compute(self, owner_key)
    }

    /// The KB rules this program's knowledge base applies.
    pub fn rules(&self) -> Rules {
        Rules {
            direction: self.criteria.direction,
            accept: self.criteria.accept,
            baseline: self.baseline,
            pool: self.reward.pool,
            split: self.reward.split,
            min_improvement: self.criteria.min_improvement,
        }
    }

    /// An empty knowledge base for this program: its rules, holding claims for the owner's check
    /// when `[verify]` checks them.
    pub fn kb(&self) -> Result<crate::kb::Kb, Vec<crate::kb::RulesError>> {
        if self.verify.checks() {
            crate::kb::Kb::verified(self.rules())
        } else {
            crate::kb::Kb::new(self.rules())
        }
    }

    /// The decision every packet of this program serves: the objective, keyed by the program name.
    pub fn decision(&self) -> Decision {
        Decision {
            id: self.name.clone(),
            question: self.objective.clone(),
            required_outputs: self.required_outputs.clone(),
        }
    }

    /// A rung by id.
    pub fn rung(&self, rung_id: &str) -> Result<&Rung, UnknownRung> {
        self.rungs
            .iter()
            .find(|r| r.id == rung_id)
            .ok_or_else(|| UnknownRung {
                rung: rung_id.to_string(),
                known: self
                    .rungs
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The compute packet a worker would run on `rung_id`: the program's question, its stop
    /// conditions, required outputs and the task's budget (plus the per-packet spend cap on paid
    /// rungs).
    pub fn packet_for_rung(&self, rung_id: &str) -> Result<ComputePacket, UnknownRung> {
        let rung = self.rung(rung_id)?;
        let (wall_clock_secs, steps) = match &self.task {
            Task::Candle(t) => (t.seconds, t.steps),
            Task::Shell(t) => (Some(t.timeout_secs), None),
        };
        let spend_cap = match rung.spend_class {
            SpendClass::LocalUnmetered => None,
            SpendClass::PaidMetered => self.policy.paid.max_spend_per_packet,
        };
        let mut success_bar = std::collections::BTreeMap::new();
        if let AcceptRule::Threshold { threshold } = self.criteria.accept {
            success_bar.insert(format!("{}_threshold", self.criteria.metric), threshold);
        }
        if let Some(b) = self.baseline {
            success_bar.insert(format!("{}_baseline", self.criteria.metric), b);
        }
        Ok(ComputePacket {
            id: format!("{}:{}", self.name, rung.id),
            decision_id: self.name.clone(),
            rung_id: rung.id.clone(),
            question: self.objective.clone(),
            success_bar,
            stop_condition: self.stop_condition_text(),
            required_outputs: self.required_outputs.clone(),
            budget: Budget {
                wall_clock_secs,
                steps,
                spend_cap,
            },
        })
    }

    /// The stop conditions in words (always non-empty: the per-packet budget is one).
    pub fn stop_condition_text(&self) -> String {
        let mut parts = Vec::new();
        match &self.task {
            Task::Candle(t) => {
                if let Some(s) = t.seconds {
                    parts.push(format!("each packet stops after {s} s of training"));
                }
                if let Some(n) = t.steps {
                    parts.push(format!("each packet stops after {n} steps"));
                }
            }
            Task::Shell(t) => {
                parts.push(format!("each packet is killed after {} s", t.timeout_secs))
            }
        }
        if let Some(n) = self.stop.max_submissions {
            parts.push(format!("the program stops after {n} submissions"));
        }
        if let Some(d) = self.stop.deadline {
            parts.push(format!(
                "the program stops at {}",
                datetime::format_rfc3339(d)
            ));
        }
        if let Some(t) = self.stop.target {
            let cmp = match self.criteria.direction {
                Direction::Minimize => "<=",
                Direction::Maximize => ">=",
            };
            parts.push(format!(
                "the program stops once the champion's {} {cmp} {t}",
                self.criteria.metric
            ));
        }
        parts.join("; ")
    }
}
