#!/usr/bin/env python3
"""Consumer-group rebalance timings against a running broker, with real librdkafka members.

Starts group members (the rdkafka crate's `rdkafka_group member` program, which prints the
tests/clients/GROUPS.md line protocol) and times, per round, with a fresh group each round:
  join   : spawn of 3 members -> every member has consumed a record (range assignor, 2 of 6
           partitions each); includes the broker's initial rebalance delay (3 s, KIP-134)
  leave  : SIGTERM to one member -> the two others own all 6 partitions
  failure: SIGKILL to one member -> the survivor owns all 6 partitions (session timeout 6 s)
Prints one line per round and the medians.

usage: group_rebalance.py BOOTSTRAP TOPIC RDKAFKA_GROUP_BIN [--rounds N] [--strategy S]
The topic must exist with 6 partitions and hold records in every partition.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

PARTITIONS = set(range(6))


class Member:
    """One member process; its stdout is parsed on a thread into timestamped state."""

    def __init__(self, binary, bootstrap, topic, group, name, strategy):
        self.name = name
        self.assigned = set()
        self.first_record = None
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            [binary, "member", "--bootstrap", bootstrap, "--topic", topic, "--group", group,
             "--name", name, "--strategy", strategy],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            now = time.monotonic()
            words = line.split()
            with self.lock:
                if words[:1] == ["ASSIGN"]:
                    self.assigned = set() if words[1] == "-" else {int(p) for p in words[1].split(",")}
                elif words[:1] == ["REC"] and self.first_record is None:
                    self.first_record = now

    def state(self):
        with self.lock:
            return set(self.assigned), self.first_record

    def stop(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.005)
    raise TimeoutError("condition not reached within %.0f s" % timeout)


def covers(members):
    union = set()
    for m in members:
        assigned, _ = m.state()
        if not assigned or union & assigned:
            return False
        union |= assigned
    return union == PARTITIONS


def one_round(args, n):
    group = "bench-rebalance-%d-%d" % (os.getpid(), n)
    start = time.monotonic()
    members = [Member(args.binary, args.bootstrap, args.topic, group, name, args.strategy)
               for name in ("a", "b", "c")]
    try:
        joined = wait_until(lambda: all(m.state()[1] is not None for m in members) and covers(members))
        t = time.monotonic()
        members[2].stop(signal.SIGTERM)
        left = wait_until(lambda: covers(members[:2])) - t
        t = time.monotonic()
        members[1].stop(signal.SIGKILL)
        failed = wait_until(lambda: covers(members[:1])) - t
    finally:
        for m in members:
            m.stop(signal.SIGKILL)
    return joined - start, left, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("binary")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--strategy", choices=["default", "cooperative"], default="default")
    args = ap.parse_args()
    rows = []
    for n in range(args.rounds):
        join, leave, fail = one_round(args, n)
        rows.append((join, leave, fail))
        print("round %d: join %.3f s, leave %.3f s, failure %.3f s" % (n + 1, join, leave, fail),
              flush=True)
    med = [statistics.median(col) for col in zip(*rows)]
    print("median (%s, %d rounds): join %.3f s, leave %.3f s, failure %.3f s"
          % (args.strategy, args.rounds, *med))


if __name__ == "__main__":
    sys.exit(main())
