//! Command-line definition (clap derive) and dispatch to the command implementations.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::compute_cmd;
use crate::offline;
use crate::output::CmdError;

/// btd: a peer-to-peer worker network for research programs.
///
/// Offline tools for owners: validate a program manifest, replay a KB log under a program's rules,
/// explain compute dispatch, and print JSON schemas.
#[derive(Debug, Parser)]
#[command(name = "btd", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    Rungs {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ProgramCmd {
    /// Validate a manifest: print the normalised program, or every problem with its field and line.
    Check {
        /// The manifest (TOML).
        manifest: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
    /// Evaluate as of this instant (milliseconds since the Unix epoch) instead of now.
    #[arg(long, hide = true)]
    pub(crate) now_ms: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs the parsed command.
pub(crate) fn run(cli: Cli) -> Result<(), CmdError> {
    match cli.command {
        Command::Program(ProgramCmd::Check { manifest, json }) => {
            offline::program::check(&manifest, json)
        }
        Command::Kb(KbCmd::Replay {
            manifest,
            submissions,
            json,
        }) => offline::replay::run(&manifest, &submissions, json),
        Command::Policy(PolicyCmd::Explain(args)) => offline::policy::explain(&args),
        Command::Schema { name } => offline::schema::run(name.as_deref()),
        Command::Train(args) => compute_cmd::train(&args),
        Command::Eval(args) => compute_cmd::eval(&args),
        Command::Sample(args) => compute_cmd::sample(&args),
        Command::Rungs { json } => compute_cmd::rungs(json),
    }
}
