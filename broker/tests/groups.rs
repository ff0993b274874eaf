//! In-process tests of the consumer-group APIs: two members join and sync over real
//! connections, commit offsets, and the offsets are fetched back after a broker restart.

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

mod common;
use common::*;

const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const UNKNOWN_MEMBER_ID: i16 = 25;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

fn group(x: &str) -> GroupId {
    GroupId(s(x))
}

fn join_req(member_id: &str, metadata: &'static [u8]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group("g"))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member_id))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(metadata))])
}

/// KIP-394: a first JoinGroup (v5) yields MEMBER_ID_REQUIRED and the id to join with.
async fn member_id(c: &mut Client, metadata: &'static [u8]) -> String {
    let r = c.call(&join_req("", metadata), 5).await;
    assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
    assert!(!r.member_id.is_empty());
    r.member_id.to_string()
}

/// JoinGroup on its own task (it waits for the rebalance), giving the client back.
fn spawn_join(
    mut c: Client,
    member: String,
    metadata: &'static [u8],
) -> tokio::task::JoinHandle<(Client, JoinGroupResponse)> {
    tokio::spawn(async move {
        let r = c.call(&join_req(&member, metadata), 5).await;
        (c, r)
    })
}

fn sync_req(
    member: &str,
    generation: i32,
    assignments: &[(&str, &'static [u8])],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(group("g"))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::from_static(a))
                })
                .collect(),
        )
}

fn heartbeat_req(member: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(group("g"))
        .with_generation_id(generation)
        .with_member_id(s(member))
}

fn commit_req(
    group_id: &str,
    member: &str,
    generation: i32,
    offsets: &[(&str, i32, i64, Option<&str>)],
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(
            offsets
                .iter()
                .map(|(t, p, o, m)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                            .with_committed_metadata(m.map(s))])
                })
                .collect(),
        )
}

