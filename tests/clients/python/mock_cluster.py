"""Starts librdkafka's in-memory mock cluster (through confluent-kafka) and prints its bootstrap
address, for checking the client scripts without a runnel broker.

The mock auto-creates topics (so pass --no-create to the client scripts), has no CreateTopics,
answers ListOffsets by timestamp with -1, and mishandles an unsupported ApiVersions version
(kafka-python cannot bootstrap from it). See shared KAFKA-CLIENT-NOTES.md.

Usage: .venv/bin/python tests/clients/python/mock_cluster.py [--seconds N]
"""

import argparse
import logging
import re
import sys
import threading
import time

from confluent_kafka import Producer

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--seconds", type=float, default=600, help="how long to keep the cluster up")
args = ap.parse_args()

found = threading.Event()
addr = []


class Grab(logging.Handler):
    """librdkafka logs the mock's listener address; that is the only place it is exposed."""

    def emit(self, record):
        m = re.search(r"replaced with (\S+)", record.getMessage())
        if m and not found.is_set():
            addr.append(m.group(1))
            found.set()


log = logging.getLogger("mock")
log.addHandler(Grab())
log.setLevel(logging.DEBUG)
p = Producer({"bootstrap.servers": "unused:9092", "test.mock.num.brokers": 1, "logger": log})
p.poll(0)
if not found.wait(10):
    sys.exit("mock cluster address not found in librdkafka's log")
print(addr[0], flush=True)
end = time.monotonic() + args.seconds
while time.monotonic() < end:
    p.poll(1)
