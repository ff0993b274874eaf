"""Split rdkafka_performance's per-record produce latency into where it was spent, from a
loopback packet capture of the run. Used by benches/kafka_throughput.sh (WIRE=1).

    python3 benches/wire_split.py PCAP BROKER_PORT LATENCY_FILE
    python3 benches/wire_split.py --self-test

PCAP: `tcpdump -i lo -s 0 -w PCAP tcp port BROKER_PORT` over the run (whole packets: the
TCP streams are reassembled, since frames may share or span segments). LATENCY_FILE:
rdkafka_performance's `-l -A FILE`, one latency in µs per record, in delivery order (the
order of the requests, while each request carries one partition's batch; a request with more
fails the split). Each record's value starts with
"LATENCY:<µs>", its produce() time on the wall clock, which is the clock of the capture.

For each record, three parts that add up to its latency:
- held: from produce() to the packet of the Produce request that carries it (the client's
  own queueing and its thread wake-ups);
- wire: from that request's packet to its response's packet (the broker, fsync included,
  and the loopback);
- after: from the response's packet to the delivery report (the client again).
A record's produce() time is known for the first record of each request (its payload); all
records of a request are reported together, so a later one's produce() time is the
request's report time minus its own latency.

Prints one line: `n=N | total: p50 p99 | held: p50 p99 | wire: p50 p99 | after: p50 p99 |
over1ms=K held=a wire=b after=c | requests=R multi=M`, in ms, where the records over 1 ms
are counted by their largest part. Exits non-zero, saying why, when the capture and the
latency file do not match (dropped packets, another topic's traffic).
"""
import math
import struct
import sys

PRODUCE = 0
MARK = b"LATENCY:"


class Short(Exception):
    """The captured bytes end before the field."""


class Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n):
        if self.pos + n > len(self.buf):
            raise Short
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self, fmt):
        return struct.unpack(">" + fmt, self.take(struct.calcsize(fmt)))[0]

    def uvarint(self):
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def skip_string(self, compact):
        n = self.uvarint() - 1 if compact else self.int("h")
        if n > 0:
            self.take(n)

    def skip_tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def produce_batch(payload):
    """(correlation id, first batch's offset in payload) of a Produce request frame at the
    start of payload, or None if it is another API. Versions 3-9 (9 is flexible)."""
    r = Reader(payload)
    r.int("i")  # frame size
    api, version, corr = r.int("h"), r.int("h"), r.int("i")
    if api != PRODUCE:
        return None
    flexible = version >= 9
    r.skip_string(False)  # client id: a plain nullable string even in header v2
    if flexible:
        r.skip_tags()
    r.skip_string(flexible)  # transactional id
    r.int("h")  # acks
    r.int("i")  # timeout
    # Records are matched to delivery reports in request order, which holds only while each
    # request carries one partition's batch.
    topics = r.uvarint() - 1 if flexible else r.int("i")
    if topics != 1:
        raise ValueError(f"a produce request for {topics} topics (the split needs one)")
    r.skip_string(flexible)  # topic name
    partitions = r.uvarint() - 1 if flexible else r.int("i")
    if partitions != 1:
        raise ValueError(f"a produce request for {partitions} partitions (the split needs one)")
    r.int("i")  # partition index
    size = r.uvarint() - 1 if flexible else r.int("i")
    if size < 61:
        raise ValueError(f"record set of {size} bytes")
    return corr, r.pos


def first_record(payload, batch):
    """(records in the batch, the first record's produce() time in µs) of the v2 batch at
    `batch`: the count is in the batch header, the time in the first value."""
    r = Reader(payload)
    r.pos = batch + 16
    if r.int("b") != 2:
        raise ValueError("not a v2 record batch")
    r.pos = batch + 57
    count = r.int("i")
    at = payload.find(MARK, batch + 61)
    if at < 0:
        raise Short
    end = at + len(MARK)
    while end < len(payload) and payload[end : end + 1].isdigit():
        end += 1
    if end == len(payload):
        raise Short
    return count, int(payload[at + len(MARK) : end])


