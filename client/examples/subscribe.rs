//! Follow one partition and print each record as a JSON line; survives broker restarts.
//!
//! `cargo run -p runnel-client --example subscribe -- 127.0.0.1:9093 sensor_events 0`

use runnel_client::{Client, StartAt, SubscriberConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9093".into());
    let topic = args.next().unwrap_or_else(|| "sensor_events".into());
    let partition: i32 = args.next().map_or(Ok(0), |p| p.parse())?;
    let client = Client::connect(&addr).await?;
    let mut sub = client.subscriber(SubscriberConfig::new(topic, partition, StartAt::Earliest));
    loop {
        let r = sub.next().await?;
        let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
        let line = serde_json::json!({
            "partition": r.partition,
            "offset": r.offset,
            "timestamp_ms": r.timestamp_ms,
            "key": text(r.key),
            "value": text(r.value),
        });
        println!("{line}");
    }
}
