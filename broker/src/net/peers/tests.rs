//! Peer-network tests over loopback TCP: delivery in every direction, reconnects, drops,
//! refused handshakes, requests, and misaddressed frames.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use tokio::io::AsyncWriteExt;

use super::*;
use crate::raft::{Entry, EntryKind, MessageBody};

const CLUSTER: &str = "test-cluster";
/// Upper bound for anything that should happen "soon"; tests wait on conditions, not sleeps.
const PATIENCE: Duration = Duration::from_secs(15);

type Delivered = mpsc::UnboundedReceiver<(GroupKey, Message)>;

/// Records Raft messages; answers requests with `echo:<payload>`, after `delay` if the
/// payload is `slow`, never if it is `hang`.
struct Recorder {
    raft: mpsc::UnboundedSender<(GroupKey, Message)>,
    requests_from: Mutex<Vec<NodeId>>,
}

impl PeerHandler for Recorder {
    fn on_raft(&self, group: GroupKey, msg: Message) {
        let _ = self.raft.send((group, msg));
    }

    fn on_request(&self, from: NodeId, payload: Bytes) -> BoxFuture<'static, Bytes> {
        self.requests_from.lock().unwrap().push(from);
        Box::pin(async move {
            match &payload[..] {
                b"slow" => tokio::time::sleep(Duration::from_secs(5)).await,
                b"hang" => std::future::pending::<()>().await,
                _ => {}
            }
            let mut answer = b"echo:".to_vec();
            answer.extend_from_slice(&payload);
            Bytes::from(answer)
        })
    }
}

fn recorder() -> (Arc<Recorder>, Delivered) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = Recorder {
        raft: tx,
        requests_from: Mutex::new(Vec::new()),
    };
    (Arc::new(handler), rx)
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Binds `addr` again (a restarted node keeps its address), retrying briefly.
async fn rebind(addr: SocketAddr) -> TcpListener {
    let until = Instant::now() + PATIENCE;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < until => {
                eprintln!("rebind {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("rebind {addr}: {e}"),
        }
    }
}

fn start(
    node_id: NodeId,
    cluster: &str,
    listener: TcpListener,
    peers: &[(NodeId, SocketAddr)],
    queue_len: usize,
    handler: Arc<dyn PeerHandler>,
) -> PeerNetwork {
    PeerNetwork::start(
        PeerConfig {
            node_id,
            cluster: cluster.to_owned(),
            listener,
            peers: peers.iter().copied().collect::<BTreeMap<_, _>>(),
            max_frame: 1 << 20,
            queue_len,
        },
        handler,
    )
}

fn vote(from: NodeId, to: NodeId, term: u64) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::VoteResponse { granted: true },
    }
}

fn group(p: i32) -> GroupKey {
    GroupKey::Partition {
        topic: "t".into(),
        partition: p,
    }
}

async fn next(rx: &mut Delivered) -> (GroupKey, Message) {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("no message within the patience")
        .expect("handler gone")
}

