"""Produces deterministic records with kafka-python to one partition and prints each as one JSON
line (bytes in base64, with the offset the broker acknowledged), for tests/tests/grpc_interop.rs
to compare with what a gRPC subscriber reads.

Record i (i = FIRST .. FIRST+COUNT-1): key b"dev-<i>\\x00\\xff" (null when i % 9 == 4), value of
(i * 5) % 97 binary bytes (null when i % 13 == 6, unless the key is null too: kafka-python
refuses a record without both), headers seq=<i>, bin=00 ff <i%256> 80 and, when
i % 3 == 0, empty=b"", CreateTime timestamp T0 + 10 * i. acks=all, not idempotent.

Each line: {"partition": P, "offset": O, "timestamp": MS, "key": B64|null, "value": B64|null,
            "headers": [[NAME, B64|null], ...]}

Usage: .venv/bin/python tests/clients/python/grpc_produce.py HOST:PORT --topic T --partition P
       --first FIRST --count COUNT --t0 MS [--timeout S]
"""

import argparse
import base64
import json
import sys

from kafka import KafkaProducer


def b64(data):
    return None if data is None else base64.b64encode(data).decode("ascii")


def record(i, t0):
    key = None if i % 9 == 4 else b"dev-%d\x00\xff" % i
    value = None if i % 13 == 6 and key is not None else bytes((i * 7 + j) % 256 for j in range((i * 5) % 97))
    headers = [("seq", str(i).encode()), ("bin", bytes([0, 255, i % 256, 0x80]))]
    if i % 3 == 0:
        headers.append(("empty", b""))
    return key, value, headers, t0 + 10 * i


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partition", type=int, required=True)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--t0", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    producer = KafkaProducer(bootstrap_servers=args.bootstrap, client_id="runnel-grpc-produce",
                             enable_idempotence=False, acks="all", linger_ms=20,
                             request_timeout_ms=int(args.timeout * 1000))
    sent = []
    for i in range(args.first, args.first + args.count):
        key, value, headers, ts = record(i, args.t0)
        f = producer.send(args.topic, key=key, value=value, headers=headers,
                          partition=args.partition, timestamp_ms=ts)
        sent.append((key, value, headers, ts, f))
    producer.flush(timeout=args.timeout)
    for key, value, headers, ts, f in sent:
        md = f.get(timeout=args.timeout)
        print(json.dumps({
            "partition": md.partition,
            "offset": md.offset,
            "timestamp": ts,
            "key": b64(key),
            "value": b64(value),
            "headers": [[k, b64(v)] for k, v in headers],
        }), flush=True)
    producer.close(timeout=args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
