//! `btd`: the btd daemon and its command-line tool.

mod cli;
mod compute_cmd;
mod offline;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("btd: {e:#}");
            e.exit_code()
        }
    }
}
