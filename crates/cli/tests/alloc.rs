//! The allocator settings of `src/alloc.rs`, checked in a process of their own
//! (no test harness: its threads would hold arenas made before the settings).

#[path = "../src/alloc.rs"]
#[allow(dead_code)]
mod alloc;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    a_user_setting_of_any_variable_wins();
    if !alloc::wanted(|name| std::env::var(name).ok()) {
        // The user's choice is kept (a_user_setting_of_any_variable_wins);
        // the settings themselves are checked in a copy of this process
        // without the variables, so that this test never passes unchecked.
        assert!(!alloc::keep_freed_memory(), "a user setting was overridden");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        for name in [
            "MALLOC_MMAP_MAX_",
            "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_ARENA_MAX",
        ] {
            child.env_remove(name);
        }
        let status = child.status().expect("the test re-runs itself");
        assert!(status.success(), "without the MALLOC_ variables: {status}");
        return;
    }
    assert!(alloc::keep_freed_memory(), "mallopt refused a setting");
    let size = 96 << 20; // above glibc's largest mmap threshold (32 MiB)
    let on_main = mapped_during(size);
    let on_worker = std::thread::spawn(move || mapped_during(size))
        .join()
        .unwrap();
    assert_eq!(on_main, 0, "a large block on the main thread was mmapped");
    assert_eq!(on_worker, 0, "a large block on a worker thread was mmapped");
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let after = unsafe { libc::mallinfo2() };
    assert!(after.arena >= size, "freed blocks stay with the process");
    println!("large blocks came from the heap on the main and a worker thread, and stayed");
}

/// Bytes newly mmapped while a block of `size` bytes is alive.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn mapped_during(size: usize) -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let before = unsafe { libc::mallinfo2() }.hblkhd;
    let block = std::hint::black_box(vec![1u8; size]);
    let during = unsafe { libc::mallinfo2() }.hblkhd;
    drop(block);
    during - before
}

fn a_user_setting_of_any_variable_wins() {
    assert!(alloc::wanted(|_| None));
    for set in [
        "MALLOC_MMAP_MAX_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_ARENA_MAX",
    ] {
        assert!(
            !alloc::wanted(|name| (name == set).then(|| "0".into())),
            "{set}"
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {
    a_user_setting_of_any_variable_wins();
    assert!(!alloc::keep_freed_memory());
}
