//! In-process tests of the Kafka API: a real broker on 127.0.0.1:0 in a temp dir, spoken to
//! with requests encoded by the kafka-protocol crate.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use runnel_broker::codec::builder::{encode_batch, ProducerInfo, Record};
use tokio::io::AsyncWriteExt;

mod common;
use common::*;
use kafka_protocol::protocol::StrBytes;

fn records(n: usize, ts: i64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(format!("value-{ts}-{i}").into_bytes()),
            headers: vec![("h".into(), Some(b"v".to_vec()))],
            timestamp: ts + i64::try_from(i).unwrap(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_fetch_list_offsets_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    assert_eq!(create(&mut c, "t1", 3).await, 0);
    assert_eq!(create(&mut c, "t1", 3).await, 36, "TOPIC_ALREADY_EXISTS");

    let first = records(3, 1_000);
    let second = records(2, 5_000);
    let (err, base) = produce(
        &mut c,
        "t1",
        1,
        encode_batch(&first, ProducerInfo::default()).freeze(),
        -1,
    )
    .await;
    assert_eq!((err, base), (0, 0));
    let (err, base) = produce(
        &mut c,
        "t1",
        1,
        encode_batch(&second, ProducerInfo::default()).freeze(),
        1,
    )
    .await;
    assert_eq!((err, base), (0, 3));

    let (err, hw, data) = fetch(&mut c, "t1", 1, 0, 100).await;
    assert_eq!((err, hw), (0, 5));
    let got = decode_all(data);
    let want: Vec<(i64, Record)> = (0..)
        .zip(first.iter().chain(second.iter()).cloned())
        .collect();
    assert_eq!(got, want);

    assert_eq!(list_offset(&mut c, "t1", 1, -2).await, (0, 0));
    assert_eq!(list_offset(&mut c, "t1", 1, -1).await, (0, 5));
    assert_eq!(
        list_offset(&mut c, "t1", 1, 1_001).await,
        (0, 1),
        "first record at or after the time"
    );
    assert_eq!(list_offset(&mut c, "t1", 1, 5_000).await, (0, 3));
    assert_eq!(
        list_offset(&mut c, "t1", 1, 9_000).await,
        (0, -1),
        "nothing that late"
    );
    assert_eq!(
        list_offset(&mut c, "t1", 1, -3).await,
        (0, 4),
        "max timestamp record"
    );
    assert_eq!(
        fetch(&mut c, "t1", 1, 6, 0).await.0,
        1,
        "OFFSET_OUT_OF_RANGE above the end"
    );
    assert_eq!(
        fetch(&mut c, "t1", 7, 0, 0).await.0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );

    drop(c);
    b.shutdown().await;
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    let (err, hw, data) = fetch(&mut c, "t1", 1, 3, 100).await;
    assert_eq!((err, hw), (0, 5));
    assert_eq!(
        decode_all(data),
        want[3..].to_vec(),
        "data survives a restart at the same offsets"
    );
    let (err, base) = produce(
        &mut c,
        "t1",
        1,
        encode_batch(&first, ProducerInfo::default()).freeze(),
        -1,
    )
    .await;
    assert_eq!((err, base), (0, 5));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_batches_are_refused_and_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    assert_eq!(create(&mut c, "t2", 1).await, 0);
    let good = encode_batch(&records(2, 1), ProducerInfo::default());

    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert_eq!(
        produce(&mut c, "t2", 0, bad_crc.freeze(), -1).await.0,
        2,
        "CORRUPT_MESSAGE"
    );

    let mut lying = good.clone();
    lying[8..12].copy_from_slice(&(i32::try_from(good.len()).unwrap() + 100).to_be_bytes());
    assert_eq!(
        produce(&mut c, "t2", 0, lying.freeze(), -1).await.0,
        2,
        "batch length beyond the data"
    );

    let mut old_magic = good.clone();
    old_magic[16] = 1;
    assert_eq!(
        produce(&mut c, "t2", 0, old_magic.freeze(), -1).await.0,
        43,
        "UNSUPPORTED_FOR_MESSAGE_FORMAT"
    );

    assert_eq!(
        produce(&mut c, "t2", 0, Bytes::from_static(b"garbage"), -1)
            .await
            .0,
        2
    );
    assert_eq!(
        list_offset(&mut c, "t2", 0, -1).await,
        (0, 0),
        "nothing appended"
    );
    assert_eq!(produce(&mut c, "t2", 0, good.freeze(), -1).await, (0, 0));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_and_bad_frames() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    let v = c.call(&ApiVersionsRequest::default(), 3).await;
    assert_eq!(v.error_code, 0);
    let produce = v.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!((produce.min_version, produce.max_version), (0, 9));
    assert!(
        v.api_keys
            .iter()
            .all(|k| k.api_key != 71 && k.api_key != 72),
        "no telemetry APIs"
    );

    // ApiVersions v4 (unsupported): error 35 in the v0 layout, response header v0.
    let mut raw = BytesMut::new();
    raw.put_i16(18);
    raw.put_i16(4);
    raw.put_i32(77);
    raw.put_i16(-1);
    raw.put_u8(0);
    c.send_raw(&raw).await;
    let mut resp = c.read_frame().await.unwrap();
    assert_eq!(resp.get_i32(), 77);
    assert_eq!(resp.get_i16(), 35);
    assert!(resp.get_i32() > 0);

    // Garbage, a negative length, and an unknown API each close only their own connection.
    for junk in [
        &b"\xff\xff\xff\xfb"[..],
        &b"\x00\x00\x00\x08\x7f\x7f\x00\x00\x00\x00\x00\x01"[..],
        &b"\x7f\xff\xff\xff"[..],
    ] {
        let mut bad = Client::connect(&b).await;
        bad.stream.write_all(junk).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), bad.read_frame())
            .await
            .expect("closed promptly");
        assert!(closed.is_none(), "connection closed after {junk:?}");
    }
    // A request claiming 2^31 array elements must not take the broker down.
    let mut huge = BytesMut::new();
    huge.put_i16(3);
    huge.put_i16(4);
    huge.put_i32(1);
    huge.put_i16(-1);
    huge.put_i32(i32::MAX);
    let mut bad = Client::connect(&b).await;
    bad.send_raw(&huge).await;
    assert!(bad.read_frame().await.is_none());

    let v = c
        .call(
            &MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic("auto")))
                ]))
                .with_allow_auto_topic_creation(true),
            12,
        )
        .await;
    assert_eq!(v.topics[0].error_code, 0, "auto-created");
    assert_eq!(v.controller_id, BrokerId(1));
    assert!(v.cluster_id.is_some());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_long_poll_answers_when_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    assert_eq!(create(&mut c, "t3", 1).await, 0);
    let mut producer = Client::connect(&b).await;
    let waiter = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r = fetch(&mut c, "t3", 0, 0, 20_000).await;
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    produce(
        &mut producer,
        "t3",
        0,
        encode_batch(&records(1, 1), ProducerInfo::default()).freeze(),
        1,
    )
    .await;
    let ((err, hw, data), waited) = waiter.await.unwrap();
    assert_eq!((err, hw), (0, 1));
    assert_eq!(decode_all(data).len(), 1);
    assert!(
        waited < Duration::from_secs(10),
        "answered when data arrived, not at max_wait ({waited:?})"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_are_deduplicated_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    let init = c
        .call(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
            4,
        )
        .await;
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert!(pid >= 0);
    let txn = c
        .call(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))))
                .with_transaction_timeout_ms(60_000),
            4,
        )
        .await;
    assert_eq!(
        txn.error_code, 53,
        "transactions get a clear, immediate error"
    );

    let batch = |seq: i32, n: usize| {
        encode_batch(
            &records(n, 1),
            ProducerInfo {
                producer_id: pid,
                producer_epoch: init.producer_epoch,
                base_sequence: seq,
            },
        )
        .freeze()
    };
    assert_eq!(produce(&mut c, "idem", 0, batch(0, 3), -1).await, (0, 0));
    assert_eq!(
        produce(&mut c, "idem", 0, batch(0, 3), -1).await,
        (0, 0),
        "retry answered with the original offset"
    );
    assert_eq!(
        produce(&mut c, "idem", 0, batch(7, 1), -1).await.0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    assert_eq!(
        list_offset(&mut c, "idem", 0, -1).await,
        (0, 3),
        "nothing appended twice"
    );

    drop(c);
    b.shutdown().await;
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    assert_eq!(
        produce(&mut c, "idem", 0, batch(0, 3), -1).await,
        (0, 0),
        "recognised after a restart"
    );
    assert_eq!(produce(&mut c, "idem", 0, batch(3, 2), -1).await, (0, 3));
    assert_eq!(list_offset(&mut c, "idem", 0, -1).await, (0, 5));
    let next = c
        .call(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
            4,
        )
        .await;
    assert_ne!(
        next.producer_id.0, pid,
        "producer ids are never reused across restarts"
    );
    let bump = |id: i64| {
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0)
    };
    let bumped = c.call(&bump(next.producer_id.0), 4).await;
    assert_eq!(
        (
            bumped.error_code,
            bumped.producer_id.0,
            bumped.producer_epoch
        ),
        (0, next.producer_id.0, 1),
        "KIP-360: a producer's own id gets its epoch bumped"
    );
    let reserved = runnel_broker::producer_ids::pipeline_producer_id("sensors");
    let refused = c.call(&bump(reserved), 4).await;
    assert_eq!(refused.error_code, 0);
    assert!(
        (0..runnel_broker::producer_ids::RESERVED_START).contains(&refused.producer_id.0)
            && refused.producer_epoch == 0,
        "a pipeline's reserved id is never bumped for a client: a fresh id instead, got {:?}",
        (refused.producer_id.0, refused.producer_epoch)
    );
    b.shutdown().await;
}

