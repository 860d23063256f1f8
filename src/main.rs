//! The `waba-gateway` binary: everything happens in [`waba_gateway::cli`].

fn main() -> std::process::ExitCode {
    waba_gateway::cli::main()
}
