//! The `runnel` client commands, built on `runnel-client` over gRPC: `topics`, `produce`,
//! `consume` and `simulate` (which can also speak the Kafka protocol through
//! [`kafka_producer`]). This is the CLI edge: errors are `anyhow`, printed as one line by
//! `main`; the libraries underneath keep typed errors.

pub mod consume;
pub mod deliveries;
pub mod kafka_producer;
pub mod output;
pub mod produce;
pub mod simulate;
pub mod status;
pub mod topics;

use clap::Args;
use runnel_client::{Client, ClientError};

/// Where the broker's gRPC API is, shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct GrpcArgs {
    /// The broker's gRPC API, HOST:PORT or http://HOST:PORT
    #[arg(long, env = "RUNNEL_GRPC_ADDR", default_value = "127.0.0.1:9093")]
    pub grpc_addr: String,
}

impl GrpcArgs {
    pub async fn connect(&self) -> anyhow::Result<Client> {
        Client::connect(&self.grpc_addr).await.map_err(|e| match e {
            ClientError::InvalidAddress(a) => anyhow::anyhow!("invalid --grpc-addr {a}"),
            e => anyhow::anyhow!(
                "cannot reach the broker's gRPC API at {}: {}",
                self.grpc_addr,
                source_chain(&e)
            ),
        })
    }
}

/// An error and its causes on one line (tonic's transport errors hide the useful part).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// A client error as a person reads it: the broker's own message for refusals.
pub fn client_error(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Status(s) => anyhow::anyhow!("{}", s.message()),
        e => anyhow::anyhow!("{}", source_chain(&e)),
    }
}

/// Write one line to stdout; `Ok(false)` if the reader went away (a broken pipe, as after
/// `| head`), which ends a command quietly rather than as an error.
pub fn print_line(line: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::anyhow!("cannot write to stdout: {e}")),
    }
}

/// A line on stderr for people (progress, summaries); a closed stderr is ignored.
pub fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
