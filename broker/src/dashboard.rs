//! The live dashboard's data: one JSON snapshot of the node (topics, groups, pipelines, the
//! latest alerts and per-device window results) that the page at `/` polls, and that
//! `runnel status` prints. Rates are left to the reader: it diffs two snapshots.
//!
//! Everything is read from the broker as it is now; the alert and window lists come from the
//! tails of the pipelines' output topics, so they show exactly what consumers would read.

use std::collections::BTreeMap;

use runnel_processor::driver::Clock;
use serde::{Deserialize, Serialize};

use crate::broker::Broker;
use crate::partition::Partition;
use crate::processing::{read_range, StoredRecord, WallClock};
use crate::processor_status::{PipelineStatus, PipelineStatuses};

/// Alerts shown, newest first.
const ALERTS_SHOWN: usize = 25;
/// Window results scanned from the end of the aggregates topic for the device table.
const WINDOW_RECORDS_SCANNED: usize = 2_000;
/// Devices shown in the window table.
const DEVICES_SHOWN: usize = 200;

/// The whole snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub now_ms: i64,
    pub cluster_id: String,
    pub node_id: i32,
    pub topics: Vec<TopicSummary>,
    pub groups: Vec<GroupSummary>,
    pub pipelines: Vec<PipelineSummary>,
}

/// One topic, summed over its partitions.
#[derive(Debug, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: usize,
    /// Sum of the partitions' high watermarks (records ever made visible).
    pub high_watermark: i64,
    /// Sum of (high watermark − log start): records readable now.
    pub records: i64,
    pub size_bytes: u64,
}

/// One consumer group's total lag.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group: String,
    pub state: String,
    /// Sum over committed partitions of (high watermark − committed offset).
    pub lag: i64,
}

/// One pipeline: its status, input lag, latest alerts and window results.
#[derive(Debug, Serialize, Deserialize)]
pub struct PipelineSummary {
    #[serde(flatten)]
    pub status: PipelineStatusView,
    /// Source records not yet processed (sum of high watermark − next offset).
    pub input_lag: i64,
    /// Sum of the source topics' high watermarks (diff two snapshots for events/s).
    pub source_high_watermark: i64,
    /// Readings into the late-data and dead-letter topics so far (their high watermarks).
    pub late_records: i64,
    pub dlq_records: i64,
    /// Recent alert latency (reading timestamp → alert durable), ms.
    pub alert_latency_p50_ms: Option<u64>,
    pub alert_latency_p99_ms: Option<u64>,
    /// Newest first.
    pub alerts: Vec<Shown>,
    /// The latest window result of each device, by device id.
    pub windows: Vec<Shown>,
}

/// The status fields, as served.
pub type PipelineStatusView = PipelineStatus;

/// An output record as shown: where it is and its JSON value.
#[derive(Debug, Serialize, Deserialize)]
pub struct Shown {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: serde_json::Value,
}

/// Reads the snapshot now.
pub fn snapshot(broker: &Broker) -> Snapshot {
    let mut topics = Vec::new();
    for t in broker.topics.list() {
        let mut s = TopicSummary {
            name: t.name.clone(),
            partitions: t.partitions.len(),
            high_watermark: 0,
            records: 0,
            size_bytes: 0,
        };
        for p in &t.partitions {
            let o = p.offsets();
            s.high_watermark = s.high_watermark.saturating_add(o.high_watermark);
            s.records = s
                .records
                .saturating_add(o.high_watermark.saturating_sub(o.log_start));
            s.size_bytes = s.size_bytes.saturating_add(p.disk_usage().1);
        }
        topics.push(s);
    }
    let hw = |topic: &str| -> i64 {
        topics
            .iter()
            .find(|t| t.name == topic)
            .map_or(0, |t| t.high_watermark)
    };
    let partition_hw = |topic: &str, partition: u32| -> i64 {
        partition_of(broker, topic, partition).map_or(0, |p| p.offsets().high_watermark)
    };
    let groups = broker
        .groups
        .list(&[])
        .into_iter()
        .map(|g| {
            let lag = broker
                .groups
                .fetch_offsets(&g.group_id, None)
                .offsets
                .into_iter()
                .filter_map(|(tp, c)| {
                    let c = c?;
                    let p = u32::try_from(tp.partition).ok()?;
                    Some(partition_hw(&tp.topic, p).saturating_sub(c.offset).max(0))
                })
                .fold(0_i64, i64::saturating_add);
            GroupSummary {
                group: g.group_id,
                state: g.state.name().to_owned(),
                lag,
            }
        })
        .collect();
    let pipelines = broker
        .pipelines
        .snapshot()
        .into_iter()
        .map(|status| {
            let input_lag = status
                .positions
                .iter()
                .map(|(t, p, next)| partition_hw(t, *p).saturating_sub(*next).max(0))
                .fold(0_i64, i64::saturating_add);
            let source_high_watermark = status
                .sources
                .iter()
                .map(|t| hw(t))
                .fold(0, i64::saturating_add);
            let latency = broker.pipelines.latency_percentiles(&status.name);
            PipelineSummary {
                input_lag,
                source_high_watermark,
                late_records: hw(&status.outputs.late),
                dlq_records: hw(&status.outputs.dlq),
                alert_latency_p50_ms: latency.map(|l| l.0),
                alert_latency_p99_ms: latency.map(|l| l.1),
                alerts: latest_alerts(broker, &status.outputs.alerts),
                windows: latest_windows(broker, &status.outputs.aggregates),
                status,
            }
        })
        .collect();
    Snapshot {
        now_ms: WallClock.now_ms(),
        cluster_id: broker.cluster_id.clone(),
        node_id: broker.node_id(),
        topics,
        groups,
        pipelines,
    }
}

