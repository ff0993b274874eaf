"""Control batches with kafka-python: read partition 0 of TOPIC from the beginning with assign()
until the position reaches END (the partition ends with a control batch), then produce one
record and read on until it arrives. Driven by tests/tests/control_batches.rs.

Prints `RECORD <offset> <value>` per record, `POSITION <n>` each time the end is reached and
`PRODUCED <offset>`; exits 1 with `STALLED ...` if the position stops short of the end.

Usage: .venv/bin/python tests/clients/python/control_batches_kafka_python.py HOST:PORT TOPIC END
"""

import sys
import time

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

TIMEOUT_S = 30

bootstrap, topic, end = sys.argv[1], sys.argv[2], int(sys.argv[3])
print(f"[kafka-python {kafka.__version__}] bootstrap {bootstrap}, topic {topic}, end {end}", flush=True)
tp = TopicPartition(topic, 0)
consumer = KafkaConsumer(
    bootstrap_servers=bootstrap,
    client_id="runnel-control-batches-kafka-python",
    group_id=None,
    enable_auto_commit=False,
    fetch_max_wait_ms=100,
)
consumer.assign([tp])
consumer.seek_to_beginning(tp)


def read_to(target):
    deadline = time.monotonic() + TIMEOUT_S
    while consumer.position(tp) < target:
        if time.monotonic() > deadline:
            print(f"STALLED at position {consumer.position(tp)}, end {target}", flush=True)
            sys.exit(1)
        for rec in consumer.poll(timeout_ms=200).get(tp, []):
            print(f"RECORD {rec.offset} {rec.value.decode()}", flush=True)
    print(f"POSITION {consumer.position(tp)}", flush=True)


read_to(end)
producer = KafkaProducer(
    bootstrap_servers=bootstrap,
    client_id="runnel-control-batches-kafka-python",
    enable_idempotence=False,
    acks="all",
)
md = producer.send(topic, value=b"after", partition=0).get(timeout=TIMEOUT_S)
producer.close()
print(f"PRODUCED {md.offset}", flush=True)
read_to(md.offset + 1)
consumer.close()
