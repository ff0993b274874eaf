//! Runnel broker: a durable, partitioned log that speaks a subset of the Kafka protocol.

pub mod codec;
pub mod log;
