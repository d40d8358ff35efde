use std::process::ExitCode;

/// A record becomes a few hundred short-lived allocations (the parsed JSON tree, converted
/// strings, output buffers); mimalloc's thread-local free lists cut that cost well below glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    defender_dsm::cli::main()
}
