//! What the benchmarks share.

/// The allocator the binary uses (src/main.rs), so that the benchmarks measure what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A size setting from the environment (`BENCH_RECORDS`, `SPOOL_EVENTS` ...), to shrink a run,
/// e.g. for instruction counts under `valgrind --tool=callgrind`.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
