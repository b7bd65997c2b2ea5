//! Local compute commands, no network: `btd train`, `btd eval`, `btd sample`, `btd rungs`.
//!
//! The work is done by `btd_trainer`; this module parses flags, picks the device and thread count,
//! shows a progress bar on stderr, and prints results (plain text, or JSON with `--json`).

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use btd_protocol::dispatch::SpendClass;
use btd_protocol::program::ModelPreset;
use btd_protocol::Digest;
use btd_trainer::config::default_seconds;
use btd_trainer::data::unigram_entropy_bits;
use btd_trainer::device::{self, DeviceChoice};
use btd_trainer::rungs::{self, GpuProbe};
use btd_trainer::sample::SampleOptions;
use btd_trainer::synth::DEFAULT_SYNTHETIC_BYTES;
use btd_trainer::{Checkpoint, Corpus, DataSource, ModelConfig, StepReport, TrainSpec};
use candle_core::Device;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::{name_of, print_json, CmdError};

mod program;

/// Seed of the built-in synthetic corpus used when no `--data` is given.
const DEMO_CORPUS_SEED: u64 = 0;

/// A model preset on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PresetArg {
    /// ~135 k parameters: learns within 30 s on 2 CPU cores.
    Tiny,
    /// ~0.87 M parameters: minutes on a CPU.
    Small,
    /// ~10.9 M parameters: for a GPU.
    Base,
}

impl From<PresetArg> for ModelPreset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Tiny => ModelPreset::Tiny,
            PresetArg::Small => ModelPreset::Small,
            PresetArg::Base => ModelPreset::Base,
        }
    }
}

/// Device and thread flags shared by train, eval and sample.
#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: DeviceChoice,
    /// CPU threads (default: 1 for models under 0.5 M parameters, where it is fastest; all
    /// otherwise). Results do not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    match s {
        "cpu" => Ok(DeviceChoice::Cpu),
        "cuda" => Ok(DeviceChoice::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceChoice::Cuda)
            .ok_or_else(|| format!("{s:?} is not cpu, cuda or cuda:N")),
    }
}

impl DeviceArgs {
    /// Sets the thread count for `model` (before any tensor work) and opens the device.
    fn open(&self, model: &ModelConfig) -> Result<Device, CmdError> {
        let threads = self
            .threads
            .map_or_else(|| device::recommended_cpu_threads(model), usize::from);
        device::set_cpu_threads(threads);
        device::open(self.device).map_err(|e| CmdError::Rejected(e.into()))
    }
}

/// `btd train` flags.
#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Train for this program (asks the running daemon): its preset, dataset (fetched from the
    /// owner if needed), budget, seed and eval budget, exactly as a worker round would. Flags that
    /// would change the task are refused; --seed may differ (claims carry their seed).
    #[arg(long, value_name = "ID")]
    program: Option<String>,
    /// Model preset (default: tiny).
    #[arg(long, value_enum)]
    preset: Option<PresetArg>,
    /// A UTF-8 text file to train on (default: btd's built-in synthetic corpus; with --program,
    /// the program's dataset file, checked against its SHA-256, instead of fetching it).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Refuse the --data file unless its SHA-256 is this (64 hex characters).
    #[arg(long, requires = "data", conflicts_with = "program")]
    sha256: Option<Digest>,
    /// Wall-clock training budget in seconds (default: 30 for tiny, 300 otherwise).
    #[arg(long, conflicts_with = "steps")]
    seconds: Option<f64>,
    /// Step budget; the same steps, seed and data give a bit-identical result on one CPU model.
    #[arg(long)]
    steps: Option<u64>,
    /// Seed for initialisation and batch order (default: 0, or the program's).
    #[arg(long)]
    seed: Option<u64>,
    /// Validation bytes scored for val_bpb (default: 32768, or the program's).
    #[arg(long)]
    eval_tokens: Option<u64>,
    /// Directory for the checkpoint and its JSON report, created if missing (default: `train/` in
    /// the btd home: --home, else $BTD_HOME, else ~/.btd).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// `btd train`; `home` is the global `--home` (the default output goes under the btd home; with
