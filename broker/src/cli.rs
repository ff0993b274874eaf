//! Command-line interface of the `runnel` binary: parsing and config layering.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// Runnel: a streaming platform for sensor and event pipelines that speaks the Kafka protocol.
#[derive(Debug, Parser)]
#[command(name = "runnel", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker: Kafka clients connect to --kafka-addr (default 127.0.0.1:9092).
    ///
    /// Settings come from built-in defaults, then the config file, then RUNNEL_* environment
    /// variables, then these flags. See runnel.example.toml for every setting.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file [default: ./runnel.toml if it exists]
    #[arg(long, env = "RUNNEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for topics and metadata [default: ./runnel-data]
    #[arg(long, env = "RUNNEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kafka-protocol listen address, HOST:PORT [default: 127.0.0.1:9092]
    #[arg(long, env = "RUNNEL_KAFKA_ADDR")]
    pub kafka_addr: Option<SocketAddr>,
    /// gRPC API listen address, HOST:PORT [default: Kafka IP, Kafka port + 1: 127.0.0.1:9093]
    #[arg(long, env = "RUNNEL_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Host name advertised to clients in Metadata [default: the listen IP]
    #[arg(long, env = "RUNNEL_ADVERTISED_HOST")]
    pub advertised_host: Option<String>,
    /// Port advertised to clients in Metadata, for a broker behind NAT or a proxy
    /// [default: the listen port]
    #[arg(long, env = "RUNNEL_ADVERTISED_PORT")]
    pub advertised_port: Option<u16>,
    /// Partition count for auto-created topics [default: 1]
    #[arg(long, env = "RUNNEL_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<i32>,
}

impl ServeArgs {
    /// Layer defaults < config file < env < flags (clap already merged env under flags).
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        let default_file = PathBuf::from("runnel.toml");
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None if default_file.exists() => Config::from_file(&default_file)?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(a) = self.kafka_addr {
            config.kafka_addr = a;
        }
        if let Some(a) = self.grpc_addr {
            config.grpc_addr = Some(a);
        }
        if let Some(h) = &self.advertised_host {
            config.advertised_host = Some(h.clone());
        }
        if let Some(p) = self.advertised_port {
            config.advertised_port = Some(p);
        }
        if let Some(p) = self.default_partitions {
            config.topics.default_partitions = p;
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::try_parse_from([
            "runnel",
            "serve",
            "--data-dir",
            "/tmp/x",
            "--kafka-addr",
            "127.0.0.1:19092",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command;
        let c = args.to_config().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.kafka_addr.port(), 19092);
        assert_eq!(c.topics, Config::default().topics);
    }

    #[test]
    fn bad_address_is_a_clear_error() {
        let err = Cli::try_parse_from(["runnel", "serve", "--kafka-addr", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("kafka-addr"), "{err}");
    }
}
