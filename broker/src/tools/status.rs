//! `runnel status`: what a running node holds and does — topics, consumer groups and
//! pipelines — read from its HTTP port (`/api/dashboard`), as text or as one JSON document.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::dashboard::Snapshot;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node's HTTP address (metrics and dashboard), HOST:PORT or http://HOST:PORT
    #[arg(long, env = "RUNNEL_HTTP_ADDR", default_value = "127.0.0.1:9094")]
    pub http_addr: String,
    /// Print the raw snapshot as JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Also measure rates: take a second snapshot after this many seconds
    #[arg(long, value_name = "SECONDS")]
    pub rates: Option<u64>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let base = if args.http_addr.contains("://") {
        args.http_addr.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", args.http_addr)
    };
    let url = format!("{base}/api/dashboard");
    let first = fetch(&url).await?;
    let second = match args.rates {
        Some(s) => {
            tokio::time::sleep(Duration::from_secs(s.max(1))).await;
            Some(fetch(&url).await?)
        }
        None => None,
    };
    if args.json {
        let last = second.as_ref().unwrap_or(&first);
        println!("{}", serde_json::to_string(last)?);
        return Ok(());
    }
    print!("{}", render(&first, second.as_ref()));
    Ok(())
}

async fn fetch(url: &str) -> anyhow::Result<Snapshot> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad address {url}"))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .with_context(|| format!("no answer from {url} within 10 s"))?
        .with_context(|| {
            format!("cannot reach {url}: is `runnel serve` or `runnel process` running there?")
        })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading {url}"))?
        .to_bytes();
    if !status.is_success() {
        anyhow::bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("{url} did not answer a Runnel status"))
}

/// The text report.
pub fn render(s: &Snapshot, later: Option<&Snapshot>) -> String {
    let mut o = String::new();
    if s.node_id < 0 {
        // `runnel process`: no node, no topics or groups of its own; its input lag is not
        // known to it (the cluster has the logs).
        let _ = writeln!(o, "standalone processor (runnel process)");
        render_pipelines(&mut o, s, false);
        return o;
    }
    let _ = writeln!(o, "node {} of cluster {}", s.node_id, s.cluster_id);
    let _ = writeln!(o, "\ntopics ({})", s.topics.len());
    let _ = writeln!(
        o,
        "  {:<40} {:>10} {:>14} {:>12}",
        "name", "partitions", "records", "bytes"
    );
    for t in &s.topics {
        let _ = writeln!(
            o,
            "  {:<40} {:>10} {:>14} {:>12}",
            t.name, t.partitions, t.records, t.size_bytes
        );
    }
    let _ = writeln!(o, "\nconsumer groups ({})", s.groups.len());
    for g in &s.groups {
        let _ = writeln!(o, "  {:<40} {:<20} lag {}", g.group, g.state, g.lag);
    }
    render_pipelines(&mut o, s, true);
    if let Some(l) = later {
        let _ = writeln!(o, "\nrates: {}", crate::demo::status_line(s, l));
    }
    o
}

fn render_pipelines(o: &mut String, s: &Snapshot, with_lag: bool) {
    let _ = writeln!(o, "\npipelines ({})", s.pipelines.len());
    for p in &s.pipelines {
        let st = &p.status;
        let _ = writeln!(
            o,
            "  {} ({}): {} → {}, {}, {}, {}",
            st.name,
            if st.running { "running" } else { "recovering" },
            st.sources.join(","),
            st.outputs.aggregates,
            st.outputs.alerts,
            st.outputs.late,
            st.outputs.dlq
        );
        let lag = if with_lag {
            format!(" · input lag {}", p.input_lag)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "    processed {} · alerts {} · late {} · dlq {} · windows open {}{lag} · checkpoints {}",
            st.stats.records, st.stats.alerts, st.stats.late, st.stats.dlq, st.windows_open, st.checkpoints
        );
        if let (Some(p50), Some(p99)) = (p.alert_latency_p50_ms, p.alert_latency_p99_ms) {
            let _ = writeln!(o, "    alert latency p50 {p50} ms, p99 {p99} ms");
        }
        if let Some(e) = &st.last_error {
            let _ = writeln!(o, "    last error: {e}");
        }
    }
}
