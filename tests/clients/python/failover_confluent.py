"""Idempotent producer (confluent-kafka, i.e. librdkafka) for tests/tests/replication_clients.rs:
writes unique values to every partition of a replicated topic while the test kills leaders, and
prints one JSON line per event so the test can check what the log holds afterwards.

Usage: .venv/bin/python failover_confluent.py HOST:PORT[,HOST:PORT...] TOPIC
           [--partitions 3] [--rate 150] [--seconds 20] [--prefix cf] [--flush-timeout 40]
           [--debug topic,msg]

Value i is "<prefix>-<i:06>", sent to partition i % partitions (explicit partition, so the
test knows where each value was sent). Output lines (stdout):
  {"start": unix_secs}                         first: when t = 0
  {"sent": i, "t": secs}                       every 100th produce() call (progress)
  {"value": v, "partition": p, "offset": o, "t": secs}      a successful delivery report
  {"value": v, "partition": p, "failed": "ERR", "retriable": b, "t": secs}  a failed one
  {"client_error": "ERR", "fatal": b, "t": secs}            librdkafka's error callback
  {"done": true, "prefix": P, "sent": n, "delivered": d, "failed": f, "left": q, "client": "..."}
`t` is seconds since the start. Exit status 0 whatever the deliveries did: the test judges.
"""

import argparse
import json
import sys
import time

import confluent_kafka
from confluent_kafka import KafkaException, Producer

ap = argparse.ArgumentParser()
ap.add_argument("bootstrap")
ap.add_argument("topic")
ap.add_argument("--partitions", type=int, default=3)
ap.add_argument("--rate", type=float, default=150.0, help="produce() calls per second")
ap.add_argument("--seconds", type=float, default=20.0, help="how long to keep producing")
ap.add_argument("--prefix", default="cf")
ap.add_argument("--flush-timeout", type=float, default=40.0)
ap.add_argument("--debug", default="topic,msg", help="librdkafka debug contexts (logged to stderr)")
args = ap.parse_args()

start = time.monotonic()
print(json.dumps({"start": time.time()}), flush=True)  # the test aligns its kill times with t


def emit(**fields):
    fields["t"] = round(time.monotonic() - start, 3)
    print(json.dumps(fields), flush=True)


def on_error(err):
    # Connection refused / all brokers down / fatal idempotence errors land here.
    emit(client_error=str(err), fatal=err.fatal())


producer = Producer(
    {
        "bootstrap.servers": args.bootstrap,
        "client.id": "runnel-failover-confluent",
        # The subject: librdkafka's idempotent producer (acks=all, infinite retries, in-order
        # per partition, sequence numbers so the broker can drop retried duplicates).
        "enable.idempotence": True,
        "acks": "all",
        # Long enough to outlast two failovers; a message not delivered by then fails.
        "message.timeout.ms": 45000,
        "request.timeout.ms": 5000,
        "retry.backoff.ms": 100,
        "retry.backoff.max.ms": 500,
        # Rediscover leaders quickly (librdkafka also refreshes on NOT_LEADER_OR_FOLLOWER).
        "topic.metadata.refresh.interval.ms": 1000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "linger.ms": 5,
        "error_cb": on_error,
        # Leader changes and per-batch produce errors (NOT_LEADER_OR_FOLLOWER, ...) on stderr.
        **({"debug": args.debug} if args.debug else {}),
    }
)

counts = {"delivered": 0, "failed": 0}


def on_delivery(err, msg):
    value = msg.value().decode()
    if err is None:
        counts["delivered"] += 1
        emit(value=value, partition=msg.partition(), offset=msg.offset())
    else:
        counts["failed"] += 1
        emit(value=value, partition=msg.partition(), failed=str(err), retriable=err.retriable())


sent = 0
interval = 1.0 / args.rate
while time.monotonic() - start < args.seconds:
    value = f"{args.prefix}-{sent:06}"
    while True:
        try:
            producer.produce(args.topic, value=value.encode(), partition=sent % args.partitions, on_delivery=on_delivery)
            break
        except BufferError:
            producer.poll(0.1)  # local queue full: wait for deliveries
        except KafkaException as e:  # e.g. a fatal idempotence error: stop, report it
            emit(client_error=f"produce: {e}", fatal=True)
            break
    sent += 1
    if sent % 100 == 0:
        emit(sent=sent)
    # Pace the calls; poll() serves delivery reports meanwhile.
    next_at = start + sent * interval
    producer.poll(max(0.0, next_at - time.monotonic()))

left = producer.flush(args.flush_timeout)
emit(
    done=True,
    prefix=args.prefix,
    sent=sent,
    delivered=counts["delivered"],
    failed=counts["failed"],
    left=left,
    client=f"confluent-kafka {confluent_kafka.version()} librdkafka {confluent_kafka.libversion()[0]}",
)
sys.exit(0)
