"""Consumer-group member and idempotent producer for kafka-python 3.x: the `member` and
`produce` sub-commands of tests/clients/GROUPS.md, driven by tests/tests/groups.rs.

The member uses the client's default assignors (range, roundrobin; eager protocol).
`--strategy cooperative` is rejected with exit status 2: kafka-python 3.0.12 does have a
cooperative-sticky assignor, but after its membership is lost (UNKNOWN_MEMBER_ID, e.g. across a
broker restart) it still advertises the partitions it lost as owned, so the leader holds them
back for a second round that never comes and they stay unassigned.

Usage: .venv/bin/python tests/clients/python/kafka_python_group.py member --bootstrap HOST:PORT
           --topic T --group G --name NAME [--session-timeout-ms 6000]
       .venv/bin/python tests/clients/python/kafka_python_group.py produce --bootstrap HOST:PORT
           --topic T --count N --partitions P [--prefix S]
"""

import sys
import threading

import kafka
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

import group_common as gc

CLIENT = f"kafka-python {kafka.__version__}"


def member(args):
    stop = gc.stop_on_sigterm()
    consumer = KafkaConsumer(**gc.member_config(args))
    assignment = gc.Assignment()
    consumer.subscribe([args.topic], listener=gc.eager_listener(ConsumerRebalanceListener, assignment))
    gc.emit("READY")

    while not stop.is_set():
        try:
            batches = consumer.poll(timeout_ms=500, max_records=500)
        except KafkaError as e:
            if not e.retriable:
                raise
            gc.log(f"poll error: {e!r}")
            continue
        commits = gc.Commits.of_poll(batches)
        if not commits.next:
            continue
        offsets = {TopicPartition(args.topic, p): OffsetAndMetadata(o, "", -1)
                   for p, o in commits.next.items()}
        try:
            consumer.commit(offsets, timeout_ms=10000)
        except KafkaError as e:  # CommitFailedError after a rebalance, timeouts, ...
            gc.log(f"commit {commits.next} failed: {e!r}")
            continue
        commits.committed()

    consumer.close()  # calls on_partitions_revoked, then sends LeaveGroup
    if assignment.partitions:
        assignment.clear()
    gc.emit("CLOSED")


def produce(args):
    lock = threading.Lock()
    acked = [0]
    failures = []
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        client_id="runnel-group-kafka-python-producer",
        enable_idempotence=True,
        acks="all",
        retries=2147483647,
        max_in_flight_requests_per_connection=5,
        linger_ms=5,
        # Small batches (a few dozen of these records) so that N records take many Produce
        # requests, some of which the test proxy cuts.
        batch_size=1024,
        request_timeout_ms=5000,
        retry_backoff_ms=100,
        delivery_timeout_ms=120000,
        reconnect_backoff_ms=50,
        reconnect_backoff_max_ms=1000,
    )

    # Callbacks run on the producer's I/O thread; add_callback passes its extra arguments first.
    def on_ack(value, md):
        with lock:
            acked[0] += 1
        gc.emit(f"ACKED {md.partition} {md.offset} {value}")

    def on_fail(value, partition, exc):
        gc.log(f"delivery of {value} to partition {partition} failed: {exc!r}")
        with lock:
            failures.append(exc)

    for i in range(args.count):
        value = gc.value_of(args.prefix, i)
        p = i % args.partitions
        fut = producer.send(args.topic, key=gc.key_of(i), value=value, partition=p)
        fut.add_callback(on_ack, gc.text(value))
        fut.add_errback(on_fail, gc.text(value), p)
    producer.flush()
    producer.close()
    gc.log(f"{acked[0]} of {args.count} acknowledged, {len(failures)} failures")
    sys.exit(0 if acked[0] == args.count and not failures else 1)


def main():
    args = gc.parse_args(__doc__, CLIENT)
    if args.command == "member":
        if args.strategy == "cooperative":
            gc.log("kafka-python: --strategy cooperative is not supported (see the module docstring)")
            sys.exit(2)
        member(args)
    else:
        produce(args)


if __name__ == "__main__":
    main()
