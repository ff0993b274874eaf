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

/// Accept Kafka connections until `shutdown` flips to true.
pub async fn serve_kafka(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
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
                    tokio::spawn(tracing::Instrument::instrument(async move {
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
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
