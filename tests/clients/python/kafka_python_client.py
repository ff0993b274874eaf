"""Conformance run for kafka-python 3.x: create a topic with KafkaAdminClient, produce with every
codec to explicit partitions (non-idempotent), consume each partition with assign(), and check
beginning_offsets / end_offsets / offsets_for_times.

Usage: .venv/bin/python tests/clients/python/kafka_python_client.py HOST:PORT [--topic T] [--no-create]
"""

import time

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

import plan

args = plan.parse_args(__doc__)
report = plan.Report("kafka-python " + kafka.__version__)
report.step(f"bootstrap {args.bootstrap}, topic {args.topic}")
expected = plan.plan(args.codecs)
total = plan.total_per_partition(args.codecs)
common = {"bootstrap_servers": args.bootstrap, "client_id": "runnel-conformance-kafka-python",
          "request_timeout_ms": int(args.timeout * 1000)}

if not args.no_create:
    report.step("create topic with 3 partitions")
    admin = KafkaAdminClient(**common)
    admin.create_topics([NewTopic(name=args.topic, num_partitions=plan.PARTITIONS, replication_factor=1)])
    admin.close()

for ci, codec in enumerate(args.codecs):
    report.step(f"produce {plan.PER_CODEC} records to each partition with compression {codec}")
    # kafka-python 3 defaults to an idempotent producer (InitProducerId); the broker does not
    # support that yet, so turn it off explicitly.
    producer = KafkaProducer(
        **common,
        compression_type=None if codec == "none" else codec,
        enable_idempotence=False,
        acks="all",
        linger_ms=50,
    )
    futures = []
    for p in range(plan.PARTITIONS):
        for j in range(plan.PER_CODEC):
            f = producer.send(
                args.topic,
                key=plan.key_of(codec, p, j),
                value=plan.value_of(codec, p, j),
                headers=plan.headers_of(codec, p, j),
                partition=p,
                timestamp_ms=plan.ts_of(ci * plan.PER_CODEC + j),
            )
            futures.append((p, j, f))
    producer.flush(timeout=args.timeout)
    for p, j, f in futures:
        try:
            md = f.get(timeout=args.timeout)
        except Exception as e:
            report.check(False, f"{codec}: send to partition {p} j={j} failed: {type(e).__name__}: {e}")
            continue
        report.eq(f"{codec}: RecordMetadata partition", p, md.partition)
        report.eq(f"{codec}: RecordMetadata offset (partition {p}, j={j})", ci * plan.PER_CODEC + j, md.offset)
    producer.close(timeout=args.timeout)

consumer = KafkaConsumer(**common, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100,
                         auto_offset_reset="earliest")


def consume(p, start):
    tp = TopicPartition(args.topic, p)
    consumer.assign([tp])
    if start is None:
        consumer.seek_to_beginning(tp)
    else:
        consumer.seek(tp, start)
    want = total - (start or 0)
    got = []
    deadline = time.monotonic() + args.timeout
    while len(got) < want and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            for r in recs:
                report.eq(f"partition {p} offset {r.offset}: timestamp type (0 = CreateTime)", 0, r.timestamp_type)
                got.append({"partition": r.partition, "offset": r.offset, "key": r.key, "value": r.value,
                            "headers": [(k, v) for k, v in r.headers], "timestamp": r.timestamp})
    # Anything beyond the plan would be a bug too: one more short poll.
    for recs in consumer.poll(timeout_ms=200).values():
        for r in recs:
            got.append({"partition": r.partition, "offset": r.offset, "key": r.key, "value": r.value,
                        "headers": list(r.headers), "timestamp": r.timestamp})
    return got


for p in range(plan.PARTITIONS):
    report.step(f"consume partition {p} from the beginning")
    report.records(p, expected[p], consume(p, None))
    mid = plan.PER_CODEC + 1
    if mid < total:
        report.step(f"consume partition {p} from offset {mid} (inside a compressed batch)")
        report.records(p, expected[p], consume(p, mid), start_index=mid)

report.step("beginning_offsets / end_offsets / offsets_for_times")
tps = [TopicPartition(args.topic, p) for p in range(plan.PARTITIONS)]
begin = consumer.beginning_offsets(tps)
end = consumer.end_offsets(tps)
for tp in tps:
    report.eq(f"partition {tp.partition}: beginning_offsets", 0, begin.get(tp))
    report.eq(f"partition {tp.partition}: end_offsets", total, end.get(tp))


def by_time(p, ts):
    tp = TopicPartition(args.topic, p)
    res = consumer.offsets_for_times({tp: ts}).get(tp)
    return None if res is None else res.offset


for p in range(plan.PARTITIONS):
    plan.check_offsets_for_times(report, p, args.codecs, by_time, None)
consumer.close()

if not args.no_create:
    report.step("DeleteTopics: create and delete a second topic")
    doomed = args.topic + "-deleted"
    admin = KafkaAdminClient(**common)
    admin.create_topics([NewTopic(name=doomed, num_partitions=1, replication_factor=1)])
    try:
        admin.delete_topics([doomed])
    except Exception as e:
        report.check(False, f"delete_topics({doomed}) raised {type(e).__name__}: {e}")
    deadline = time.monotonic() + args.timeout
    while doomed in admin.list_topics() and time.monotonic() < deadline:
        time.sleep(0.1)
    topics = admin.list_topics()
    report.check(doomed not in topics, f"{doomed} still listed after delete")
    report.check(args.topic in topics, f"{args.topic} gone after deleting another topic")
    admin.close()
report.finish()
