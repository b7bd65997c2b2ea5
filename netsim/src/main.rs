//! `btd-netsim`: run a scenario (`run SCENARIO.toml [--json out.json]`) or list the shipped ones.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use btd_netsim::{effective_seed, scenarios_dir, Scenario};
use clap::{Parser, Subcommand};

/// Many real btd nodes in one process, with faults, invariants and mesh metrics.
#[derive(Debug, Parser)]
#[command(name = "btd-netsim", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a scenario: a path, or the name of a shipped one (see `list`).
    Run {
        /// Scenario file or name.
        scenario: String,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Tokio worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// List the shipped scenarios.
    List {
        /// Directory to list instead of the shipped one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn resolve(s: &str) -> PathBuf {
    let p = Path::new(s);
    if p.exists() {
        return p.to_path_buf();
    }
    scenarios_dir().join(format!("{s}.toml"))
}

fn list(dir: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for f in files {
        match Scenario::load(&f) {
            Ok(s) => println!(
                "{:<22} {:>4} nodes  {}",
                f.file_stem().and_then(|s| s.to_str()).unwrap_or("?"),
                s.node_count(),
                s.description
            ),
            Err(e) => println!("{}: {e}", f.display()),
        }
    }
    Ok(())
}

fn run(scenario: &str, json: Option<&Path>, threads: usize) -> Result<bool> {
    let s = Scenario::load(&resolve(scenario))?;
    let seed = effective_seed(&s)?;
    eprintln!(
        "netsim: running {} ({} nodes) with seed {seed}",
        s.name,
        s.node_count()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = rt.block_on(btd_netsim::run(&s, seed))?;
    println!("{report}");
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    rt.shutdown_background();
    if !report.passed {
        eprintln!("netsim: FAILED with seed {seed} (replay: NETSIM_SEED={seed})");
    }
    Ok(report.passed)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run {
            scenario,
            json,
            threads,
        } => run(&scenario, json.as_deref(), threads),
        Cmd::List { dir } => list(&dir.unwrap_or_else(scenarios_dir)).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("btd-netsim: {e:#}");
            ExitCode::from(2)
        }
    }
}
