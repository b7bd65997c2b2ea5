//! Scenario files (`netsim/scenarios/*.toml`): the seed, the nodes and their roles, network
//! tunables, the program, the join schedule, the workload and a timeline of faults. Parsed strictly
//! (unknown fields are errors) and validated before anything starts. See `docs/netsim.md`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A scenario that does not parse or does not make sense, in words.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown fields.
    #[error("invalid scenario {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The values are inconsistent.
    #[error("invalid scenario {name}: {message}")]
    Invalid {
        /// The scenario's name.
        name: String,
        /// What to fix.
        message: String,
    },
}

/// A whole scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (shown in reports).
    pub name: String,
    /// What it exercises.
    #[serde(default)]
    pub description: String,
    /// Seed of every random choice netsim makes (keys, topology, join order, metric values,
    /// jitter). `NETSIM_SEED` overrides it.
    pub seed: u64,
    /// The run fails if it has not finished after this many seconds.
    #[serde(default = "default_deadline")]
    pub deadline_s: u64,
    /// Nodes and roles.
    pub nodes: Nodes,
    /// Network tunables.
    #[serde(default)]
    pub net: Net,
    /// The program the owner publishes.
    #[serde(default)]
    pub program: ProgramSpec,
    /// How members join.
    #[serde(default)]
    pub join: Join,
    /// How members produce results.
    #[serde(default)]
    pub workload: Workload,
    /// Bounds for the checks.
    #[serde(default)]
    pub checks: Checks,
    /// What the hostile nodes do (`nodes.hostile`).
    #[serde(default)]
    pub hostile: HostileSpec,
    /// Faults and owner actions, in time order (relative to the publish).
    #[serde(default)]
    pub timeline: Vec<Event>,
}

fn default_deadline() -> u64 {
    55
}

/// How many nodes of each role. Node 0 is the owner; then relays, workers, revoked members,
/// non-members and observers, in that order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    /// Relay servers (also ordinary mesh nodes).
    #[serde(default)]
    pub relays: usize,
    /// Members that join and submit.
    pub workers: usize,
    /// Members that join, submit, are revoked by the timeline, and keep probing.
    #[serde(default)]
    pub revoked: usize,
    /// Nodes that ask to join, are denied, and probe the KB.
    #[serde(default)]
    pub non_members: usize,
    /// Nodes that only relay gossip.
    #[serde(default)]
    pub observers: usize,
    /// The last this-many workers have no listen address: reachable only through relays.
    #[serde(default)]
    pub unreachable_workers: usize,
    /// Each node dials this many random earlier nodes at start.
    #[serde(default = "default_degree")]
    pub degree: usize,
    /// `file`: every node has a SQLite store in a temp dir (crash + restart keep state);
    /// `memory`: only the owner does (cheaper for large runs).
    #[serde(default)]
    pub store: StoreKind,
    /// The first this-many workers are adversaries that claim a value their checkpoint does not
    /// reach (`workload.source = "train"` only).
    #[serde(default)]
    pub fake_metric: usize,
    /// The next this-many workers are adversaries that train on the validation split and claim
    /// the value their checkpoint really reaches there (`workload.source = "train"` only).
    #[serde(default)]
    pub val_trainers: usize,
    /// Hostile peers with their own client (after the observers): node `hostile:k` runs
    /// `hostile.attacks[k % len]` (see [`HostileSpec`]).
    #[serde(default)]
    pub hostile: usize,
}

fn default_degree() -> usize {
    3
}

/// Where nodes keep their database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite files in a temp dir for every node.
    #[default]
    File,
    /// SQLite in memory, except the owner's.
    Memory,
}

/// Network tunables and the initial link shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Net {
    /// Gossipsub heartbeat.
    pub heartbeat_ms: u64,
    /// request-response timeout.
    pub request_timeout_ms: u64,
    /// One-way latency of every link.
    pub latency_ms: u64,
    /// Jitter of every link.
    pub jitter_ms: u64,
    /// Bandwidth of every link in KiB/s (0: unlimited).
    pub bandwidth_kib: u64,
    /// How long to let the gossip mesh form after every node is connected.
    pub warmup_ms: u64,
    /// Most open connections per node (0: unlimited); dials to the owner and relays are always
    /// accepted. Models a host's connection table (the daemon's own bound is `max_peers`).
    pub max_connections: usize,
    /// The daemon's connection bound, `NetParams::max_peers` (0: the daemon's default).
    pub max_peers: usize,
}

impl Default for Net {
    fn default() -> Self {
        Self {
            heartbeat_ms: 500,
            request_timeout_ms: 5000,
            latency_ms: 0,
            jitter_ms: 0,
            bandwidth_kib: 0,
            warmup_ms: 1500,
            max_connections: 0,
            max_peers: 0,
        }
    }
}

