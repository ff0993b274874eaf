//! Compiles `proto/runnel/v1/*.proto` with protox (a protobuf compiler written in Rust, so a
//! fresh machine needs no system `protoc`) and generates prost messages and tonic services.
//! The encoded descriptor set is also written out for gRPC server reflection.
//!
//! Two passes: messages and servers first, with the servers decoding requests through
//! `crate::codec::RequestCodec` (a request that does not parse is INVALID_ARGUMENT, not
//! tonic-prost's INTERNAL); then the clients alone, into `client/`, with tonic-prost's own
//! codec and the messages of the first pass (`extern_path`), so nothing is generated twice.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/runnel/v1/records.proto",
    "proto/runnel/v1/ingest.proto",
    "proto/runnel/v1/subscribe.proto",
    "proto/runnel/v1/admin.proto",
    "proto/runnel/v1/processing.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // protox ships google/protobuf/*.proto, so well-known types resolve without an include.
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("runnel_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::codec::RequestCodec")
        .compile_fds(fds.clone())?;
    let client_dir = out.join("client");
    std::fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .extern_path(".runnel.v1", "crate::v1")
        .out_dir(&client_dir)
        .compile_fds(fds)?;
    Ok(())
}
