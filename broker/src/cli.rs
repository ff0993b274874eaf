//! Command-line interface of the `runnel` binary: parsing and config layering for `serve`,
//! and the client commands (`topics`, `produce`, `consume`, `simulate`) from [`crate::tools`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::tools;

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
    /// variables, then these flags. See runnel.example.toml for every setting. Stops cleanly
    /// on Ctrl-C / SIGTERM (pipelines checkpoint, logs are fsynced and marked closed, so the
    /// next start skips re-validating them).
    Serve(ServeArgs),
    /// Create, list, describe and delete topics (gRPC Admin); JSON lines on stdout.
    Topics(tools::topics::TopicsArgs),
    /// Publish records read from stdin, one per line.
    Produce(tools::produce::ProduceArgs),
    /// Print records as JSON lines (topic, partition, offset, timestamp, key, value, headers).
    Consume(tools::consume::ConsumeArgs),
    /// Generate sensor, clickstream and social-post traffic, with anomalies, late events and
    /// garbage, and send it over gRPC or the Kafka protocol.
    Simulate(Box<tools::simulate::SimulateArgs>),
    /// Run the stream-processing pipelines in their own process against any Kafka-compatible
    /// cluster (Runnel or Kafka) at --bootstrap, with the same exactly-once outputs as
    /// serve's embedded processor. Stops cleanly on Ctrl-C / SIGTERM.
    Process(crate::standalone::ProcessArgs),
    /// The one-command demo: a broker with the default sensor pipeline, the simulator feeding
    /// it, the dashboard's address and a live status line, until Ctrl-C or SIGTERM (the data directory,
    /// ./runnel-demo by default, is kept).
    Demo(crate::demo::DemoArgs),
    /// What a running node holds and does: topics, consumer groups, pipelines (from its HTTP
    /// port).
    Status(tools::status::StatusArgs),
}

impl Command {
    /// Run a client command (everything but `serve`) to completion.
    pub async fn run_tool(self) -> anyhow::Result<()> {
        match self {
            Command::Serve(_) => anyhow::bail!("serve is not a client command"),
            Command::Topics(a) => tools::topics::run(a).await,
            Command::Produce(a) => tools::produce::run(a).await,
            Command::Consume(a) => tools::consume::run(a).await,
            Command::Simulate(a) => tools::simulate::run(*a).await,
            Command::Process(a) => crate::standalone::run_cli(a).await,
            Command::Demo(_) => anyhow::bail!("demo is not a client command"),
            Command::Status(a) => tools::status::run(a).await,
        }
    }
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
    /// HTTP listen address for Prometheus metrics (/metrics), HOST:PORT
    /// [default: Kafka IP, Kafka port + 2: 127.0.0.1:9094]
    #[arg(long, env = "RUNNEL_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
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
        if let Some(a) = self.http_addr {
            config.http_addr = Some(a);
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
        let Command::Serve(args) = cli.command else {
            panic!("parsed as serve");
        };
        let c = args.to_config().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.kafka_addr.port(), 19092);
        assert_eq!(c.topics, Config::default().topics);
    }

    #[test]
    fn client_commands_parse_with_their_defaults() {
        let cli =
            Cli::try_parse_from(["runnel", "consume", "t", "--from", "5", "-n", "3"]).unwrap();
        let Command::Consume(a) = cli.command else {
            panic!("parsed as consume");
        };
        assert_eq!(a.count, Some(3));
        assert_eq!(a.grpc.grpc_addr, "127.0.0.1:9093");
        let err = Cli::try_parse_from(["runnel", "consume", "t", "--from", "soon"]).unwrap_err();
        assert!(err.to_string().contains("earliest"), "{err}");
        let cli =
            Cli::try_parse_from(["runnel", "simulate", "--count", "10", "--seed", "1"]).unwrap();
        assert!(matches!(cli.command, Command::Simulate(_)));
        assert!(
            Cli::try_parse_from(["runnel", "simulate", "--count", "1", "--duration", "1"]).is_err()
        );
    }

    #[test]
    fn bad_address_is_a_clear_error() {
        let err = Cli::try_parse_from(["runnel", "serve", "--kafka-addr", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("kafka-addr"), "{err}");
    }
}