/// The snapshot of a standalone processor (`runnel process`): its pipelines only. The logs
/// are on the cluster, so the topic-derived fields are what the pipeline itself knows:
/// `input_lag` and `source_high_watermark` are 0, late and dead-lettered records are its
/// checkpointed counts, and no alerts or windows are listed (read them from the cluster).
pub fn processor_snapshot(statuses: &PipelineStatuses) -> Snapshot {
    let pipelines = statuses
        .snapshot()
        .into_iter()
        .map(|status| {
            let latency = statuses.latency_percentiles(&status.name);
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            PipelineSummary {
                input_lag: 0,
                source_high_watermark: 0,
                late_records: count(status.stats.late),
                dlq_records: count(status.stats.dlq),
                alert_latency_p50_ms: latency.map(|l| l.0),
                alert_latency_p99_ms: latency.map(|l| l.1),
                alerts: Vec::new(),
                windows: Vec::new(),
                status,
            }
        })
        .collect();
    Snapshot {
        now_ms: WallClock.now_ms(),
        cluster_id: String::new(),
        node_id: -1,
        topics: Vec::new(),
        groups: Vec::new(),
        pipelines,
    }
}

fn partition_of(broker: &Broker, topic: &str, partition: u32) -> Option<std::sync::Arc<Partition>> {
    let t = broker.topics.get(topic)?;
    t.partitions.get(usize::try_from(partition).ok()?).cloned()
}

/// The last `n` records of every partition of `topic`, with their partition.
fn tails(broker: &Broker, topic: &str, n: usize) -> Vec<(i32, StoredRecord)> {
    let Some(t) = broker.topics.get(topic) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in &t.partitions {
        let o = p.offsets();
        let from = o
            .high_watermark
            .saturating_sub(i64::try_from(n).unwrap_or(i64::MAX))
            .max(o.log_start);
        // A read error only leaves this partition out of the page.
        if let Ok(recs) = read_range(p, from, n) {
            out.extend(recs.into_iter().map(|r| (p.index, r)));
        }
    }
    out
}

fn shown(partition: i32, r: StoredRecord) -> Option<Shown> {
    let value = serde_json::from_slice(r.value.as_deref()?).ok()?;
    Some(Shown {
        partition,
        offset: r.offset,
        key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
        value,
    })
}

fn latest_alerts(broker: &Broker, topic: &str) -> Vec<Shown> {
    let mut recs = tails(broker, topic, ALERTS_SHOWN);
    recs.sort_by_key(|(_, r)| std::cmp::Reverse(r.timestamp));
    recs.into_iter()
        .filter_map(|(p, r)| shown(p, r))
        .take(ALERTS_SHOWN)
        .collect()
}

fn latest_windows(broker: &Broker, topic: &str) -> Vec<Shown> {
    let mut latest: BTreeMap<String, Shown> = BTreeMap::new();
    for (p, r) in tails(broker, topic, WINDOW_RECORDS_SCANNED) {
        let Some(s) = shown(p, r) else { continue };
        let Some(device) = s.key.clone() else {
            continue;
        };
        let newer = latest
            .get(&device)
            .is_none_or(|old| window_order(&s) >= window_order(old));
        if newer {
            latest.insert(device, s);
        }
    }
    latest.into_values().take(DEVICES_SHOWN).collect()
}

/// (window start, revision) of a window result, for keeping each device's latest.
fn window_order(s: &Shown) -> (i64, i64) {
    let field = |k: &str| {
        s.value
            .get(k)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0)
    };
    (field("window_start_ms"), field("revision"))
}
