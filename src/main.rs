//! The `lifeboat` binary: everything is in the library; see `lifeboat::cli`.

fn main() -> std::process::ExitCode {
    lifeboat::cli::main()
}
