//! Device choice and the checks made before a backend is touched.
//!
//! Burn's CUDA backend panics on a background thread when there is no
//! driver, and wgpu panics without an adapter; both would kill a run with
//! an unreadable message. These probes find out first.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Where to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// Burn's Flex backend (pure-Rust CPU).
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// wgpu's default adapter (Vulkan, Metal, DX12 or GL).
    Wgpu,
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(0) => f.write_str("cuda"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Wgpu => f.write_str("wgpu"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(auto()),
            "cpu" | "flex" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "wgpu" => Ok(DeviceSpec::Wgpu),
            _ => {
                if let Some(n) = s.strip_prefix("cuda:") {
                    n.parse()
                        .map(DeviceSpec::Cuda)
                        .map_err(|_| format!("bad CUDA device index in '{s}'"))
                } else {
                    Err(format!(
                        "unknown device '{s}': expected auto, cpu, cuda, cuda:N or wgpu"
                    ))
                }
            }
        }
    }
}

impl DeviceSpec {
    /// The backend name recorded in `run.json`.
    pub fn backend(&self) -> &'static str {
        match self {
            DeviceSpec::Cpu => "flex",
            DeviceSpec::Cuda(_) => "cuda",
            DeviceSpec::Wgpu => "wgpu",
        }
    }
}

/// Why a device cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("device {device}: {why}")]
pub struct DeviceUnavailable {
    /// The requested device.
    pub device: String,
    /// What is missing.
    pub why: String,
}

/// A one-line description of the host CPU (from /proc/cpuinfo).
pub fn cpu_name() -> String {
    greentrain_energy::tracker::cpu_model()
}

/// Checks for an NVIDIA driver, the CUDA driver library, a working driver
/// (`cuInit`, at least one device) and NVRTC, which Burn's CUDA backend
/// needs to compile kernels: each of them missing would otherwise panic in
/// one of Burn's threads.
///
/// Probed once per process (the driver, its devices and NVRTC do not change
/// while it runs): `--device auto`, the device check, the memory check and
/// the meters' GPU selection all ask.
pub fn probe_cuda() -> Result<CudaProbe, String> {
    static PROBE: std::sync::OnceLock<Result<CudaProbe, String>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            if !cfg!(feature = "cuda") {
                return Err("this greentrain was built without the `cuda` feature".into());
            }
            probe_cuda_with(
                Path::new("/proc/driver/nvidia/version"),
                "libcuda.so.1",
                NVRTC_NAMES,
            )
        })
        .clone()
}

/// The names cudarc (under Burn's CUDA backend) tries for NVRTC on Linux.
const NVRTC_NAMES: &[&str] = &[
    "libnvrtc.so",
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so.11",
    "libnvrtc.so.10",
    "libnvrtc.so.1",
];

/// What a successful CUDA probe found.
#[derive(Clone, Debug, PartialEq)]
pub struct CudaProbe {
    /// The driver version line.
    pub driver: String,
    /// Devices `cuDeviceGetCount` reports (after `CUDA_VISIBLE_DEVICES`).
    pub devices: usize,
    /// Each device by CUDA ordinal: its name and PCI bus id, as far as the
    /// driver tells.
    pub gpus: Vec<CudaGpu>,
    /// The NVRTC library that loaded.
    pub nvrtc: String,
}

/// One CUDA device as the driver names it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CudaGpu {
    /// `cuDeviceGetName`.
    pub name: Option<String>,
    /// `cuDeviceGetPCIBusId` (`0000:65:00.0`): how NVML finds the same GPU.
    pub pci_bus_id: Option<String>,
    /// `cuDeviceTotalMem_v2`, bytes: what a model must fit in.
    pub total_memory: Option<u64>,
}

/// [`probe_cuda`] with its files and libraries named (tests point it at
/// stand-ins).
pub fn probe_cuda_with(
    version_file: &Path,
    libcuda: &str,
    nvrtc_names: &[&str],
) -> Result<CudaProbe, String> {
    let version = std::fs::read_to_string(version_file).map_err(|_| {
        format!(
            "no NVIDIA driver loaded ({} is missing)",
            version_file.display()
        )
    })?;
    let gpus = driver_devices(libcuda)?;
    let devices = gpus.len();
    if devices == 0 {
        return Err("the CUDA driver reports no devices (CUDA_VISIBLE_DEVICES?)".into());
    }
    let nvrtc = nvrtc_names
        .iter()
        // SAFETY: loading runs the library's initialisers only; Burn's CUDA
        // backend loads the same library moments later.
        .find(|n| unsafe { libloading::Library::new(n) }.is_ok())
        .ok_or_else(|| {
            format!(
                "NVRTC, which compiles the GPU kernels, is not installed or not on the library path (tried {})",
                nvrtc_names.join(", ")
            )
        })?;
    Ok(CudaProbe {
        driver: version.lines().next().unwrap_or("").trim().to_string(),
        devices,
        gpus,
        nvrtc: nvrtc.to_string(),
    })
}

