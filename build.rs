//! Generates the gRPC server and client code from `proto/` with protox (a protobuf compiler in
//! pure Rust), so building needs no system `protoc`. Also writes the encoded descriptor set that
//! server reflection serves. Links the prebuilt libduckdb the analytics store uses (fetched once;
//! see `src/analytics/duckdb_link.rs`), with its directory as the binaries' runtime search path.

use std::path::PathBuf;

#[path = "src/analytics/duckdb_link.rs"]
mod duckdb_link;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    duckdb_link::link(&PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?));
    println!("cargo:rerun-if-changed=proto");
    let compiler = {
        let mut compiler = protox::Compiler::new(["proto"])?;
        compiler.include_source_info(true).include_imports(true);
        compiler.open_files(["proto/reporting.proto"])?;
        compiler
    };
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("reporting_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // prost's codec, with undecodable requests answered INVALID_ARGUMENT (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::RequestCodec")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
