//! One Kafka connection: a reader that frames and handles requests in order, and a writer that
//! sends replies in the same order, letting deferred (fsync-waiting) replies overlap with the
//! handling of later pipelined requests.

use std::net::SocketAddr;
use std::sync::Arc;

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::broker::Broker;
use crate::codec::frame::decode_frame;
use crate::handlers::{handle_frame, Reply, RequestError};
use crate::log::{FileSlice, Piece};

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
                Reply::Chunks(chunks) => {
                    write_pieces(&mut writer, chunks).await?;
                    continue;
                }
                Reply::Later(fut) => match fut.await? {
                    Some(frame) => frame,
                    None => continue,
                },
            };
            writer.write_all(&frame).await?;
        }
        Ok::<(), ConnectionError>(())
    });
    // Aborting this connection (a shutdown that stopped waiting) aborts its writer too.
    let mut writer_task = AbortOnDrop(writer_task);
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
    match (&mut writer_task.0).await {
        Ok(Err(e)) if result.is_ok() => Err(e),
        _ => result,
    }
}

/// A task aborted when this handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Write a frame in pieces: runs of bytes in vectored writes, file slices with `sendfile(2)`
/// (the kernel copies page cache to the socket; the bytes never enter the broker).
async fn write_pieces(writer: &mut OwnedWriteHalf, pieces: Vec<Piece>) -> std::io::Result<()> {
    let mut run = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Bytes(bytes) => run.push(bytes),
            Piece::File(slice) => {
                if !run.is_empty() {
                    writer
                        .write_all_buf(&mut ChunkList::from(std::mem::take(&mut run)))
                        .await?;
                }
                send_file(writer.as_ref(), &slice).await?;
            }
        }
    }
    if !run.is_empty() {
        writer.write_all_buf(&mut ChunkList::from(run)).await?;
    }
    Ok(())
}

/// Send all of `slice` to the socket. A file that ends before the slice does (it cannot, while
/// the slice is below the high watermark) fails the connection rather than send a short frame.
async fn send_file(socket: &TcpStream, slice: &FileSlice) -> std::io::Result<()> {
    let mut position = slice.position;
    let mut left = slice.len;
    while left > 0 {
        socket.writable().await?;
        let sent = socket.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(socket, &*slice.file, Some(&mut position), left)
                .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("segment file ended {left} bytes before the fetched slice"),
                ))
            }
            Ok(n) => left = left.saturating_sub(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A frame in pieces as one [`Buf`], so it goes out in vectored writes without being joined.
struct ChunkList {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl From<Vec<Bytes>> for ChunkList {
    fn from(chunks: Vec<Bytes>) -> Self {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(Bytes::len).sum();
        Self { chunks, remaining }
    }
}

impl Buf for ChunkList {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| &c[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let step = cnt.min(front.len());
            front.advance(step);
            self.remaining -= step;
            cnt -= step;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(&self.chunks) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Reading a chunk list by any mix of `chunk`/`chunks_vectored` and `advance` yields the
        /// concatenation of its chunks.
        #[test]
        fn chunk_list_reads_as_the_concatenation(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..8),
            steps in proptest::collection::vec((1usize..30, any::<bool>()), 1..40),
        ) {
            let joined: Vec<u8> = chunks.concat();
            let mut list = ChunkList::from(chunks.into_iter().map(Bytes::from).collect::<Vec<_>>());
            let mut read = Vec::new();
            for (want, vectored) in steps {
                if !list.has_remaining() {
                    break;
                }
                let mut got = Vec::new();
                if vectored {
                    let mut slices = [IoSlice::new(&[]); 3];
                    let n = list.chunks_vectored(&mut slices);
                    for s in &slices[..n] {
                        got.extend_from_slice(s);
                    }
                } else {
                    got.extend_from_slice(list.chunk());
                }
                prop_assert!(!got.is_empty());
                got.truncate(want);
                list.advance(got.len());
                read.extend(got);
            }
            let rest = list.remaining();
            read.extend(list.copy_to_bytes(rest));
            prop_assert_eq!(read, joined);
        }
    }
}
