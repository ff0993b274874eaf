//! The node-to-node transport: Raft messages for every group and small request/response RPCs
//! between the brokers of a static cluster, over TCP, framed by [`crate::raft::wire`].
//!
//! Each node dials every peer once; that outbound connection carries all of this node's Raft
//! messages and requests to that peer, and the peer answers requests on the same connection.
//! Connections are therefore directional for Raft traffic: A's messages to B travel only over
//! the connection A dialed to B, so cutting that one link (a proxy in front of B's address as
//! A sees it) cuts exactly A→B.
//!
//! Sending never blocks: [`PeerNetwork::send_raft`] puts the message on the peer's bounded
//! queue or, when the queue is full, drops it and counts the drop (Raft tolerates loss). One
//! task per peer connects (capped exponential backoff with jitter, 50 ms → 1 s), sends a
//! [`Frame::Hello`], then writes whatever is queued, coalesced into one write. Messages queued
//! while the peer is unreachable are dropped; requests then fail with a [`PeerError`].
//!
//! Inbound connections must open with a `Hello` naming this cluster and a known node, else they
//! are closed with a warning. A Raft frame whose sender is not the `Hello`'s node, or whose
//! receiver is not this node, is dropped and counted. Raft frames reach
//! [`PeerHandler::on_raft`] in the order they arrived on their connection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use crate::raft::wire::{self, Frame, GroupKey, WireError};
use crate::raft::{Message, NodeId};

/// The first reconnect delay; it doubles after every failed attempt...
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// ...up to this. A connection that stayed up this long resets the backoff.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a TCP connect may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an inbound connection may take to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Stop pulling queued frames into one write beyond this many bytes.
const COALESCE_BYTES: usize = 1 << 20;
/// Initial size of read and write buffers; a write buffer grown far beyond it is replaced.
const BUF_BYTES: usize = 64 * 1024;
/// Requests from one peer being answered at once; beyond it the connection stops reading.
const MAX_INBOUND_REQUESTS: usize = 256;
/// Unanswered requests on one connection before abandoned ones (timed out) are purged.
const PENDING_PURGE_AT: usize = 1024;

/// What a node needs to join the peer network.
pub struct PeerConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster name; connections from another cluster are refused.
    pub cluster: String,
    /// The node-to-node listener, already bound by the caller.
    pub listener: TcpListener,
    /// Every other node and the address this node dials it at. Only these ids may connect.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The largest frame body accepted or sent, in bytes.
    pub max_frame: usize,
    /// Messages queued per peer before further ones are dropped.
    pub queue_len: usize,
}

/// What the network delivers; implemented by the Raft driver.
pub trait PeerHandler: Send + Sync + 'static {
    /// A Raft message for `group`, already checked to be from the connection's node and to
    /// this node. Called on the connection's task in arrival order: it must not block (hand the
    /// message to the group's driver, e.g. through a channel).
    fn on_raft(&self, group: GroupKey, msg: Message);

    /// A request from `from`; the returned future's output is sent back as the response.
    fn on_request(&self, from: NodeId, payload: Bytes) -> BoxFuture<'static, Bytes>;

    /// A connection with `peer` (either direction) was closed, or dialing it was refused or
    /// reset: its process is likely gone (a killed process's kernel closes its sockets at
    /// once). A hint only — a reset link looks the same — and never sent for a connection that
    /// just goes quiet (a paused process, a silent partition), nor for a connect that timed
    /// out. Must not block.
    fn on_peer_down(&self, _peer: NodeId) {}
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// `to` is not in the configured peers.
    #[error("node {0} is not a known peer")]
    UnknownPeer(NodeId),
    /// The request could not even be queued before its deadline.
    #[error("outbound queue to node {0} stayed full")]
    QueueFull(NodeId),
    /// No connection to the peer could be made.
    #[error("node {0} is unreachable")]
    Unreachable(NodeId),
    /// The connection closed before the response arrived; the request may or may not have
    /// been handled.
    #[error("connection to node {0} closed before its response arrived")]
    Disconnected(NodeId),
    /// No response in time; the request may or may not have been handled.
    #[error("no response from node {to} within {after:?}")]
    Timeout {
        /// The peer asked.
        to: NodeId,
        /// The timeout.
        after: Duration,
    },
    /// The request does not fit the peer's frame limit.
    #[error("request of {size} bytes exceeds the frame limit of {max}")]
    TooLarge {
        /// The encoded frame body.
        size: usize,
        /// `max_frame`.
        max: usize,
    },
    /// The network was shut down.
    #[error("peer network is shut down")]
    ShutDown,
}