/// `--program`, the daemon there is asked for the program's task).
pub(crate) fn train(args: &TrainArgs, home: Option<PathBuf>, json: bool) -> Result<(), CmdError> {
    let (spec, corpus, for_program) = match &args.program {
        Some(id) => {
            let p = program::prepare(args, id, home.clone())?;
            (p.spec, p.corpus, Some(p.view))
        }
        None => {
            let (spec, corpus) = local_spec(args)?;
            (spec, corpus, None)
        }
    };
    let preset = spec.preset;
    corpus
        .check_fits(spec.model.block_size)
        .map_err(|e| CmdError::Rejected(e.into()))?;
    let device = args.device.open(&spec.model)?;
    if !json {
        if let Some(view) = &for_program {
            program::print_task(view, &spec);
        }
        print_data_line(&corpus, for_program.is_none());
        let m = &spec.model;
        println!(
            "model:      {preset} — {m}, {} parameters; {} ({} thread{})",
            m.param_count(),
            device::describe(&device),
            device::cpu_threads(),
            if device::cpu_threads() == 1 { "" } else { "s" }
        );
    }
    let bar = progress_bar(json);
    let trained = btd_trainer::train(&spec, &corpus, &device, &mut |s| {
        update_bar(&bar, s, spec.seconds);
        ControlFlow::Continue(())
    })
    .map_err(|e| CmdError::Rejected(e.into()))?;
    bar.finish_and_clear();

    let r = &trained.report;
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => crate::home::Home::resolve(home)
            .map_err(CmdError::Rejected)?
            .dir()
            .join("train"),
    };
    // Printed and recorded absolute, so the report says where the files are from anywhere.
    let out = std::path::absolute(&out).with_context(|| format!("--out {}", out.display()))?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let stem = format!(
        "{}-seed{}-{}",
        name_of(&preset),
        spec.seed,
        r.checkpoint_sha256.short()
    );
    let ckpt_path = out.join(format!("{stem}.safetensors"));
    trained
        .checkpoint
        .write(&ckpt_path)
        .map_err(|e| CmdError::Rejected(e.into()))?;
    let report_path = out.join(format!("{stem}.json"));
    let mut report_json = serde_json::json!({
        "report": r,
        "checkpoint": ckpt_path,
        "unigram_entropy_bits": unigram_entropy_bits(corpus.val()),
    });
    if let (Some(view), Some(obj)) = (&for_program, report_json.as_object_mut()) {
        obj.insert("program".into(), serde_json::json!(view.program));
    }
    let text = serde_json::to_string_pretty(&report_json)
        .map_err(|e| anyhow!("cannot render the report: {e}"))?;
    std::fs::write(&report_path, text + "\n")
        .with_context(|| format!("cannot write {}", report_path.display()))?;
    if json {
        return print_json(&report_json);
    }
    println!(
        "trained:    {} steps, {} tokens in {:.1} s ({:.0} tokens/s), stopped by the {} budget",
        r.steps,
        r.tokens,
        r.train_secs,
        r.tokens_per_sec,
        match r.stopped_by {
            btd_trainer::train::StopReason::Steps => "step",
            btd_trainer::train::StopReason::Seconds => "time",
            btd_trainer::train::StopReason::Cancelled => "cancelled",
        }
    );
    println!(
        "val_bpb:    {:.4} over {} validation bytes (train loss {:.4} nats/byte; unigram entropy \
         {:.3} bits/byte)",
        r.val_bpb,
        r.eval_tokens,
        r.final_train_loss,
        unigram_entropy_bits(corpus.val())
    );
    println!("checkpoint: {}", ckpt_path.display());
    println!("sha256:     {}", r.checkpoint_sha256);
    println!("report:     {}", report_path.display());
    println!(
        "submit:     {}",
        program::submit_hint(
            for_program.as_ref().map(|v| v.program),
            &ckpt_path,
            r.val_bpb,
            r.eval_tokens
        )
    );
    Ok(())
}