fn commit_errors(r: &OffsetCommitResponse) -> Vec<i16> {
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// Every committed offset of `group_id` as (topic, partition, offset, metadata).
fn fetched(r: &OffsetFetchResponse) -> Vec<(String, i32, i64, Option<String>)> {
    let mut all: Vec<_> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.metadata.as_ref().map(|m| m.to_string()),
                )
            })
        })
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_join_sync_commit_and_offsets_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut admin = Client::connect(&b).await;
    assert_eq!(create(&mut admin, "t", 4).await, 0);

    // FindCoordinator: v0 (old librdkafka) finds this node; a transactional id is refused.
    let fc = admin
        .call(&FindCoordinatorRequest::default().with_key(s("g")), 0)
        .await;
    assert_eq!((fc.error_code, fc.node_id.0), (0, 1));
    let fc = admin
        .call(
            &FindCoordinatorRequest::default()
                .with_key(s("tx"))
                .with_key_type(1),
            3,
        )
        .await;
    assert_eq!(fc.error_code, 53);
    assert_eq!(
        fc.error_message.as_deref(),
        Some("transactions are not supported by Runnel")
    );

    // Member a joins alone (KIP-394 round trip) and leads generation 1.
    let mut a = Client::connect(&b).await;
    let a_id = member_id(&mut a, b"meta-a").await;
    let (mut a, r) = spawn_join(a, a_id.clone(), b"meta-a").await.unwrap();
    assert_eq!((r.error_code, r.generation_id), (0, 1));
    assert_eq!(r.leader.as_str(), a_id);
    let r = a.call(&sync_req(&a_id, 1, &[(&a_id, b"all")]), 5).await;
    assert_eq!((r.error_code, &r.assignment[..]), (0, &b"all"[..]));

    // Member b joins: its join waits until a learns of the rebalance and rejoins.
    let mut bm = Client::connect(&b).await;
    let b_id = member_id(&mut bm, b"meta-b").await;
    let b_join = spawn_join(bm, b_id.clone(), b"meta-b");
    let mut hb = Client::connect(&b).await;
    let mut rebalancing = false;
    for _ in 0..200 {
        let r = hb.call(&heartbeat_req(&a_id, 1), 4).await;
        if r.error_code == REBALANCE_IN_PROGRESS {
            rebalancing = true;
            break;
        }
        assert_eq!(r.error_code, 0);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(rebalancing, "a is told to rejoin");
    let (mut a, ra) = spawn_join(a, a_id.clone(), b"meta-a").await.unwrap();
    let (mut bm, rb) = b_join.await.unwrap();
    assert_eq!((ra.error_code, ra.generation_id), (0, 2));
    assert_eq!((rb.error_code, rb.generation_id), (0, 2));
    assert_eq!(ra.leader.as_str(), a_id);
    let mut seen: Vec<(String, Vec<u8>)> = ra
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.metadata.to_vec()))
        .collect();
    seen.sort();
    let mut want = vec![
        (a_id.clone(), b"meta-a".to_vec()),
        (b_id.clone(), b"meta-b".to_vec()),
    ];
    want.sort();
    assert_eq!(seen, want, "the leader gets every member's metadata");
    assert!(rb.members.is_empty(), "followers get no member list");

    // The follower's sync waits for the leader's assignments; each gets its own.
    let b_sync = tokio::spawn(async move {
        let r = bm.call(&sync_req(&b_id, 2, &[]), 5).await;
        (bm, b_id, r)
    });
    let r = a
        .call(
            &sync_req(&a_id, 2, &[(&a_id, b"p0,p1"), (&rb.member_id, b"p2,p3")]),
            5,
        )
        .await;
    assert_eq!((r.error_code, &r.assignment[..]), (0, &b"p0,p1"[..]));
    let (mut bm, b_id, r) = b_sync.await.unwrap();
    assert_eq!((r.error_code, &r.assignment[..]), (0, &b"p2,p3"[..]));

    // Both commit (OffsetCommit v8 and v2); a stale generation is fenced.
    let r = a
        .call(
            &commit_req(
                "g",
                &a_id,
                2,
                &[("t", 0, 10, None), ("t", 1, 20, Some("a"))],
            ),
            8,
        )
        .await;
    assert_eq!(commit_errors(&r), vec![0, 0]);
    let r = bm
        .call(&commit_req("g", &b_id, 2, &[("t", 2, 30, Some("b"))]), 2)
        .await;
    assert_eq!(commit_errors(&r), vec![0]);
    let r = bm
        .call(&commit_req("g", &b_id, 1, &[("t", 3, 1, None)]), 8)
        .await;
    assert_eq!(commit_errors(&r), vec![22], "ILLEGAL_GENERATION");
    let r = bm
        .call(&commit_req("g", &b_id, 2, &[("nope", 0, 1, None)]), 8)
        .await;
    assert_eq!(commit_errors(&r), vec![3], "UNKNOWN_TOPIC_OR_PARTITION");
    // A simple (assign-only) consumer commits outside group management.
    let r = admin
        .call(&commit_req("simple", "", -1, &[("t", 3, 5, None)]), 8)
        .await;
    assert_eq!(commit_errors(&r), vec![0]);

    // b leaves (v3 batch form); DescribeGroups sees a alone, rebalancing.
    let r = bm
        .call(
            &LeaveGroupRequest::default()
                .with_group_id(group("g"))
                .with_members(vec![
                    leave_group_request::MemberIdentity::default().with_member_id(s(&b_id))
                ]),
            3,
        )
        .await;
    assert_eq!((r.error_code, r.members[0].error_code), (0, 0));
    let d = admin
        .call(
            &DescribeGroupsRequest::default().with_groups(vec![group("g")]),
            5,
        )
        .await;
    assert_eq!(d.groups[0].group_state.as_str(), "PreparingRebalance");
    assert_eq!(d.groups[0].members.len(), 1);

    b.shutdown().await;
    drop((a, bm, hb, admin));

    // After a restart: the offsets are back, the members are gone.
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    let all = c
        .call(
            &OffsetFetchRequest::default()
                .with_group_id(group("g"))
                .with_topics(None),
            7,
        )
        .await;
    assert_eq!(all.error_code, 0);
    assert_eq!(
        fetched(&all),
        vec![
            ("t".into(), 0, 10, None),
            ("t".into(), 1, 20, Some("a".into())),
            ("t".into(), 2, 30, Some("b".into())),
        ]
    );
    let some = c
        .call(
            &OffsetFetchRequest::default()
                .with_group_id(group("g"))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(topic("t"))
                    .with_partition_indexes(vec![1, 3])])),
            1,
        )
        .await;
    assert_eq!(
        fetched(&some),
        vec![
            ("t".into(), 1, 20, Some("a".into())),
            ("t".into(), 3, -1, Some(String::new())),
        ]
    );
    let simple = c
        .call(
            &OffsetFetchRequest::default()
                .with_group_id(group("simple"))
                .with_topics(None),
            7,
        )
        .await;
    assert_eq!(fetched(&simple), vec![("t".into(), 3, 5, None)]);
    let r = c.call(&heartbeat_req(&a_id, 2), 4).await;
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID, "members do not survive");
    let l = c.call(&ListGroupsRequest::default(), 4).await;
    let mut listed: Vec<(String, String)> = l
        .groups
        .iter()
        .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("g".into(), "Empty".into()),
            ("simple".into(), "Empty".into())
        ]
    );
    b.shutdown().await;
}
