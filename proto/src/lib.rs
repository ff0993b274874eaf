//! The Runnel gRPC API (package `runnel.v1`): prost messages and tonic clients and servers,
//! generated at build time from `proto/runnel/v1/*.proto`.
//!
//! These are wire types only. Conversions to and from the broker's domain types live at the
//! edge that needs them (`runnel_broker::grpc::convert`, `runnel_client`).

/// Generated code for package `runnel.v1`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    missing_docs
)]
pub mod v1 {
    // Messages and servers (with `crate::codec::RequestCodec`).
    tonic::include_proto!("runnel.v1");
    // Clients (with tonic-prost's codec), naming the messages above through `crate::v1`.
    include!(concat!(env!("OUT_DIR"), "/client/runnel.v1.rs"));
}

pub mod codec;

/// The encoded `FileDescriptorSet` of every Runnel proto (and the well-known types they
/// import), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/runnel_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_set_names_every_service() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("decodes");
        let services: Vec<String> = fds
            .file
            .iter()
            .filter(|f| f.package() == "runnel.v1")
            .flat_map(|f| f.service.iter().map(|s| s.name().to_owned()))
            .collect();
        for s in ["Ingest", "Subscribe", "Admin", "Alerts", "Windows"] {
            assert!(services.iter().any(|x| x == s), "{s} missing: {services:?}");
        }
    }
}
