"""Idempotent producer (kafka-python) for tests/tests/replication_clients.rs: writes unique values
to every partition of a replicated topic while the test kills leaders, and prints one JSON line
per event so the test can check what the log holds afterwards.

Usage: .venv/bin/python failover_kafka_python.py HOST:PORT[,HOST:PORT...] TOPIC
           [--partitions 3] [--rate 150] [--seconds 20] [--prefix kp] [--flush-timeout 40]

Value i is "<prefix>-<i:06>", sent to partition i % partitions. Output lines (stdout), the same
protocol as failover_confluent.py:
  {"start": unix_secs}                                      first: when t = 0
  {"sent": i, "t": secs}                                    every 100th send() (progress)
  {"value": v, "partition": p, "offset": o, "t": secs}      a successful send
  {"value": v, "partition": p, "failed": "ERR", "retriable": b, "t": secs}  a failed one
  {"client_error": "ERR", "fatal": b, "t": secs}            send() itself raised
  {"done": true, "prefix": P, "sent": n, "delivered": d, "failed": f, "left": q, "client": "..."}
Exit status 0 whatever the deliveries did: the test judges.
"""

import argparse
import json
import logging
import sys
import threading
import time

import kafka
from kafka import KafkaProducer

ap = argparse.ArgumentParser()
ap.add_argument("bootstrap")
ap.add_argument("topic")
ap.add_argument("--partitions", type=int, default=3)
ap.add_argument("--rate", type=float, default=150.0, help="send() calls per second")
ap.add_argument("--seconds", type=float, default=20.0, help="how long to keep producing")
ap.add_argument("--prefix", default="kp")
ap.add_argument("--flush-timeout", type=float, default=40.0)
args = ap.parse_args()

# kafka-python logs its retries and metadata refreshes at WARNING/INFO: keep them on stderr,
# where the test prints them only on failure.
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(relativeCreated)d %(name)s %(levelname)s %(message)s")

start = time.monotonic()
print(json.dumps({"start": time.time()}), flush=True)  # the test aligns its kill times with t
lock = threading.Lock()  # callbacks run on the sender thread
counts = {"delivered": 0, "failed": 0}


def emit(**fields):
    fields["t"] = round(time.monotonic() - start, 3)
    line = json.dumps(fields)
    with lock:
        print(line, flush=True)


producer = KafkaProducer(
    bootstrap_servers=args.bootstrap.split(","),
    client_id="runnel-failover-kafka-python",
    # The subject: kafka-python's idempotent producer (3.x: on by default; explicit here).
    enable_idempotence=True,
    acks="all",
    retries=2**31 - 1,
    # Long enough to outlast two failovers; a send not done by then fails.
    delivery_timeout_ms=45000,
    request_timeout_ms=5000,
    retry_backoff_ms=100,
    reconnect_backoff_ms=50,
    reconnect_backoff_max_ms=500,
    metadata_max_age_ms=1000,
    linger_ms=5,
    max_block_ms=45000,
)


def delivered(value, meta):  # add_callback(f, *args) calls f(*args, result)
    with lock:
        counts["delivered"] += 1
    emit(value=value, partition=meta.partition, offset=meta.offset)


def failed(value, partition, exc):
    with lock:
        counts["failed"] += 1
    emit(value=value, partition=partition, failed=repr(exc), retriable=bool(getattr(exc, "retriable", False)))


sent = 0
interval = 1.0 / args.rate
while time.monotonic() - start < args.seconds:
    value = f"{args.prefix}-{sent:06}"
    partition = sent % args.partitions
    try:
        fut = producer.send(args.topic, value=value.encode(), partition=partition)
        fut.add_callback(delivered, value)
        fut.add_errback(failed, value, partition)
    except Exception as e:  # noqa: BLE001 - report whatever send() raises and go on
        emit(client_error=f"send {value}: {e!r}", fatal=False)
    sent += 1
    if sent % 100 == 0:
        emit(sent=sent)
    pause = start + sent * interval - time.monotonic()
    if pause > 0:
        time.sleep(pause)

try:
    producer.flush(timeout=args.flush_timeout)
except Exception as e:  # noqa: BLE001
    emit(client_error=f"flush: {e!r}", fatal=False)
with lock:
    done = dict(counts)
left = sent - done["delivered"] - done["failed"]
emit(done=True, prefix=args.prefix, sent=sent, delivered=done["delivered"], failed=done["failed"], left=left, client=f"kafka-python {kafka.__version__}")
producer.close(timeout=5)
sys.exit(0)
