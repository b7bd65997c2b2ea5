//! Training benchmark: tokens/s and val_bpb after a fixed budget, per preset.
//!
//! ```text
//! cargo run --release -p btd-trainer --bin trainer-bench -- [--preset tiny|small|base|all]
//!     [--steps N | --seconds S] [--data FILE] [--seed S] [--eval-tokens N] [--threads N] [--json]
//!     [--device cpu|cuda[:N]] [--dump-corpus FILE]
//! ```
//! Without `--data` it trains on the built-in synthetic corpus (seed 0, 1 MB). `--threads N` sets the
//! CPU threads (default: `btd_trainer::device::recommended_cpu_threads` for the first preset).
//! `--device cuda` trains on an NVIDIA GPU (a build with `--features cuda`, see docs/training.md#gpus).

use std::ops::ControlFlow;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

use btd_protocol::program::ModelPreset;
use btd_trainer::data::unigram_entropy_bits;
use btd_trainer::device::{
    self, cpu_threads, recommended_cpu_threads, set_cpu_threads, DeviceChoice,
};
use btd_trainer::synth::DEFAULT_SYNTHETIC_BYTES;
use btd_trainer::{train, Corpus, TrainSpec};

struct Args {
    presets: Vec<ModelPreset>,
    steps: Option<u64>,
    seconds: Option<f64>,
    data: Option<PathBuf>,
    seed: u64,
    eval_tokens: Option<u64>,
    threads: Option<usize>,
    json: bool,
    dump: Option<PathBuf>,
    device: DeviceChoice,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        presets: vec![ModelPreset::Tiny],
        steps: None,
        seconds: None,
        data: None,
        seed: 0,
        eval_tokens: None,
        threads: None,
        json: false,
        dump: None,
        device: DeviceChoice::Cpu,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--preset" => {
                a.presets = match value()?.as_str() {
                    "tiny" => vec![ModelPreset::Tiny],
                    "small" => vec![ModelPreset::Small],
                    "base" => vec![ModelPreset::Base],
                    "all" => vec![ModelPreset::Tiny, ModelPreset::Small, ModelPreset::Base],
                    other => return Err(format!("unknown preset {other:?}")),
                }
            }
            "--steps" => a.steps = Some(value()?.parse().map_err(|e| format!("--steps: {e}"))?),
            "--seconds" => {
                a.seconds = Some(value()?.parse().map_err(|e| format!("--seconds: {e}"))?)
            }
            "--data" => a.data = Some(PathBuf::from(value()?)),
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--eval-tokens" => {
                a.eval_tokens = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--eval-tokens: {e}"))?,
                )
            }
            "--threads" => {
                a.threads = Some(value()?.parse().map_err(|e| format!("--threads: {e}"))?)
            }
            "--json" => a.json = true,
            "--device" => a.device = value()?.parse()?,
            "--dump-corpus" => a.dump = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.steps.is_none() && a.seconds.is_none() {
        a.seconds = Some(30.0);
    }
    Ok(a)
}

/// User + system CPU seconds of this process so far.
fn cpu_secs() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 * 1e-6;
        t(u.user_time()) + t(u.system_time())
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trainer-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let first = TrainSpec::preset(args.presets[0], 0);
    set_cpu_threads(
        args.threads
            .unwrap_or_else(|| recommended_cpu_threads(&first.model)),
    );
    let corpus = match &args.data {
        Some(path) => Corpus::from_file(path, None),
        None => Corpus::synthetic(0, DEFAULT_SYNTHETIC_BYTES),
    }
    .map_err(|e| e.to_string())?;
    if let Some(path) = &args.dump {
        let bytes = [corpus.train(), corpus.val()].concat();
        std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {} ({} bytes)", path.display(), corpus.len());
        return Ok(());
    }
    let dev = device::open(args.device).map_err(|e| e.to_string())?;
    let unigram = unigram_entropy_bits(corpus.val());
    if !args.json {
        println!(
            "data: {} ({} bytes, val unigram entropy {unigram:.3} bits/byte); {}, {} CPU thread(s)",
            corpus.source().describe(),
            corpus.len(),
            device::describe(&dev),
            cpu_threads()
        );
        println!(
            "{:<6} {:>9} {:>7} {:>8} {:>11} {:>9} {:>9} {:>8}",
            "preset", "params", "steps", "train_s", "tokens/s", "loss", "val_bpb", "eval_s"
        );
    }
    for preset in &args.presets {
        let mut spec = TrainSpec::preset(*preset, args.seed);
        spec.steps = args.steps;
        spec.seconds = args.seconds;
        if let Some(n) = args.eval_tokens {
            spec.eval_tokens = n;
        }
        let cpu_before = cpu_secs();
        let t = train(&spec, &corpus, &dev, &mut |_| ControlFlow::Continue(()))
            .map_err(|e| e.to_string())?;
        let r = &t.report;
        // CPU time of the whole run (training and evaluation), so a rate per CPU-second is slightly
        // pessimistic.
        let cpu = cpu_secs() - cpu_before;
        if args.json {
            let line = serde_json::json!({
                "impl": "candle",
                "report": r,
                "unigram_bits": unigram,
                "threads": cpu_threads(),
                "cpu_secs": cpu,
                "tokens_per_cpu_sec": r.tokens as f64 / cpu,
            });
            println!("{line}");
        } else {
            println!(
                "{:<6} {:>9} {:>7} {:>8.1} {:>11.0} {:>9.4} {:>9.4} {:>8.2}",
                format!("{preset:?}").to_lowercase(),
                r.params,
                r.steps,
                r.train_secs,
                r.tokens_per_sec,
                r.final_train_loss,
                r.val_bpb,
                r.eval_secs
            );
        }
    }
    Ok(())
}
