//! Links the prebuilt libduckdb (see `duckdb_link.rs`).

#[path = "duckdb_link.rs"]
mod duckdb_link;

fn main() {
    let manifest_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    duckdb_link::link(manifest_dir.parent().expect("analytics/ is inside the workspace"));
}