/// One topic of a CreatePartitions request: name, new total, replica assignments.
type Grow<'a> = (&'a str, i32, Option<Vec<Vec<i32>>>);

/// CreatePartitions (key 37) outcomes for one topic: (error code, message).
async fn create_partitions(
    c: &mut Client,
    topics: &[Grow<'_>],
    validate_only: bool,
) -> Vec<(i16, Option<String>)> {
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    let req = CreatePartitionsRequest::default()
        .with_validate_only(validate_only)
        .with_timeout_ms(5_000)
        .with_topics(
            topics
                .iter()
                .map(|(name, count, assignments)| {
                    CreatePartitionsTopic::default()
                        .with_name(topic(name))
                        .with_count(*count)
                        .with_assignments(assignments.as_ref().map(|a| {
                            a.iter()
                                .map(|ids| {
                                    CreatePartitionsAssignment::default()
                                        .with_broker_ids(ids.iter().map(|i| BrokerId(*i)).collect())
                                })
                                .collect()
                        }))
                })
                .collect(),
        );
    let resp = c.call(&req, 3).await;
    assert_eq!(resp.results.len(), topics.len());
    resp.results
        .into_iter()
        .map(|r| (r.error_code, r.error_message.map(|m| m.to_string())))
        .collect()
}

async fn partition_count(c: &mut Client, name: &str) -> usize {
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic(name)))
    ]));
    let resp = c.call(&req, 12).await;
    resp.topics[0].partitions.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_partitions_grows_topics_durably_and_refuses_what_kafka_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    assert_eq!(create(&mut c, "grow", 2).await, 0);
    let batch = encode_batch(&records(3, 1_000), ProducerInfo::default()).freeze();
    assert_eq!(produce(&mut c, "grow", 1, batch.clone(), -1).await, (0, 0));

    // validate_only changes nothing.
    assert_eq!(
        create_partitions(&mut c, &[("grow", 5, None)], true).await[0].0,
        0
    );
    assert_eq!(partition_count(&mut c, "grow").await, 2);

    // Shrinking or keeping the count: INVALID_PARTITIONS, with a message.
    for n in [1, 2] {
        let (code, msg) = create_partitions(&mut c, &[("grow", n, None)], false)
            .await
            .remove(0);
        assert_eq!(code, 37, "INVALID_PARTITIONS for {n}");
        assert!(msg.unwrap_or_default().contains("only grow"));
    }
    // Unknown topic; a topic named twice; an assignment to a broker that does not exist.
    let got = create_partitions(
        &mut c,
        &[("nope", 3, None), ("twice", 3, None), ("twice", 4, None)],
        false,
    )
    .await;
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [3, 42, 42]);
    let got = create_partitions(&mut c, &[("grow", 4, Some(vec![vec![1], vec![2]]))], false).await;
    assert_eq!(got[0].0, 39, "INVALID_REPLICA_ASSIGNMENT");
    let got = create_partitions(&mut c, &[("grow", 4, Some(vec![vec![1]]))], false).await;
    assert_eq!(got[0].0, 39, "one assignment for two new partitions");
    assert_eq!(partition_count(&mut c, "grow").await, 2);

    // Grow 2 -> 4 (with a valid assignment), then use the new partitions.
    let got = create_partitions(&mut c, &[("grow", 4, Some(vec![vec![1], vec![1]]))], false).await;
    assert_eq!(got[0].0, 0, "{got:?}");
    assert_eq!(partition_count(&mut c, "grow").await, 4);
    assert_eq!(produce(&mut c, "grow", 3, batch.clone(), -1).await, (0, 0));
    assert_eq!(
        create_partitions(&mut c, &[("grow", 6, None)], false).await[0].0,
        0
    );

    // After a restart: six partitions, old and new data at their offsets.
    drop(c);
    b.shutdown().await;
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    assert_eq!(partition_count(&mut c, "grow").await, 6);
    for p in [1, 3] {
        let (err, hw, data) = fetch(&mut c, "grow", p, 0, 100).await;
        assert_eq!((err, hw), (0, 3), "partition {p}");
        assert_eq!(decode_all(data).len(), 3);
    }
    assert_eq!(
        fetch(&mut c, "grow", 5, 0, 0).await.1,
        0,
        "new partition is empty"
    );
    b.shutdown().await;
}
