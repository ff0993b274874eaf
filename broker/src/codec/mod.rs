//! Sans-io codecs: Kafka request framing and header peek, raw record batches. No tokio here.

pub mod batch;
pub mod builder;
pub mod compression;
pub mod fetch_response;
pub mod frame;
pub mod varint;