/// Polls `cond` until true (or panics after [`PATIENCE`]).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `msg` every 20 ms until it arrives at `rx` (other messages are skipped).
async fn send_until_received(net: &PeerNetwork, rx: &mut Delivered, g: GroupKey, msg: Message) {
    let until = Instant::now() + PATIENCE;
    loop {
        net.send_raft(g.clone(), msg.clone());
        let got = tokio::time::timeout(Duration::from_millis(20), async {
            loop {
                match rx.recv().await {
                    Some(m) if m == (g.clone(), msg.clone()) => return true,
                    Some(_) => {}
                    None => return false,
                }
            }
        })
        .await;
        if got == Ok(true) {
            return;
        }
        assert!(Instant::now() < until, "message never arrived: {msg:?}");
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[test]
fn backoff_grows_with_jitter_and_caps() {
    let mut b = Backoff::new(42);
    let mut base = BACKOFF_MIN;
    for _ in 0..20 {
        let d = b.next_delay();
        assert!(
            d >= base / 2 && d <= base,
            "{d:?} outside [{:?}, {base:?}]",
            base / 2
        );
        base = (base * 2).min(BACKOFF_MAX);
    }
    assert_eq!(b.base, BACKOFF_MAX);
    b.reset();
    assert!(b.next_delay() <= BACKOFF_MIN);
    // Different seeds spread out.
    let firsts: BTreeSet<Duration> = (0..16).map(|s| Backoff::new(s).next_delay()).collect();
    assert!(firsts.len() > 8, "{firsts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_in_every_direction_in_order() {
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for id in 1..=3u64 {
        let (l, a) = bind().await;
        listeners.push(l);
        addrs.push((id, a));
    }
    let mut nets = BTreeMap::new();
    let mut inboxes = BTreeMap::new();
    for (id, listener) in (1..=3u64).zip(listeners) {
        let (handler, rx) = recorder();
        let peers: Vec<_> = addrs.iter().copied().filter(|(p, _)| *p != id).collect();
        nets.insert(id, start(id, CLUSTER, listener, &peers, 1024, handler));
        inboxes.insert(id, rx);
    }
    // All listeners are bound before anyone dials, so nothing is lost: every message of every
    // pair arrives, in the order sent, with its group and (for appends) its payload intact.
    const N: u64 = 200;
    for term in 1..=N {
        for (&from, net) in &nets {
            for to in (1..=3u64).filter(|&t| t != from) {
                let body = MessageBody::Append {
                    prev_index: term,
                    prev_term: from,
                    entries: vec![Entry {
                        term,
                        index: term + 1,
                        kind: EntryKind::Normal,
                        payload: Bytes::from(format!("{from}->{to}#{term}")),
                    }],
                    commit: 0,
                };
                let msg = Message {
                    from,
                    to,
                    term,
                    body,
                };
                net.send_raft(group(i32::try_from(from).unwrap()), msg);
            }
        }
    }
    for (&to, rx) in &mut inboxes {
        let mut last = BTreeMap::new();
        for _ in 0..2 * N {
            let (g, msg) = next(rx).await;
            assert_eq!(msg.to, to);
            assert_eq!(g, group(i32::try_from(msg.from).unwrap()));
            let MessageBody::Append { entries, .. } = &msg.body else {
                panic!("{msg:?}")
            };
            assert_eq!(
                entries[0].payload,
                Bytes::from(format!("{}->{to}#{}", msg.from, msg.term))
            );
            let prev = last.insert(msg.from, msg.term).unwrap_or(0);
            assert_eq!(msg.term, prev + 1, "out of order or lost from {}", msg.from);
        }
        assert_eq!(last.len(), 2);
    }
    for net in nets.values() {
        let s = net.stats();
        assert_eq!(s.sent, 2 * N);
        assert_eq!(s.received, 2 * N);
        assert_eq!(s.dropped_queue_full + s.dropped_disconnected, 0);
    }
}

#[tokio::test]
async fn a_peer_down_at_start_is_reached_once_it_comes_up() {
    let (la, addr_a) = bind().await;
    // B is down: its port is bound (so no other test can take it) but not listening, so
    // connects are refused until B starts.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr_b = reserved.local_addr().unwrap();
    let (ha, _rx_a) = recorder();
    let a = start(1, CLUSTER, la, &[(2, addr_b)], 64, ha);
    // While B is down, messages are dropped (and counted), not kept forever.
    for term in 1..=20 {
        a.send_raft(GroupKey::Meta, vote(1, 2, term));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually("drops while B is down", || {
        a.send_raft(GroupKey::Meta, vote(1, 2, 0));
        a.stats().dropped_disconnected > 0
    })
    .await;
    assert_eq!(a.stats().connects, 0);
    let (hb, mut rx_b) = recorder();
    let b = start(
        2,
        CLUSTER,
        reserved.listen(64).unwrap(),
        &[(1, addr_a)],
        64,
        hb,
    );
    send_until_received(&a, &mut rx_b, GroupKey::Meta, vote(1, 2, 99)).await;
    assert_eq!(a.stats().connects, 1);
    drop(b);
}

#[tokio::test]
async fn a_restarted_peer_is_reconnected_to() {
    let (la, addr_a) = bind().await;
    let (lb, addr_b) = bind().await;
    let (ha, mut rx_a) = recorder();
    let a = start(1, CLUSTER, la, &[(2, addr_b)], 64, ha);
    let (hb, mut rx_b) = recorder();
    let b = start(2, CLUSTER, lb, &[(1, addr_a)], 64, hb);
    send_until_received(&a, &mut rx_b, GroupKey::Meta, vote(1, 2, 1)).await;
    send_until_received(&b, &mut rx_a, GroupKey::Meta, vote(2, 1, 1)).await;

    b.shutdown().await;
    let (hb, mut rx_b) = recorder();
    let b = start(2, CLUSTER, rebind(addr_b).await, &[(1, addr_a)], 64, hb);
    send_until_received(&a, &mut rx_b, GroupKey::Meta, vote(1, 2, 2)).await;
    send_until_received(&b, &mut rx_a, GroupKey::Meta, vote(2, 1, 2)).await;
    assert!(a.stats().connects >= 2, "{:?}", a.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_rather_than_blocks() {
    let (la, _) = bind().await;
    // A peer that accepts (in the kernel backlog) but never reads: writes stall once the
    // socket buffers are full, and the queue behind them fills.
    let (stalled, addr_b) = bind().await;
    let (ha, _rx) = recorder();
    let a = start(1, CLUSTER, la, &[(2, addr_b)], 8, ha);
    let payload = Bytes::from(vec![7u8; 64 * 1024]);
    let started = std::time::Instant::now();
    for term in 0..4_000u64 {
        let body = MessageBody::Append {
            prev_index: term,
            prev_term: 1,
            entries: vec![Entry {
                term: 1,
                index: term + 1,
                kind: EntryKind::Normal,
                payload: payload.clone(),
            }],
            commit: 0,
        };
        a.send_raft(
            GroupKey::Meta,
            Message {
                from: 1,
                to: 2,
                term: 1,
                body,
            },
        );
    }
    let elapsed = started.elapsed();
    let s = a.stats();
    assert!(s.dropped_queue_full > 0, "{s:?}");
    // 4 000 x 64 KiB = 250 MiB could never have been written to a peer that reads nothing.
    assert!(s.sent < 4_000, "{s:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "send_raft blocked: {elapsed:?}"
    );
    drop(stalled);
}

#[tokio::test]
async fn wrong_cluster_and_unknown_node_are_refused() {
    let (lb, addr_b) = bind().await;
    let (l1, addr_1) = bind().await;
    let (l9, _) = bind().await;
    let (hb, mut rx_b) = recorder();
    let b = start(2, CLUSTER, lb, &[(1, addr_1)], 64, hb);
    // Node 1 is known to B but claims another cluster; node 9 is not one of B's peers.
    let (h1, _) = recorder();
    let other_cluster = start(1, "other-cluster", l1, &[(2, addr_b)], 64, h1);
    let (h9, _) = recorder();
    let unknown = start(9, CLUSTER, l9, &[(2, addr_b)], 64, h9);
    // A raw connection whose first frame is not a Hello.
    let mut raw = TcpStream::connect(addr_b).await.unwrap();
    let mut out = BytesMut::new();
    wire::encode(
        &Frame::Raft {
            group: GroupKey::Meta,
            msg: vote(1, 2, 1),
        },
        &mut out,
    )
    .unwrap();
    raw.write_all(&out).await.unwrap();

    eventually("three refused handshakes", || {
        other_cluster.send_raft(GroupKey::Meta, vote(1, 2, 1));
        unknown.send_raft(GroupKey::Meta, vote(9, 2, 1));
        b.stats().refused_handshakes >= 3
    })
    .await;
    // The raw connection was closed by B.
    let mut sink = Vec::new();
    let n = within(
        "raw connection closed",
        tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut sink),
    )
    .await;
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        rx_b.try_recv().is_err(),
        "a refused peer's message was delivered"
    );
    assert_eq!(b.stats().received, 0);
}

#[tokio::test]
async fn request_response_round_trip_timeout_and_disconnect() {
    let (la, addr_a) = bind().await;
    let (lb, addr_b) = bind().await;
    let (ha, _rx_a) = recorder();
    let a = start(1, CLUSTER, la, &[(2, addr_b)], 64, ha);
    let (hb, _rx_b) = recorder();
    let hb_requests = Arc::clone(&hb);
    let b = start(2, CLUSTER, lb, &[(1, addr_a)], 64, hb);

    let answer = a
        .request(2, Bytes::from_static(b"hi"), PATIENCE)
        .await
        .unwrap();
    assert_eq!(answer, Bytes::from_static(b"echo:hi"));
    assert_eq!(*hb_requests.requests_from.lock().unwrap(), vec![1]);
    // Several requests in flight at once, each answered with its own response.
    let answers = futures_util::future::join_all((0..20).map(|i| {
        let payload = Bytes::from(format!("r{i}"));
        a.request(2, payload, PATIENCE)
    }))
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), Bytes::from(format!("echo:r{i}")));
    }

    let short = Duration::from_millis(200);
    assert_eq!(
        a.request(2, Bytes::from_static(b"slow"), short).await,
        Err(PeerError::Timeout {
            to: 2,
            after: short
        })
    );
    assert_eq!(
        a.request(7, Bytes::from_static(b"hi"), short).await,
        Err(PeerError::UnknownPeer(7))
    );

    // A request whose peer goes away before answering fails as Disconnected, well before
    // its timeout.
    let hanging = a.request(2, Bytes::from_static(b"hang"), PATIENCE);
    let stop_b = async {
        eventually("hang request reached B", || {
            hb_requests.requests_from.lock().unwrap().len() >= 23
        })
        .await;
        b.shutdown().await;
    };
    let (result, ()) = within("disconnect noticed", async {
        tokio::join!(hanging, stop_b)
    })
    .await;
    assert_eq!(result, Err(PeerError::Disconnected(2)));

    // With B down, requests fail promptly as Unreachable once A has noticed.
    let result = within("unreachable", async {
        loop {
            match a
                .request(2, Bytes::from_static(b"hi"), Duration::from_secs(2))
                .await
            {
                Err(PeerError::Unreachable(2)) => return,
                Err(PeerError::Disconnected(2) | PeerError::Timeout { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    let () = result;
}

#[tokio::test]
async fn frames_with_a_lying_sender_or_wrong_receiver_are_dropped() {
    let (lb, addr_b) = bind().await;
    let (_l1, addr_1) = bind().await;
    let (hb, mut rx_b) = recorder();
    let b = start(2, CLUSTER, lb, &[(1, addr_1), (3, addr_1)], 64, hb);
    // Node 1 connects honestly, then claims to be node 3, then writes to node 7, then sends
    // one good message: only the good one arrives, and it arrives after the bad ones were
    // read (the connection is in order), so the drops are counted by then.
    let mut conn = TcpStream::connect(addr_b).await.unwrap();
    let mut out = BytesMut::new();
    let frames = [
        Frame::Hello {
            cluster: CLUSTER.into(),
            node_id: 1,
        },
        Frame::Raft {
            group: GroupKey::Meta,
            msg: vote(3, 2, 1),
        },
        Frame::Raft {
            group: GroupKey::Meta,
            msg: vote(1, 7, 2),
        },
        Frame::Raft {
            group: GroupKey::Meta,
            msg: vote(1, 2, 3),
        },
    ];
    for f in &frames {
        wire::encode(f, &mut out).unwrap();
    }
    conn.write_all(&out).await.unwrap();
    let (_, got) = next(&mut rx_b).await;
    assert_eq!(got, vote(1, 2, 3));
    let s = b.stats();
    assert_eq!(s.dropped_misaddressed, 2, "{s:?}");
    assert_eq!(s.received, 1);
    assert!(rx_b.try_recv().is_err());
}

#[tokio::test]
async fn unknown_receivers_and_oversized_frames_are_dropped_and_counted() {
    let (la, addr_a) = bind().await;
    let (lb, addr_b) = bind().await;
    let (ha, _rx_a) = recorder();
    let a = start(1, CLUSTER, la, &[(2, addr_b)], 64, ha);
    let (hb, mut rx_b) = recorder();
    let _b = start(2, CLUSTER, lb, &[(1, addr_a)], 64, hb);
    a.send_raft(GroupKey::Meta, vote(1, 5, 1));
    assert_eq!(a.stats().dropped_unknown_peer, 1);

    let too_big = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Normal,
                payload: Bytes::from(vec![0u8; 2 << 20]),
            }],
            commit: 0,
        },
    };
    a.send_raft(GroupKey::Meta, too_big);
    let big_request = a
        .request(2, Bytes::from(vec![0u8; 2 << 20]), PATIENCE)
        .await;
    assert!(
        matches!(big_request, Err(PeerError::TooLarge { .. })),
        "{big_request:?}"
    );
    // The connection survives: a normal message still gets through.
    send_until_received(&a, &mut rx_b, GroupKey::Meta, vote(1, 2, 2)).await;
    assert_eq!(a.stats().dropped_oversized, 2);
    assert_eq!(a.stats().connects, 1);
}
