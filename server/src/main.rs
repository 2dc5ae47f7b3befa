fn main() -> std::process::ExitCode {
    walship_server::cli::main()
}
