//! The `eventhost` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    eventhost::cli::main()
}