/// `cuInit(0)`, `cuDeviceGetCount`, and each device's name and PCI bus id,
/// through the driver library.
fn driver_devices(libcuda: &str) -> Result<Vec<CudaGpu>, String> {
    type Init = unsafe extern "C" fn(u32) -> i32;
    type Count = unsafe extern "C" fn(*mut i32) -> i32;
    type Get = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type Text = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32;
    type Mem = unsafe extern "C" fn(*mut usize, i32) -> i32;
    // SAFETY: the driver library's entry points have these C signatures
    // (CUDA driver API: CUresult cuInit(unsigned), cuDeviceGetCount(int*)).
    unsafe {
        let lib = libloading::Library::new(libcuda).map_err(|e| {
            format!("the NVIDIA driver is loaded but {libcuda} cannot be opened: {e}")
        })?;
        let init: libloading::Symbol<Init> = lib
            .get(b"cuInit\0")
            .map_err(|e| format!("{libcuda} has no cuInit: {e}"))?;
        let rc = init(0);
        if rc != 0 {
            return Err(format!(
                "cuInit failed with CUDA error {rc} (no GPU access from this container, or a driver and library mismatch)"
            ));
        }
        let count: libloading::Symbol<Count> = lib
            .get(b"cuDeviceGetCount\0")
            .map_err(|e| format!("{libcuda} has no cuDeviceGetCount: {e}"))?;
        let mut n = 0i32;
        let rc = count(&mut n);
        if rc != 0 {
            return Err(format!("cuDeviceGetCount failed with CUDA error {rc}"));
        }
        let get = lib.get::<Get>(b"cuDeviceGet\0").ok();
        let name = lib.get::<Text>(b"cuDeviceGetName\0").ok();
        let bus = lib.get::<Text>(b"cuDeviceGetPCIBusId\0").ok();
        // CUresult cuDeviceTotalMem_v2(size_t*, CUdevice).
        let mem = lib.get::<Mem>(b"cuDeviceTotalMem_v2\0").ok();
        // CUresult cuDeviceGetName(char*, int, CUdevice) and
        // cuDeviceGetPCIBusId(char*, int, CUdevice): a text into a buffer.
        let text = |f: &Option<libloading::Symbol<Text>>, dev: i32| -> Option<String> {
            let f = f.as_ref()?;
            let mut buf = [0 as std::ffi::c_char; 128];
            (f(buf.as_mut_ptr(), buf.len() as i32, dev) == 0).then(|| {
                std::ffi::CStr::from_ptr(buf.as_ptr())
                    .to_string_lossy()
                    .trim()
                    .to_string()
            })
        };
        Ok((0..n.max(0))
            .map(|ordinal| {
                let mut dev = 0i32;
                let ok = get.as_ref().is_some_and(|g| g(&mut dev, ordinal) == 0);
                if !ok {
                    return CudaGpu::default();
                }
                CudaGpu {
                    name: text(&name, dev).filter(|s| !s.is_empty()),
                    pci_bus_id: text(&bus, dev).filter(|s| !s.is_empty()),
                    total_memory: mem.as_ref().and_then(|f| {
                        let mut bytes = 0usize;
                        (f(&mut bytes, dev) == 0 && bytes > 0).then_some(bytes as u64)
                    }),
                }
            })
            .collect())
    }
}

/// The GPUs a run on `spec` uses, for the energy meters: the CUDA device
/// by PCI bus id (CUDA ordinals are not NVML indices), none on the CPU,
/// and every visible GPU for wgpu, which does not say which it drives.
pub fn gpu_select(spec: DeviceSpec) -> greentrain_energy::nvml::GpuSelect {
    use greentrain_energy::nvml::GpuSelect;
    match spec {
        DeviceSpec::Cpu => GpuSelect::NoGpu,
        DeviceSpec::Wgpu => GpuSelect::Visible,
        DeviceSpec::Cuda(n) => {
            let bus = probe_cuda()
                .ok()
                .and_then(|p| p.gpus.get(n).and_then(|g| g.pci_bus_id.clone()));
            match bus {
                Some(b) => GpuSelect::PciBusIds(vec![b]),
                None => GpuSelect::Visible,
            }
        }
    }
}

/// Finds a wgpu adapter. Returns its name and backend.
pub fn probe_wgpu() -> Result<String, String> {
    #[cfg(feature = "wgpu")]
    {
        let info: Vec<String> = wgpu_adapters()
            .iter()
            .map(|(i, _)| format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type))
            .collect();
        if info.is_empty() {
            Err("no wgpu adapter found (no Vulkan/Metal/DX12/GL driver; on Debian install mesa-vulkan-drivers)".into())
        } else {
            Ok(info.join("; "))
        }
    }
    #[cfg(not(feature = "wgpu"))]
    {
        Err("this greentrain was built without the `wgpu` feature".into())
    }
}

