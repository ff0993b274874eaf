//! Publish simulated sensor readings over gRPC with the typed helpers.
//!
//! `runnel serve` in one terminal, then:
//! `cargo run -p runnel-client --example publish_sensors -- 127.0.0.1:9093 sensor_events 1000`
//! and read them back with any Kafka client, e.g. `kcat -b 127.0.0.1:9092 -C -t sensor_events`.

use std::time::SystemTime;

use runnel_client::{sensor, v1, Client};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9093".into());
    let topic = args.next().unwrap_or_else(|| "sensor_events".into());
    let count: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let client = Client::connect(&addr).await?;
    match client.create_topic(&topic, 3).await {
        Ok(_) => println!("created {topic} with 3 partitions"),
        Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {}
        Err(e) => return Err(e.into()),
    }
    let mut sent = 0usize;
    while sent < count {
        let n = (count - sent).min(100);
        let readings = (sent..sent + n)
            .map(|i| {
                let device = format!("MTR-{:05}", i % 50);
                let wobble = f64::from(u32::try_from(i % 20).unwrap_or(0));
                sensor::reading(
                    &device,
                    SystemTime::now(),
                    70.0 + wobble * 0.5,
                    0.1,
                    "OK",
                    "fab1",
                    "L01",
                )
            })
            .collect();
        client
            .publish_sensor_readings(&topic, readings, v1::Acks::All)
            .await?;
        sent += n;
    }
    println!("published {sent} readings to {topic}");
    Ok(())
}
