//! Runs a broker: opens storage, binds the listener, runs background maintenance, and shuts
//! down gracefully when asked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::config::Config;

/// A started broker: where it listens, and how to stop it.
pub struct Running {
    pub kafka_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Prometheus metrics at `/metrics`.
    pub http_addr: SocketAddr,
    pub broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Ask every task to stop, wait for them, and close the partition logs: when this
    /// returns, the data directory may be opened again.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let broker = self.broker;
        if let Some(cluster) = broker.cluster() {
            cluster.stop().await;
        }
        // Closing fsyncs every active segment: off the async threads.
        if let Err(e) = tokio::task::spawn_blocking(move || broker.close()).await {
            tracing::error!(error = %e, "closing the partition logs failed");
        }
    }
}

/// Open storage and bind; returns once the broker accepts connections.
pub async fn start(mut config: Config) -> anyhow::Result<Running> {
    config.validate()?;
    let addr = config.kafka_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let kafka_addr = listener.local_addr()?;
    let grpc_listener = bind_beside(
        config.grpc_addr,
        config.grpc_addr(),
        kafka_addr,
        "gRPC",
        "--grpc-addr",
    )
    .await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_listener = bind_beside(
        config.http_addr,
        config.http_addr(),
        kafka_addr,
        "HTTP",
        "--http-addr",
    )
    .await?;
    let http_addr = http_listener.local_addr()?;
    // Clients are told the port actually bound (it differs when port 0 was asked for).
    if config.advertised_port.is_none() && addr.port() == 0 {
        config.advertised_port = Some(kafka_addr.port());
    }
    let raft_listener = match config.cluster.node(config.node_id) {
        Some(me) if config.cluster.enabled() => Some(
            TcpListener::bind(me.raft)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for peers on {}: {e}", me.raft))?,
        ),
        _ => None,
    };
    let cluster_config = config.clone();
    let broker = Arc::new(tokio::task::block_in_place(|| Broker::open(config))?);
    if let Some(listener) = raft_listener {
        let cluster = crate::cluster::Cluster::start(
            &cluster_config,
            broker.topics.clone(),
            broker.groups.clone(),
            listener,
            broker.metrics.clone(),
        )
        .await?;
        let _ = broker.cluster.set(cluster);
    }
    let (shutdown, rx) = watch::channel(false);
    // In cluster mode each pipeline runs on the leader of its replicated journal.
    let pipelines = match broker.cluster() {
        Some(cluster) => crate::cluster_processing::spawn(&broker, cluster, &rx),
        None => crate::processing::spawn(&broker, &rx),
    };
    let mut tasks = vec![
        tokio::spawn(crate::net::serve_kafka(
            listener,
            broker.clone(),
            rx.clone(),
        )),
        tokio::spawn(retention_loop(broker.clone(), rx.clone())),
        tokio::spawn(crate::group::driver::tick_loop(
            broker.clone(),
            |b: &Broker| &*b.groups,
            rx.clone(),
        )),
        tokio::spawn(crate::net::serve_http(
            http_listener,
            broker.clone(),
            rx.clone(),
        )),
        tokio::spawn(serve_grpc(grpc_listener, broker.clone(), rx)),
    ];
    tasks.extend(pipelines);
    tracing::info!(%kafka_addr, %grpc_addr, %http_addr, cluster_id = %broker.cluster_id, "runnel broker listening (Kafka protocol, gRPC, HTTP metrics)");
    Ok(Running {
        kafka_addr,
        grpc_addr,
        http_addr,
        broker,
        shutdown,
        tasks,
    })
}