/// The spec and corpus of a `btd train` without `--program`: the flags, with their defaults.
fn local_spec(args: &TrainArgs) -> Result<(TrainSpec, Corpus), CmdError> {
    let preset = ModelPreset::from(args.preset.unwrap_or(PresetArg::Tiny));
    let mut spec = TrainSpec::preset(preset, args.seed.unwrap_or(0));
    spec.steps = args.steps;
    spec.seconds = args
        .seconds
        .or_else(|| args.steps.is_none().then(|| default_seconds(preset)));
    spec.eval_tokens = args
        .eval_tokens
        .unwrap_or(btd_trainer::config::DEFAULT_EVAL_TOKENS);
    spec.validate()
        .map_err(|e| CmdError::Usage(e.to_string()))?;
    let corpus = load_corpus(args.data.as_deref(), args.sha256)?;
    Ok((spec, corpus))
}

fn load_corpus(data: Option<&Path>, sha256: Option<Digest>) -> Result<Corpus, CmdError> {
    match data {
        Some(path) => Corpus::from_file(path, sha256),
        None => Corpus::synthetic(DEMO_CORPUS_SEED, DEFAULT_SYNTHETIC_BYTES),
    }
    .map_err(|e| CmdError::Rejected(e.into()))
}

/// The `data:` line; `hint` suggests `--data` for the synthetic corpus (not when a program chose
/// it).
fn print_data_line(corpus: &Corpus, hint: bool) {
    match corpus.source() {
        DataSource::Synthetic { .. } => println!(
            "data:       {} — generated demo text, not a real dataset{}",
            corpus.source().describe(),
            if hint { " (use --data FILE)" } else { "" }
        ),
        DataSource::File { sha256 } => {
            println!("data:       {} bytes, sha256 {sha256}", corpus.len())
        }
    }
}

