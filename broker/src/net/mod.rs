//! Sockets: the Kafka listener and per-connection I/O. The only module that touches the network.

mod connection;
mod http;
pub mod peers;
mod ports;

pub use ports::free_loopback_addr;

pub use http::{serve_http, serve_processor_http};

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;

/// How long a shutdown lets open connections finish the request they are in before it
/// aborts them.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Accept Kafka connections until `shutdown` flips to true; then wait (up to [`DRAIN`]) for
/// the connections to end and abort the rest, so that once this returns no request is
/// handled any more (the broker's logs are closed next).
pub async fn serve_kafka(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    let mut connections = tokio::task::JoinSet::new();
    // Connection ids, so that every log line of one connection can be told apart.
    let mut next_conn: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let broker = broker.clone();
                    let conn_shutdown = shutdown.clone();
                    next_conn = next_conn.wrapping_add(1);
                    let span = tracing::info_span!("kafka_conn", conn = next_conn, %peer);
                    connections.spawn(tracing::Instrument::instrument(async move {
                        tracing::debug!("connected");
                        if let Err(e) = connection::run(socket, peer, broker, conn_shutdown).await {
                            tracing::warn!("closing connection: {e}");
                        }
                    }, span));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            // Reap ended connections, so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::info!(
            open = connections.len(),
            "aborting connections still busy at shutdown"
        );
        connections.shutdown().await;
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
