//! One Kafka connection: a reader that frames and handles requests in order, and a writer that
//! sends replies in the same order, letting deferred (fsync-waiting) replies overlap with the
//! handling of later pipelined requests.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::broker::Broker;
use crate::codec::frame::decode_frame;
use crate::handlers::{handle_frame, Reply, RequestError};

/// How many replies may be waiting to be written before the reader stops reading requests.
const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Serve one connection from the client at `peer` until it closes or `shutdown` flips.
pub async fn run(
    socket: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let (mut reader, mut writer) = socket.into_split();
    let (tx, mut rx) = mpsc::channel::<Reply>(MAX_IN_FLIGHT);
    let writer_task = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let frame = match reply {
                Reply::None => continue,
                Reply::Now(frame) => frame,
                Reply::Later(fut) => match fut.await? {
                    Some(frame) => frame,
                    None => continue,
                },
            };
            writer.write_all(&frame).await?;
        }
        Ok::<(), ConnectionError>(())
    });
    let max_frame = broker.config.max_frame_bytes;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let result = async {
        loop {
            while let Some(frame) = decode_frame(&mut buf, max_frame).map_err(RequestError::from)? {
                let reply = handle_frame(&broker, frame, Some(peer)).await?;
                if tx.send(reply).await.is_err() {
                    return Ok(()); // writer failed; its error is reported below
                }
            }
            tokio::select! {
                n = reader.read_buf(&mut buf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                }
                _ = super::stopped(&mut shutdown) => return Ok(()),
            }
        }
    }
    .await;
    drop(tx);
    match writer_task.await {
        Ok(Err(e)) if result.is_ok() => Err(e),
        _ => result,
    }
}
