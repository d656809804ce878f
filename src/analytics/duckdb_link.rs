//! Used by the `repdist` package's build script (not a module of the crate): finds the prebuilt libduckdb.so (fetching it once through
//! `scripts/duckdb`), adds its directory to the link search path, and records it as the runtime
//! search path (rpath), so binaries run without LD_LIBRARY_PATH. The rpath is the cache directory
//! (outside the clone), so a binary keeps working after its clone is gone.

use std::path::Path;
use std::process::Command;

pub fn link(workspace_root: &Path) {
    println!("cargo:rerun-if-env-changed=REPDIST_DUCKDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=REPDIST_TOOLS_DIR");
    let script = workspace_root.join("scripts/duckdb");
    println!("cargo:rerun-if-changed={}", script.display());
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    if !output.status.success() {
        panic!(
            "{} could not provide libduckdb.so:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    // A deleted library makes cargo run this again (and so fetch it again).
    println!("cargo:rerun-if-changed={dir}/libduckdb.so");
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
}
