//! Command-line definition (clap derive) and dispatch to the command implementations.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::output::CmdError;
use crate::{compute_cmd, daemon_cmd, offline};

/// btd: a peer-to-peer worker network for research programs.
///
/// An owner publishes a research program; workers join it over the mesh with a device code, spend
/// compute under a policy, and submit results to the owner's private knowledge base.
#[derive(Debug, Parser)]
#[command(name = "btd", version, about, long_about = None)]
pub struct Cli {
    /// Home directory (identity, config, database, control socket). Default: $BTD_HOME, else ~/.btd.
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole idea on this machine: a relay, an owner and workers as real daemons; device-code
    /// joins; candle training rounds; a live leaderboard; the payouts.
    Demo(crate::demo::DemoArgs),
    /// Run the daemon in the foreground (SIGINT/SIGTERM or `btd stop` shut it down cleanly).
    Start(StartArgs),
    /// Stop the running daemon.
    Stop,
    /// This node's peer id, listen and external addresses.
    Id,
    /// Connected peers and their advertised rungs.
    Peers,
    /// Publish a research program (prints its id).
    Publish {
        /// The manifest (TOML).
        manifest: PathBuf,
        /// The dataset file of a program whose dataset is a file: members fetch it from this node
        /// by digest over the mesh (its SHA-256 must match the manifest's).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Owner-only holdout (never served) that claims are also evaluated on; programs on the
        /// synthetic corpus get a generated one. A re-run program's command reads it as
        /// BTD_HOLDOUT.
        #[arg(long)]
        holdout: Option<PathBuf>,
        /// The source tree of a program with [task.source]: a directory (packed canonically) or
        /// the tar `btd source pack` wrote; members fetch it from this node by digest.
        #[arg(long)]
        source: Option<PathBuf>,
    },
    /// Programs known from the mesh.
    Programs,
    /// Join a program: prints the user code for the owner to approve, then waits for the grant;
    /// with --rounds, then runs that many rounds of the program's task and submits each result.
    Join(JoinArgs),
    /// The worker loop's rounds: state, value, verdict, traceability record, directory.
    Runs {
        /// The program id (default: every program).
        program: Option<String>,
        /// Export round ROUND of PROGRAM as an ORP (open-research-protocol) packet v1: writes the
        /// packet, a Markdown summary and its evidence (result bundle, impact read, approval
        /// receipt, traceability record) as JSON files and prints the packet's path.
        #[arg(long, value_name = "ROUND", requires = "program")]
        orp: Option<u64>,
        /// Where --orp writes (default: orp/ in the round's directory).
        #[arg(long, value_name = "DIR", requires = "orp")]
        out: Option<PathBuf>,
    },
    /// Owner: approve a join code.
    Approve {
        /// The user code, e.g. ABCD-EFGH (case and hyphen optional).
        code: String,
    },
    /// Owner: deny a join code.
    Deny {
        /// The user code.
        code: String,
    },
    /// Owner: members and pending join codes of a program.
    Members {
        /// The program id.
        program: String,
    },
    /// Owner: revoke a member (permanent).
    Revoke {
        /// The program id.
        program: String,
        /// The member id (its peer id).
        member: String,
    },
    /// Member: submit a result by hand (for shell-driven workers and tests). It is stored in the
    /// daemon's outbox first: when the owner is rate limiting or offline it stays queued and is
    /// sent later (`btd outbox`).
    Submit(SubmitArgs),
    /// Member: submissions queued for their owner (rate limited or offline) and the newest the
    /// owner refused, with why.
    Outbox {
        /// The program id (default: every program).
        program: Option<String>,
    },
    /// A program's hypothesis ledger: every result with its parent, value, verdict, member and
    /// rationale (lineage), oldest first.
    Ledger {
        /// The program id.
        program: String,
        /// Start after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Show at most this many results.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Write a result's tree (the bundle plus its patch chain) to a directory:
    /// `btd checkout PROGRAM [SEQ] DIR` (the champion's without SEQ).
    Checkout {
        /// The program id.
        program: String,
        /// [SEQ] DIR: the result (default: the champion) and the directory (must not exist or be
        /// empty).
        #[arg(num_args = 1..=2, required = true, value_name = "SEQ DIR")]
        rest: Vec<String>,
    },
    /// Source bundles of shell programs.
    #[command(subcommand)]
    Source(SourceCmd),
    /// Program status: members, claims, champion, payouts and a page of results, newest first (a
    /// member asks the owner).
    Status {
        /// The program id (optional when this node has exactly one program).
        program: Option<String>,
        /// Which page of results (1 = the newest, or the oldest with --oldest-first).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        page: u32,
        /// Results per page, 0 to 1000 (0: the summary alone). Default 20; with --watch, 1000.
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
        limit: Option<u32>,
        /// Pages run from the first result instead of the newest.
        #[arg(long)]
        oldest_first: bool,
        /// Redraw every SECS seconds (default 2) until interrupted, with the leaderboard; with
        /// --json, one status per line.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        watch: Option<u64>,
    },
    /// Owner: paid-compute requests from members (pending, granted, denied).
    Approvals,
    /// Owner: approve a member's paid compute for one packet (signs an approval receipt).
    ApproveSpend {
        /// The program id.
        program: String,
        /// The packet id (see `btd approvals`).
        packet: String,
        /// The requesting member id.
        #[arg(long)]
        member: String,
        /// How long the receipt is valid.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
    /// Owner: deny a member's paid compute for one packet.
    DenySpend {
        /// The program id.
        program: String,
        /// The packet id.
        packet: String,
        /// The requesting member id.
        #[arg(long)]
        member: String,
    },
    /// Research-program manifests.
    #[command(subcommand)]
    Program(ProgramCmd),
    /// Knowledge-base tools.
    #[command(subcommand)]
    Kb(KbCmd),
    /// Compute-dispatch policy tools.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Print the JSON Schema of a persisted or exchanged object (lists the names without NAME).
    Schema {
        /// Object name, e.g. `program-manifest` or `compute-packet`.
        name: Option<String>,
    },
    /// Train btd's byte-level GPT locally (no network) and write a checkpoint.
    Train(compute_cmd::TrainArgs),
    /// Recompute val_bpb from a checkpoint.
    Eval(compute_cmd::EvalArgs),
    /// Generate text from a checkpoint.
    Sample(compute_cmd::SampleArgs),
    /// Detect this machine's CPU and NVIDIA GPUs and the rungs they offer.
    Rungs,
    /// Run one candle round from its spec file (what a Slurm rung's batch job runs on the
    /// compute node; not for people).
    #[command(hide = true)]
    SlurmRound {
        /// The round's `slurm-round.json`.
        spec: PathBuf,
    },
}

/// `btd start` flags.
#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// Listen address (repeatable). Default: TCP and QUIC on all interfaces, port 4801.
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) listen: Vec<String>,
    /// Peer to dial at start, with its /p2p/ id (repeatable). A bootstrap peer that offers relay
    /// is also used to stay reachable from behind NAT.
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) bootstrap: Vec<String>,
    /// Offer circuit relay to other peers (run this on a reachable machine).
    #[arg(long)]
    pub(crate) relay_server: bool,
    /// Discover peers on the LAN with mDNS.
    #[arg(long)]
    pub(crate) mdns: bool,
    /// Serve the dashboard, its JSON API and /metrics over HTTP on ADDR (default
    /// 127.0.0.1:4802). A non-loopback address needs --http-token.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::web::DEFAULT_ADDR)]
    pub(crate) http: Option<String>,
    /// The token every dashboard request must carry (at least 16 characters): open
    /// http://ADDR/?token=TOKEN once, or send `Authorization: Bearer TOKEN`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "BTD_HTTP_TOKEN",
        hide_env_values = true
    )]
    pub(crate) http_token: Option<String>,
}