/// Counters since start; a snapshot from [`PeerNetwork::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Outbound connections established (a reconnect counts again).
    pub connects: u64,
    /// Frames written to peers (Raft and requests).
    pub sent: u64,
    /// Raft frames delivered to the handler.
    pub received: u64,
    /// Raft messages dropped because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Raft messages dropped because they were addressed to an unknown node.
    pub dropped_unknown_peer: u64,
    /// Raft messages dropped because the peer was unreachable (or the network shut down).
    pub dropped_disconnected: u64,
    /// Frames (either direction) dropped because they exceed `max_frame`.
    pub dropped_oversized: u64,
    /// Inbound Raft frames dropped: sender not the connection's node, or receiver not this one.
    pub dropped_misaddressed: u64,
    /// Inbound connections closed for a bad or missing `Hello`.
    pub refused_handshakes: u64,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_unknown_peer: AtomicU64,
    dropped_disconnected: AtomicU64,
    dropped_oversized: AtomicU64,
    dropped_misaddressed: AtomicU64,
    refused_handshakes: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> PeerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PeerStats {
            connects: get(&self.connects),
            sent: get(&self.sent),
            received: get(&self.received),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_unknown_peer: get(&self.dropped_unknown_peer),
            dropped_disconnected: get(&self.dropped_disconnected),
            dropped_oversized: get(&self.dropped_oversized),
            dropped_misaddressed: get(&self.dropped_misaddressed),
            refused_handshakes: get(&self.refused_handshakes),
        }
    }
}

/// Where a request's answer goes.
type Reply = oneshot::Sender<Result<Bytes, PeerError>>;

/// An item on a peer's outbound queue.
enum Outgoing {
    Raft(GroupKey, Message),
    Request {
        id: u64,
        payload: Bytes,
        reply: Reply,
    },
}

/// What every task of one network shares.
struct Shared {
    node_id: NodeId,
    cluster: String,
    known: BTreeSet<NodeId>,
    max_frame: usize,
    handler: Arc<dyn PeerHandler>,
    counters: Counters,
}

/// A running node-to-node transport; dropping it (or [`PeerNetwork::shutdown`]) stops every
/// task and closes every connection.
pub struct PeerNetwork {
    shared: Arc<Shared>,
    queues: BTreeMap<NodeId, mpsc::Sender<Outgoing>>,
    next_request: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
}

