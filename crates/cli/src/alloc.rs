//! Keeps freed tensor memory inside the process.
//!
//! glibc serves every allocation above its mmap threshold (at most 32 MiB) with a
//! fresh `mmap` and unmaps it on free. A training step allocates the same large
//! tensors again and again (a ResNet-20 batch of 512 has 25 MiB activations and
//! larger im2col buffers), so the kernel zeroed new pages on every step:
//! `perf record` put 18% of a CPU ResNet step in `clear_page_erms`. With mmap
//! off for allocations and the heap's top never trimmed, freed blocks are
//! reused instead (docs/BENCHMARKS.md has the measurement). One arena: a
//! thread's own arena maps large blocks whatever `M_MMAP_MAX` says (glibc's
//! fallback when its 64 MiB heap cannot hold them), and the worker threads
//! allocate im2col buffers. This belongs to the binary, not the library crates:
//! it is a process-wide choice. Tested in tests/alloc.rs, a process of its own,
//! since arenas are fixed once threads exist.

/// glibc's own variables, which a user may set to choose differently.
const GLIBC_VARIABLES: [&str; 3] = [
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_ARENA_MAX",
];

/// Whether to change the allocator: not when the user set glibc's variables.
pub fn wanted(var: impl Fn(&str) -> Option<String>) -> bool {
    GLIBC_VARIABLES.iter().all(|name| var(name).is_none())
}

/// Turns off mmap for allocations and trimming of the heap, in one arena,
/// unless the user set glibc's variables. Returns whether it changed anything.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() -> bool {
    if !wanted(|name| std::env::var(name).ok()) {
        return false;
    }
    // SAFETY: mallopt only sets allocator parameters, under glibc's arena lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
            && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
    }
}

/// Other allocators (musl, macOS, Windows) keep their own policies.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() -> bool {
    false
}
