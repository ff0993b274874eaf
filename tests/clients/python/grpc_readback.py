"""Reads partitions of a topic from the beginning with kafka-python and prints every record as one
JSON line, bytes in base64, for tests/tests/grpc_interop.rs to compare with what it published
over gRPC.

Each line: {"partition": P, "offset": O, "timestamp": MS, "timestamp_type": T,
            "key": B64|null, "value": B64|null, "headers": [[NAME, B64|null], ...]}
Manual assignment (no consumer group); each partition is read up to its end offset at start.

Usage: .venv/bin/python tests/clients/python/grpc_readback.py HOST:PORT --topic T --partitions 0,1,2 [--timeout S]
"""

import argparse
import base64
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def b64(data):
    return None if data is None else base64.b64encode(data).decode("ascii")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", required=True, help="comma-separated partition numbers")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    parts = [TopicPartition(args.topic, int(p)) for p in args.partitions.split(",")]

    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, client_id="runnel-grpc-readback",
                             group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100,
                             auto_offset_reset="earliest",
                             request_timeout_ms=int(args.timeout * 1000))
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    end = consumer.end_offsets(parts)
    position = {tp: 0 for tp in parts}
    deadline = time.monotonic() + args.timeout
    while any(position[tp] < end[tp] for tp in parts):
        if time.monotonic() > deadline:
            missing = {tp.partition: (position[tp], end[tp]) for tp in parts if position[tp] < end[tp]}
            print(f"timed out; partition: (next offset, end offset) = {missing}", file=sys.stderr)
            return 1
        for tp, recs in consumer.poll(timeout_ms=500).items():
            for r in recs:
                if r.offset >= end[tp]:
                    continue
                print(json.dumps({
                    "partition": r.partition,
                    "offset": r.offset,
                    "timestamp": r.timestamp,
                    "timestamp_type": r.timestamp_type,
                    "key": b64(r.key),
                    "value": b64(r.value),
                    "headers": [[k, b64(v)] for k, v in r.headers],
                }), flush=True)
                position[tp] = r.offset + 1
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
