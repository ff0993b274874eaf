//! The `runnel` binary: parse the command line, load config, start tracing, run.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use runnel_broker::cli::{Cli, Command};
use runnel_broker::server::shutdown_signal;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// jemalloc keeps the pages of freed produce frames for the next ones, where glibc's malloc
/// returned them to the kernel and faulted them in again (see broker/Cargo.toml).
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_) | Command::Process(_));
    // The broker logs at info to stdout as before; client commands keep stdout for their
    // output and log only warnings, to stderr.
    let (default_filter, writer, terminal) = if serving {
        let terminal = std::io::stdout().is_terminal();
        ("info", BoxMakeWriter::new(std::io::stdout), terminal)
    } else {
        let terminal = std::io::stderr().is_terminal();
        ("warn", BoxMakeWriter::new(std::io::stderr), terminal)
    };
    // Colours only on a terminal (and never with NO_COLOR set): a log redirected to a file
    // or a pipe stays plain text that grep finds `ERROR` in.
    let colour = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_writer(writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line a person can act on; causes joined with ": ".
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        Command::Serve(args) => {
            let config = args.to_config()?;
            runtime.block_on(runnel_broker::server::run(config, shutdown_signal()))
        }
        Command::Demo(args) => runtime.block_on(runnel_broker::demo::run(args, shutdown_signal())),
        tool => runtime.block_on(tool.run_tool()),
    }
}
