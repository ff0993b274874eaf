"""Consumer-group member and idempotent producer for confluent-kafka-python (librdkafka): the
`member` and `produce` sub-commands of tests/clients/GROUPS.md, driven by tests/tests/groups.rs.

Usage: .venv/bin/python tests/clients/python/confluent_group.py member --bootstrap HOST:PORT
           --topic T --group G --name NAME [--session-timeout-ms 6000] [--strategy default|cooperative]
       .venv/bin/python tests/clients/python/confluent_group.py produce --bootstrap HOST:PORT
           --topic T --count N --partitions P [--prefix S]
"""

import sys

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

import group_common as gc

CLIENT = f"confluent-kafka {confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})"


def member(args):
    stop = gc.stop_on_sigterm()
    fatal = []

    def on_error(err):
        gc.log(f"client error: {err}")
        if err.fatal():
            fatal.append(err)

    conf = {
        "bootstrap.servers": args.bootstrap,
        "client.id": args.name,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 100,
        "error_cb": on_error,
    }
    cooperative = args.strategy == "cooperative"
    if cooperative:
        conf["partition.assignment.strategy"] = "cooperative-sticky"
    consumer = Consumer(conf)
    assignment = gc.Assignment()

    # The callbacks only record the change: when a callback does not call (incremental_)assign
    # itself, confluent-kafka does it afterwards with the same partitions. Under the eager
    # protocol the lists are full sets, under cooperative-sticky they are increments.
    def on_assign(_consumer, parts):
        ps = [tp.partition for tp in parts]
        if cooperative:
            assignment.add(ps)
        else:
            assignment.set(ps)

    def on_revoke(_consumer, parts):
        assignment.remove([tp.partition for tp in parts])

    def on_lost(_consumer, parts):
        assignment.remove([tp.partition for tp in parts], why="lost")

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    gc.emit("READY")

    while not stop.is_set() and not fatal:
        msgs = consumer.consume(num_messages=500, timeout=0.5)
        commits = gc.Commits()
        for m in msgs:
            err = m.error()
            if err is not None:
                gc.log(f"consume error: {err}")
                if err.fatal():
                    fatal.append(err)
                continue
            gc.emit(f"REC {m.partition()} {m.offset()} {gc.text(m.value())}")
            commits.consumed(m.partition(), m.offset())
        if not commits.next:
            continue
        offsets = [TopicPartition(args.topic, p, o) for p, o in commits.next.items()]
        try:
            result = consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            gc.log(f"commit {commits.next} failed: {e}")
            continue
        ok = []
        for tp in result or []:
            if tp.error is not None:
                gc.log(f"commit of partition {tp.partition} failed: {tp.error}")
            elif tp.partition in commits.next:
                ok.append(tp.partition)
        commits.committed(ok)

    if fatal:
        gc.log(f"fatal error: {fatal[0]}")
        sys.exit(1)
    consumer.close()  # leaves the group; eager and cooperative both call on_revoke first
    if assignment.partitions:
        assignment.clear()
    gc.emit("CLOSED")


def produce(args):
    failures = []
    acked = [0]

    def on_error(err):
        gc.log(f"client error: {err}")
        if err.fatal():
            failures.append(err)

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "client.id": "runnel-group-confluent-producer",
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "retries": 2147483647,
        "retry.backoff.ms": 100,
        "retry.backoff.max.ms": 500,
        "linger.ms": 5,
        # Small batches (a few dozen of these records) so that N records take many Produce
        # requests, some of which the test proxy cuts.
        "batch.size": 1024,
        "request.timeout.ms": 5000,
        "socket.timeout.ms": 10000,
        "message.timeout.ms": 120000,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
        "error_cb": on_error,
    })

    def on_delivery(err, msg):
        if err is not None:
            gc.log(f"delivery of {gc.text(msg.value())} to partition {msg.partition()} failed: {err}")
            failures.append(err)
            return
        acked[0] += 1
        gc.emit(f"ACKED {msg.partition()} {msg.offset()} {gc.text(msg.value())}")

    for i in range(args.count):
        while True:
            try:
                producer.produce(args.topic, key=gc.key_of(i), value=gc.value_of(args.prefix, i),
                                 partition=i % args.partitions, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    # Every message ends in a delivery report: acknowledged, or failed at message.timeout.ms.
    while len(producer) > 0:
        producer.flush(1.0)
    gc.log(f"{acked[0]} of {args.count} acknowledged, {len(failures)} failures")
    sys.exit(0 if acked[0] == args.count and not failures else 1)


def main():
    args = gc.parse_args(__doc__, CLIENT)
    if args.command == "member":
        member(args)
    else:
        produce(args)


if __name__ == "__main__":
    main()
