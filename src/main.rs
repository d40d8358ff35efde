use std::process::ExitCode;

fn main() -> ExitCode {
    defender_dsm::cli::main()
}
