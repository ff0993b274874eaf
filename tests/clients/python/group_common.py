"""Helpers shared by the consumer-group programs (confluent_group.py, kafka_python_group.py,
aiokafka_group.py): the command line of tests/clients/GROUPS.md, the stdout line protocol,
assignment tracking and SIGTERM handling.

stdout carries only protocol lines, each flushed at once; everything else goes to stderr.
"""

import argparse
import logging
import signal
import sys
import threading
import time

_out_lock = threading.Lock()
_t0 = time.monotonic()


def emit(line):
    """Prints one protocol line on stdout and flushes it (callable from any thread)."""
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def log(msg):
    """A diagnostic line on stderr, with seconds since start."""
    sys.stderr.write(f"[{time.monotonic() - _t0:8.3f}] {msg}\n")
    sys.stderr.flush()


def key_of(i):
    return f"k-{i}".encode()


def value_of(prefix, i):
    return f"{prefix}-{i}".encode()


def text(value):
    """A record value as printed in REC lines (UTF-8; a null value prints as empty)."""
    return (value or b"").decode("utf-8", "replace")


def parse_args(description, client):
    """Parses `member ...` or `produce ...` as GROUPS.md defines them."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    m = sub.add_parser("member", help="join a consumer group and consume until SIGTERM")
    m.add_argument("--bootstrap", required=True, help="host:port of the broker")
    m.add_argument("--topic", required=True)
    m.add_argument("--group", required=True)
    m.add_argument("--name", required=True, help="client id of this member")
    m.add_argument("--session-timeout-ms", type=int, default=6000)
    m.add_argument("--strategy", choices=["default", "cooperative"], default="default")

    p = sub.add_parser("produce", help="send COUNT records with an idempotent producer")
    p.add_argument("--bootstrap", required=True, help="host:port of the broker")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--prefix", default="idem")

    args = ap.parse_args()
    if args.command == "produce" and (args.count < 0 or args.partitions < 1):
        ap.error("--count must be >= 0 and --partitions >= 1")
    # Client libraries log through `logging`; keep that on stderr, warnings and up.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format=f"%(asctime)s {client} %(name)s %(levelname)s %(message)s")
    log(f"{client}: {args.command} {vars(args)}")
    return args


def stop_on_sigterm():
    """A threading.Event set by SIGTERM (and SIGINT) instead of the default exit."""
    stop = threading.Event()

    def handler(signum, _frame):
        log(f"got signal {signum}, closing")
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


class Assignment:
    """The member's current partitions, printing `ASSIGN ...` whenever they change.

    Eager clients revoke everything and then get their full new set, so a rebalance prints
    `ASSIGN -` followed by the new set (when the member held partitions). The first
    assignment is printed even when it is empty, so a member without partitions still
    reports that it joined.
    """

    def __init__(self):
        self.partitions = set()
        self._reported = False
        self._lock = threading.Lock()

    def line(self):
        return "ASSIGN " + (",".join(str(p) for p in sorted(self.partitions)) or "-")

    def _update(self, new, why, force=False):
        with self._lock:
            new = set(new)
            changed = new != self.partitions
            self.partitions = new
            log(f"{why}: now {sorted(new)}")
            if changed or force:
                self._reported = True
                emit(self.line())

    def set(self, partitions, why="assigned"):
        """Replaces the whole assignment (eager protocol)."""
        self._update(partitions, why, force=not self._reported)

    def add(self, partitions, why="incrementally assigned"):
        self._update(self.partitions | set(partitions), why, force=not self._reported)

    def remove(self, partitions, why="revoked"):
        self._update(self.partitions - set(partitions), why)

    def clear(self, why="closed"):
        self._update(set(), why)


def member_config(args):
    """Consumer settings of a `member` (GROUPS.md) in the keyword names kafka-python and
    aiokafka share: auto-commit off, earliest, the given session timeout, 1 s heartbeats."""
    return dict(
        bootstrap_servers=args.bootstrap,
        client_id=args.name,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=100,
    )


def eager_listener(base, assignment):
    """A rebalance listener (subclass of the client's `base` listener class) for the eager
    protocol: revoked gets the whole old set before a rejoin, assigned the new one."""

    class Listener(base):
        def on_partitions_revoked(self, revoked):
            assignment.remove([tp.partition for tp in revoked])

        def on_partitions_assigned(self, assigned):
            assignment.set([tp.partition for tp in assigned])

        def on_partitions_lost(self, lost):
            # kafka-python calls this when the membership was lost (not aiokafka).
            assignment.remove([tp.partition for tp in lost], why="lost")

    return Listener()


class Commits:
    """Next offsets of the partitions consumed in one poll."""

    def __init__(self):
        self.next = {}

    def consumed(self, partition, offset):
        self.next[partition] = offset + 1

    @classmethod
    def of_poll(cls, batches):
        """Prints the REC lines of a kafka-python / aiokafka poll result ({tp: [records]}) and
        returns what to commit for it."""
        commits = cls()
        for tp in sorted(batches):
            for r in batches[tp]:
                emit(f"REC {r.partition} {r.offset} {text(r.value)}")
                commits.consumed(r.partition, r.offset)
        return commits

    def committed(self, partitions=None):
        """Prints COMMIT lines for the partitions whose commit succeeded (default all)."""
        for p in sorted(self.next if partitions is None else partitions):
            emit(f"COMMIT {p} {self.next[p]}")
