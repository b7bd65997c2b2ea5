//! `btd`: the btd daemon and its command-line tool. Everything lives in the `btd` library.

/// Training allocates and frees many short-lived tensors; glibc malloc returns that memory to the
/// OS and takes it back each step, mimalloc keeps it. Same results, ~1.8x the training throughput.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    btd::cli::main()
}
