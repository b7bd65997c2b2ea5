//! Local hardware detection and its mapping to rung hardware classes.
//!
//! The CPU comes from `/proc/cpuinfo` (model name, logical CPUs) and the usable thread count from the
//! OS; NVIDIA GPUs from `nvidia-smi --query-gpu=name,memory.total,compute_cap
//! --format=csv,noheader,nounits` when it is installed. The parsers are pure functions; [`detect`]
//! does the I/O. Each distinct GPU model becomes one rung (with a count); the CPU is always a rung.
//! Every rung is `local_unmetered` unless the daemon's configuration says otherwise.

use std::process::Command;
use std::time::Duration;

use btd_protocol::dispatch::{HardwareClass, Rung, SpendClass};
use serde::{Deserialize, Serialize};

/// How long `nvidia-smi` may take before detection gives up on GPUs.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(15);
/// Output of `nvidia-smi` kept (a line per GPU).
const NVIDIA_SMI_MAX_OUTPUT: usize = 64 * 1024;

/// The CPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// Model name, e.g. `AMD EPYC 7763 64-Core Processor` (`unknown CPU` if not found).
    pub model: String,
    /// Logical CPUs listed in `/proc/cpuinfo` (0 if unknown).
    pub logical_cpus: usize,
    /// Threads this process may use (cgroup/affinity limits applied).
    pub usable_threads: usize,
}

/// One NVIDIA GPU as `nvidia-smi` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total memory in MiB (`None` where the driver reports `[N/A]`, e.g. GB10's unified memory).
    pub memory_mib: Option<u64>,
    /// Compute capability, e.g. `9.0`.
    pub compute_cap: Option<String>,
}

/// What GPU probing found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum GpuProbe {
    /// `nvidia-smi` is not installed: no NVIDIA GPUs.
    NoNvidiaSmi,
    /// `nvidia-smi` answered.
    Ok,
    /// `nvidia-smi` is installed but failed or printed something unreadable.
    Failed(String),
}

/// The local hardware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    /// The CPU.
    pub cpu: CpuInfo,
    /// NVIDIA GPUs.
    pub gpus: Vec<GpuInfo>,
    /// How GPU probing went.
    pub gpu_probe: GpuProbe,
}

/// A rung this machine offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRung {
    /// Rung id, e.g. `local-cpu`, `local-h100`, `local-a100-sxm4-80gb`.
    pub id: String,
    /// Human label, e.g. `2× NVIDIA H100 80GB HBM3 (81559 MiB, sm 9.0)`.
    pub label: String,
    /// Hardware class.
    pub hardware: HardwareClass,
    /// Devices of this model (threads for the CPU rung).
    pub count: usize,
}

impl LocalRung {
    /// The protocol rung with `spend_class` (the daemon's configuration decides it; local hardware
    /// is `local_unmetered` by default).
    pub fn to_rung(&self, spend_class: SpendClass) -> Rung {
        Rung {
            id: self.id.clone(),
            label: self.label.clone(),
            spend_class,
            admitted: true,
            hardware: self.hardware,
        }
    }
}

/// Why `nvidia-smi` output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nvidia-smi line {line}: {reason}")]
pub struct SmiParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses `/proc/cpuinfo`; `usable_threads` is filled in by the caller.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut model = None;
    let mut logical = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => logical += 1,
            // x86 says "model name"; some ARM kernels say "Model" or "Hardware".
            "model name" | "Model" | "Hardware" if model.is_none() && !value.trim().is_empty() => {
                model = Some(value.trim().to_string());
            }
            _ => {}
        }
    }
    CpuInfo {
        model: model.unwrap_or_else(|| "unknown CPU".to_string()),
        logical_cpus: logical,
        usable_threads: 0,
    }
}

/// Parses `nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader,nounits`:
/// one `name, memory MiB, compute capability` line per GPU. Blank lines are skipped; `[N/A]` fields
/// become `None`; anything else unreadable is an error.
pub fn parse_nvidia_smi(text: &str) -> Result<Vec<GpuInfo>, SmiParseError> {
    let mut gpus = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: String| SmiParseError {
            line: i + 1,
            reason,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [name, memory, cap] = fields[..] else {
            return Err(err(format!(
                "expected 3 comma-separated fields (name, memory.total, compute_cap), got {:?}",
                line.chars().take(120).collect::<String>()
            )));
        };
        if name.is_empty() {
            return Err(err("empty GPU name".into()));
        }
        let na = |s: &str| s.is_empty() || s.eq_ignore_ascii_case("[N/A]") || s == "N/A";
        let memory_mib = if na(memory) {
            None
        } else {
            Some(
                memory
                    .parse::<u64>()
                    .map_err(|_| err(format!("memory.total {memory:?} is not a number of MiB")))?,
            )
        };
        let compute_cap = if na(cap) {
            None
        } else if cap
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            Some(cap.to_string())
        } else {
            return Err(err(format!("compute_cap {cap:?} is not like 9.0")));
        };
        gpus.push(GpuInfo {
            name: name.to_string(),
            memory_mib,
            compute_cap,
        });
    }
    Ok(gpus)
}

