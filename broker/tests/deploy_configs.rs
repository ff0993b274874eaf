//! The 3-node cluster in `deploy/` (compose file, node configs, Prometheus scrape config)
//! cannot be run here (no container engine), so this checks what can be checked without one:
//! every node config parses and validates with the real loader, the three agree on the
//! cluster, and the compose file and scrape config point at the addresses those configs use.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use runnel_broker::config::Config;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy().join(name)).unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// The port of a `host:port` / `ip:port` string.
fn port(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

#[test]
fn compose_cluster_configs_agree_with_each_other_and_with_compose() {
    let compose = read("compose.yml");
    let prometheus = read("prometheus/prometheus.yml");
    let configs: Vec<Config> = (1..=3)
        .map(|n| {
            let path = deploy().join(format!("runnel-{n}.toml"));
            let c = Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            c.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            c
        })
        .collect();

    let ids: BTreeSet<i32> = configs.iter().map(|c| c.node_id).collect();
    assert_eq!(ids.len(), 3, "three distinct node ids");
    let first = &configs[0].cluster;
    assert_eq!(first.nodes.len(), 3);
    for c in &configs {
        assert!(c.cluster.enabled());
        assert_eq!(c.cluster.name, first.name, "one cluster name");
        let same: Vec<_> = c
            .cluster
            .nodes
            .iter()
            .map(|n| (n.id, n.kafka.clone(), n.raft, n.grpc.clone()))
            .collect();
        let want: Vec<_> = first
            .nodes
            .iter()
            .map(|n| (n.id, n.kafka.clone(), n.raft, n.grpc.clone()))
            .collect();
        assert_eq!(same, want, "every node lists the same [cluster] nodes");
    }

    for (i, c) in configs.iter().enumerate() {
        let service = format!("runnel-{}", i + 1);
        let me = c.cluster.node(c.node_id).expect("validated: node listed");
        // The service block in compose.yml: from its name to the next service.
        let block = compose
            .split_once(&format!("\n  {service}:\n"))
            .map(|(_, rest)| rest.split("\n  runnel-").next().unwrap_or(rest))
            .unwrap_or_else(|| panic!("compose.yml has no service {service}"));
        // Metadata advertises `kafka`: compose must publish that host port to the Kafka port.
        let kafka_in = port(&c.kafka_addr.to_string());
        let published = format!("\"{}:{kafka_in}\"", port(&me.kafka));
        assert!(
            block.contains(&published),
            "{service}: compose must publish {published} (advertised {})",
            me.kafka
        );
        // The leader hint names `grpc`: compose must publish that host port to the gRPC port.
        let grpc = me
            .grpc
            .as_deref()
            .expect("deploy configs name their gRPC address");
        let grpc_in = c.grpc_addr().expect("gRPC listener configured").port();
        let published = format!("\"{}:{grpc_in}\"", port(grpc));
        assert!(
            block.contains(&published),
            "{service}: compose must publish {published} (gRPC hint {grpc})"
        );
        // The node binds its raft address: compose must give the container that IP.
        let ip = me.raft.ip().to_string();
        assert!(
            block.contains(&format!("ipv4_address: {ip}")),
            "{service}: compose must give it {ip}"
        );
        // Prometheus scrapes the node's HTTP port by service name.
        let http = c.http_addr().expect("metrics endpoint configured");
        let target = format!("\"{service}:{}\"", http.port());
        assert!(
            prometheus.contains(&target),
            "prometheus.yml must scrape {target}"
        );
    }
}