/// The adapters wgpu finds, enumerated once per process: `--device auto`,
/// the device check and `precision = "auto"` all ask.
#[cfg(feature = "wgpu")]
fn wgpu_adapters() -> &'static [(wgpu::AdapterInfo, wgpu::Limits)] {
    static ADAPTERS: std::sync::OnceLock<Vec<(wgpu::AdapterInfo, wgpu::Limits)>> =
        std::sync::OnceLock::new();
    ADAPTERS.get_or_init(|| {
        // Vulkan, Metal and DX12, the APIs Burn's wgpu backend runs on: not
        // GL, whose EGL probe prints "XDG_RUNTIME_DIR is invalid" on a
        // headless machine, for adapters training never uses.
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends &= wgpu::Backends::PRIMARY;
        let instance = wgpu::Instance::new(desc);
        block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
            .iter()
            .map(|a| (a.get_info(), a.limits()))
            .collect()
    })
}

/// Bytes of a training split that may be kept on `spec`'s device, where
/// batches are then gathered (run::batches): none on the CPU, 1 GiB under
/// CUDA, and under wgpu no more than the smallest buffer or storage-binding
/// limit of the adapters found (lavapipe: 128 MiB). Past that limit CubeCL
/// fails the allocation in its own thread, and the run would go on training
/// on a buffer that was never filled.
pub fn resident_split_limit(spec: DeviceSpec) -> u64 {
    const GIB: u64 = 1 << 30;
    match spec {
        DeviceSpec::Cpu => 0,
        DeviceSpec::Cuda(_) => GIB,
        DeviceSpec::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                wgpu_adapters()
                    .iter()
                    .map(|(_, l)| l.max_buffer_size.min(l.max_storage_buffer_binding_size))
                    .fold(GIB, u64::min)
            }
            #[cfg(not(feature = "wgpu"))]
            {
                0
            }
        }
    }
}

#[cfg(feature = "wgpu")]
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Whether `/dev/dri` has a render node (`renderD128`, ...).
#[cfg(target_os = "linux")]
fn has_render_node() -> bool {
    std::fs::read_dir("/dev/dri").is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
    })
}

/// `--device auto`: CUDA when a usable NVIDIA GPU is there, else a hardware
/// GPU through wgpu (not a software adapter such as lavapipe or llvmpipe),
/// else the CPU. The run's first line names what was chosen.
pub fn auto() -> DeviceSpec {
    if probe_cuda().is_ok() {
        DeviceSpec::Cuda(0)
    } else if hardware_wgpu_adapter().is_some() {
        DeviceSpec::Wgpu
    } else {
        DeviceSpec::Cpu
    }
}

/// Whether `spec` is a hardware GPU (what `precision = "auto"` needs to
/// pick 16-bit).
pub fn is_hardware_gpu(spec: DeviceSpec) -> bool {
    match spec {
        DeviceSpec::Cpu => false,
        DeviceSpec::Cuda(_) => true,
        DeviceSpec::Wgpu => hardware_wgpu_adapter().is_some(),
    }
}

/// The name of the first discrete or integrated GPU wgpu finds.
fn hardware_wgpu_adapter() -> Option<String> {
    // On Linux a GPU that Vulkan can drive has a DRM render node; without
    // one there is nothing to find, and not asking keeps Mesa's WSI from
    // printing "XDG_RUNTIME_DIR is invalid" on a headless machine.
    #[cfg(target_os = "linux")]
    if !has_render_node() {
        return None;
    }
    #[cfg(feature = "wgpu")]
    {
        wgpu_adapters().iter().find_map(|(i, _)| {
            matches!(
                i.device_type,
                wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu
            )
            .then(|| i.name.clone())
        })
    }
    #[cfg(not(feature = "wgpu"))]
    {
        None
    }
}

/// Checks that `spec` can be used here, before training starts.
pub fn check(spec: DeviceSpec) -> Result<String, DeviceUnavailable> {
    let fail = |why: String| DeviceUnavailable {
        device: spec.to_string(),
        why,
    };
    match spec {
        DeviceSpec::Cpu => Ok(cpu_name()),
        DeviceSpec::Cuda(n) => {
            let p = probe_cuda().map_err(fail)?;
            let (driver, count) = (p.driver, p.devices);
            if n >= count {
                return Err(fail(format!("only {count} CUDA device(s) visible")));
            }
            // The name by CUDA ordinal, from the same driver CUDA uses (not
            // nvidia-smi, whose indices are NVML's).
            let name = p.gpus.get(n).and_then(|g| g.name.clone());
            Ok(name.unwrap_or_else(|| format!("CUDA device {n} ({driver})")))
        }
        DeviceSpec::Wgpu => probe_wgpu().map_err(fail),
    }
}

/// What `greentrain devices` prints: each device and whether it can run.
pub fn list() -> Vec<(String, Result<String, String>)> {
    vec![
        (
            "cpu".into(),
            Ok(format!(
                "flex backend, {} ({} threads)",
                cpu_name(),
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            )),
        ),
        ("cuda".into(), check(DeviceSpec::Cuda(0)).map_err(|e| e.why)),
        ("wgpu".into(), probe_wgpu()),
    ]
}