/// The program manifest's variable parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgramSpec {
    /// `approval` or `open`.
    pub membership: String,
    /// `minimize` or `maximize`.
    pub direction: String,
    /// `beats-champion` or `threshold`.
    pub accept: String,
    /// Required with `accept = "threshold"`.
    pub threshold: Option<f64>,
    /// Reference before any champion.
    pub baseline: Option<f64>,
    /// Reward pool (whole tokens, up to 6 decimals).
    pub pool: f64,
    /// `by-impact` or `champion-takes-all`.
    pub split: String,
}

impl Default for ProgramSpec {
    fn default() -> Self {
        Self {
            membership: "approval".into(),
            direction: "minimize".into(),
            accept: "beats-champion".into(),
            threshold: None,
            baseline: Some(3.0),
            pool: 1000.0,
            split: "by-impact".into(),
        }
    }
}

impl ProgramSpec {
    /// The manifest text the owner publishes (validated by the daemon's own parser).
    pub fn manifest(&self, scenario: &str, workload: &Workload) -> String {
        let slug: String = scenario
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(50)
            .collect();
        let mut m = format!(
            "name = \"netsim-{slug}\"\nobjective = \"netsim scenario {scenario}\"\nmembership = \"{}\"\nrequired_outputs = [\"metrics.json\"]\n",
            self.membership
        );
        if let Some(b) = self.baseline {
            m.push_str(&format!("baseline = {b:?}\n"));
        }
        m.push_str(&format!(
            "[criteria]\nmetric = \"val_bpb\"\ndirection = \"{}\"\naccept = \"{}\"\n",
            self.direction, self.accept
        ));
        if let Some(t) = self.threshold {
            m.push_str(&format!("threshold = {t:?}\n"));
        }
        m.push_str(&format!(
            "[reward]\npool = {:?}\ntoken = \"OBOL\"\nsplit = \"{}\"\n",
            self.pool, self.split
        ));
        if workload.source == "train" {
            // A small corpus and a hot learning rate's worth of steps: a model trained on the
            // validation split visibly overfits it within the budget.
            m.push_str(&format!(
                "[task]\nkind = \"candle\"\npreset = \"tiny\"\nsteps = {}\nseed = 3\neval_tokens = 2048\n\
                 [task.dataset]\nkind = \"synthetic\"\nseed = 5\nbytes = {TRAIN_CORPUS_BYTES}\n\
                 [verify]\nmode = \"reevaluate\"\nmax_holdout_gap = 0.25\n",
                workload.steps
            ));
        } else {
            m.push_str(
                "[task]\nkind = \"shell\"\ncommand = \"echo val_bpb: 1\"\ntimeout_secs = 10\n",
            );
        }
        m.push_str(
            "[[rungs]]\nid = \"cpu\"\nspend_class = \"local_unmetered\"\nhardware = \"cpu\"\n",
        );
        if workload.source == "train" {
            m = m.replace(
                "required_outputs = [\"metrics.json\"]",
                "required_outputs = [\"checkpoint.safetensors\"]",
            );
        }
        m
    }
}

/// Size of the synthetic corpus of `train` workloads.
pub const TRAIN_CORPUS_BYTES: u64 = 16_384;

/// The join schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Join {
    /// Joins start at a seeded random offset in `[0, spread_ms]` after a node learns the program.
    pub spread_ms: u64,
    /// The simulated human: time between a code being shown and the owner's decision. Excluded
    /// from the join latency.
    pub approve_delay_ms: u64,
    /// A failed join (owner unreachable, code lost in a restart) is retried this often at most.
    pub attempts: u32,
}

impl Default for Join {
    fn default() -> Self {
        Self {
            spread_ms: 1000,
            approve_delay_ms: 100,
            attempts: 5,
        }
    }
}

/// How members produce results: `synthetic`, a seeded random walk of `val_bpb` toward lower values
/// (no training runs), or `train`, real candle training of the tiny model whose claims the owner
/// verifies (fetching each checkpoint over the mesh and re-evaluating it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Must be `synthetic`.
    pub source: String,
    /// First value of every walk.
    pub start: f64,
    /// Mean improvement per step.
    pub step: f64,
    /// Uniform noise half-width per step.
    pub noise: f64,
    /// Results per member.
    pub submissions: usize,
    /// Time between a member's results.
    pub interval_ms: u64,
    /// `train` only: the program's step budget (honest workers and the val-trainer use all of it).
    pub steps: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            source: "synthetic".into(),
            start: 3.0,
            step: 0.02,
            noise: 0.05,
            submissions: 5,
            interval_ms: 400,
            steps: 120,
        }
    }
}