/// The hardware class of a GPU product name.
pub fn classify_gpu(name: &str) -> HardwareClass {
    let n = name.to_ascii_uppercase();
    let words: Vec<&str> = n
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    if words.contains(&"GB10") {
        HardwareClass::Gb10
    } else if words.contains(&"H100") {
        HardwareClass::H100
    } else if words.contains(&"4090") {
        HardwareClass::Rtx4090
    } else {
        HardwareClass::OtherGpu
    }
}

/// The rungs `hw` offers: one per distinct GPU model (in first-seen order), then the CPU.
pub fn rungs(hw: &Hardware) -> Vec<LocalRung> {
    let mut out: Vec<(GpuInfo, usize)> = Vec::new();
    for g in &hw.gpus {
        match out.iter_mut().find(|(seen, _)| seen == g) {
            Some((_, count)) => *count += 1,
            None => out.push((g.clone(), 1)),
        }
    }
    let mut rungs: Vec<LocalRung> = out
        .into_iter()
        .map(|(g, count)| {
            let hardware = classify_gpu(&g.name);
            let id = match hardware {
                HardwareClass::Gb10 => "local-gb10".to_string(),
                HardwareClass::H100 => "local-h100".to_string(),
                HardwareClass::Rtx4090 => "local-4090".to_string(),
                _ => format!("local-{}", slug(&g.name)),
            };
            let mut details = Vec::new();
            if let Some(m) = g.memory_mib {
                details.push(format!("{m} MiB"));
            }
            if let Some(c) = &g.compute_cap {
                details.push(format!("sm {c}"));
            }
            let mut label = format!("{count}× {}", g.name);
            if !details.is_empty() {
                label.push_str(&format!(" ({})", details.join(", ")));
            }
            LocalRung {
                id,
                label,
                hardware,
                count,
            }
        })
        .collect();
    // Two different models of one class would share an id: number the later ones.
    for i in 1..rungs.len() {
        let clashes = rungs[..i].iter().filter(|r| r.id == rungs[i].id).count();
        if clashes > 0 {
            rungs[i].id = format!("{}-{}", rungs[i].id, clashes + 1);
        }
    }
    let threads = hw.cpu.usable_threads.max(1);
    rungs.push(LocalRung {
        id: "local-cpu".to_string(),
        label: format!("{} ({threads} threads)", hw.cpu.model),
        hardware: HardwareClass::Cpu,
        count: threads,
    });
    rungs
}

/// `NVIDIA A100-SXM4-80GB` → `a100-sxm4-80gb`.
fn slug(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let trimmed = lower.strip_prefix("nvidia ").unwrap_or(&lower);
    let mut s = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    let s = s.trim_end_matches('-').chars().take(48).collect::<String>();
    if s.is_empty() {
        "gpu".to_string()
    } else {
        s
    }
}

/// Detects the local CPU and NVIDIA GPUs.
pub fn detect() -> Hardware {
    let mut cpu = std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| parse_cpuinfo(&t))
        .unwrap_or_else(|_| parse_cpuinfo(""));
    cpu.usable_threads = std::thread::available_parallelism().map_or(1, usize::from);
    let (gpus, gpu_probe) = probe_nvidia();
    Hardware {
        cpu,
        gpus,
        gpu_probe,
    }
}

fn probe_nvidia() -> (Vec<GpuInfo>, GpuProbe) {
    let mut cmd = Command::new("nvidia-smi");
    cmd.args([
        "--query-gpu=name,memory.total,compute_cap",
        "--format=csv,noheader,nounits",
    ]);
    let done = match crate::shell::run_bounded(cmd, NVIDIA_SMI_TIMEOUT, NVIDIA_SMI_MAX_OUTPUT) {
        Ok(done) => done,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (Vec::new(), GpuProbe::NoNvidiaSmi)
        }
        Err(e) => {
            return (
                Vec::new(),
                GpuProbe::Failed(format!("cannot run nvidia-smi: {e}")),
            )
        }
    };
    if done.timed_out {
        return (
            Vec::new(),
            GpuProbe::Failed(format!(
                "nvidia-smi did not answer within {} s",
                NVIDIA_SMI_TIMEOUT.as_secs()
            )),
        );
    }
    let out = String::from_utf8_lossy(&done.stdout.bytes);
    if done.status.and_then(|s| s.code()) != Some(0) {
        let err = String::from_utf8_lossy(&done.stderr.bytes);
        let msg = format!("{out} {err}")
            .trim()
            .chars()
            .take(200)
            .collect::<String>();
        return (
            Vec::new(),
            GpuProbe::Failed(format!("nvidia-smi failed: {msg}")),
        );
    }
    match parse_nvidia_smi(&out) {
        Ok(gpus) => (gpus, GpuProbe::Ok),
        Err(e) => (Vec::new(), GpuProbe::Failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