/// Resolves on Ctrl-C or SIGTERM: how `serve`, `demo` and `process` are stopped cleanly.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serve until `stop` resolves (e.g. Ctrl-C).
pub async fn run(
    config: Config,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(config).await?;
    stop.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// Bind a listener that sits beside the Kafka one (gRPC, HTTP). An `explicit` address must be
/// free. The `default` (a neighbour of the Kafka port) falls back to any free port with a
/// warning, so picking a free Kafka port (as test harnesses do) never fails because its
/// neighbour happens to be taken.
async fn bind_beside(
    explicit: Option<SocketAddr>,
    default: Option<SocketAddr>,
    kafka_addr: SocketAddr,
    what: &str,
    flag: &str,
) -> anyhow::Result<TcpListener> {
    if let Some(a) = explicit {
        return TcpListener::bind(a)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {a} for {what} ({flag}): {e}"));
    }
    if let Some(a) = default {
        match TcpListener::bind(a).await {
            Ok(l) => return Ok(l),
            Err(e) => tracing::warn!(
                "cannot listen on {a} for {what} ({e}); using a free port instead (set {flag} to choose)"
            ),
        }
    }
    let any = SocketAddr::new(kafka_addr.ip(), 0);
    TcpListener::bind(any)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {any} ({what}): {e}"))
}

async fn serve_grpc(listener: TcpListener, broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    if let Err(e) = crate::grpc::serve(listener, broker, shutdown).await {
        tracing::error!("grpc server stopped: {e}");
    }
}

async fn retention_loop(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.config.retention_check_interval_ms.max(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = crate::net::stopped(&mut shutdown) => return,
        }
        let now = crate::processing::unix_now_ms();
        for topic in broker.topics.list() {
            for p in &topic.partitions {
                let floor = broker.retention_holds.floor(&topic.name, p.index);
                if p.is_replicated() {
                    // Through the partition's Raft group, if this node holds a replica.
                    let replica = broker
                        .cluster
                        .get()
                        .and_then(|c| c.replica(&topic.name, p.index));
                    if let Some(replica) = replica {
                        if let Err(e) = replica.enforce_retention(now, floor).await {
                            tracing::error!(topic = %topic.name, partition = p.index, "retention failed: {e}");
                        }
                    }
                    continue;
                }
                if let Err(e) = p.enforce_retention(now, floor) {
                    tracing::error!(topic = %topic.name, partition = p.index, "retention failed: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::batch;
    use crate::codec::builder::{encode_batch, ProducerInfo, Record};
    use crate::kafka_client::connection::Connection;
    use crate::kafka_client::fetch;
    use crate::log::LogError;

    fn config(dir: &std::path::Path) -> Config {
        let any = "127.0.0.1:0".parse().ok();
        Config {
            data_dir: dir.to_owned(),
            kafka_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: any,
            http_addr: any,
            ..Config::default()
        }
    }

    fn append_one(p: &crate::partition::Partition, value: &[u8]) {
        let b = encode_batch(
            &[Record {
                value: Some(value.to_vec()),
                ..Record::default()
            }],
            ProducerInfo::default(),
        );
        let header = batch::validate(&b).unwrap();
        p.append(b, &header).unwrap();
    }

    /// A partition still held after the shutdown (by a connection, a flusher) used to keep
    /// its log open until that last handle dropped: the segment kept its preallocated tail
    /// and no clean-close marker, and the late drop trimmed the file under the next broker
    /// opened on the directory (CI: "reading …log at 388374: failed to fill whole buffer").
    /// Now the shutdown closes the logs itself, and ends (at worst aborts) the connections,
    /// so none is left handling a request either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_ends_connections_and_closes_logs_a_partition_holder_kept_open() {
        let dir = tempfile::tempdir().unwrap();
        let running = start(config(dir.path())).await.unwrap();
        let topic = running.broker.topics.create("t", 1, &[], false).unwrap();
        let held = Arc::clone(&topic.partitions[0]);
        append_one(&held, b"first");
        let segment = dir.path().join("topics/t/0/00000000000000000000.log");
        let preallocated = std::fs::metadata(&segment).unwrap().len();
        // An open Kafka connection (its task holds the broker), and one mid-request: a
        // Fetch long-poll past the log end, whose reply would wait 30 s for data.
        let idle = tokio::net::TcpStream::connect(running.kafka_addr)
            .await
            .unwrap();
        let addr = running.kafka_addr.to_string();
        let mut polling = Connection::open(&addr, "test", Duration::from_secs(5))
            .await
            .unwrap();
        let poll = fetch::request(&[("t", 0, 1)], 30_000, 1, 1 << 20);
        polling.send(&poll, 12).await.unwrap();
        let broker = Arc::clone(&running.broker);
        // The poll is parked once the broker reads it; give it the moment that takes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        running.shutdown().await;
        // Aborting the connection aborts its writer, which is parked in the poll, so the last
        // handles go shortly after (not 30 s later).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&broker) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "a connection still holds the broker after the shutdown"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop((idle, polling, broker));

        let len = std::fs::metadata(&segment).unwrap().len();
        assert!(
            len < preallocated,
            "the segment keeps its preallocated tail ({len} bytes)"
        );
        let marker = std::fs::read_to_string(dir.path().join("topics/t/0/clean-close")).unwrap();
        assert_eq!(marker, format!("0 {len}\n"));
        assert!(matches!(held.read(0, 1 << 20), Err(LogError::Closed)));
        let more = encode_batch(&[Record::default()], ProducerInfo::default());
        let header = batch::validate(&more).unwrap();
        assert!(
            held.append(more, &header).is_err(),
            "a closed log took a batch"
        );

        let again = start(config(dir.path())).await.unwrap();
        let p = Arc::clone(&again.broker.topics.get("t").unwrap().partitions[0]);
        append_one(&p, b"second");
        drop((held, topic));
        let read = p.read(0, 1 << 20).unwrap();
        let bases: Vec<i64> = batch::headers(&read)
            .map(|h| h.unwrap().base_offset)
            .collect();
        assert_eq!(bases, [0, 1]);
        let holds = |v: &[u8]| read.windows(v.len()).any(|w| w == v);
        assert!(holds(b"first") && holds(b"second"));
        again.shutdown().await;
        assert!(
            dir.path().join("topics/t/0/clean-close").exists(),
            "the second close was clean too"
        );
    }
}
