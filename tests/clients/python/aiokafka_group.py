"""Consumer-group member and idempotent producer for aiokafka: the `member` and `produce`
sub-commands of tests/clients/GROUPS.md, driven by tests/tests/groups.rs.

aiokafka only has eager assignors (its default is roundrobin), so `--strategy cooperative` is
rejected with exit status 2.

Usage: .venv/bin/python tests/clients/python/aiokafka_group.py member --bootstrap HOST:PORT
           --topic T --group G --name NAME [--session-timeout-ms 6000]
       .venv/bin/python tests/clients/python/aiokafka_group.py produce --bootstrap HOST:PORT
           --topic T --count N --partitions P [--prefix S]
"""

import asyncio
import signal
import sys

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

import group_common as gc

CLIENT = f"aiokafka {aiokafka.__version__}"



def stop_event():
    stop = asyncio.Event()

    def handler(signum):
        gc.log(f"got signal {signum}, closing")
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler, sig)
    return stop


async def member(args):
    stop = stop_event()
    consumer = AIOKafkaConsumer(**gc.member_config(args))
    # Subscribing before start() would make start() wait for the first assignment (ASSIGN
    # before READY); subscribed after it, the group is joined in the background.
    await consumer.start()
    assignment = gc.Assignment()
    consumer.subscribe([args.topic], listener=gc.eager_listener(ConsumerRebalanceListener, assignment))
    gc.emit("READY")

    while not stop.is_set():  # getmany returns within 500 ms, so SIGTERM is seen quickly
        try:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
        except KafkaError as e:
            if not e.retriable:
                raise
            gc.log(f"poll error: {e!r}")
            continue
        commits = gc.Commits.of_poll(batches)
        if not commits.next:
            continue
        offsets = {TopicPartition(args.topic, p): o for p, o in commits.next.items()}
        try:
            await consumer.commit(offsets)
        except KafkaError as e:  # CommitFailedError after a rebalance, IllegalStateError, ...
            gc.log(f"commit {commits.next} failed: {e!r}")
            continue
        commits.committed()

    await consumer.stop()  # sends LeaveGroup; does not call the listener
    if assignment.partitions:
        assignment.clear()
    gc.emit("CLOSED")


async def produce(args):
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        client_id="runnel-group-aiokafka-producer",
        enable_idempotence=True,  # implies acks=all; with it batches never expire, retries are unbounded
        acks="all",
        linger_ms=5,
        # Small batches (a few dozen of these records) so that N records take many Produce
        # requests, some of which the test proxy cuts.
        max_batch_size=1024,
        request_timeout_ms=5000,
        retry_backoff_ms=100,
    )
    await producer.start()
    acked = 0
    failures = 0

    def done(fut, partition, value):
        nonlocal acked, failures
        if fut.cancelled() or fut.exception() is not None:
            failures += 1
            gc.log(f"delivery of {value} to partition {partition} failed: "
                   f"{'cancelled' if fut.cancelled() else repr(fut.exception())}")
            return
        md = fut.result()
        acked += 1
        gc.emit(f"ACKED {md.partition} {md.offset} {value}")

    try:
        futures = []
        for i in range(args.count):
            value = gc.value_of(args.prefix, i)
            p = i % args.partitions
            fut = await producer.send(args.topic, key=gc.key_of(i), value=value, partition=p)
            fut.add_done_callback(lambda f, p=p, v=gc.text(value): done(f, p, v))
            futures.append(fut)
        await producer.flush()
        await asyncio.gather(*futures, return_exceptions=True)
        await asyncio.sleep(0)  # let the last done callbacks run
    finally:
        await producer.stop()
    gc.log(f"{acked} of {args.count} acknowledged, {failures} failures")
    return 0 if acked == args.count and failures == 0 else 1


def main():
    args = gc.parse_args(__doc__, CLIENT)
    if args.command == "member":
        if args.strategy == "cooperative":
            gc.log("aiokafka has no cooperative-sticky assignor; --strategy cooperative is not supported")
            sys.exit(2)
        asyncio.run(member(args))
    else:
        sys.exit(asyncio.run(produce(args)))


if __name__ == "__main__":
    main()
