//! OffsetForLeaderEpoch (key 23, v2-4): where a leader epoch ends, so a consumer can check
//! that the log it read from was not truncated under it (KIP-101, KIP-320), and the
//! `current_leader_epoch` fencing that Fetch and ListOffsets share.
//!
//! A partition's leader epoch is the Raft term that wrote each batch (`partitionLeaderEpoch`);
//! the leader's epoch history is the log's `(term, first offset)` runs
//! ([`crate::raft::segment_log::SegmentRaftLog::epoch_starts`]). A single node stamps every
//! batch with the partition's one epoch (0), so its history is one run from the log start.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{code, RequestContext};
use crate::broker::Broker;
use crate::cluster::replica::ReplicaError;
use crate::partition::Partition;

/// The largest epoch `<= requested` in `starts` (`(epoch, first offset)` ascending in both)
/// and where it ends: the first offset of the next epoch, or `log_end` for the last one.
/// `None` (answered as -1/-1, UNDEFINED_EPOCH_OFFSET) when `requested` is below the first
/// epoch or there is no history.
pub fn end_offset_for_epoch(
    starts: &[(i32, i64)],
    log_end: i64,
    requested: i32,
) -> Option<(i32, i64)> {
    let found = starts.partition_point(|&(epoch, _)| epoch <= requested);
    let &(epoch, _) = starts.get(found.checked_sub(1)?)?;
    let end = starts.get(found).map_or(log_end, |&(_, start)| start);
    Some((epoch, end))
}

/// The Kafka error for a request that names `requested` as the leader's epoch when it is
/// `ours`: none when they match or the client did not say (-1), FENCED_LEADER_EPOCH when the
/// client's is older, UNKNOWN_LEADER_EPOCH when it is newer.
pub fn check_current_epoch(requested: i32, ours: i32) -> i16 {
    if requested < 0 || requested == ours {
        code::NONE
    } else if requested < ours {
        code::FENCED_LEADER_EPOCH
    } else {
        code::UNKNOWN_LEADER_EPOCH
    }
}

/// The leader epoch this node serves `part` at: the partition's own epoch on a single node,
/// the Raft term its group is in for a replica. `None` when the replica is gone.
pub fn current_epoch(broker: &Broker, part: &Partition) -> Option<i32> {
    if !part.is_replicated() {
        return Some(part.leader_epoch());
    }
    let replica = broker.cluster()?.replica(&part.topic, part.index)?;
    Some(epoch_of(replica.group.leadership().term))
}

/// A Raft term as a Kafka epoch. Stored terms are batch epochs, so they fit; a term past
/// `i32::MAX` (never reached) saturates instead of wrapping.
pub fn epoch_of(term: u64) -> i32 {
    i32::try_from(term).unwrap_or(i32::MAX)
}

