//! A Kafka-aware TCP proxy that cuts connections after a Produce request reached the broker
//! but before its response reaches the client: the fault an idempotent producer must survive.
//!
//! Clients connect to the proxy (the broker advertises the proxy's port, see
//! `--advertised-port`), the proxy relays length-prefixed frames both ways and remembers the
//! correlation ids of Produce requests. Every `cut_every`-th Produce response is dropped
//! together with both sockets, up to `max_cuts` times; the client sees a dead connection for a
//! request that was in fact appended, and must retry it.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

/// Kafka's Produce API key.
const PRODUCE: i16 = 0;
/// Largest frame relayed (the broker enforces its own, smaller limit).
const MAX_FRAME: usize = 200 * 1024 * 1024;

/// Counters shared by every proxied connection.
#[derive(Debug, Default)]
pub struct CutStats {
    /// Produce responses seen from the broker (relayed or dropped).
    pub produce_responses: AtomicU32,
    /// Connections cut with a Produce response dropped.
    pub cuts: AtomicU32,
}

/// A listening proxy; [`CutProxy::start`] begins relaying to the broker.
pub struct CutProxy {
    listener: Option<TcpListener>,
    addr: SocketAddr,
    stats: Arc<CutStats>,
    stop: Arc<AtomicBool>,
}

impl CutProxy {
    /// Binds a free loopback port (so the broker can be told to advertise it before it starts).
    pub fn bind() -> Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind proxy")?;
        let addr = listener.local_addr()?;
        Ok(CutProxy {
            listener: Some(listener),
            addr,
            stats: Arc::new(CutStats::default()),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The address clients bootstrap from.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> &CutStats {
        &self.stats
    }

    /// Relays to `upstream`, cutting every `cut_every`-th Produce response, `max_cuts` times.
    pub fn start(&mut self, upstream: SocketAddr, cut_every: u32, max_cuts: u32) -> Result<()> {
        let listener = self.listener.take().context("proxy already started")?;
        let stats = Arc::clone(&self.stats);
        let stop = Arc::clone(&self.stop);
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let stats = Arc::clone(&stats);
                thread::spawn(move || {
                    if let Err(e) = relay(client, upstream, &stats, cut_every.max(1), max_cuts) {
                        eprintln!("proxy connection ended: {e}");
                    }
                });
            }
        });
        Ok(())
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

/// Reads one length-prefixed frame; `None` on a clean end of stream.
fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = usize::try_from(i32::from_be_bytes(len))
        .ok()
        .filter(|&n| n <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad frame length"))?;
    let mut frame = Vec::with_capacity(n + 4);
    frame.extend_from_slice(&len);
    frame.resize(n + 4, 0);
    r.read_exact(&mut frame[4..])?;
    Ok(Some(frame))
}

fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    stats: &CutStats,
    cut_every: u32,
    max_cuts: u32,
) -> Result<()> {
    let mut broker = TcpStream::connect(upstream).context("connect to broker")?;
    let produce_ids: Arc<Mutex<HashSet<i32>>> = Arc::default();
    // Requests: client -> broker, noting Produce correlation ids.
    let mut from_client = client.try_clone()?;
    let mut to_broker = broker.try_clone()?;
    let ids = Arc::clone(&produce_ids);
    let requests = thread::spawn(move || -> io::Result<()> {
        while let Some(frame) = read_frame(&mut from_client)? {
            // Request header: api_key i16, api_version i16, correlation_id i32.
            if frame.len() >= 12 {
                let api_key = i16::from_be_bytes([frame[4], frame[5]]);
                let correlation = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
                if api_key == PRODUCE {
                    ids.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(correlation);
                }
            }
            to_broker.write_all(&frame)?;
        }
        let _ = to_broker.shutdown(Shutdown::Write);
        Ok(())
    });
    // Responses: broker -> client, maybe cutting at a Produce response.
    let result = (|| -> io::Result<()> {
        while let Some(frame) = read_frame(&mut broker)? {
            if frame.len() >= 8 {
                let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                let was_produce = produce_ids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&correlation);
                if was_produce {
                    let n = stats.produce_responses.fetch_add(1, Ordering::Relaxed) + 1;
                    let cut = n % cut_every == 0
                        && stats
                            .cuts
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                                (c < max_cuts).then_some(c + 1)
                            })
                            .is_ok();
                    if cut {
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = broker.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                }
            }
            client.write_all(&frame)?;
        }
        Ok(())
    })();
    let _ = client.shutdown(Shutdown::Both);
    let _ = broker.shutdown(Shutdown::Both);
    let _ = requests.join();
    result.context("relay responses")
}
