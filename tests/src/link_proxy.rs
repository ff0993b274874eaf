//! A per-link TCP fault proxy for the real-process replication tests: put one in front of
//! node B's peer address as node A dials it, and [`LinkProxy::set_mode`] cuts, delays or
//! resets exactly the A→B link.
//!
//! The proxy runs on its own thread with its own tokio runtime, so it serves synchronous and
//! asynchronous tests alike. A mode change applies at once to every existing connection and to
//! every new one:
//! - [`Mode::Pass`] relays bytes both ways.
//! - [`Mode::Blackhole`] accepts connections but relays nothing and reads nothing (so the
//!   sender's socket buffers fill, as behind a real partition); a new connection is not even
//!   dialed through to the upstream. Bytes already read are held, not lost: back in `Pass`,
//!   they flow on, as TCP would deliver them once a partition heals.
//! - [`Mode::Reset`] resets every connection (RST) and refuses new ones (accepted, then reset).
//! - [`Mode::Delay`] relays each chunk that long after it was read, in order, both ways; bytes
//!   already waiting get the new delay at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;
/// Chunks read but not yet written, per direction, before the proxy stops reading.
const IN_FLIGHT_CHUNKS: usize = 256;

/// What the proxy does to its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Relay both ways.
    Pass,
    /// Accept, but relay and read nothing.
    Blackhole,
    /// Reset every connection and refuse new ones.
    Reset,
    /// Relay each chunk this long after it was read.
    Delay(Duration),
}

/// A running proxy; dropping it stops it and closes every connection.
pub struct LinkProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl LinkProxy {
    /// Listen on `listen` (e.g. `127.0.0.1:0`) and relay to `upstream`, in [`Mode::Pass`].
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> Result<LinkProxy> {
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("bind link proxy on {listen}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("link proxy runtime")?;
        let counter = Arc::clone(&accepted);
        let thread = thread::Builder::new()
            .name(format!("link-proxy-{addr}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return eprintln!("link proxy {addr}: {e}"),
                    };
                    tokio::select! {
                        () = serve(listener, upstream, mode_rx, counter) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here cancels every connection task: sockets close.
            })
            .context("spawn link proxy thread")?;
        Ok(LinkProxy {
            addr,
            upstream,
            mode,
            accepted,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address to dial instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy relays to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switch mode; applies at once to existing and new connections.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Connections accepted so far (in every mode).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    accepted: Arc<AtomicU64>,
) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                eprintln!("link proxy accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        if *mode.borrow() == Mode::Reset {
            reset(&client);
            continue;
        }
        tokio::spawn(link(client, upstream, mode.clone()));
    }
}

/// Closes with an RST rather than a FIN, like a connection reset on the path.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// One proxied connection, from dialing the upstream to teardown.
async fn link(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // Behind a blackhole, the connection does not reach the upstream until the link heals.
    let Ok(current) = mode.wait_for(|m| *m != Mode::Blackhole).await.map(|m| *m) else {
        return;
    };
    if current == Mode::Reset {
        return reset(&client);
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return reset(&client);
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let mut reset_mode = mode.clone();
    let relay = async {
        tokio::try_join!(
            pipe(&mut client_r, &mut server_w, mode.clone()),
            pipe(&mut server_r, &mut client_w, mode.clone()),
        )
    };
    tokio::select! {
        _ = relay => {}
        _ = reset_mode.wait_for(|m| *m == Mode::Reset) => {
            let _ = client_r.as_ref().set_zero_linger();
            let _ = server_r.as_ref().set_zero_linger();
        }
    }
}

/// Relay one direction; a clean end of stream is passed on as a FIN.
async fn pipe(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    tokio::try_join!(read_side(from, tx, mode.clone()), write_side(to, rx, mode))?;
    Ok(())
}

async fn read_side(
    from: &mut OwnedReadHalf,
    chunks: mpsc::Sender<(Instant, Vec<u8>)>,
    mut mode: watch::Receiver<Mode>,
) -> std::io::Result<()> {
    loop {
        // Read nothing while blackholed (or reset: the connection is being torn down).
        if mode
            .wait_for(|m| matches!(m, Mode::Pass | Mode::Delay(_)))
            .await
            .is_err()
        {
            return Ok(());
        }
        let mut buf = vec![0u8; CHUNK];
        tokio::select! {
            n = from.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Ok(()); // dropping `chunks` ends the write side after the backlog
                }
                buf.truncate(n);
                if chunks.send((Instant::now(), buf)).await.is_err() {
                    return Ok(());
                }
            }
            // Re-check the mode (a switch to Blackhole stops reading at once).
            _ = mode.changed() => {}
        }
    }
}

async fn write_side(
    to: &mut OwnedWriteHalf,
    mut chunks: mpsc::Receiver<(Instant, Vec<u8>)>,
    mut mode: watch::Receiver<Mode>,
) -> std::io::Result<()> {
    while let Some((read_at, chunk)) = chunks.recv().await {
        // Wait until the current mode lets this chunk through; re-evaluated on every change.
        loop {
            let release = match *mode.borrow_and_update() {
                Mode::Pass => break,
                // `None` (an overflowing delay) never releases, like a blackhole.
                Mode::Delay(d) => read_at.checked_add(d),
                Mode::Blackhole | Mode::Reset => None,
            };
            let changed = match release {
                Some(at) if at <= Instant::now() => break,
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => break,
                    changed = mode.changed() => changed,
                },
                None => mode.changed().await,
            };
            if changed.is_err() {
                return Ok(());
            }
        }
        to.write_all(&chunk).await?;
    }
    to.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::time::Instant;