pub async fn handle(
    broker: &Broker,
    _: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = broker.topics.get(&t.topic);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let r = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let part = topic
                .as_ref()
                .and_then(|t| t.partitions.iter().find(|x| x.index == p.partition));
            let Some(part) = part else {
                partitions.push(r.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            let answer = match history(broker, part).await {
                Err(error) => r.with_error_code(error),
                Ok((ours, starts, log_end)) => {
                    match check_current_epoch(p.current_leader_epoch, ours) {
                        code::NONE => {
                            match end_offset_for_epoch(&starts, log_end, p.leader_epoch) {
                                Some((epoch, end)) => {
                                    r.with_leader_epoch(epoch).with_end_offset(end)
                                }
                                None => r,
                            }
                            .with_error_code(code::NONE)
                        }
                        error => r.with_error_code(error),
                    }
                }
            };
            tracing::debug!(topic = %part.topic, partition = part.index, requested = p.leader_epoch, current = p.current_leader_epoch, error = answer.error_code, epoch = answer.leader_epoch, end_offset = answer.end_offset, "offset for leader epoch");
            partitions.push(answer);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// The leader's current epoch, its epoch history and its log end offset, or the Kafka error
/// that stops the lookup. The end offset of the current epoch is the log end offset, as in
/// Kafka: bounding it by the high watermark would report a false truncation to a consumer
/// that read up to the old leader's high watermark while the new leader's still lags.
async fn history(broker: &Broker, part: &Partition) -> Result<(i32, Vec<(i32, i64)>, i64), i16> {
    if !part.is_leader() {
        return Err(code::NOT_LEADER_OR_FOLLOWER);
    }
    if !part.is_replicated() {
        let offsets = part.offsets();
        let epoch = part.leader_epoch();
        return Ok((epoch, vec![(epoch, offsets.log_start)], offsets.log_end));
    }
    let replica = broker
        .cluster()
        .and_then(|c| c.replica(&part.topic, part.index))
        .ok_or(code::NOT_LEADER_OR_FOLLOWER)?;
    match replica.epoch_history().await {
        Ok((term, starts, end)) => Ok((
            epoch_of(term),
            starts.into_iter().map(|(t, s)| (epoch_of(t), s)).collect(),
            end,
        )),
        Err(ReplicaError::NotLeader) => Err(code::NOT_LEADER_OR_FOLLOWER),
        Err(e) => {
            tracing::warn!(topic = %part.topic, partition = part.index, "epoch history: {e}");
            Err(code::NOT_LEADER_OR_FOLLOWER)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STARTS: &[(i32, i64)] = &[(1, 0), (2, 5), (3, 11), (5, 12), (7, 20)];

    #[test]
    fn each_epoch_ends_where_the_next_begins_and_the_last_at_the_log_end() {
        let cases = [
            (1, Some((1, 5))),
            (2, Some((2, 11))),
            (3, Some((3, 12))),
            // Epochs 4 and 6 wrote nothing: the largest epoch below them answers.
            (4, Some((3, 12))),
            (5, Some((5, 20))),
            (6, Some((5, 20))),
            (7, Some((7, 22))),
            (8, Some((7, 22))),
            (i32::MAX, Some((7, 22))),
        ];
        for (requested, want) in cases {
            assert_eq!(
                end_offset_for_epoch(STARTS, 22, requested),
                want,
                "epoch {requested}"
            );
        }
    }

    #[test]
    fn below_the_first_epoch_or_without_history_is_undefined() {
        for requested in [i32::MIN, -1, 0] {
            assert_eq!(end_offset_for_epoch(STARTS, 22, requested), None);
        }
        assert_eq!(end_offset_for_epoch(&[], 0, 3), None);
    }

    #[test]
    fn a_single_nodes_one_epoch_ends_at_the_log_end() {
        assert_eq!(end_offset_for_epoch(&[(0, 0)], 42, 0), Some((0, 42)));
        assert_eq!(end_offset_for_epoch(&[(0, 0)], 42, 3), Some((0, 42)));
        assert_eq!(end_offset_for_epoch(&[(0, 0)], 42, -1), None);
    }

    #[test]
    fn current_epoch_fencing() {
        assert_eq!(check_current_epoch(-1, 4), code::NONE);
        assert_eq!(check_current_epoch(4, 4), code::NONE);
        assert_eq!(check_current_epoch(3, 4), code::FENCED_LEADER_EPOCH);
        assert_eq!(check_current_epoch(0, 4), code::FENCED_LEADER_EPOCH);
        assert_eq!(check_current_epoch(5, 4), code::UNKNOWN_LEADER_EPOCH);
        assert_eq!(check_current_epoch(0, 0), code::NONE);
    }

    mod single_node {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        use kafka_protocol::messages::offset_for_leader_epoch_request::{
            OffsetForLeaderPartition, OffsetForLeaderTopic,
        };
        use kafka_protocol::messages::{
            ApiKey, FetchRequest, ListOffsetsRequest, MetadataRequest, OffsetForLeaderEpochRequest,
            TopicName,
        };
        use kafka_protocol::protocol::StrBytes;

        use crate::broker::Broker;
        use crate::codec::batch;
        use crate::codec::builder::{encode_batch, ProducerInfo, Record};
        use crate::config::Config;
        use crate::handlers::{code, RequestContext};

        fn ctx(api: ApiKey, version: i16) -> RequestContext {
            RequestContext {
                api,
                version,
                correlation_id: 1,
                client_id: None,
                peer: None,
            }
        }

        fn name() -> TopicName {
            TopicName(StrBytes::from_static_str("t"))
        }

        fn open(dir: &std::path::Path) -> Broker {
            let config = Config {
                data_dir: dir.to_owned(),
                ..Config::default()
            };
            let b = Broker::open(config).unwrap();
            b.topics.get_or_auto_create("t").unwrap();
            b
        }

        fn append(b: &Broker, records: usize) {
            let recs: Vec<Record> = (0..records)
                .map(|i| Record {
                    key: None,
                    value: Some(format!("v{i}").into_bytes()),
                    headers: Vec::new(),
                    timestamp: 1_000,
                })
                .collect();
            let bytes = encode_batch(&recs, ProducerInfo::default());
            let header = batch::parse_header(&bytes).unwrap();
            let topic = b.topics.get("t").unwrap();
            topic.partitions[0].append(bytes, &header).unwrap();
        }

        /// (error, epoch, end offset) for `(partition, current, requested)`.
        async fn ask(b: &Broker, partition: i32, current: i32, requested: i32) -> (i16, i32, i64) {
            let req = OffsetForLeaderEpochRequest::default().with_topics(vec![
                OffsetForLeaderTopic::default()
                    .with_topic(name())
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(current)
                        .with_leader_epoch(requested)]),
            ]);
            let resp = super::super::handle(b, &ctx(ApiKey::OffsetForLeaderEpoch, 4), req).await;
            let p = &resp.topics[0].partitions[0];
            assert_eq!(p.partition, partition);
            (p.error_code, p.leader_epoch, p.end_offset)
        }

        #[tokio::test]
        async fn one_epoch_that_ends_at_the_log_end() {
            let dir = tempfile::tempdir().unwrap();
            let b = open(dir.path());
            assert_eq!(ask(&b, 0, 0, 0).await, (code::NONE, 0, 0), "empty log");
            append(&b, 3);
            append(&b, 2);
            assert_eq!(ask(&b, 0, -1, 0).await, (code::NONE, 0, 5));
            assert_eq!(ask(&b, 0, 0, 0).await, (code::NONE, 0, 5));
            assert_eq!(
                ask(&b, 0, 0, 9).await,
                (code::NONE, 0, 5),
                "a later epoch: ours"
            );
            assert_eq!(
                ask(&b, 0, 0, -1).await,
                (code::NONE, -1, -1),
                "below the first"
            );
            assert_eq!(ask(&b, 0, 1, 0).await.0, code::UNKNOWN_LEADER_EPOCH);
            assert_eq!(ask(&b, 7, -1, 0).await.0, code::UNKNOWN_TOPIC_OR_PARTITION);
        }

        #[tokio::test]
        async fn metadata_list_offsets_and_fetch_speak_the_same_epoch() {
            let dir = tempfile::tempdir().unwrap();
            let b = open(dir.path());
            append(&b, 4);
            let md = crate::handlers::metadata::handle(
                &b,
                &ctx(ApiKey::Metadata, 12),
                MetadataRequest::default().with_topics(None),
            )
            .await;
            assert_eq!(md.topics[0].partitions[0].leader_epoch, 0);

            let list = |ts: i64, current: i32| {
                ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name())
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_current_leader_epoch(current)
                        .with_timestamp(ts)])])
            };
            for (ts, offset) in [(-1, 4), (-2, 0), (1_000, 0)] {
                let r = crate::handlers::list_offsets::handle(
                    &b,
                    &ctx(ApiKey::ListOffsets, 7),
                    list(ts, 0),
                )
                .await;
                let p = &r.topics[0].partitions[0];
                assert_eq!(
                    (p.error_code, p.offset, p.leader_epoch),
                    (code::NONE, offset, 0),
                    "query {ts}"
                );
            }
            let r = crate::handlers::list_offsets::handle(
                &b,
                &ctx(ApiKey::ListOffsets, 7),
                list(-1, 3),
            )
            .await;
            assert_eq!(
                r.topics[0].partitions[0].error_code,
                code::UNKNOWN_LEADER_EPOCH
            );

            let fetch = |current: i32| {
                FetchRequest::default()
                    .with_max_wait_ms(0)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![FetchTopic::default()
                        .with_topic(name())
                        .with_partitions(vec![FetchPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(current)
                            .with_partition_max_bytes(1 << 20)])])
            };
            for (current, error, has_records) in [
                (-1, code::NONE, true),
                (0, code::NONE, true),
                (1, code::UNKNOWN_LEADER_EPOCH, false),
            ] {
                let r = crate::handlers::fetch::handle(&b, &ctx(ApiKey::Fetch, 12), fetch(current))
                    .await
                    .into_response();
                let p = &r.responses[0].partitions[0];
                assert_eq!(p.error_code, error, "current epoch {current}");
                assert_eq!(
                    p.records.as_ref().is_some_and(|r| !r.is_empty()),
                    has_records
                );
            }
        }
    }

    /// A history: strictly increasing epochs, each holding at least one offset, and the log
    /// end past the last epoch's first offset.
    fn arb_history() -> impl Strategy<Value = (Vec<(i32, i64)>, i64)> {
        proptest::collection::vec((1i32..4, 1i64..6), 0..8).prop_flat_map(|steps| {
            let mut epoch = -1;
            let mut at = 0i64;
            let mut starts = Vec::new();
            for (de, dl) in steps {
                epoch += de;
                starts.push((epoch, at));
                at += dl;
            }
            (Just(starts), at..at + 5)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Against a brute-force scan over every offset's epoch: the largest epoch any offset
        /// has at or below the request, and the first offset of a later epoch (else the log
        /// end) as its end.
        #[test]
        fn matches_a_brute_force_scan((starts, log_end) in arb_history(), requested in -3i32..25) {
            let epochs: Vec<i32> = (0..log_end)
                .filter_map(|o| starts.iter().rev().find(|&&(_, s)| s <= o).map(|&(e, _)| e))
                .collect();
            let want = epochs.iter().copied().filter(|&e| e <= requested).max().map(|e| {
                let end = epochs.iter().position(|&x| x > e).map_or(log_end, |o| i64::try_from(o).unwrap());
                (e, end)
            });
            prop_assert_eq!(end_offset_for_epoch(&starts, log_end, requested), want);
        }
    }
}