def packets(data):
    """(time in µs, source port, destination port, TCP sequence number, SYN?, TCP payload) of
    each TCP/IPv4 packet with data or SYN in a pcap file."""
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise SystemExit("not a little-endian pcap file")
    per_us = 1000 if magic == 0xA1B23C4D else 1
    link = struct.unpack("<I", data[20:24])[0]
    skip = {1: 14, 113: 16, 0: 4}.get(link)
    if skip is None:
        raise SystemExit(f"unsupported link type {link}")
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack("<IIII", data[pos : pos + 16])
        pkt = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        ip = pkt[skip:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:]
        if len(tcp) < 20:
            continue
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        doff = (tcp[12] >> 4) * 4
        syn = bool(tcp[13] & 0x02)
        if total - ihl - doff <= 0 and not syn:
            continue
        if incl < orig:
            raise SystemExit("packets were cut short in the capture: capture whole packets (-s 0)")
        yield sec * 1_000_000 + frac / per_us, sport, dport, seq, syn, tcp[doff : total - ihl]


def frames(data, port):
    """Each direction of each connection to `port` reassembled and cut into Kafka frames:
    yields (to the broker?, frame, time of the packet that completed it)."""
    streams = {}  # (source port, destination port) -> [next sequence number, bytes, [(end, time)]]
    for t, sport, dport, seq, syn, payload in packets(data):
        if port not in (sport, dport):
            continue
        if syn:
            # a connection opens: its data starts at a frame boundary (a connection already
            # open when the capture began is left out: where its frames start is unknown)
            streams[(sport, dport)] = [(seq + 1) % (1 << 32), bytearray(), []]
            continue
        st = streams.get((sport, dport))
        if st is None:
            continue
        ahead = (seq - st[0]) % (1 << 32)
        if ahead >= 1 << 31:  # (part of) a retransmission of bytes already taken
            payload = payload[(st[0] - seq) % (1 << 32) :]
        elif ahead > 0:
            raise SystemExit("the capture lost packets (a gap in a TCP stream): rerun")
        if not payload:
            continue
        st[0] = (st[0] + len(payload)) % (1 << 32)
        st[1] += payload
        st[2].append((len(st[1]), t))
    for (sport, dport), (_, buf, ends) in streams.items():
        at, i = 0, 0
        while at + 4 <= len(buf):
            size = struct.unpack(">i", buf[at : at + 4])[0]
            if size < 0 or at + 4 + size > len(buf):
                break
            end = at + 4 + size
            while ends[i][0] < end:
                i += 1
            yield dport == port, bytes(buf[at:end]), ends[i][1]
            at = end


def exchanges(data, port):
    """Produce requests in the order sent: (correlation id, request time, records, first
    produce() time), and {correlation id: response time}."""
    requests, answered = [], {}
    for to_broker, frame, t in frames(data, port):
        if len(frame) < 12:
            continue
        if to_broker:
            try:
                found = produce_batch(frame)
            except (Short, ValueError) as e:
                raise SystemExit(f"a malformed Produce request in the capture ({e!r})")
            if found is None:
                continue
            corr, batch = found
            try:
                count, produced = first_record(frame, batch)
            except (Short, ValueError) as e:
                raise SystemExit(f"Produce request {corr}: no v2 batch with a LATENCY record ({e!r})")
            requests.append((corr, t, count, produced))
        else:
            answered.setdefault(struct.unpack(">i", frame[4:8])[0], t)
    requests.sort(key=lambda r: r[1])
    return requests, answered


def split(requests, answered, latencies):
    """(total, held, wire, after) in µs of each record of the last requests that hold
    exactly len(latencies) records (earlier ones are a warm-up)."""
    held_records, start = 0, len(requests)
    while start > 0 and held_records < len(latencies):
        start -= 1
        held_records += requests[start][2]
    if held_records != len(latencies):
        raise SystemExit(f"the capture's last requests hold {held_records} records, the latency file {len(latencies)}")
    rows, i = [], 0
    for corr, sent, count, produced in requests[start:]:
        if corr not in answered:
            raise SystemExit(f"request {corr} has no response in the capture")
        wire = answered[corr] - sent
        reported = produced + latencies[i]
        for lat in latencies[i : i + count]:
            held = sent - (reported - lat)
            rows.append((lat, held, wire, lat - held - wire))
        i += count
    return rows, len(requests) - start, sum(1 for r in requests[start:] if r[2] > 1)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))] / 1000.0


def summary(rows, nreq, multi):
    parts = ["total", "held", "wire", "after"]
    cols = [f"{name}: p50={pct([r[i] for r in rows], .5):.3f} p99={pct([r[i] for r in rows], .99):.3f}" for i, name in enumerate(parts)]
    slow = [r for r in rows if r[0] > 1000]
    by = {name: 0 for name in parts[1:]}
    for r in slow:
        by[parts[1 + max(range(3), key=lambda k: r[1 + k])]] += 1
    counts = " ".join(f"{k}={v}" for k, v in by.items())
    return f"n={len(rows)} | " + " | ".join(cols) + f" | over1ms={len(slow)} {counts} | requests={nreq} multi={multi}"


