//! Compiles `proto/runnel/v1/*.proto` with protox (a protobuf compiler written in Rust, so a
//! fresh machine needs no system `protoc`) and generates prost messages and tonic services.
//! The encoded descriptor set is also written out for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/runnel/v1/records.proto",
    "proto/runnel/v1/ingest.proto",
    "proto/runnel/v1/subscribe.proto",
    "proto/runnel/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // protox ships google/protobuf/*.proto, so well-known types resolve without an include.
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("runnel_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