/// `btd submit` flags.
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The program id.
    pub(crate) program: String,
    /// The metric value (default, with --checkpoint: the daemon scores the checkpoint the way the
    /// owner will and claims that; given, it is still scored and a differing value warned about).
    #[arg(
        long,
        allow_negative_numbers = true,
        required_unless_present = "checkpoint"
    )]
    pub(crate) value: Option<f64>,
    /// An output file to record by digest (repeatable).
    #[arg(long = "output", value_name = "FILE")]
    pub(crate) outputs: Vec<PathBuf>,
    /// The rung the result was computed on.
    #[arg(long, default_value = "cpu")]
    pub(crate) rung: String,
    /// The checkpoint the value was measured on (from `btd train`): the owner fetches it and
    /// re-evaluates it before the value counts.
    #[arg(long)]
    pub(crate) checkpoint: Option<PathBuf>,
    /// The code hypothesis the value was measured with (JSON: parent, patch, rationale, seed,
    /// tree), for programs with a source bundle or re-run verification.
    #[arg(long)]
    pub(crate) code: Option<PathBuf>,
    /// How long to wait for the owner's answer, seconds; then the result is reported as queued in
    /// the outbox (exit 0) and the daemon keeps sending it.
    #[arg(long, value_name = "SECS", default_value_t = crate::control::DEFAULT_SUBMIT_WAIT_SECS,
          value_parser = clap::value_parser!(u64).range(0..=crate::control::MAX_SUBMIT_WAIT_SECS))]
    pub(crate) wait: u64,
    /// Return once the result is stored in the outbox, without waiting for the owner.
    #[arg(long, conflicts_with = "wait")]
    pub(crate) no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SourceCmd {
    /// Pack a directory into the canonical tar a program's [task.source] names, and print its
    /// sha256 (same directory, same bytes, same digest).
    Pack {
        /// The directory.
        dir: PathBuf,
        /// Also write the tar here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Largest bundle, bytes (the program's [verify] max_artifact_bytes).
        #[arg(long, default_value_t = btd_protocol::program::DEFAULT_MAX_ARTIFACT_BYTES)]
        max_bytes: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ProgramCmd {
    /// Validate a manifest: print the normalised program, or every problem with its field and line.
    Check {
        /// The manifest (TOML).
        manifest: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KbCmd {
    /// What-if: apply a program's KB rules to a log of submissions and print results and payouts.
    ///
    /// Each line of SUBMISSIONS is `{"worker": "...", "value": <number>}`. Invalid lines are reported
    /// with their line number and consume no sequence number.
    Replay {
        /// The program manifest (TOML).
        manifest: PathBuf,
        /// Submissions, one JSON object per line.
        submissions: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Evaluate dispatch for one packet and print the action and its reason.
    ///
    /// Either PROGRAM.toml with --rung (the packet a worker of that program would run on that rung),
    /// or --map MAP.toml with --point (a packet built from a project compute map).
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["manifest", "map"])))]
pub(crate) struct ExplainArgs {
    /// The program manifest (TOML).
    pub(crate) manifest: Option<PathBuf>,
    /// A project compute map (TOML) instead of a program.
    #[arg(long, requires = "point")]
    pub(crate) map: Option<PathBuf>,
    /// Compute point id in the map.
    #[arg(long, requires = "map")]
    pub(crate) point: Option<String>,
    /// Rung id (required with a program; defaults to the point's default rung with a map).
    #[arg(long)]
    pub(crate) rung: Option<String>,
    /// An approval receipt (JSON) for a paid rung.
    #[arg(long)]
    pub(crate) approval: Option<PathBuf>,
    /// Peer id allowed to approve paid spend (the program owner); repeatable. Without it, the
    /// receipt's own signer is trusted (a what-if: the daemon always checks against the owner).
    #[arg(long = "approver", value_name = "PEER-ID")]
    pub(crate) approvers: Vec<String>,
    /// Paid spend already used by the program (spend units), checked against `max_total_spend`.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) spent: f64,
    /// Print the verdict as an ORP gate result (JSON): run_* pass, hold_packet fail,
    /// request_paid_approval skipped (it waits for paid approval).
    #[arg(long)]
    pub(crate) orp: bool,
    /// Evaluate as of this instant (milliseconds since the Unix epoch) instead of now.
    #[arg(long, hide = true)]
    pub(crate) now_ms: Option<u64>,
}

/// Parses the command line, runs the command, prints errors, and returns the exit code
/// (0 success, 1 rejected, 2 usage).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("btd: {e:#}");
            e.exit_code()
        }
    }
}

