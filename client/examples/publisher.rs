//! Publish many records through the batching, back-pressured `Publisher`.
//!
//! `cargo run -p runnel-client --example publisher -- 127.0.0.1:9093 events 100000`

use std::time::Instant;

use runnel_client::{record, Client, PublisherConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9093".into());
    let topic = args.next().unwrap_or_else(|| "events".into());
    let count: u64 = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let client = Client::connect(&addr).await?;
    if let Err(e) = client.create_topic(&topic, 3).await {
        if e.code() != Some(tonic::Code::AlreadyExists) {
            return Err(e.into());
        }
    }
    let publisher = client.publisher(PublisherConfig::new(&topic));
    let started = Instant::now();
    let mut last = None;
    for i in 0..count {
        let key = format!("user-{}", i % 1000);
        last = Some(
            publisher
                .send(record(Some(key.as_bytes()), b"{\"event\":\"click\"}"))
                .await?,
        );
    }
    publisher.flush().await?;
    if let Some(d) = last {
        let pos = d.await?;
        println!(
            "last record at partition {} offset {}",
            pos.partition, pos.offset
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{count} records in {secs:.2}s ({:.0}/s)",
        f64::from(u32::try_from(count).unwrap_or(u32::MAX)) / secs
    );
    publisher.close().await?;
    Ok(())
}
