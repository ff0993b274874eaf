"""Control batches with aiokafka: read partition 0 of TOPIC from the beginning with assign()
until the position reaches END (the partition ends with a control batch), then produce one
record and read on until it arrives. Driven by tests/tests/control_batches.rs.

Prints `RECORD <offset> <value>` per record, `POSITION <n>` each time the end is reached and
`PRODUCED <offset>`; exits 1 with `STALLED ...` if the position stops short of the end.

Usage: .venv/bin/python tests/clients/python/control_batches_aiokafka.py HOST:PORT TOPIC END
"""

import asyncio
import sys
import time

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

TIMEOUT_S = 30


async def main(bootstrap, topic, end):
    print(f"[aiokafka {aiokafka.__version__}] bootstrap {bootstrap}, topic {topic}, end {end}", flush=True)
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="runnel-control-batches-aiokafka",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)

    async def read_to(target):
        deadline = time.monotonic() + TIMEOUT_S
        while await consumer.position(tp) < target:
            if time.monotonic() > deadline:
                print(f"STALLED at position {await consumer.position(tp)}, end {target}", flush=True)
                sys.exit(1)
            batch = await consumer.getmany(tp, timeout_ms=200)
            for rec in batch.get(tp, []):
                print(f"RECORD {rec.offset} {rec.value.decode()}", flush=True)
        print(f"POSITION {await consumer.position(tp)}", flush=True)

    try:
        await read_to(end)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="runnel-control-batches-aiokafka",
            enable_idempotence=False,
            acks="all",
        )
        await producer.start()
        try:
            md = await producer.send_and_wait(topic, value=b"after", partition=0)
        finally:
            await producer.stop()
        print(f"PRODUCED {md.offset}", flush=True)
        await read_to(md.offset + 1)
    finally:
        await consumer.stop()


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
