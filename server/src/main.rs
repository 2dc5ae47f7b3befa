// mimalloc: no per-thread arena growth (`mprotect`) or cross-thread free
// slow paths of glibc's allocator on the request and replay paths
// (docs/profiling.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    walship_server::cli::main()
}
