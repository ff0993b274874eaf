//! Counts the outcomes of gRPC publishes without holding one future per record: deliveries
//! go through a bounded channel to a task that awaits them in order (a publisher
//! acknowledges in order, so waiting on the oldest first costs nothing).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use runnel_client::Delivery;
use tokio::sync::mpsc;

use super::kafka_producer::Counters;

/// See the module docs.
pub struct Tracker {
    tx: mpsc::Sender<Delivery>,
    task: tokio::task::JoinHandle<()>,
}

impl Tracker {
    pub fn new(counters: Arc<Counters>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Delivery>(4096);
        let task = tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                match d.await {
                    Ok(_) => {
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => counters.fail(1, || super::client_error(e).to_string()),
                }
            }
        });
        Self { tx, task }
    }

    /// Count this delivery's outcome when it arrives (waits if 4096 are outstanding).
    pub async fn track(&self, d: Delivery) {
        let _ = self.tx.send(d).await;
    }

    /// Wait for every tracked delivery.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}
