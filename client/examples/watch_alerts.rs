//! Watch the embedded processor's alerts, print each as a JSON line, and resume after any
//! disconnect with no gap or duplicate; with a device id, first print that device's window
//! results of the last hour.
//!
//! `cargo run -p runnel-client --example watch_alerts -- 127.0.0.1:9093 [DEVICE_ID]`
//!
//! The position to resume from is printed to stderr after each alert; a later run could pass
//! it back as `AlertsFrom::Position` to continue exactly where this one stopped.

use std::time::{SystemTime, UNIX_EPOCH};

use runnel_client::{AlertWatcherConfig, AlertsFrom, Client};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9093".into());
    let device = args.next();
    let client = Client::connect(&addr).await?;
    if let Some(device) = device {
        let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
        let windows = client
            .query_windows("", &device, now - 3_600_000, 0, 0)
            .await?;
        for w in windows.windows {
            let line = serde_json::json!({
                "window_start_ms": w.window_start_ms,
                "window_end_ms": w.window_end_ms,
                "revision": w.revision,
                "count": w.count,
                "values": w.values,
            });
            println!("{line}");
        }
    }
    let mut watcher = client.alert_watcher(AlertWatcherConfig::new(AlertsFrom::Now));
    loop {
        let a = watcher.next().await?;
        let line = serde_json::json!({
            "id": a.id,
            "rule": a.rule,
            "key": a.key,
            "value": a.value,
            "event_time_ms": a.event_time_ms,
            "detail": a.detail,
        });
        println!("{line}");
        if let Some(p) = watcher.position() {
            eprintln!("resume position: {:?}", p.next_offsets);
        }
    }
}