fn progress_bar(json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{bar:30.cyan/blue} {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn update_bar(bar: &ProgressBar, s: &StepReport, seconds: Option<f64>) {
    if bar.is_hidden() {
        return;
    }
    bar.set_position((s.progress * 1000.0) as u64);
    let by_steps = s
        .steps
        .map(|n| (n.saturating_sub(s.step)) as f64 * s.elapsed_secs / s.step.max(1) as f64);
    let by_time = seconds.map(|t| (t - s.elapsed_secs).max(0.0));
    let eta = match (by_steps, by_time) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(0.0),
    };
    bar.set_message(format!(
        "step {}  loss {:.4}  {:.0} tok/s  ETA {:.0}s",
        s.step, s.loss, s.tokens_per_sec, eta
    ));
}

/// `btd eval` flags.
#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// A checkpoint written by `btd train`.
    checkpoint: PathBuf,
    /// Evaluate on this UTF-8 text file (default: the data the checkpoint trained on, which must be
    /// the synthetic corpus; a file is never guessed).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Exit 1 unless the recomputed val_bpb equals the checkpoint's claim bit for bit.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// `btd eval`.
pub(crate) fn eval(args: &EvalArgs, json: bool) -> Result<(), CmdError> {
    let ckpt = Checkpoint::read(&args.checkpoint).map_err(|e| CmdError::Rejected(e.into()))?;
    let meta = ckpt.meta();
    let corpus = match &args.data {
        Some(path) => Corpus::from_file(path, None),
        None => match &meta.data {
            DataSource::File { sha256 } => {
                return Err(CmdError::Rejected(anyhow!(
                    "{} was trained on the file with sha256 {sha256}; give that file with --data \
                     FILE",
                    args.checkpoint.display()
                )))
            }
            source => Corpus::for_source(source, None),
        },
    }
    .map_err(|e| CmdError::Rejected(e.into()))?;
    let device = args.device.open(&meta.spec.model)?;
    let report =
        btd_trainer::evaluate(&ckpt, &corpus, &device).map_err(|e| CmdError::Rejected(e.into()))?;
    let same_data = corpus.source() == &meta.data;
    let matches = same_data && report.val_bpb.to_bits() == meta.val_bpb.to_bits();
    if json {
        print_json(&serde_json::json!({
            "checkpoint": args.checkpoint,
            "sha256": ckpt.sha256(),
            "val_bpb": report.val_bpb,
            "eval_tokens": report.tokens,
            "data": report.data,
            "data_sha256": report.data_sha256,
            "same_data_as_training": same_data,
            "claimed_val_bpb": meta.val_bpb,
            "matches_claim": matches,
        }))?;
    } else {
        println!(
            "checkpoint: {} (sha256 {})",
            args.checkpoint.display(),
            ckpt.sha256()
        );
        print_data_line(&corpus, true);
        // Every digit: this is the value the checkpoint claims when submitted.
        println!(
            "val_bpb:    {} over {} validation bytes",
            crate::output::exact(report.val_bpb),
            report.tokens
        );
        if same_data {
            println!(
                "claimed:    {:.6} at the end of training — {}",
                meta.val_bpb,
                if matches {
                    "identical".to_string()
                } else {
                    format!("differs by {:.3e}", report.val_bpb - meta.val_bpb)
                }
            );
        } else {
            println!(
                "claimed:    {:.6}, on different data ({})",
                meta.val_bpb,
                meta.data.describe()
            );
        }
    }
    if args.verify && !matches {
        return Err(CmdError::Rejected(anyhow!(
            "the recomputed val_bpb {} does not equal the claimed {}{}",
            report.val_bpb,
            meta.val_bpb,
            if same_data {
                " (on another CPU model or a GPU, expect last-digit differences)"
            } else {
                " (the data differ from the training data)"
            }
        )));
    }
    Ok(())
}

/// `btd sample` flags.
#[derive(Debug, Args)]
pub(crate) struct SampleArgs {
    /// A checkpoint written by `btd train`.
    checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Bytes to generate.
    #[arg(long, default_value_t = 300)]
    tokens: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Softmax temperature (0 = always the most likely byte).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the K most likely bytes only.
    #[arg(long)]
    top_k: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// `btd sample`.
pub(crate) fn sample(args: &SampleArgs, json: bool) -> Result<(), CmdError> {
    let ckpt = Checkpoint::read(&args.checkpoint).map_err(|e| CmdError::Rejected(e.into()))?;
    let device = args.device.open(&ckpt.meta().spec.model)?;
    let opts = SampleOptions {
        prompt: args.prompt.as_bytes().to_vec(),
        tokens: args.tokens,
        seed: args.seed,
        temperature: args.temperature,
        top_k: args.top_k,
    };
    let bytes = btd_trainer::sample::sample(&ckpt, &opts, &device)
        .map_err(|e| CmdError::Rejected(e.into()))?;
    let text = String::from_utf8_lossy(&bytes);
    if json {
        print_json(&serde_json::json!({
            "checkpoint": args.checkpoint,
            "prompt": args.prompt,
            "text": text,
            "seed": args.seed,
            "temperature": args.temperature,
        }))
    } else {
        println!("{}{text}", args.prompt);
        Ok(())
    }
}

/// `btd rungs`.
pub(crate) fn rungs(json: bool) -> Result<(), CmdError> {
    let hw = rungs::detect();
    let found = rungs::rungs(&hw);
    let spend = SpendClass::LocalUnmetered;
    if json {
        let rungs: Vec<_> = found
            .iter()
            .map(|r| serde_json::json!({ "rung": r.to_rung(spend), "count": r.count }))
            .collect();
        return print_json(&serde_json::json!({ "hardware": hw, "rungs": rungs }));
    }
    println!(
        "cpu:   {} ({} logical CPUs, {} usable threads)",
        hw.cpu.model, hw.cpu.logical_cpus, hw.cpu.usable_threads
    );
    match &hw.gpu_probe {
        GpuProbe::NoNvidiaSmi => println!("gpus:  none (nvidia-smi is not installed)"),
        GpuProbe::Failed(why) => println!("gpus:  unknown — {why}"),
        GpuProbe::Ok if hw.gpus.is_empty() => println!("gpus:  none"),
        GpuProbe::Ok => {
            for g in &hw.gpus {
                println!(
                    "gpu:   {} ({}, compute capability {})",
                    g.name,
                    g.memory_mib
                        .map_or("memory n/a".to_string(), |m| format!("{m} MiB")),
                    g.compute_cap.as_deref().unwrap_or("n/a")
                );
            }
        }
    }
    if !device::CUDA_BUILT && !hw.gpus.is_empty() {
        println!("note:  this btd was built without CUDA; rebuild with --features cuda to train on the GPU");
    }
    println!("rungs (spend class local_unmetered unless the daemon config says paid_metered):");
    for r in &found {
        println!("  {:<22} {:<10} {}", r.id, name_of(&r.hardware), r.label);
    }
    Ok(())
}
