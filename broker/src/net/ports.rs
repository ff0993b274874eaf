//! Free loopback ports for tests and benchmarks that start `runnel` processes: ports below the
//! ephemeral range, so an outgoing connection cannot take one between the check and the bind.

use std::net::{SocketAddr, TcpListener};

/// Ports handed out: below Linux's ephemeral range (32768-60999), where the kernel picks the
/// source ports of outgoing connections. A port found by binding port 0 comes from that range,
/// so between the check and the server's own bind a client connection elsewhere in the test
/// could take it ("Address already in use" at a node's start, seen in CI).
const PORT_LOW: u32 = 10_000;
const PORT_SPAN: u32 = 22_000;
/// Each port handed out is the first of a block this long, all of it free when checked: a
/// broker given only its Kafka port also listens on the next two (gRPC +1, HTTP +2 by
/// default), so handing out consecutive ports let two concurrent tests' brokers collide there
/// ("Address already in use" for gRPC, seen in CI).
pub const PORT_BLOCK: u32 = 4;

/// A free `127.0.0.1` port, with the [`PORT_BLOCK`] - 1 ports after it free too: the next block
/// from a process-wide counter (starting at a per-process offset, so concurrent test processes
/// rarely meet) whose ports all bind right now.
pub fn free_loopback_addr() -> std::io::Result<SocketAddr> {
    static BASE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = *BASE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::process::id().wrapping_mul(7_919).wrapping_add(nanos) % PORT_SPAN
    });
    let blocks = PORT_SPAN / PORT_BLOCK;
    for _ in 0..blocks {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let first = PORT_LOW + (base / PORT_BLOCK).wrapping_add(n) % blocks * PORT_BLOCK;
        let Ok(port) = u16::try_from(first) else {
            continue;
        };
        let listeners: Vec<TcpListener> = (0..PORT_BLOCK)
            .filter_map(|i| u16::try_from(first + i).ok())
            .map_while(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if listeners.len() == usize::try_from(PORT_BLOCK).unwrap_or(usize::MAX) {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!(
            "no free 127.0.0.1 port in {PORT_LOW}..{}",
            PORT_LOW + PORT_SPAN
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_stay_below_the_ephemeral_range_and_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let addr = free_loopback_addr().unwrap();
            assert!(addr.port() >= 10_000 && addr.port() < 32_000, "{addr}");
            // The block after it (a broker's gRPC and HTTP ports) is free and nobody else's.
            for port in addr.port()..addr.port() + 4 {
                assert!(seen.insert(port), "{port} handed out twice");
                TcpListener::bind(("127.0.0.1", port)).expect("still free");
            }
        }
    }
}
