//! Generate seeded sensor traffic with `runnel_client::simulate` and publish the well-formed
//! readings with the typed gRPC call (the broker encodes them as the sensor JSON). Garbage
//! records need raw bytes, so this example skips them; `runnel simulate` sends everything.
//!
//! `runnel serve` in one terminal, then:
//! `cargo run -p runnel-client --example simulated_sensors -- 127.0.0.1:9093 sensor_events 1000 42`

use std::time::{SystemTime, UNIX_EPOCH};

use runnel_client::simulate::{Kind, Payload, SimConfig, Simulator, SourceMix};
use runnel_client::{v1, Client};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9093".into());
    let topic = args.next().unwrap_or_else(|| "sensor_events".into());
    let count: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let seed: u64 = args.next().map_or(Ok(42), |n| n.parse())?;
    let now_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let sim = Simulator::new(SimConfig {
        seed,
        start_ms: now_ms,
        mix: SourceMix {
            sensors: 1.0,
            clicks: 0.0,
            posts: 0.0,
        },
        ..SimConfig::default()
    })?;
    let client = Client::connect(&addr).await?;
    match client.create_topic(&topic, 3).await {
        Ok(_) => println!("created {topic} with 3 partitions"),
        Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {}
        Err(e) => return Err(e.into()),
    }
    let (mut batch, mut published, mut skipped, mut spikes) = (Vec::new(), 0usize, 0usize, 0usize);
    for event in sim.take(count) {
        match event.payload {
            Payload::Sensor {
                reading,
                defect: None,
            } => {
                spikes += usize::from(event.kind == Kind::Spike);
                batch.push(reading);
            }
            _ => skipped += 1,
        }
        if batch.len() == 100 {
            published += batch.len();
            let readings = std::mem::take(&mut batch);
            client
                .publish_sensor_readings(&topic, readings, v1::Acks::All)
                .await?;
        }
    }
    if !batch.is_empty() {
        published += batch.len();
        client
            .publish_sensor_readings(&topic, batch, v1::Acks::All)
            .await?;
    }
    println!("published {published} readings ({spikes} spikes) to {topic}; skipped {skipped} garbage records");
    Ok(())
}