/// `btd join` flags.
#[derive(Debug, Args)]
pub(crate) struct JoinArgs {
    /// The program id (64 hex characters).
    pub(crate) program: String,
    /// Return after printing the code; the daemon keeps polling (and, with --rounds, works) in the
    /// background.
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// After joining, run this many rounds: dispatch, train (or run the shell task) on a hypothesis
    /// near the champion's, submit, record.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::work::MAX_ROUNDS)))]
    pub(crate) rounds: Option<u32>,
    /// The program rung to run on (default: the first one this node's rungs fit).
    #[arg(long, requires = "rounds")]
    pub(crate) rung: Option<String>,
    /// The data file of a program whose dataset is a file (checked against its SHA-256).
    #[arg(long, requires = "rounds")]
    pub(crate) data: Option<PathBuf>,
    /// Let the daemon run the program's shell command (the owner's code) for each round.
    #[arg(long, requires = "rounds")]
    pub(crate) allow_shell: bool,
    /// How long a round waits for the owner to approve paid compute, seconds.
    #[arg(long, requires = "rounds", default_value_t = crate::work::DEFAULT_APPROVAL_WAIT_SECS)]
    pub(crate) approval_wait: u64,
    /// After the last round, how long to wait for the owner's verdicts on pending claims, seconds
    /// (0: return at once; `btd runs` shows them later).
    #[arg(long, requires = "rounds", default_value_t = crate::work::DEFAULT_VERDICT_WAIT_SECS)]
    pub(crate) verdict_wait: u64,
    /// A proposer (programs with a source bundle): this command runs each round in a workspace
    /// holding the parent tree and context/ (objective, champion, recent ledger as JSON); what it
    /// changes in the editable files is the round's code hypothesis; it may write rationale.md.
    #[arg(long, requires = "rounds", value_name = "CMD")]
    pub(crate) proposer: Option<String>,
    /// How long one proposer run may take, seconds.
    #[arg(long, requires = "proposer", default_value_t = crate::work::DEFAULT_PROPOSER_TIMEOUT_SECS)]
    pub(crate) proposer_timeout: u64,
    /// Run code other members wrote (the champion's patches) in the sandbox (no network, resource
    /// limits, a scratch directory). Without it, rounds build on the bundle or this member's own
    /// patches.
    #[arg(long, requires = "rounds")]
    pub(crate) allow_peer_code: bool,
}

