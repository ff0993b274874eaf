//! Small in-process rdkafka helpers the test files share: a runtime for rdkafka's futures, a
//! client config, and CreateTopics.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// Deadline for one admin operation.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// A current-thread runtime to drive rdkafka's futures from a synchronous test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A client config with `bootstrap.servers` and `client.id` set.
pub fn config(bootstrap: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", client_id);
    c
}

/// Creates `topic` with `partitions` partitions through rdkafka's admin API; panics on error.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap, "runnel-tests-admin")
        .create()
        .expect("admin client");
    let opts = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
    let results = runtime()
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &opts,
        ))
        .expect("CreateTopics request");
    for r in results {
        if let Err((name, code)) = r {
            panic!("CreateTopics {name}: {code:?}");
        }
    }
}
