//! The `runnel` binary: parse the command line, load config, start tracing, run.

use clap::Parser;
use runnel_broker::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli.command {
        Command::Serve(args) => {
            let config = args.to_config()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(runnel_broker::server::run(config, async {
                let _ = tokio::signal::ctrl_c().await;
            }))
        }
    }
}
