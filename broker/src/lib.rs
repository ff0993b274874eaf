//! Runnel broker: a durable, partitioned log that speaks a subset of the Kafka protocol.

pub mod broker;
pub mod cli;
pub mod cluster;
pub mod cluster_processing;
pub mod codec;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod group;
pub mod grpc;
pub mod handlers;
pub mod kafka_client;
pub mod log;
pub mod metrics;
pub mod net;
pub mod partition;
pub mod processing;
pub mod processor_status;
pub mod producer_ids;
pub mod producers;
pub mod raft;
pub mod server;
pub mod snapshot;
pub mod standalone;
pub mod tools;
pub mod topics;
