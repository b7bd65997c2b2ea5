//! Choosing the compute device. The CPU is the default; NVIDIA GPUs need the `cuda` feature.

use candle_core::Device;

use crate::TrainError;

/// Where to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU (always available).
    Cpu,
    /// CUDA device `n` (needs a build with the `cuda` feature).
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("{s:?} is not cpu, cuda or cuda:N")),
        }
    }
}

/// Whether this build can use NVIDIA GPUs.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Opens the chosen device. On CUDA it also enables TF32 matmuls (f32 master weights, reduced
/// precision inside cuBLAS), which is what makes GPU training fast and not bit-reproducible.
pub fn open(choice: DeviceChoice) -> Result<Device, TrainError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(ordinal) => open_cuda(ordinal),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device, TrainError> {
    let device = Device::new_cuda(ordinal).map_err(|e| {
        // candle attaches a backtrace when RUST_BACKTRACE is set: the driver's reason is what matters.
        let mut e = &e;
        while let candle_core::Error::WithBacktrace { inner, .. } = e {
            e = inner;
        }
        TrainError::Config(format!(
            "cuda:{ordinal} cannot be opened ({e}); check that the NVIDIA driver is loaded, that \
             `nvidia-smi` lists the GPU and that {ordinal} is below the GPU count, or train on the CPU"
        ))
    })?;
    candle_core::cuda::set_gemm_reduced_precision_f32(true);
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device, TrainError> {
    Err(TrainError::Config(format!(
        "cuda:{ordinal} asked for, but this btd was built without CUDA support; rebuild with \
         `--features cuda` (needs nvcc and the CUDA libraries) or train on the CPU"
    )))
}

/// `cpu` or `cuda:N`.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Parameter count below which more threads than shards do not pay: candle's per-op threading
/// costs more than it saves on small tensors (measured on 2 cores before the batch was sharded:
/// `tiny` ran 3.4× faster on one thread than on two). With the batch in
/// [`crate::shard::SHARDS`] shards, one thread per shard is the fastest for such models
/// (docs/benchmarks.md, "Training": `tiny` 1.8× faster on two threads than on one).
const FEW_THREADS_BELOW_PARAMS: usize = 500_000;

/// CPU threads to train `model` with: one per shard for small models, every usable thread
/// otherwise.
pub fn recommended_cpu_threads(model: &crate::ModelConfig) -> usize {
    let usable = std::thread::available_parallelism().map_or(1, usize::from);
    if model.param_count() < FEW_THREADS_BELOW_PARAMS {
        usable.min(crate::shard::SHARDS)
    } else {
        usable
    }
}

/// Sets the number of CPU threads training uses. Call it before any tensor work. Each step runs
/// as [`crate::shard::SHARDS`] shards of the batch on rayon's pool of `threads` workers, and each
/// shard's matmuls on `threads / SHARDS` of them (candle reads `RAYON_NUM_THREADS` at every
/// matmul): gemm splitting a small matmul across the whole pool costs about what it saves. The
/// result does not depend on the thread count (the shards are fixed and gemm's sums do not depend
/// on its threads: CPU training is bit-identical across thread counts), only the speed does.
pub fn set_cpu_threads(threads: usize) {
    let threads = threads.max(1);
    // Err: the pool was built already (an earlier call, or rayon used first); it keeps its size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    let per_shard = (threads / crate::shard::SHARDS).max(1);
    std::env::set_var("RAYON_NUM_THREADS", per_shard.to_string());
}

/// A thread count given in the environment variable `var` (RAYON_NUM_THREADS,
/// SLURM_CPUS_PER_TASK): `None` when unset or not a number in 1..=4096.
pub fn threads_from_env(var: &str) -> Option<usize> {
    std::env::var(var)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|n| (1..=4096).contains(n))
}

/// The number of CPU threads training uses (rayon's pool).
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::DeviceChoice;

    #[test]
    fn device_choices_parse() {
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        for bad in ["", "gpu", "cuda:", "cuda:x", "cuda:-1", "CPU"] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad:?}");
        }
    }
}