/// Runs the parsed command.
pub(crate) fn run(cli: Cli) -> Result<(), CmdError> {
    let json = cli.json;
    let home = cli.home;
    match cli.command {
        Command::Program(ProgramCmd::Check { manifest }) => {
            offline::program::check(&manifest, json)
        }
        Command::Kb(KbCmd::Replay {
            manifest,
            submissions,
        }) => offline::replay::run(&manifest, &submissions, json),
        Command::Policy(PolicyCmd::Explain(args)) => offline::policy::explain(&args, json),
        Command::Schema { name } => offline::schema::run(name.as_deref()),
        Command::Demo(args) => crate::demo::run(&args),
        Command::Start(args) => daemon_cmd::start(home, args),
        Command::Stop => daemon_cmd::stop(home, json),
        Command::Id => daemon_cmd::id(home, json),
        Command::Peers => daemon_cmd::peers(home, json),
        Command::Publish {
            manifest,
            data,
            holdout,
            source,
        } => daemon_cmd::publish(
            home,
            &manifest,
            crate::node::types::PublishFiles {
                data,
                holdout,
                source,
            },
            json,
        ),
        Command::Programs => daemon_cmd::programs(home, json),
        Command::Join(args) => daemon_cmd::join(home, &args, json),
        Command::Runs {
            program,
            orp: Some(round),
            out,
        } => daemon_cmd::runs_orp(home, program.as_deref(), round, out.as_deref(), json),
        Command::Runs { program, .. } => daemon_cmd::runs(home, program.as_deref(), json),
        Command::Approve { code } => daemon_cmd::decide(home, code, true, json),
        Command::Deny { code } => daemon_cmd::decide(home, code, false, json),
        Command::Members { program } => daemon_cmd::members(home, &program, json),
        Command::Revoke { program, member } => daemon_cmd::revoke(home, &program, member, json),
        Command::Submit(args) => daemon_cmd::submit(home, &args, json),
        Command::Outbox { program } => daemon_cmd::outbox(home, program.as_deref(), json),
        Command::Ledger {
            program,
            after,
            limit,
        } => daemon_cmd::ledger(home, &program, after, limit, json),
        Command::Checkout { program, rest } => daemon_cmd::checkout(home, &program, &rest, json),
        Command::Source(cmd) => offline::source::run(cmd, json),
        Command::Status {
            program,
            watch,
            page,
            limit,
            oldest_first,
        } => {
            let query = |default| btd_protocol::wire::StatusQuery {
                page,
                limit: limit.unwrap_or(default),
                oldest_first,
            };
            match watch {
                Some(secs) => daemon_cmd::watch::status(
                    home,
                    program.as_deref(),
                    secs,
                    query(btd_protocol::wire::MAX_RESULTS_PAGE),
                    json,
                ),
                None => daemon_cmd::status(
                    home,
                    program.as_deref(),
                    query(btd_protocol::wire::DEFAULT_STATUS_LIMIT),
                    json,
                ),
            }
        }
        Command::Approvals => daemon_cmd::approvals(home, json),
        Command::ApproveSpend {
            program,
            packet,
            member,
            minutes,
        } => daemon_cmd::decide_spend(home, &program, packet, member, true, minutes, json),
        Command::DenySpend {
            program,
            packet,
            member,
        } => daemon_cmd::decide_spend(home, &program, packet, member, false, 0, json),
        Command::Train(args) => compute_cmd::train(&args, home, json),
        Command::Eval(args) => compute_cmd::eval(&args, json),
        Command::Sample(args) => compute_cmd::sample(&args, json),
        Command::Rungs => compute_cmd::rungs(json),
        Command::SlurmRound { spec } => {
            crate::work::slurm_round_main(&spec).map_err(|e| CmdError::Rejected(anyhow::anyhow!(e)))
        }
    }
}