    use super::*;

    /// A plain TCP echo server on its own threads; counts the connections it accepted.
    fn echo_server() -> (SocketAddr, Arc<AtomicU64>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&accepted);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                count.fetch_add(1, Ordering::Relaxed);
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn proxy() -> (LinkProxy, Arc<AtomicU64>) {
        let (upstream, accepted) = echo_server();
        let p = LinkProxy::start("127.0.0.1:0".parse().unwrap(), upstream).unwrap();
        (p, accepted)
    }

    fn dial(p: &LinkProxy) -> TcpStream {
        let s = TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn echo(s: &mut TcpStream, msg: &[u8]) {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }

    /// Asserts nothing arrives on `s` for `quiet`.
    fn silent_for(s: &mut TcpStream, quiet: Duration) {
        s.set_read_timeout(Some(quiet)).unwrap();
        let mut b = [0u8; 1];
        let r = s.read(&mut b);
        assert!(
            matches!(&r, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
            "expected silence, got {r:?}"
        );
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }

    /// Asserts `s` is closed or reset by the proxy.
    fn closed(s: &mut TcpStream) {
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("expected a closed connection, got {other:?}"),
        }
    }

    #[test]
    fn pass_relays_both_ways_and_passes_end_of_stream() {
        let (p, _) = proxy();
        let mut s = dial(&p);
        echo(&mut s, b"hello");
        echo(&mut s, &vec![42u8; 1 << 20]);
        s.shutdown(Shutdown::Write).unwrap();
        closed(&mut s);
        assert_eq!(p.mode(), Mode::Pass);
        assert_eq!(p.accepted(), 1);
    }

    #[test]
    fn blackhole_holds_existing_and_new_connections_until_pass() {
        let (p, upstream_accepted) = proxy();
        let mut old = dial(&p);
        echo(&mut old, b"before");
        p.set_mode(Mode::Blackhole);
        // Let the relay tasks see the mode (they re-check it on every change).
        thread::sleep(Duration::from_millis(50));
        old.write_all(b"during").unwrap();
        silent_for(&mut old, Duration::from_millis(300));
        // A new connection is accepted but not dialed through to the upstream.
        let mut new = dial(&p);
        new.write_all(b"new").unwrap();
        silent_for(&mut new, Duration::from_millis(300));
        assert_eq!(upstream_accepted.load(Ordering::Relaxed), 1);

        p.set_mode(Mode::Pass);
        let mut got = [0u8; 6];
        old.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"during");
        let mut got = [0u8; 3];
        new.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"new");
        assert_eq!(upstream_accepted.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn reset_closes_existing_connections_and_refuses_new_ones() {
        let (p, _) = proxy();
        let mut old = dial(&p);
        echo(&mut old, b"x");
        p.set_mode(Mode::Reset);
        closed(&mut old);
        let mut new = dial(&p);
        let _ = new.write_all(b"y");
        closed(&mut new);

        p.set_mode(Mode::Pass);
        let mut again = dial(&p);
        echo(&mut again, b"z");
    }

    #[test]
    fn delay_applies_both_ways_and_changes_apply_to_waiting_bytes() {
        let (p, _) = proxy();
        let mut s = dial(&p);
        echo(&mut s, b"warm");
        let d = Duration::from_millis(150);
        p.set_mode(Mode::Delay(d));
        let started = Instant::now();
        echo(&mut s, b"slow");
        let rtt = started.elapsed();
        assert!(rtt >= 2 * d, "round trip {rtt:?} under twice the delay");

        // Bytes waiting out a long delay are released at once when the link passes again.
        p.set_mode(Mode::Delay(Duration::from_secs(3600)));
        thread::sleep(Duration::from_millis(50));
        s.write_all(b"held").unwrap();
        silent_for(&mut s, Duration::from_millis(200));
        p.set_mode(Mode::Pass);
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"held");
    }

    #[test]
    fn dropping_the_proxy_closes_its_connections() {
        let (p, _) = proxy();
        let mut s = dial(&p);
        echo(&mut s, b"x");
        drop(p);
        closed(&mut s);
    }
}