impl PeerNetwork {
    /// Start accepting on `cfg.listener` and dialing every peer. Must be called within a
    /// tokio runtime. A peer with this node's own id is ignored.
    pub fn start(cfg: PeerConfig, handler: Arc<dyn PeerHandler>) -> PeerNetwork {
        let PeerConfig {
            node_id,
            cluster,
            listener,
            mut peers,
            max_frame,
            queue_len,
        } = cfg;
        peers.remove(&node_id);
        let shared = Arc::new(Shared {
            node_id,
            cluster,
            known: peers.keys().copied().collect(),
            max_frame,
            handler,
            counters: Counters::default(),
        });
        let mut queues = BTreeMap::new();
        let mut tasks = Vec::with_capacity(peers.len() + 1);
        let seeds = std::collections::hash_map::RandomState::new();
        for (peer, addr) in peers {
            let (tx, rx) = mpsc::channel(queue_len.max(1));
            queues.insert(peer, tx);
            let backoff = Backoff::new(seeds.hash_one((node_id, peer)));
            let span = tracing::debug_span!("peer_out", node = node_id, peer, %addr);
            tasks.push(tokio::spawn(
                outbound(Arc::clone(&shared), peer, addr, rx, backoff).instrument(span),
            ));
        }
        let span = tracing::debug_span!("peer_in", node = node_id);
        tasks.push(tokio::spawn(
            accept_loop(Arc::clone(&shared), listener).instrument(span),
        ));
        PeerNetwork {
            shared,
            queues,
            next_request: AtomicU64::new(1),
            tasks,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// Queue `msg` for `msg.to`; never blocks. Dropped (and counted) if the queue is full, the
    /// receiver is unknown or the network is shut down.
    pub fn send_raft(&self, group: GroupKey, msg: Message) {
        let counters = &self.shared.counters;
        let Some(queue) = self.queues.get(&msg.to) else {
            tracing::trace!(to = msg.to, "raft message to an unknown node dropped");
            bump(&counters.dropped_unknown_peer);
            return;
        };
        match queue.try_send(Outgoing::Raft(group, msg)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => bump(&counters.dropped_queue_full),
            Err(mpsc::error::TrySendError::Closed(_)) => bump(&counters.dropped_disconnected),
        }
    }

    /// Send `payload` to `to` and wait for its response, at most `timeout` in all.
    ///
    /// A [`PeerError::Timeout`] or [`PeerError::Disconnected`] leaves the outcome unknown: the
    /// peer may have handled the request.
    pub async fn request(
        &self,
        to: NodeId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, PeerError> {
        let queue = self.queues.get(&to).ok_or(PeerError::UnknownPeer(to))?;
        let deadline = Instant::now() + timeout;
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let item = Outgoing::Request { id, payload, reply };
        match tokio::time::timeout_at(deadline, queue.send(item)).await {
            Err(_) => return Err(PeerError::QueueFull(to)),
            Ok(Err(_)) => return Err(PeerError::ShutDown),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(PeerError::Timeout { to, after: timeout }),
            Ok(Err(_)) => Err(PeerError::Disconnected(to)),
            Ok(Ok(result)) => result,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> PeerStats {
        self.shared.counters.snapshot()
    }

    /// Stop every task and wait until they are gone: the listener is closed when this returns
    /// (connections close as their tasks are cancelled).
    pub async fn shutdown(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for PeerNetwork {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Capped exponential backoff with "equal jitter": each delay is uniform in
/// `[base / 2, base]`, `base` doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], so that nodes
/// retrying at once spread out without ever retrying in a tight loop.
struct Backoff {
    base: Duration,
    rng: u64,
}

impl Backoff {
    fn new(seed: u64) -> Backoff {
        Backoff {
            base: BACKOFF_MIN,
            rng: seed,
        }
    }

    fn reset(&mut self) {
        self.base = BACKOFF_MIN;
    }

    fn next_delay(&mut self) -> Duration {
        // splitmix64: tiny and good enough for jitter.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let half = self.base / 2;
        let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        let delay = half + Duration::from_micros(z % span.saturating_add(1));
        self.base = (self.base * 2).min(BACKOFF_MAX);
        delay
    }
}

/// Why an outbound connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Wire(#[from] WireError),
    #[error("closed by the peer")]
    Closed,
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
}

fn frame_kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello { .. } => "hello",
        Frame::Raft { .. } => "raft",
        Frame::Request { .. } => "request",
        Frame::Response { .. } => "response",
    }
}

/// One peer's outbound side: connect, run the connection, back off, repeat, until the
/// network is dropped.
async fn outbound(
    shared: Arc<Shared>,
    peer: NodeId,
    addr: SocketAddr,
    mut queue: mpsc::Receiver<Outgoing>,
    mut backoff: Backoff,
) {
    loop {
        match connect(addr).await {
            Ok(stream) => {
                bump(&shared.counters.connects);
                tracing::debug!("connected");
                let since = Instant::now();
                match run_outbound(&shared, stream, &mut queue).await {
                    Ok(()) => return, // every sender is gone: the network was dropped
                    Err(e) => tracing::debug!("disconnected: {e}"),
                }
                shared.handler.on_peer_down(peer);
                if since.elapsed() >= BACKOFF_MAX {
                    backoff.reset();
                }
            }
            Err(e) => {
                tracing::debug!("connect failed: {e}");
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) {
                    shared.handler.on_peer_down(peer);
                }
            }
        }
        // Until the next attempt, whatever is queued would be stale by the time it is sent:
        // drop Raft messages (Raft retries) and fail requests at once.
        let until = Instant::now() + backoff.next_delay();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                item = queue.recv() => match item {
                    None => return,
                    Some(Outgoing::Raft(..)) => bump(&shared.counters.dropped_disconnected),
                    Some(Outgoing::Request { reply, .. }) => {
                        let _ = reply.send(Err(PeerError::Unreachable(peer)));
                    }
                },
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Drive one outbound connection: write the `Hello`, then queued frames (coalesced), and read
/// the responses to requests. `Ok` only when the queue is closed.
async fn run_outbound(
    shared: &Shared,
    stream: TcpStream,
    queue: &mut mpsc::Receiver<Outgoing>,
) -> Result<(), ConnError> {
    let (mut reader, mut writer) = stream.into_split();
    let mut out = BytesMut::with_capacity(BUF_BYTES);
    let hello = Frame::Hello {
        cluster: shared.cluster.clone(),
        node_id: shared.node_id,
    };
    wire::encode(&hello, &mut out)?;
    // Requests written on this connection, awaiting their response. Dropped with the
    // connection, which tells their callers `Disconnected`.
    let mut pending: HashMap<u64, Reply> = HashMap::new();
    let mut inbuf = BytesMut::with_capacity(BUF_BYTES);
    loop {
        if !out.is_empty() {
            writer.write_all(&out).await?;
            out.clear();
            if out.capacity() > 4 * COALESCE_BYTES {
                out = BytesMut::with_capacity(BUF_BYTES);
            }
        }
        tokio::select! {
            item = queue.recv() => {
                let Some(item) = item else { return Ok(()) };
                push(shared, item, &mut out, &mut pending);
                while out.len() < COALESCE_BYTES {
                    let Ok(item) = queue.try_recv() else { break };
                    push(shared, item, &mut out, &mut pending);
                }
            }
            n = reader.read_buf(&mut inbuf) => {
                if n? == 0 {
                    return Err(ConnError::Closed);
                }
                while let Some(frame) = wire::decode(&mut inbuf, shared.max_frame)? {
                    match frame {
                        Frame::Response { id, payload } => {
                            if let Some(reply) = pending.remove(&id) {
                                let _ = reply.send(Ok(payload));
                            }
                        }
                        other => return Err(ConnError::Unexpected(frame_kind(&other))),
                    }
                }
            }
        }
    }
}

/// Encode one queued item onto `out`, unless it exceeds the frame limit.
fn push(shared: &Shared, item: Outgoing, out: &mut BytesMut, pending: &mut HashMap<u64, Reply>) {
    let (frame, reply) = match item {
        Outgoing::Raft(group, msg) => (Frame::Raft { group, msg }, None),
        Outgoing::Request { id, payload, reply } => {
            if reply.is_closed() {
                return; // the caller gave up already
            }
            (Frame::Request { id, payload }, Some((id, reply)))
        }
    };
    let start = out.len();
    let encoded = wire::encode(&frame, out);
    let size = (out.len() - start).saturating_sub(wire::LEN_PREFIX);
    if encoded.is_err() || size > shared.max_frame {
        out.truncate(start);
        bump(&shared.counters.dropped_oversized);
        tracing::warn!(
            size,
            max = shared.max_frame,
            "dropping a {} frame larger than the frame limit",
            frame_kind(&frame)
        );
        if let Some((_, reply)) = reply {
            let _ = reply.send(Err(PeerError::TooLarge {
                size,
                max: shared.max_frame,
            }));
        }
        return;
    }
    bump(&shared.counters.sent);
    if let Some((id, reply)) = reply {
        if pending.len() >= PENDING_PURGE_AT {
            pending.retain(|_, r| !r.is_closed());
        }
        pending.insert(id, reply);
    }
}

/// Accept peer connections until the task is cancelled; each runs on a task of its own,
/// owned by this one (so they end with it).
async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, addr)) => {
                    let _ = socket.set_nodelay(true);
                    let span = tracing::debug_span!("peer_conn", %addr);
                    conns.spawn(inbound(Arc::clone(&shared), socket, addr).instrument(span));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!("peer accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Read frames until one is whole; `None` on a clean end of stream between frames.
async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<Option<Frame>, ConnError> {
    loop {
        if let Some(frame) = wire::decode(buf, max_frame)? {
            return Ok(Some(frame));
        }
        if reader.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ConnError::Closed)
            };
        }
    }
}

/// Serve one inbound connection: check the `Hello`, then deliver Raft frames in order and
/// answer requests on the same connection.
async fn inbound(shared: Arc<Shared>, socket: TcpStream, addr: SocketAddr) {
    let (mut reader, writer) = socket.into_split();
    let mut buf = BytesMut::with_capacity(BUF_BYTES);
    let refuse = |why: String| {
        bump(&shared.counters.refused_handshakes);
        tracing::warn!("refused peer connection from {addr}: {why}");
    };
    let hello = tokio::time::timeout(
        HELLO_TIMEOUT,
        read_frame(&mut reader, &mut buf, shared.max_frame),
    )
    .await;
    let from = match hello {
        Ok(Ok(Some(Frame::Hello { cluster, node_id }))) => {
            if cluster != shared.cluster {
                return refuse(format!(
                    "cluster {cluster:?} is not this node's {:?}",
                    shared.cluster
                ));
            }
            if !shared.known.contains(&node_id) {
                return refuse(format!("node {node_id} is not a configured peer"));
            }
            node_id
        }
        Ok(Ok(Some(other))) => {
            return refuse(format!("first frame is {}, not hello", frame_kind(&other)))
        }
        Ok(Ok(None)) => {
            bump(&shared.counters.refused_handshakes);
            tracing::debug!("peer connection from {addr} closed before its hello");
            return;
        }
        Ok(Err(e)) => return refuse(format!("no hello: {e}")),
        Err(_) => return refuse(format!("no hello within {HELLO_TIMEOUT:?}")),
    };
    tracing::debug!(peer = from, "peer connected");
    match serve_inbound(&shared, from, reader, writer, buf).await {
        Ok(()) => tracing::debug!(peer = from, "peer disconnected"),
        Err(e) => tracing::debug!(peer = from, "peer disconnected: {e}"),
    }
    shared.handler.on_peer_down(from);
}

async fn serve_inbound(
    shared: &Arc<Shared>,
    from: NodeId,
    mut reader: tokio::net::tcp::OwnedReadHalf,
    writer: OwnedWriteHalf,
    mut buf: BytesMut,
) -> Result<(), ConnError> {
    // Request handlers and the response writer; all end with this connection.
    let mut tasks = JoinSet::new();
    let (responses, answered) = mpsc::channel(MAX_INBOUND_REQUESTS);
    tasks.spawn(write_responses(Arc::clone(shared), writer, answered));
    let permits = Arc::new(Semaphore::new(MAX_INBOUND_REQUESTS));
    loop {
        while let Some(frame) = wire::decode(&mut buf, shared.max_frame)? {
            match frame {
                Frame::Raft { group, msg } => {
                    if msg.from != from || msg.to != shared.node_id {
                        bump(&shared.counters.dropped_misaddressed);
                        tracing::debug!(
                            from = msg.from,
                            to = msg.to,
                            "dropping a raft message misaddressed for this connection"
                        );
                        continue;
                    }
                    bump(&shared.counters.received);
                    shared.handler.on_raft(group, msg);
                }
                Frame::Request { id, payload } => {
                    // Bounded work per peer: wait for a slot (and stop reading) when full.
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                        return Ok(());
                    };
                    let answer = shared.handler.on_request(from, payload);
                    let responses = responses.clone();
                    tasks.spawn(async move {
                        let payload = answer.await;
                        let _ = responses.send((id, payload)).await;
                        drop(permit);
                    });
                }
                other => return Err(ConnError::Unexpected(frame_kind(&other))),
            }
        }
        tokio::select! {
            n = reader.read_buf(&mut buf) => {
                if n? == 0 {
                    return if buf.is_empty() { Ok(()) } else { Err(ConnError::Closed) };
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Write responses as their handlers finish, coalescing those that are ready together.
async fn write_responses(
    shared: Arc<Shared>,
    mut writer: OwnedWriteHalf,
    mut answered: mpsc::Receiver<(u64, Bytes)>,
) {
    let mut out = BytesMut::with_capacity(BUF_BYTES);
    while let Some(first) = answered.recv().await {
        let mut next = Some(first);
        while let Some((id, payload)) = next.take() {
            let start = out.len();
            let encoded = wire::encode(&Frame::Response { id, payload }, &mut out);
            let size = (out.len() - start).saturating_sub(wire::LEN_PREFIX);
            if encoded.is_err() || size > shared.max_frame {
                // The requester would refuse the frame; let it time out instead.
                out.truncate(start);
                bump(&shared.counters.dropped_oversized);
                tracing::warn!(
                    size,
                    max = shared.max_frame,
                    "dropping an oversized response"
                );
            }
            if out.len() < COALESCE_BYTES {
                next = answered.try_recv().ok();
            }
        }
        if writer.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        if out.capacity() > 4 * COALESCE_BYTES {
            out = BytesMut::with_capacity(BUF_BYTES);
        }
    }
}

#[cfg(test)]
mod tests;
