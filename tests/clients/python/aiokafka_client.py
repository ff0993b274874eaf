"""Conformance run for aiokafka: create a topic with AIOKafkaAdminClient, produce with every codec
to explicit partitions, consume each partition with assign(), and check
beginning_offsets / end_offsets / offsets_for_times.

Usage: .venv/bin/python tests/clients/python/aiokafka_client.py HOST:PORT [--topic T] [--no-create]
"""

import asyncio

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import plan

args = plan.parse_args(__doc__)
report = plan.Report("aiokafka " + aiokafka.__version__)
expected = plan.plan(args.codecs)
total = plan.total_per_partition(args.codecs)
common = {"bootstrap_servers": args.bootstrap, "client_id": "runnel-conformance-aiokafka",
          "request_timeout_ms": int(args.timeout * 1000)}


async def main():
    report.step(f"bootstrap {args.bootstrap}, topic {args.topic}")
    if not args.no_create:
        report.step("create topic with 3 partitions")
        admin = AIOKafkaAdminClient(**common)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name=args.topic, num_partitions=plan.PARTITIONS, replication_factor=1)])
        finally:
            await admin.close()

    for ci, codec in enumerate(args.codecs):
        report.step(f"produce {plan.PER_CODEC} records to each partition with compression {codec}")
        producer = AIOKafkaProducer(**common, compression_type=None if codec == "none" else codec,
                                    enable_idempotence=False, acks="all", linger_ms=50)
        await producer.start()
        try:
            futures = []
            for p in range(plan.PARTITIONS):
                for j in range(plan.PER_CODEC):
                    fut = await producer.send(
                        args.topic,
                        key=plan.key_of(codec, p, j),
                        value=plan.value_of(codec, p, j),
                        headers=plan.headers_of(codec, p, j),
                        partition=p,
                        timestamp_ms=plan.ts_of(ci * plan.PER_CODEC + j),
                    )
                    futures.append((p, j, fut))
            await producer.flush()
            for p, j, fut in futures:
                try:
                    md = await asyncio.wait_for(fut, args.timeout)
                except Exception as e:
                    report.check(False, f"{codec}: send to partition {p} j={j} failed: {type(e).__name__}: {e}")
                    continue
                report.eq(f"{codec}: RecordMetadata partition", p, md.partition)
                report.eq(f"{codec}: RecordMetadata offset (partition {p}, j={j})", ci * plan.PER_CODEC + j, md.offset)
        finally:
            await producer.stop()

    consumer = AIOKafkaConsumer(**common, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:

        async def consume(p, start):
            tp = TopicPartition(args.topic, p)
            consumer.assign([tp])
            if start is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
            want = total - (start or 0)
            got = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + args.timeout
            while len(got) < want and loop.time() < deadline:
                batches = await consumer.getmany(tp, timeout_ms=500)
                for r in batches.get(tp, []):
                    report.eq(f"partition {p} offset {r.offset}: timestamp type (0 = CreateTime)", 0, r.timestamp_type)
                    got.append({"partition": r.partition, "offset": r.offset, "key": r.key, "value": r.value,
                                "headers": [(k, v) for k, v in r.headers], "timestamp": r.timestamp})
            batches = await consumer.getmany(tp, timeout_ms=200)
            for r in batches.get(tp, []):
                got.append({"partition": r.partition, "offset": r.offset, "key": r.key, "value": r.value,
                            "headers": [(k, v) for k, v in r.headers], "timestamp": r.timestamp})
            return got

        for p in range(plan.PARTITIONS):
            report.step(f"consume partition {p} from the beginning")
            report.records(p, expected[p], await consume(p, None))
            mid = plan.PER_CODEC + 1
            if mid < total:
                report.step(f"consume partition {p} from offset {mid} (inside a compressed batch)")
                report.records(p, expected[p], await consume(p, mid), start_index=mid)

        report.step("beginning_offsets / end_offsets / offsets_for_times")
        tps = [TopicPartition(args.topic, p) for p in range(plan.PARTITIONS)]
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        for tp in tps:
            report.eq(f"partition {tp.partition}: beginning_offsets", 0, begin.get(tp))
            report.eq(f"partition {tp.partition}: end_offsets", total, end.get(tp))

        for p in range(plan.PARTITIONS):
            tp = TopicPartition(args.topic, p)
            for ts, want in plan.offsets_for_times_cases(args.codecs, None):
                res = (await consumer.offsets_for_times({tp: ts})).get(tp)
                got = None if res is None else res.offset
                report.eq(f"partition {p}: offset for timestamp {ts} (T0{ts - plan.T0:+d}ms)", want, got)
    finally:
        await consumer.stop()


asyncio.run(main())
report.finish()
