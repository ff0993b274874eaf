"""Conformance run for confluent-kafka-python (librdkafka): create a topic, produce with every
codec to explicit partitions, consume each partition from the beginning with assign(), and check
ListOffsets (watermarks, offsets_for_times, AdminClient.list_offsets).

Usage: .venv/bin/python tests/clients/python/confluent_client.py HOST:PORT [--topic T] [--no-create]
"""

import sys
import time

import confluent_kafka
from confluent_kafka import Consumer, Producer, TopicPartition, KafkaError
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

import plan

args = plan.parse_args(__doc__)
report = plan.Report("confluent-kafka " + confluent_kafka.__version__)
report.step(f"librdkafka {confluent_kafka.libversion()[0]}, bootstrap {args.bootstrap}, topic {args.topic}")
base = {"bootstrap.servers": args.bootstrap, "client.id": "runnel-conformance-confluent"}
expected = plan.plan(args.codecs)
total = plan.total_per_partition(args.codecs)

admin = AdminClient(base)
if not args.no_create:
    report.step("create topic with 3 partitions")
    fut = admin.create_topics([NewTopic(args.topic, num_partitions=plan.PARTITIONS, replication_factor=1)])
    fut[args.topic].result(timeout=args.timeout)

md = admin.list_topics(topic=args.topic, timeout=args.timeout)
t = md.topics[args.topic]
report.eq("metadata: topic error", None, t.error)
report.check(len(t.partitions) >= plan.PARTITIONS, f"metadata: expected >= {plan.PARTITIONS} partitions, got {len(t.partitions)}")

for ci, codec in enumerate(args.codecs):
    report.step(f"produce {plan.PER_CODEC} records to each partition with compression {codec}")
    producer = Producer({**base, "compression.type": codec, "enable.idempotence": False, "linger.ms": 50, "acks": "all"})
    reports = []

    def on_delivery(err, msg, reports=reports):
        reports.append((err, msg.partition(), msg.offset(), msg.key()))

    for p in range(plan.PARTITIONS):
        for j in range(plan.PER_CODEC):
            producer.produce(
                args.topic,
                key=plan.key_of(codec, p, j),
                value=plan.value_of(codec, p, j),
                headers=plan.headers_of(codec, p, j),
                partition=p,
                timestamp=plan.ts_of(ci * plan.PER_CODEC + j),
                on_delivery=on_delivery,
            )
    left = producer.flush(args.timeout)
    report.eq(f"{codec}: messages still queued after flush", 0, left)
    for err, p, offset, key in reports:
        j = int(key.decode().rsplit("-", 1)[1])
        report.eq(f"{codec}: delivery error for {key!r}", None, err)
        report.eq(f"{codec}: delivery report offset for {key!r} (partition {p})", ci * plan.PER_CODEC + j, offset)
    report.eq(f"{codec}: delivery reports", plan.PARTITIONS * plan.PER_CODEC, len(reports))

# librdkafka insists on a group.id even for assign(); nothing here uses the group (no
# subscribe, no commits), which the broker does not support yet.
consumer = Consumer({**base, "group.id": "runnel-conformance-unused", "enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 100})


def consume(p, start):
    consumer.assign([TopicPartition(args.topic, p, start)])
    got = []
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                break
            report.check(False, f"partition {p}: consume error {msg.error()}")
            break
        ts_type, ts = msg.timestamp()
        report.eq(f"partition {p} offset {msg.offset()}: timestamp type", confluent_kafka.TIMESTAMP_CREATE_TIME, ts_type)
        got.append(
            {
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": msg.key(),
                "value": msg.value(),
                "headers": [(k, v) for k, v in (msg.headers() or [])],
                "timestamp": ts,
            }
        )
    consumer.unassign()
    return got


for p in range(plan.PARTITIONS):
    report.step(f"consume partition {p} from the beginning")
    report.records(p, expected[p], consume(p, confluent_kafka.OFFSET_BEGINNING))
    # Start inside the second (compressed) batch: the client must skip the batch's head.
    mid = plan.PER_CODEC + 1
    if mid < total:
        report.step(f"consume partition {p} from offset {mid}")
        report.records(p, expected[p], consume(p, mid), start_index=mid)

report.step("watermarks and offsets_for_times")
for p in range(plan.PARTITIONS):
    low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=args.timeout, cached=False)
    report.eq(f"partition {p}: low watermark", 0, low)
    report.eq(f"partition {p}: high watermark", total, high)


def by_time(p, ts):
    [tp] = consumer.offsets_for_times([TopicPartition(args.topic, p, ts)], timeout=args.timeout)
    report.eq(f"partition {p}: offsets_for_times({ts}) error", None, tp.error)
    return tp.offset


for p in range(plan.PARTITIONS):
    plan.check_offsets_for_times(report, p, args.codecs, by_time, confluent_kafka.OFFSET_END)
consumer.close()

report.step("AdminClient.list_offsets earliest/latest/for_timestamp")
specs = {}
for p in range(plan.PARTITIONS):
    specs[TopicPartition(args.topic, p)] = OffsetSpec.earliest()
try:
    for tp, f in admin.list_offsets(specs, request_timeout=args.timeout).items():
        report.eq(f"admin list_offsets earliest partition {tp.partition}", 0, f.result().offset)
    specs = {TopicPartition(args.topic, p): OffsetSpec.latest() for p in range(plan.PARTITIONS)}
    for tp, f in admin.list_offsets(specs, request_timeout=args.timeout).items():
        report.eq(f"admin list_offsets latest partition {tp.partition}", total, f.result().offset)
    k = min(plan.PER_CODEC + 1, total - 1)
    specs = {TopicPartition(args.topic, p): OffsetSpec.for_timestamp(plan.ts_of(k)) for p in range(plan.PARTITIONS)}
    for tp, f in admin.list_offsets(specs, request_timeout=args.timeout).items():
        report.eq(f"admin list_offsets for_timestamp(ts_of({k})) partition {tp.partition}", k, f.result().offset)
except Exception as e:  # report, don't crash: the other checks above still count
    report.check(False, f"admin list_offsets raised {type(e).__name__}: {e}")

if not args.no_create:
    report.step("DeleteTopics: create and delete a second topic")
    doomed = args.topic + "-deleted"
    admin.create_topics([NewTopic(doomed, num_partitions=1, replication_factor=1)])[doomed].result(timeout=args.timeout)
    try:
        admin.delete_topics([doomed], operation_timeout=args.timeout)[doomed].result(timeout=args.timeout)
    except Exception as e:
        report.check(False, f"delete_topics({doomed}) raised {type(e).__name__}: {e}")
    deadline = time.monotonic() + args.timeout
    while doomed in admin.list_topics(timeout=args.timeout).topics and time.monotonic() < deadline:
        time.sleep(0.1)
    report.check(doomed not in admin.list_topics(timeout=args.timeout).topics, f"{doomed} still listed after delete")
    report.check(args.topic in admin.list_topics(timeout=args.timeout).topics, f"{args.topic} gone after deleting another topic")

report.finish()