/// Bounds of the liveness checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checks {
    /// After a heal (and at the end) every live member must see the owner's champion within this.
    pub converge_within_s: u64,
    /// Every node must learn the program within this.
    pub propagation_within_s: u64,
    /// Non-members and revoked members probe the KB this often.
    pub probe_every_ms: u64,
    /// Most open connections any node may have at any sample from the publish on (0: not checked).
    pub max_connections_per_node: usize,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            converge_within_s: 20,
            propagation_within_s: 20,
            probe_every_ms: 500,
            max_connections_per_node: 0,
        }
    }
}

/// The attacks a hostile node can run (see `docs/netsim.md`).
pub const ATTACKS: [&str; 6] = [
    "digest_thief",
    "verdict_poisoner",
    "join_flood",
    "malformed",
    "announce_flood",
    "submission_spam",
];

/// What the hostile nodes do and the bounds the `hostile` invariants hold the owner to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostileSpec {
    /// Node `hostile:k` runs `attacks[k % len]` (names from [`ATTACKS`]).
    pub attacks: Vec<String>,
    /// `join_flood`: throwaway identities, each asking for as many codes as it may and more.
    pub join_identities: usize,
    /// `announce_flood`: validly signed programs published (from the attacker's key).
    pub announcements: usize,
    /// `submission_spam`: results submitted.
    pub spam: usize,
    /// `malformed`: malformed frames sent (spread over the four protocols).
    pub malformed: usize,
    /// An honest observer asks the owner for its status this often (the latency probe).
    pub probe_every_ms: u64,
    /// The latency probe's 95th percentile must stay under this (the honest baseline and the
    /// figures under attack are in docs/netsim.md).
    pub owner_p95_ms: u64,
    /// Every latency probe must be answered, within this.
    pub owner_max_ms: u64,
    /// The owner's database (with its WAL) must stay under this many MiB.
    pub owner_db_mib: u64,
    /// No node may know more programs than this.
    pub max_known_programs: usize,
}

impl Default for HostileSpec {
    fn default() -> Self {
        Self {
            attacks: Vec::new(),
            join_identities: 264,
            announcements: 100,
            spam: 50,
            malformed: 64,
            probe_every_ms: 200,
            owner_p95_ms: 500,
            owner_max_ms: 9500,
            owner_db_mib: 16,
            max_known_programs: 10_000,
        }
    }
}

/// One timeline entry.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When, in ms after the owner published the program.
    pub at_ms: u64,
    /// What happens.
    #[serde(flatten)]
    pub fault: Fault,
}

/// Faults and owner actions. Node selectors: `owner`, `relays`, `workers`, `revoked`,
/// `non_members`, `observers`, `members` (workers + revoked), `all`, a role with an index
/// (`worker:3`) or a half-open range (`worker:0..4`), and comma-separated lists of these.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Abort the nodes' tasks; keys and stores are kept.
    Crash {
        /// Which nodes.
        nodes: String,
        /// Silent (peers are told nothing) or loud (connections reset at once).
        #[serde(default = "yes")]
        silent: bool,
    },
    /// Start crashed nodes again with the same key, store and address.
    Restart {
        /// Which nodes.
        nodes: String,
    },
    /// Split the network into groups (nodes in no group form one more group).
    Partition {
        /// Selectors, one per group.
        groups: Vec<String>,
    },
    /// Remove all partitions; the convergence check starts.
    Heal,
    /// Stop bytes between every node of `a` and every node of `b` (connections stay open).
    Blackhole {
        /// One side.
        a: String,
        /// The other side.
        b: String,
    },
    /// Undo a black hole.
    Unblackhole {
        /// One side.
        a: String,
        /// The other side.
        b: String,
    },
    /// Set latency, jitter and bandwidth: on every link, or between `a` and `b`.
    Shape {
        /// One side (omit both for every link).
        a: Option<String>,
        /// The other side.
        b: Option<String>,
        /// One-way latency.
        #[serde(default)]
        latency_ms: u64,
        /// Jitter.
        #[serde(default)]
        jitter_ms: u64,
        /// KiB/s (0: unlimited).
        #[serde(default)]
        bandwidth_kib: u64,
    },
    /// Reset connections (in-flight requests and gossip on them are lost).
    Reset {
        /// One side.
        a: String,
        /// The other side (omit: every connection of `a`).
        b: Option<String>,
    },
    /// The owner revokes these members.
    Revoke {
        /// Which members.
        nodes: String,
    },
}

// `at_ms` plus a strictly checked fault (serde's `flatten` cannot deny unknown fields).
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut t = toml::Table::deserialize(d)?;
        let at_ms = t
            .remove("at_ms")
            .ok_or_else(|| D::Error::missing_field("at_ms"))?
            .as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| D::Error::custom("at_ms must be a non-negative integer"))?;
        let fault = Fault::deserialize(toml::Value::Table(t)).map_err(D::Error::custom)?;
        Ok(Event { at_ms, fault })
    }
}

