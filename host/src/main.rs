//! The `eventhost` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    fix_mmap_threshold();
    eventhost::cli::main()
}

/// The largest block glibc's allocator takes from its heaps; larger ones are mapped on their
/// own and unmapped when freed. glibc raises this threshold (up to 32 MiB) each time such a
/// block is freed, and after that, large blocks freed stay resident in the heap: a plugin's
/// first compile frees hundreds of MB of them, which then stayed with the daemon (60 MB of a
/// Python plugin's first load, 5 MB on a warm cache; `bench --bin memory`). Setting it fixes
/// it.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a setting of the allocator, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}
