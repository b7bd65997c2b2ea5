use super::*;

const H100: &str = "NVIDIA H100 80GB HBM3, 81559, 9.0\n";
const GB10: &str = "NVIDIA GB10, [N/A], 12.1\n";
const RTX4090: &str = "NVIDIA GeForce RTX 4090, 24564, 8.9\n";
const A100X2: &str = "NVIDIA A100-SXM4-80GB, 81920, 8.0\nNVIDIA A100-SXM4-80GB, 81920, 8.0\n";
const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\
                       flags\t\t: fpu sse2\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";

fn hw(gpus: Vec<GpuInfo>) -> Hardware {
    Hardware {
        cpu: CpuInfo {
            usable_threads: 2,
            ..parse_cpuinfo(CPUINFO)
        },
        gpus,
        gpu_probe: GpuProbe::Ok,
    }
}

#[test]
fn cpuinfo() {
    let c = parse_cpuinfo(CPUINFO);
    assert_eq!(c.model, "AMD EPYC 7B13");
    assert_eq!(c.logical_cpus, 2);
    let arm = parse_cpuinfo("processor : 0\nBogoMIPS : 50\n\nHardware : Cortex-X925\n");
    assert_eq!(arm.model, "Cortex-X925");
    assert_eq!(parse_cpuinfo("").model, "unknown CPU");
}

#[test]
fn h100() {
    let g = parse_nvidia_smi(H100).unwrap();
    assert_eq!(
        g,
        vec![GpuInfo {
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_mib: Some(81559),
            compute_cap: Some("9.0".into()),
        }]
    );
    let r = rungs(&hw(g));
    assert_eq!(r[0].id, "local-h100");
    assert_eq!(r[0].hardware, HardwareClass::H100);
    assert_eq!(r[0].label, "1× NVIDIA H100 80GB HBM3 (81559 MiB, sm 9.0)");
    assert_eq!(r[1].id, "local-cpu");
    assert_eq!(r[1].hardware, HardwareClass::Cpu);
    assert_eq!(r[1].count, 2);
    let rung = r[0].to_rung(SpendClass::PaidMetered);
    assert_eq!(rung.spend_class, SpendClass::PaidMetered);
    assert!(rung.validate().is_empty(), "{:?}", rung.validate());
}

#[test]
fn gb10_has_no_memory_figure() {
    let g = parse_nvidia_smi(GB10).unwrap();
    assert_eq!(g[0].memory_mib, None);
    assert_eq!(g[0].compute_cap.as_deref(), Some("12.1"));
    let r = rungs(&hw(g));
    assert_eq!(
        (r[0].id.as_str(), r[0].hardware),
        ("local-gb10", HardwareClass::Gb10)
    );
}

#[test]
fn rtx_4090() {
    let r = rungs(&hw(parse_nvidia_smi(RTX4090).unwrap()));
    assert_eq!(
        (r[0].id.as_str(), r[0].hardware),
        ("local-4090", HardwareClass::Rtx4090)
    );
}

#[test]
fn a100_is_other_gpu_and_identical_gpus_group() {
    let r = rungs(&hw(parse_nvidia_smi(A100X2).unwrap()));
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].id, "local-a100-sxm4-80gb");
    assert_eq!(r[0].hardware, HardwareClass::OtherGpu);
    assert_eq!(r[0].count, 2);
    assert!(r[0].label.starts_with("2× "));
    assert_eq!(classify_gpu("NVIDIA H200"), HardwareClass::OtherGpu);
    assert_eq!(classify_gpu("NVIDIA H100 PCIe"), HardwareClass::H100);
}

#[test]
fn mixed_models_of_one_class_get_distinct_ids() {
    let text = "NVIDIA H100 80GB HBM3, 81559, 9.0\nNVIDIA H100 PCIe, 81559, 9.0\n";
    let r = rungs(&hw(parse_nvidia_smi(text).unwrap()));
    assert_eq!(r[0].id, "local-h100");
    assert_eq!(r[1].id, "local-h100-2");
}

#[test]
fn garbage_is_an_error() {
    let e = parse_nvidia_smi(
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
    )
    .unwrap_err();
    assert_eq!(e.line, 1);
    assert!(parse_nvidia_smi("NVIDIA H100, lots, 9.0").is_err());
    assert!(parse_nvidia_smi("NVIDIA H100, 80, nine").is_err());
    assert!(parse_nvidia_smi(", 80, 9.0").is_err());
    assert!(parse_nvidia_smi("a, b, c, d").is_err());
    assert_eq!(parse_nvidia_smi("\n\n").unwrap(), vec![]);
}

#[test]
fn detect_runs_here() {
    let hw = detect();
    assert!(hw.cpu.usable_threads >= 1);
    let r = rungs(&hw);
    assert_eq!(r.last().map(|r| r.hardware), Some(HardwareClass::Cpu));
}
