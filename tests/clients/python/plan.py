"""The conformance plan shared by the Python clients: which records to produce, and checks.

Every client script produces the same shape of data: for each compression codec, for each of
PARTITIONS partitions, PER_CODEC keyed records with headers and an explicit CreateTime
timestamp, sent to an explicit partition. Offsets in each partition are then
codec_index * PER_CODEC + j, and a record's timestamp is ts_of(offset).

The checks collect every mismatch in a Report, which prints a readable diff and exits
non-zero at the end, so one run shows everything that is wrong.
"""

import argparse
import sys
import time

ALL_CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3
PER_CODEC = 4
# Record timestamps: an hour ago, on a whole second, one second per offset. Far enough in
# the past that "now" is after every record, recent enough for any retention default.
T0 = (int(time.time()) - 3600) * 1000


def ts_of(offset):
    return T0 + offset * 1000


def key_of(codec, p, j):
    return f"key-{codec}-{p}-{j}".encode()


def value_of(codec, p, j):
    # Values grow with j so that compressed batches hold records of different sizes.
    return f"value-{codec}-{p}-{j}|".encode() + b"0123456789abcdef" * (8 * j) + bytes([j, 0, 255])


def headers_of(codec, p, j):
    # A repeated key checks that header order and duplicates survive; an empty value too.
    return [
        ("codec", codec.encode()),
        ("pj", f"{p}-{j}".encode()),
        ("dup", b"first"),
        ("dup", b"second"),
        ("empty", b""),
    ]


class Expected:
    """One record as the plan says it must come back."""

    def __init__(self, codec_index, codec, p, j):
        self.partition = p
        self.offset = codec_index * PER_CODEC + j
        self.key = key_of(codec, p, j)
        self.value = value_of(codec, p, j)
        self.headers = headers_of(codec, p, j)
        self.timestamp = ts_of(self.offset)
        self.codec = codec
        self.j = j


def plan(codecs):
    """{partition: [Expected, ...] in offset order}"""
    out = {p: [] for p in range(PARTITIONS)}
    for ci, codec in enumerate(codecs):
        for p in range(PARTITIONS):
            for j in range(PER_CODEC):
                out[p].append(Expected(ci, codec, p, j))
    return out


def total_per_partition(codecs):
    return len(codecs) * PER_CODEC


class Report:
    def __init__(self, client):
        self.client = client
        self.errors = []
        self.checks = 0

    def check(self, ok, what):
        self.checks += 1
        if not ok:
            self.errors.append(what)
            print(f"MISMATCH {what}", flush=True)
        return ok

    def eq(self, what, expected, actual):
        return self.check(expected == actual, f"{what}: expected {expected!r}, got {actual!r}")

    def step(self, msg):
        print(f"[{self.client}] {msg}", flush=True)

    def records(self, p, expected, got, start_index=0):
        """Compares consumed records of partition p with the plan, field by field.

        got: list of dicts with partition, offset, key, value, headers, timestamp.
        """
        exp = expected[start_index:]
        self.eq(f"partition {p}: number of records consumed", len(exp), len(got))
        for e, g in zip(exp, got):
            where = f"partition {p} record #{e.offset} ({e.codec}, j={e.j})"
            self.eq(f"{where} partition", e.partition, g["partition"])
            self.eq(f"{where} offset", e.offset, g["offset"])
            self.eq(f"{where} key", e.key, g["key"])
            self.eq(f"{where} value", e.value, g["value"])
            self.eq(f"{where} headers", e.headers, g["headers"])
            self.eq(f"{where} timestamp", e.timestamp, g["timestamp"])

    def finish(self):
        if self.errors:
            print(f"FAILED {self.client}: {len(self.errors)} of {self.checks} checks failed", flush=True)
            for e in self.errors:
                print(f"  - {e}", flush=True)
            sys.exit(1)
        print(f"OK {self.client}: {self.checks} checks passed", flush=True)


def parse_args(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("bootstrap", help="host:port of the broker")
    ap.add_argument("--topic", default=f"conf-py-{int(time.time() * 1000)}")
    ap.add_argument(
        "--no-create",
        action="store_true",
        help="do not create the topic (rely on auto-creation, e.g. librdkafka's mock cluster)",
    )
    ap.add_argument("--codecs", default=",".join(ALL_CODECS), help="comma-separated codecs to produce")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds for each wait")
    args = ap.parse_args()
    args.codecs = [c for c in args.codecs.split(",") if c]
    for c in args.codecs:
        if c not in ALL_CODECS:
            ap.error(f"unknown codec {c}")
    return args


def offsets_for_times_cases(codecs, none_value):
    """[(timestamp, expected offset)] for ListOffsets by timestamp on any partition.

    Kafka answers with the first offset whose timestamp is >= the one asked for, and with
    "none" (offset -1, which each client maps to its own none_value) past the last record.
    """
    total = total_per_partition(codecs)
    cases = [(ts_of(0) - 10_000, 0), (ts_of(0), 0)]
    for k in sorted({1, PER_CODEC, PER_CODEC + 1, total - 1}):
        if 0 < k < total:
            cases.append((ts_of(k), k))  # exact timestamp of record k
            cases.append((ts_of(k) - 500, k))  # between record k-1 and k
    cases.append((ts_of(total - 1) + 500, none_value))  # after every record
    return cases


def check_offsets_for_times(report, p, codecs, lookup, none_value):
    """Checks ListOffsets by timestamp through `lookup(p, ts) -> offset or none_value`."""
    for ts, want in offsets_for_times_cases(codecs, none_value):
        report.eq(f"partition {p}: offset for timestamp {ts} (T0{ts - T0:+d}ms)", want, lookup(p, ts))
