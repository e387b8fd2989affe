//! Persistent kernel and autotune caches for the GPU backends.
//!
//! CubeCL compiles every kernel at run time (NVRTC on CUDA) and autotunes
//! matmuls on first use: 7-12 s before the first CUDA step. It can keep
//! both on disk, but by default it writes autotune results into the nearest
//! Cargo `target/` folder and keeps no compiled kernels at all. greentrain
//! points both at one folder in the user's cache, so a second run of a
//! config on the same GPU starts warm: `$GREENTRAIN_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/greentrain/kernels`, else `~/.cache/greentrain/kernels`.
//! A `cubecl.toml` that sets a cache explicitly is respected.

use std::path::PathBuf;

/// The folder both caches go to (None: no home folder to put it in).
pub fn dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("GREENTRAIN_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("greentrain").join("kernels"))
}

/// Installs the cache folder in CubeCL's configuration, once per process,
/// before the first kernel. Returns the folder in use.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub fn install() -> Option<PathBuf> {
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    static CHOSEN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            let dir = dir()?;
            if CubeClRuntimeConfig::storage().lock().is_some() {
                return None; // already configured (or read) elsewhere
            }
            let mut cfg = CubeClRuntimeConfig::from_current_dir().override_from_env();
            if matches!(cfg.autotune.cache, CacheConfig::Target) {
                cfg.autotune.cache = CacheConfig::File(dir.clone());
            }
            if cfg.compilation.cache.is_none() {
                cfg.compilation.cache = Some(CacheConfig::File(dir.clone()));
            }
            CubeClRuntimeConfig::set(cfg);
            Some(dir)
        })
        .clone()
}

/// Without a GPU backend there is nothing to cache.
#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
pub fn install() -> Option<PathBuf> {
    None
}