fn yes() -> bool {
    true
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses and validates scenario text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        s.validate()?;
        Ok(s)
    }

    /// Total number of nodes.
    pub fn node_count(&self) -> usize {
        let n = &self.nodes;
        1 + n.relays + n.workers + n.revoked + n.non_members + n.observers + n.hostile
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| ScenarioError::Invalid {
            name: self.name.clone(),
            message: m,
        };
        let n = &self.nodes;
        if n.workers == 0 {
            return Err(bad("nodes.workers must be at least 1".into()));
        }
        if n.unreachable_workers > n.workers {
            return Err(bad("nodes.unreachable_workers exceeds nodes.workers".into()));
        }
        if n.unreachable_workers > 0 && n.relays == 0 {
            return Err(bad(
                "unreachable workers need at least one relay (nodes.relays)".into(),
            ));
        }
        if n.degree == 0 {
            return Err(bad("nodes.degree must be at least 1".into()));
        }
        match self.workload.source.as_str() {
            "synthetic" => {
                if n.fake_metric + n.val_trainers > 0 {
                    return Err(bad(
                        "adversaries (nodes.fake_metric, nodes.val_trainers) need workload.source = \"train\""
                            .into(),
                    ));
                }
            }
            "train" => {
                if n.fake_metric + n.val_trainers >= n.workers {
                    return Err(bad(
                        "nodes.fake_metric + nodes.val_trainers must leave at least one honest worker"
                            .into(),
                    ));
                }
                if !(1..=2000).contains(&self.workload.steps) {
                    return Err(bad("workload.steps must be 1 to 2000".into()));
                }
            }
            other => {
                return Err(bad(format!(
                    "workload.source = {other:?}: use \"synthetic\" (a seeded random walk) or \"train\" (real training, verified claims)"
                )))
            }
        }
        if !(self.workload.start.is_finite()
            && self.workload.step.is_finite()
            && self.workload.noise.is_finite())
        {
            return Err(bad("workload numbers must be finite".into()));
        }
        if n.hostile > 0 {
            let h = &self.hostile;
            if h.attacks.is_empty() {
                return Err(bad("nodes.hostile needs hostile.attacks".into()));
            }
            if let Some(a) = h.attacks.iter().find(|a| !ATTACKS.contains(&a.as_str())) {
                return Err(bad(format!(
                    "hostile.attacks: unknown attack {a:?}; known: {}",
                    ATTACKS.join(", ")
                )));
            }
            if h.attacks.len() > n.hostile {
                return Err(bad(format!(
                    "hostile.attacks lists {} attacks for {} hostile nodes",
                    h.attacks.len(),
                    n.hostile
                )));
            }
            if self.workload.source != "train" {
                return Err(bad("hostile nodes need workload.source = \"train\"".into()));
            }
        }
        if self.net.heartbeat_ms == 0 || self.net.request_timeout_ms == 0 {
            return Err(bad(
                "net.heartbeat_ms and net.request_timeout_ms must be positive".into(),
            ));
        }
        let mut last = 0;
        for (i, e) in self.timeline.iter().enumerate() {
            if e.at_ms < last {
                return Err(bad(format!(
                    "timeline[{i}] at {} ms comes before the previous event ({last} ms)",
                    e.at_ms
                )));
            }
            last = e.at_ms;
            for sel in e.fault.selectors() {
                crate::roles::Layout::new(self)
                    .select(sel)
                    .map_err(|m| bad(format!("timeline[{i}]: {m}")))?;
            }
        }
        btd_protocol::program::Program::from_toml(
            &self.program.manifest(&self.name, &self.workload),
        )
        .map_err(|e| {
            bad(format!(
                "the [program] section gives an invalid manifest: {e}"
            ))
        })?;
        Ok(())
    }
}

impl Fault {
    /// The node selectors this fault names.
    pub fn selectors(&self) -> Vec<&str> {
        match self {
            Fault::Crash { nodes, .. } | Fault::Restart { nodes } | Fault::Revoke { nodes } => {
                vec![nodes]
            }
            Fault::Partition { groups } => groups.iter().map(String::as_str).collect(),
            Fault::Heal => vec![],
            Fault::Blackhole { a, b } | Fault::Unblackhole { a, b } => vec![a, b],
            Fault::Shape { a, b, .. } => a.iter().chain(b.iter()).map(String::as_str).collect(),
            Fault::Reset { a, b } => std::iter::once(a.as_str())
                .chain(b.iter().map(String::as_str))
                .collect(),
        }
    }
}
