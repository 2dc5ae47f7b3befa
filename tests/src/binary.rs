//! Locating (and if need be building) the `walship` binary under test.
//!
//! Order: `$WALSHIP_BIN`, then `<target>/release/walship`, then
//! `<target>/debug/walship`, where `<target>` is `$CARGO_TARGET_DIR` or
//! `<workspace>/target`. If none exists, `cargo build --release -p
//! walship-server` runs once per test process (guarded by a `OnceLock`, so
//! parallel tests wait for the same build). That build uses its own target
//! directory, because the `cargo test` that runs us may still hold the lock on
//! the workspace's.
//!
//! The harness does not check whether an existing binary is stale:
//! `scripts/test` builds the server before it runs the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("tests/ crate lives inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Path of the `walship` binary to test; builds it on first use if missing.
///
/// Panics with the build's output if the build fails: no test can run
/// without the binary.
pub fn walship_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match locate() {
        Some(path) => path,
        None => build(),
    })
}

fn locate() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("WALSHIP_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "WALSHIP_BIN={} does not name a file",
            bin.display()
        );
        return Some(bin);
    }
    let target = target_dir();
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("walship"))
        .find(|path| path.is_file())
}

fn build() -> PathBuf {
    let target = target_dir().join("walship-tests-build");
    eprintln!(
        "walship-tests: no walship binary found; running `cargo build --release -p walship-server` \
         into {} (set WALSHIP_BIN or run scripts/test to skip this)",
        target.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "-p", "walship-server", "--target-dir"])
        .arg(&target)
        .output()
        .expect("failed to run cargo to build walship");
    assert!(
        output.status.success(),
        "building walship failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let bin = target.join("release").join("walship");
    assert!(
        bin.is_file(),
        "cargo build succeeded but {} is missing",
        bin.display()
    );
    bin
}
