//! The CUDA pre-check against stand-in driver and NVRTC libraries built
//! with the system C compiler: each missing piece is one clear error, not
//! a panic inside Burn.

use greentrain_trainer::device::probe_cuda_with;
use std::path::{Path, PathBuf};
use std::process::Command;

fn build(dir: &Path, name: &str, c: &str) -> String {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, c).unwrap();
    let out: PathBuf = dir.join(name);
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) to build the stand-in libraries");
    assert!(st.success());
    out.to_string_lossy().into_owned()
}

fn driver(init: i32, devices: i32) -> String {
    format!(
        "int cuInit(unsigned f) {{ (void)f; return {init}; }}\n\
         int cuDeviceGetCount(int *n) {{ *n = {devices}; return 0; }}\n"
    )
}

#[test]
fn cuda_probe_names_each_missing_piece() {
    let d = tempfile::tempdir().unwrap();
    let version = d.path().join("version");
    std::fs::write(
        &version,
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04\n",
    )
    .unwrap();
    let no_device = build(d.path(), "libcuda_nodev.so", &driver(100, 0));
    let zero = build(d.path(), "libcuda_zero.so", &driver(0, 0));
    let good = build(d.path(), "libcuda_good.so", &driver(0, 2));
    let nvrtc = build(
        d.path(),
        "libnvrtc_fake.so",
        "int nvrtcVersion(int *a, int *b) { *a = 13; *b = 0; return 0; }\n",
    );
    let missing = d
        .path()
        .join("libnvrtc_missing.so")
        .to_string_lossy()
        .into_owned();

    let e = probe_cuda_with(&d.path().join("nope"), &good, &[&nvrtc]).unwrap_err();
    assert!(e.contains("no NVIDIA driver loaded"), "{e}");
    let e = probe_cuda_with(&version, &missing, &[&nvrtc]).unwrap_err();
    assert!(e.contains("cannot be opened"), "{e}");
    let e = probe_cuda_with(&version, &no_device, &[&nvrtc]).unwrap_err();
    assert!(e.contains("cuInit failed with CUDA error 100"), "{e}");
    let e = probe_cuda_with(&version, &zero, &[&nvrtc]).unwrap_err();
    assert!(e.contains("no devices"), "{e}");
    let e = probe_cuda_with(&version, &good, &[&missing]).unwrap_err();
    assert!(e.contains("NVRTC"), "{e}");

    let ok = probe_cuda_with(&version, &good, &[&missing, &nvrtc]).unwrap();
    assert_eq!(ok.devices, 2);
    assert_eq!(ok.nvrtc, nvrtc);
    assert!(ok.driver.contains("580.159.04"));
    // A driver without the name and bus-id calls: devices without them.
    assert_eq!(ok.gpus, vec![Default::default(); 2]);

    // With them: each CUDA ordinal's name and PCI bus id, which is how the
    // energy meter finds the same GPU in NVML (whose indices differ). The
    // stand-in's ordinals are reversed against its handles, as
    // CUDA_DEVICE_ORDER=FASTEST_FIRST can make them.
    let named = build(
        d.path(),
        "libcuda_named.so",
        &format!(
            "{}#include <stdio.h>\n\
             int cuDeviceGet(int *dev, int ordinal) {{ *dev = 1 - ordinal; return 0; }}\n\
             int cuDeviceGetName(char *s, int len, int dev) {{ snprintf(s, len, \"Stand-in GPU %d\", dev); return 0; }}\n\
             int cuDeviceGetPCIBusId(char *s, int len, int dev) {{ snprintf(s, len, \"0000:%02X:00.0\", 0x18 + dev); return 0; }}\n",
            driver(0, 2)
        ),
    );
    let ok = probe_cuda_with(&version, &named, &[&nvrtc]).unwrap();
    assert_eq!(ok.gpus[0].name.as_deref(), Some("Stand-in GPU 1"));
    assert_eq!(ok.gpus[0].pci_bus_id.as_deref(), Some("0000:19:00.0"));
    assert_eq!(ok.gpus[1].pci_bus_id.as_deref(), Some("0000:18:00.0"));
}

#[test]
fn training_splits_stay_on_the_host_past_the_devices_buffer_limit() {
    use greentrain_trainer::device::{resident_split_limit, DeviceSpec};
    assert_eq!(resident_split_limit(DeviceSpec::Cpu), 0);
    assert_eq!(resident_split_limit(DeviceSpec::Cuda(0)), 1 << 30);
    // wgpu: never above CUDA's bound, and below it wherever an adapter's
    // storage buffers are smaller (lavapipe: 128 MiB, less than MNIST's 188 MB).
    assert!(resident_split_limit(DeviceSpec::Wgpu) <= 1 << 30);
}