def self_test():
    """A synthetic capture: a Metadata request (ignored), then two Produce requests (v9
    flexible with 1 record, v7 with 2), answered in one packet; checks every part."""

    def uvarint(n):
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    def batch(count, produced):
        value = MARK + str(produced).encode() + b"\0" * 20
        header = struct.pack(">qiibI", 0, 0, 0, 2, 0) + b"\0" * 36 + struct.pack(">i", count)
        return header + b"\x01" * 8 + value

    def produce(corr, version, records):
        if version >= 9:
            body = struct.pack(">h", -1) + b"\0" + b"\0" + struct.pack(">hi", -1, 30000)
            body += uvarint(2) + uvarint(2) + b"t" + uvarint(2) + struct.pack(">i", 0)
            body += uvarint(len(records) + 1) + records
        else:
            body = struct.pack(">hh", -1, -1) + struct.pack(">hi", -1, 30000)
            body += struct.pack(">i", 1) + struct.pack(">h", 1) + b"t" + struct.pack(">i", 1)
            body += struct.pack(">i", 0) + struct.pack(">i", len(records)) + records
        frame = struct.pack(">hhi", 0, version, corr) + body
        return struct.pack(">i", len(frame)) + frame

    seqs = {}

    def packet(t_us, sport, dport, payload):
        seq = seqs.get((sport, dport), 1000)
        seqs[(sport, dport)] = seq + len(payload)
        tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x18, 0, 0, 0)
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0, b"\x7f\0\0\1", b"\x7f\0\0\1")
        frame = b"\0" * 12 + b"\x08\x00" + ip + tcp + payload
        return struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)) + frame

    def syn(t_us, sport, dport):
        seqs[(sport, dport)] = 1000
        tcp = struct.pack(">HHIIBBHHH", sport, dport, 999, 0, 5 << 4, 0x02, 0, 0, 0)
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, b"\x7f\0\0\1", b"\x7f\0\0\1")
        frame = b"\0" * 12 + b"\x08\x00" + ip + tcp
        return struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)) + frame

    base = 1_700_000_000_000_000
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    # a connection open before the capture: ignored, whatever its bytes
    pcap += packet(base, 4999, 9092, b"\0\0\0\x09garbage!!")
    pcap += syn(base + 1, 5000, 9092) + syn(base + 2, 9092, 5000)
    first = produce(2, 9, batch(1, base + 40))
    # a Metadata request and the first Produce request's head share a packet; its rest
    # completes it at base + 100
    pcap += packet(base + 10, 5000, 9092, struct.pack(">ihhi", 8, 3, 12, 1) + first[:30])
    pcap += packet(base + 100, 5000, 9092, first[30:])
    pcap += packet(base + 900, 5000, 9092, produce(3, 7, batch(2, base + 500)))
    # a retransmission of the last packet changes nothing
    seqs[(5000, 9092)] -= len(produce(3, 7, batch(2, base + 500)))
    pcap += packet(base + 950, 5000, 9092, produce(3, 7, batch(2, base + 500)))
    answers = struct.pack(">ii", 8, 2) + b"\0\0\0\0" + struct.pack(">ii", 8, 3) + b"\0\0\0\0"
    pcap += packet(base + 2100, 9092, 5000, answers)
    requests, answered = exchanges(pcap, 9092)
    assert [(c, n) for c, _, n, _ in requests] == [(2, 1), (3, 2)], requests
    # report at base + 2130 for all three: latencies from each produce() time
    rows, nreq, multi = split(requests, answered, [2090, 1630, 1330])
    assert (nreq, multi) == (2, 1)
    assert rows == [(2090, 60, 2000, 30), (1630, 400, 1200, 30), (1330, 100, 1200, 30)], rows
    line = summary(rows, nreq, multi)
    assert "over1ms=3 held=0 wire=3 after=0" in line, line
    try:
        split(requests, answered, [1, 2, 3, 4])
    except SystemExit as e:
        assert "hold 3 records" in str(e)
    else:
        raise AssertionError("a record count mismatch must fail")
    print("self-test ok")


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    pcap, port, latfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(pcap, "rb") as f:
        requests, answered = exchanges(f.read(), port)
    with open(latfile) as f:
        latencies = [int(x) for x in f if x.strip()]
    if not latencies:
        raise SystemExit("empty latency file")
    print(summary(*split(requests, answered, latencies)))


if __name__ == "__main__":
    main()
