//! `btd`: the btd daemon and its command-line tool. Everything lives in the `btd` library.

fn main() -> std::process::ExitCode {
    btd::cli::main()
}
