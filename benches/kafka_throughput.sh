#!/usr/bin/env bash
# Kafka-protocol throughput / latency benchmark: Runnel vs librdkafka's mock broker,
# with the loopback TCP ceiling from iperf3. Load generator: librdkafka's
# examples/rdkafka_performance (librdkafka 2.12.1, built from the rdkafka-sys crate
# sources by tests/librdkafka/build.sh).
#
# Usage: benches/kafka_throughput.sh [RUNNEL_BIN]
#   Without RUNNEL_BIN (or if it is not executable) Runnel cells say "not yet measured".
#
# Env knobs (defaults in brackets):
#   COUNT_100 [8000000]   records per produce run, 100 B records
#   COUNT_1K  [1500000]   records per produce run, 1 KiB records
#   LAT_RATE  [2000]      records/s in the fixed-rate latency runs
#   LAT_SECONDS [10]      length of each latency run
#   RUN_CAP   [90]        hard cap (s) on any single client run
#   IPERF_SECONDS [10]
#   TARGETS   ["runnel mock"]  which brokers to measure ("floor", "floorspin": disk-only controls in latrepeat)
#   PHASES    ["iperf produce consume latency inproc group"]  what to measure (consume reads
#             what the produce phase wrote, so consume needs produce; add `rounds` for
#             the repeated produce runs below, `latrepeat` for repeated lean latency probes)
#   CATCHUP_ROUNDS [3]    rounds of the `catchup` phase (not in the default PHASES)
#   CATCHUP_IDLE [5]      seconds between its produce and its consume
#   CATCHUP_SIZE [1024]   record size of the `catchup` phase: 1024 (COUNT_1K records) or
#                         100 (COUNT_100 records)
#   GROUP_COUNT [3000000] 100 B records in the group phase's 6-partition topic
#   REBALANCE_ROUNDS [5]  rounds of benches/group_rebalance.py
#   ROUNDS    [3]         runs per cell of the `rounds` phase (not in the default PHASES)
#   LAT_REPEAT [6]        runs of the `latrepeat` phase (not in the default PHASES)
#   LAT_REPEAT_SIZE [1024] record size of the `latrepeat` phase
#   LAT_REPEAT_ACKS [-1]  acks of the `latrepeat` phase
#   WIRE      [0]         1: capture each rdkafka_performance latency run on loopback
#                         (tcpdump) and split every record's latency into the client's
#                         share and the broker's, as seen on the wire (benches/wire_split.py;
#                         shown in the `latrepeat` table). tcpdump costs CPU of its own.
#   RUNNEL_BIN_B []       a second Runnel build: the `latrepeat` runs alternate between
#                         RUNNEL_BIN and it (an A/B of two builds)
#   RDKAFKA_GROUP [target/release/rdkafka_group]  the rdkafka crate's group member (built if missing)
#   PROBE     [target/release/produce_latency]  the lean-client latency probe (built if missing)
#   OUT       [target/bench/kafka_throughput-<utc>.md]  markdown report (also on stdout)
#   BENCH_DATA [.tools/bench/runnel-data]  Runnel data dir parent (on disk, so fsync is real)
#
# Everything runs on 127.0.0.1 only; every client run is bounded by a record count and by
# RUN_CAP seconds.
#
# What is measured
#   produce: rdkafka_performance -P with librdkafka's default producer config (batch.size 1 MB,
#            no compression) except linger.ms: rdkafka_performance itself sets 1000 ms, which
#            adds up to 1 s of tail to a bounded run, so it is put back to the library
#            default 5 ms (LINGER_MS), acks=1 or acks=all (-a -1), keyless records spread by the
#            default partitioner over the topic's partitions. records/s and MB/s (payload
#            bytes, 10^6) come from its summary line: delivered records / (last delivery
#            report - first produce call).
#   consume: rdkafka_performance -C (simple consumer, no group) reading the acks=1 topic
#            from the beginning until COUNT records; timed from the first record received.
#   latency: a fdatasync probe on the data disk first (the floor under acks=all latency: a
#            file that grows with each append, blocks reserved ahead with fallocate, and
#            zeros written and fsynced ahead as in Runnel's active segment; with the disk's
#            writes, KiB and cache flushes per fdatasync; then fsync_floor, the group-commit
#            floor at LAT_RATE, alone and beside a busy loop, as in latrepeat below), then
#            rdkafka_performance -P -l -r LAT_RATE -A file, linger.ms=0: per-record time
#            from produce() call to delivery report (µs) -> p50/p99/max; then the same rate
#            from a lean client (benches/src/bin/produce_latency.rs: one record per Produce
#            request to partition 0, blocking socket, <= 5 in flight, latency from when each
#            request was due, so no coordinated omission) -> p50/p99/p99.9/max. librdkafka's
#            own overhead shows as the gap between the two on the same broker. Around each
#            lean probe of Runnel, the data disk's writes, KiB and cache flushes per request
#            (from /sys/class/block/DEV/stat; they include anything else writing to that disk),
#            the CPU steal over it (/proc/stat), and, around each Runnel latency run, the
#            broker's group-commit fsyncs over 0.8 ms and over 1.6 ms (its /metrics histogram).
#   latrepeat: both latency runs again, LAT_REPEAT times, each on a fresh broker holding
#            one 1-partition topic (1 s warm-up at 500 rec/s, then rdkafka_performance and
#            then the lean probe, each at LAT_RATE for LAT_SECONDS), acks LAT_REPEAT_ACKS,
#            LAT_REPEAT_SIZE B records: per run rdkafka_performance's p50/p99, the lean
#            probe's p50/p99 from due and service (send to answer) and the disk's IO per
#            request over the lean probe; the medians of the p99s over runs.
#            One run's acks=all p99 moves by +-50 % on a 2-core VM, so one run tells little.
#            With RUNNEL_BIN_B the runs alternate between the two builds; with the mock in
#            TARGETS, a mock round follows each Runnel round, as a control for the machine;
#            with "floor" in TARGETS, a run of benches/src/bin/fsync_floor.rs follows too, as
#            a control for the disk: the same records and rate written to a zeroed file and
#            group-committed by up to 2 fdatasyncs at once in one process, latency from due
#            (the p99 the disk allows an ideal broker at that moment); with "floorspin", that
#            run again beside a shell busy loop, as rdkafka_performance -r spins one vCPU.
#   rounds:  the produce runs again, ROUNDS times per cell, each on a fresh broker that holds
#            only its topic, the targets alternating run by run; the table gives every
#            sample and the ratio of the medians. One produce sample moves by up to ±20 % on
#            a 2-core VM (BENCHMARKS.md run 7), and in the produce phase the acks=all run
#            follows the acks=1 run on the same broker, so it inherits that run's page cache.
#   catchup: a consumer catching up on data that left the page cache: per round, for each of
#            runnel (defaults: drop-behind, O_DIRECT reads below it), runnel-pagecache
#            (`[topics] direct_read_buffer_bytes = 0`: those reads through the page cache,
#            with readahead), runnel-keep (`page_cache_tail_bytes = -1`: nothing dropped, as
#            Kafka) and the mock, a fresh broker gets COUNT_1K 1 KiB records (or COUNT_100
#            100 B ones with CATCHUP_SIZE=100; acks=1, one partition), waits CATCHUP_IDLE s,
#            and one simple consumer reads them from the beginning; rec/s as in consume,
#            plus the broker's CPU seconds (utime + stime from /proc) over the consume alone.
#   group:   a 6-partition topic with GROUP_COUNT/6 records per partition, read (a) directly
#            (simple consumer, all 6 partitions), (b) by a 1-member group and (c) by a
#            3-member group (range assignor: 2 partitions each, GROUP_COUNT/3 records each),
#            all with rdkafka_performance -C [-G]. Rates are rdkafka_performance's (from each
#            process's first record); for (c) the sum of the members' rates, plus the wall time
#            from launching the members to the last record (join and initial rebalance delay
#            included). Then benches/group_rebalance.py times join / leave / failure
#            rebalances of 3 rdkafka members.
# Brokers
#   runnel : `RUNNEL_BIN serve` release build, default config (flush_ms=0: group-commit
#            fsync as soon as possible; acks=all answers only after the fsync).
#   mock   : librdkafka's in-memory mock cluster, 1 broker, in its own process
#            (.tools/bench/rk_helper mock, see benches/build_tools.sh - per-partition
#            retention raised from 5 MiB so consume runs have data). Ratios are vs this.
#   mock-inproc: `-X test.mock.num.brokers=1` inside the rdkafka_performance process
#            (reference only: produce, 1 partition; the in-process mock auto-creates
#            4-partition topics so the producer is pinned to partition 0 with -p 0).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RK="$ROOT/.tools/librdkafka"
PERF="$RK/examples/rdkafka_performance"
HELPER="$ROOT/.tools/bench/rk_helper"

RUNNEL_BIN="${1:-}"
if [[ -n "$RUNNEL_BIN" && -x "$RUNNEL_BIN" ]]; then
    RUNNEL_BIN="$(cd "$(dirname "$RUNNEL_BIN")" && pwd)/$(basename "$RUNNEL_BIN")"
else
    [[ -n "$RUNNEL_BIN" ]] && echo "warning: $RUNNEL_BIN is not executable; Runnel not measured" >&2
    RUNNEL_BIN=""
fi

COUNT_100="${COUNT_100:-8000000}"
COUNT_1K="${COUNT_1K:-1500000}"
LAT_RATE="${LAT_RATE:-2000}"
LAT_SECONDS="${LAT_SECONDS:-10}"
RUN_CAP="${RUN_CAP:-90}"
IPERF_SECONDS="${IPERF_SECONDS:-10}"
TARGETS="${TARGETS:-runnel mock}"
# TARGETS that are latrepeat controls, not brokers, and the brokers among TARGETS.
CONTROLS=" floor floorspin "
BROKERS=""; for t in $TARGETS; do [[ "$CONTROLS" == *" $t "* ]] || BROKERS="$BROKERS $t"; done
PHASES="${PHASES:-iperf produce consume latency inproc group}"
GROUP_COUNT="${GROUP_COUNT:-3000000}"
REBALANCE_ROUNDS="${REBALANCE_ROUNDS:-5}"
ROUNDS="${ROUNDS:-3}"
CATCHUP_ROUNDS="${CATCHUP_ROUNDS:-3}"
CATCHUP_IDLE="${CATCHUP_IDLE:-5}"
CATCHUP_SIZE="${CATCHUP_SIZE:-1024}"
case "$CATCHUP_SIZE" in
1024) CATCHUP_COUNT="$COUNT_1K" ;;
100) CATCHUP_COUNT="$COUNT_100" ;;
*) echo "CATCHUP_SIZE must be 1024 or 100, not $CATCHUP_SIZE" >&2; exit 2 ;;
esac
RDKAFKA_GROUP="${RDKAFKA_GROUP:-$ROOT/target/release/rdkafka_group}"
PROBE="${PROBE:-$ROOT/target/release/produce_latency}"
LAT_REPEAT="${LAT_REPEAT:-6}"
LAT_REPEAT_SIZE="${LAT_REPEAT_SIZE:-1024}"
LAT_REPEAT_ACKS="${LAT_REPEAT_ACKS:--1}"
RUNNEL_BIN_B="${RUNNEL_BIN_B:-}"
if [[ -n "$RUNNEL_BIN_B" ]]; then
    [[ -x "$RUNNEL_BIN_B" ]] || { echo "RUNNEL_BIN_B=$RUNNEL_BIN_B is not executable" >&2; exit 2; }
    RUNNEL_BIN_B="$(cd "$(dirname "$RUNNEL_BIN_B")" && pwd)/$(basename "$RUNNEL_BIN_B")"
fi
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-$ROOT/target/bench/kafka_throughput-$STAMP.md}"
BENCH_DATA="${BENCH_DATA:-$ROOT/.tools/bench/runnel-data}"
WORK="$(mktemp -d /tmp/runnel-bench.XXXXXX)"
mkdir -p "$(dirname "$OUT")" "$BENCH_DATA"
# The block device under the bench data, for its IO counters (empty if it has none).
DATA_DEV="$(basename "$(df -P "$BENCH_DATA" | awk 'NR==2{print $1}')")"
[[ -r "/sys/class/block/$DATA_DEV/stat" ]] || DATA_DEV=""

bash "$ROOT/benches/build_tools.sh" >&2 || { echo "tool build failed" >&2; exit 2; }

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }

declare -A R   # results: R[key]=value

BROKER_PID=""
BOOTSTRAP=""
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
stop_broker() {
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill "$BROKER_PID" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
    fi
    exec 8>&-
    BROKER_PID=""
}
# dev_stat -> the data disk's IO counters now (nothing if it has none)
dev_stat() { [[ -n "$DATA_DEV" ]] && cat "/sys/class/block/$DATA_DEV/stat"; }
# dev_per_op BEFORE AFTER N -> "writes KiB flushes" per op over N ops, or "- - -"
dev_per_op() {
    python3 - "$1" "$2" "$3" <<'EOF'
import sys
try:
    a = [int(x) for x in sys.argv[1].split()]
    b = [int(x) for x in sys.argv[2].split()]
    n = int(sys.argv[3])
    d = [y - x for x, y in zip(a, b)]
    # fields (Documentation/block/stat.rst): 4 writes completed, 6 sectors written (512 B),
    # 15 flushes completed (kernel 5.5 on)
    flushes = f"{d[15] / n:.2f}" if len(d) > 15 else "-"
    print(f"{d[4] / n:.2f} {d[6] * 512 / 1024 / n:.1f} {flushes}")
except Exception:
    print("- - -")
EOF
}
# The running Runnel broker's Prometheus endpoint (the Kafka port + 2, its default), or empty.
METRICS=""
# fsync_hist -> "COUNT OVER_0.8MS OVER_1.6MS": the broker's group-commit fsyncs so far, all
# partitions (runnel_log_fsync_duration_seconds), or nothing without a Runnel broker
fsync_hist() {
    [[ -n "$METRICS" ]] || return 0
    python3 - "$METRICS" <<'EOF'
import re, sys, urllib.request
try:
    text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
except OSError:
    sys.exit(0)
b = {}
for m in re.finditer(r'^runnel_log_fsync_duration_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\}\s+(\S+)', text, re.M):
    b[m.group(1)] = b.get(m.group(1), 0) + float(m.group(2))
if "+Inf" in b:
    n = b["+Inf"]
    print(int(n), int(n - b.get("0.0008", n)), int(n - b.get("0.0016", n)))
EOF
}
# fsync_tail BEFORE AFTER -> "X / Y of N" (fsyncs over 0.8 ms / over 1.6 ms, of all, between the two), or "-"
fsync_tail() {
    local a=($1) b=($2)
    if [[ ${#a[@]} -eq 3 && ${#b[@]} -eq 3 ]]; then
        echo "$((b[1] - a[1])) / $((b[2] - a[2])) of $((b[0] - a[0]))"
    else
        echo "-"
    fi
}
# with_fsync_tail KEY CMD... : run CMD, then R[KEY.fsync] = the broker's slow fsyncs during it
with_fsync_tail() {
    local key="$1" a b rc; shift
    a="$(fsync_hist)"
    "$@"; rc=$?
    b="$(fsync_hist)"
    R[$key.fsync]="$(fsync_tail "$a" "$b")"
    return $rc
}
cleanup() { stop_broker; rm -rf "$WORK" "$BENCH_DATA/run-$$"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_broker TARGET TOPIC:PARTS...
start_broker() {
    local target="$1"; shift
    stop_broker
    case "$target" in
    runnel)
        local port; port="$(free_port)"
        rm -rf "$BENCH_DATA/run-$$"; mkdir -p "$BENCH_DATA/run-$$"
        RUST_LOG="${RUST_LOG:-warn}" "${START_BIN:-$RUNNEL_BIN}" serve --data-dir "$BENCH_DATA/run-$$" \
            --kafka-addr "127.0.0.1:$port" >>"$WORK/runnel.log" 2>&1 &
        BROKER_PID=$!
        BOOTSTRAP="127.0.0.1:$port"
        METRICS="http://127.0.0.1:$((port + 2))/metrics"
        wait_port "$port" 30 || { log "runnel failed to start"; tail -5 "$WORK/runnel.log" >&2; return 1; }
        local tp
        for tp in "$@"; do
            timeout 30 "$HELPER" create-topic "$BOOTSTRAP" "${tp%%:*}" "${tp##*:}" >>"$WORK/runnel.log" 2>&1 ||
                { log "CreateTopics ${tp} failed on runnel"; return 1; }
        done
        ;;
    mock)
        METRICS=""
        rm -f "$WORK/mock.fifo" "$WORK/mock.out"; mkfifo "$WORK/mock.fifo"
        "$HELPER" mock "$@" <"$WORK/mock.fifo" >"$WORK/mock.out" 2>>"$WORK/mock.log" &
        BROKER_PID=$!
        exec 8>"$WORK/mock.fifo"
        local i
        for ((i = 0; i < 100; i++)); do grep -q '^BOOTSTRAP' "$WORK/mock.out" && break; sleep 0.1; done
        BOOTSTRAP="$(awk '/^BOOTSTRAP/{print $2}' "$WORK/mock.out")"
        [[ -n "$BOOTSTRAP" ]] || return 1
        ;;
    esac
    log "$target up at $BOOTSTRAP"
}

# perf_produce, perf_consume, perf_latency, count_for
# shellcheck source=benches/rdkafka_perf.sh
source "$ROOT/benches/rdkafka_perf.sh"

# quantile Q TEXT -> the ms value of "Q=...ms" in TEXT (a produce_latency summary)
quantile() { sed -E "s/.*(^| )$1=([0-9.]+)ms.*/\2/" <<<"$2"; }

# probe_latency KEY TOPIC SIZE ACKS [RATE SECONDS] -> R[KEY.p50|p99|p999|max] (ms, from
# when each was due), R[KEY.svc.p50|p99] (ms, send to answer), R[KEY.dev] (the data disk's
# "writes KiB flushes" per request, over the probe), R[KEY.steal] (CPU steal over it, %)
probe_latency() {
    local key="$1" topic="$2" size="$3" acks="$4"
    local rate="${5:-$LAT_RATE}" secs="${6:-$LAT_SECONDS}"
    lean_run "$key" produce_latency "$PROBE" "$((rate * secs))" --bootstrap "$BOOTSTRAP" \
        --topic "$topic" --acks "$acks" --size "$size" --rate "$rate" --seconds "$secs" || return 1
    local line="$LEAN_LINE"
    local due="${line#*from due: }"; due="${due%%|*}"
    local svc="${line#*service: }"
    local q
    for q in p50 p99 p99.9 max; do
        R[$key.${q/./}]="$(quantile "$q" "$due")"
    done
    R[$key.svc.p50]="$(quantile p50 "$svc")"
    R[$key.svc.p99]="$(quantile p99 "$svc")"
    R[$key.rate]="$(sed -E 's/.*rate=([0-9]+)\/s.*/\1/' <<<"$line")"
    log "probe $key: $line | disk per request (writes KiB flushes): ${R[$key.dev]} | CPU steal ${R[$key.steal]} %"
}

run_target() {
    local target="$1" size parts acks
    for size in 100 1024; do
        for parts in 1 3; do
            # fresh broker (empty data dir / empty mock) per size x partitions
            start_broker "$target" "tp-s$size-p$parts-a1:$parts" "tp-s$size-p$parts-aall:$parts" \
                "lat-s$size-p$parts-a1:$parts" "lat-s$size-p$parts-aall:$parts" ||
                { log "cannot start $target"; return 1; }
            for acks in 1 all; do
                has_phase produce || continue
                local a=1; [[ $acks == all ]] && a=-1
                perf_produce "$target.produce.$size.$parts.$acks" "tp-s$size-p$parts-a$acks" \
                    "$size" "$(count_for "$size")" "$a"
            done
            has_phase consume && perf_consume "$target.consume.$size.$parts" "tp-s$size-p$parts-a1" "$parts" "$(count_for "$size")"
            for acks in 1 all; do
                has_phase latency || continue
                local a=1; [[ $acks == all ]] && a=-1
                with_fsync_tail "$target.lat.$size.$parts.$acks" \
                    perf_latency "$target.lat.$size.$parts.$acks" "lat-s$size-p$parts-a$acks" "$size" "$a"
                probe_latency "$target.probe.$size.$parts.$acks" "lat-s$size-p$parts-a$acks" "$size" "$a"
            done
            stop_broker
        done
    done
}

# run_rounds: ROUNDS produce runs per cell, each on a fresh broker, targets alternating
run_rounds() {
    local r size parts acks a t
    for ((r = 1; r <= ROUNDS; r++)); do
        for size in 100 1024; do for parts in 1 3; do for acks in 1 all; do
            a=1; [[ $acks == all ]] && a=-1
            for t in $BROKERS; do
                [[ "$t" == runnel && -z "$RUNNEL_BIN" ]] && continue
                start_broker "$t" "rounds:$parts" || { log "cannot start $t"; return 1; }
                perf_produce "$t.round$r.$size.$parts.$acks" rounds "$size" "$(count_for "$size")" "$a"
                # Free what this run held (the mock's memory goes with its process, Runnel's
                # page cache with its files) before the other target starts, so each run
                # writes into memory freed just before it, not one into fresh memory.
                stop_broker
                rm -rf "$BENCH_DATA/run-$$"
            done
        done; done; done
    done
}

# run_latrepeat: LAT_REPEAT latency rounds, each on a fresh broker with one 1-partition
# topic, alternating between RUNNEL_BIN, RUNNEL_BIN_B when that is set, and the mock when
# TARGETS has it, and the disk-only fsync_floor when TARGETS has "floor" (alone) or
# "floorspin" (beside a busy loop) -> R[rep.BUILD.RUN.*], BUILD a, b, mock, floor or floorspin
REP_BUILDS="a${RUNNEL_BIN_B:+ b}"
[[ " $TARGETS " == *" mock "* ]] && REP_BUILDS="$REP_BUILDS mock"
for t in $CONTROLS; do [[ " $TARGETS " == *" $t "* ]] && REP_BUILDS="$REP_BUILDS $t"; done
FLOOR="${FLOOR:-$ROOT/target/release/fsync_floor}"
run_latrepeat() {
    local r b bin
    for ((r = 1; r <= LAT_REPEAT; r++)); do
        for b in $REP_BUILDS; do
            if [[ $b == floor ]]; then
                floor_latency "rep.$b.$r" "$(batch_bytes "$LAT_REPEAT_SIZE")"
                continue
            elif [[ $b == floorspin ]]; then
                floor_spin_latency "rep.$b.$r" "$(batch_bytes "$LAT_REPEAT_SIZE")"
                continue
            elif [[ $b == mock ]]; then
                start_broker mock "rep:1" || { log "cannot start the mock"; return 1; }
            else
                bin="$RUNNEL_BIN"; [[ $b == b ]] && bin="$RUNNEL_BIN_B"
                START_BIN="$bin" start_broker runnel "rep:1" || { log "cannot start $bin"; return 1; }
            fi
            # warm-up: the connection, the segment's first zeros, the page cache
            probe_latency "rep.$b.$r.warm" rep "$LAT_REPEAT_SIZE" "$LAT_REPEAT_ACKS" 500 1 >/dev/null 2>&1
            with_fsync_tail "rep.$b.$r.rdk" perf_latency "rep.$b.$r.rdk" rep "$LAT_REPEAT_SIZE" "$LAT_REPEAT_ACKS"
            with_fsync_tail "rep.$b.$r" probe_latency "rep.$b.$r" rep "$LAT_REPEAT_SIZE" "$LAT_REPEAT_ACKS"
            stop_broker
            rm -rf "$BENCH_DATA/run-$$"
        done
    done
}

# batch_bytes SIZE -> the bytes a keyless, headerless record of SIZE value bytes takes alone
# in a v2 batch: 61 of batch header and 9 of record framing (varint lengths and deltas)
batch_bytes() { echo "$(($1 + 70))"; }

# floor_latency KEY BYTES -> the lean columns of R[KEY.*] from benches/src/bin/fsync_floor.rs:
# BYTES-byte records written at LAT_RATE for LAT_SECONDS into a zeroed file on the bench
# disk and group-committed by up to 2 fdatasyncs at once, in one process (no network, no
# Kafka): the p99 the disk allows an ideal broker at that moment.
floor_latency() {
    local key="$1" bytes="$2"
    lean_run "$key" fsync_floor "$FLOOR" "$((LAT_RATE * LAT_SECONDS))" --dir "$BENCH_DATA" \
        --rate "$LAT_RATE" --seconds "$LAT_SECONDS" --size "$bytes" --flushers 2 || return 1
    local line="$LEAN_LINE"
    local due="${line#*from due: }"; due="${due%%|*}"
    R[$key.p50]="$(quantile p50 "$due")"
    R[$key.p99]="$(quantile p99 "$due")"
    local na
    for na in rdk.p50 rdk.p99 rdk.steal rdk.fsync svc.p50 svc.p99; do R[$key.$na]="-"; done
    R[$key.fsync]="$(sed -E 's/.*fdatasync: n=([0-9]+).*over0.8ms=([0-9]+) over1.6ms=([0-9]+).*/\2 \/ \3 of \1/' <<<"$line")"
    log "fsync floor $key: $line | CPU steal ${R[$key.steal]} %"
}

# lean_run KEY NAME BIN OPS ARGS...: run the benches binary NAME at BIN (built first if
# missing) with ARGS under RUN_CAP -> LEAN_LINE (its "n=..." summary line), R[KEY.steal] (CPU
# steal over the run, %), R[KEY.dev] (the data disk's "writes KiB flushes" per op over OPS
# ops); on failure R[KEY.p50] says so and the status is 1
lean_run() {
    local key="$1" name="$2" bin="$3" ops="$4"; shift 4
    local f="$WORK/$key.$name.log" before after mark rc
    bench_bin "$name" "$bin" || return 1
    before="$(dev_stat)"; mark="$(steal_mark)"
    timeout -k 5 "$RUN_CAP" "$bin" "$@" >"$f" 2>&1
    rc=$?
    after="$(dev_stat)"; R[$key.steal]="$(steal_since "$mark")"
    R[$key.dev]="$(dev_per_op "$before" "$after" "$ops")"
    LEAN_LINE="$(grep -E '^n=' "$f" | tail -1)"
    if [[ -z "$LEAN_LINE" || $rc -ne 0 ]]; then
        R[$key.p50]="failed (rc=$rc)"
        log "$name $key failed rc=$rc: $(tail -3 "$f" | tr '\n' ' ')"
        return 1
    fi
}

# bench_bin NAME BIN: build the benches binary NAME (release) unless BIN is there already
bench_bin() {
    [[ -x "$2" ]] && return 0
    (cd "$ROOT" && cargo build --release -q -p runnel-benches --bin "$1") >&2 ||
        { log "cannot build $1"; return 1; }
}

# floor_spin_latency KEY BYTES: floor_latency beside a shell busy loop, as rdkafka_performance
# -r spins one vCPU (BENCHMARKS.md): what that spinning alone does to the disk's p99. The
# binary is built first, so that the loop spins over the measured run, not over a build; the
# loop ends when the run does (or, at the latest, just after RUN_CAP, as the run must).
floor_spin_latency() {
    bench_bin fsync_floor "$FLOOR" || return 1
    timeout "$((RUN_CAP + 5))" bash -c 'while :; do :; done' &
    local spin=$! rc
    floor_latency "$@"; rc=$?
    kill "$spin" 2>/dev/null; wait "$spin" 2>/dev/null
    return $rc
}

# cpu_seconds PID -> utime + stime of PID in seconds
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' \
        "/proc/$1/stat" 2>/dev/null || echo 0
}

CATCHUP_VARIANTS="runnel runnel-pagecache runnel-keep mock"
# run_catchup: CATCHUP_ROUNDS rounds of produce, idle, consume-from-the-beginning per variant
run_catchup() {
    local r v target before after
    for ((r = 1; r <= CATCHUP_ROUNDS; r++)); do
        for v in $CATCHUP_VARIANTS; do
            target="${v%%-*}"
            [[ "$target" == runnel && -z "$RUNNEL_BIN" ]] && continue
            case "$v" in
            runnel-pagecache) printf '[topics]\ndirect_read_buffer_bytes = 0\n' >"$WORK/$v.toml" ;;
            runnel-keep) printf '[topics]\npage_cache_tail_bytes = -1\n' >"$WORK/$v.toml" ;;
            *) : >"$WORK/$v.toml" ;;
            esac
            RUNNEL_CONFIG="$WORK/$v.toml" start_broker "$target" "catchup:1" ||
                { log "cannot start $v"; return 1; }
            perf_produce "$v.catchup$r.produce" catchup "$CATCHUP_SIZE" "$CATCHUP_COUNT" 1
            sleep "$CATCHUP_IDLE"
            before="$(cpu_seconds "$BROKER_PID")"
            perf_consume "$v.catchup$r" catchup 1 "$CATCHUP_COUNT"
            after="$(cpu_seconds "$BROKER_PID")"
            R[$v.catchup$r.cpu]="$(python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.2f}")' "$before" "$after")"
            log "catchup $v round $r: broker ${R[$v.catchup$r.cpu]} CPU-s for the consume"
            stop_broker
            rm -rf "$BENCH_DATA/run-$$"
        done
    done
}

# run_group TARGET: direct vs group consumption of one 6-partition topic, then rebalance timings
run_group() {
    local target="$1" p per=$((GROUP_COUNT / 6)) total=$((GROUP_COUNT / 6 * 6))
    start_broker "$target" "grp:6" || { log "cannot start $target"; return 1; }
    for ((p = 0; p < 6; p++)); do
        timeout -k 5 "$RUN_CAP" "$PERF" -P -t grp -b "$BOOTSTRAP" -p "$p" -s 100 -c "$per" -a 1 \
            -X linger.ms=5 -q >>"$WORK/$target.grp.produce.log" 2>&1 ||
            { log "group phase: produce to partition $p failed"; return 1; }
    done
    perf_consume "$target.grp.direct" grp 6 "$total"
    local f="$WORK/$target.grp.g1.log"
    timeout -k 5 "$RUN_CAP" "$PERF" -C -G "g1-$target-$$" -t grp -b "$BOOTSTRAP" -c "$total" \
        -X auto.offset.reset=earliest -q >"$f" 2>&1
    parse_consume "$target.grp.g1" "$f" "$total" $?
    local start end m pids=() sum=0 ok=1
    start="$(date +%s.%N)"
    for m in 0 1 2; do
        timeout -k 5 "$RUN_CAP" "$PERF" -C -G "g3-$target-$$" -t grp -b "$BOOTSTRAP" \
            -c $((total / 3)) -X auto.offset.reset=earliest -X partition.assignment.strategy=range \
            -q >"$WORK/$target.grp.g3.$m.log" 2>&1 &
        pids+=($!)
    done
    for m in 0 1 2; do wait "${pids[$m]}"; done
    end="$(date +%s.%N)"
    for m in 0 1 2; do
        parse_consume "$target.grp.g3.$m" "$WORK/$target.grp.g3.$m.log" $((total / 3)) 0 || ok=0
        sum=$((sum + ${R[$target.grp.g3.$m.rps]%% *}))
    done
    if ((ok)); then
        R[$target.grp.g3.rps]="$sum"
        R[$target.grp.g3.wall]="$(python3 -c "print(f'{$end - $start:.2f}')")"
    fi
    if [[ "$target" == runnel ]]; then
        if [[ ! -x "$RDKAFKA_GROUP" ]]; then
            (cd "$ROOT" && cargo build --release -q -p runnel-tests --bin rdkafka_group) >&2 ||
                { log "cannot build rdkafka_group"; return 1; }
        fi
        local strategy
        for strategy in default cooperative; do
            R[$target.rebalance.$strategy]="$(python3 "$ROOT/benches/group_rebalance.py" "$BOOTSTRAP" grp \
                "$RDKAFKA_GROUP" --rounds "$REBALANCE_ROUNDS" --strategy "$strategy" | tee -a "$WORK/rebalance.log" >&2; \
                tail -1 "$WORK/rebalance.log")"
        done
    fi
    stop_broker
}

run_inproc_mock() {
    local size
    for size in 100 1024; do
        BOOTSTRAP="unused:9092"
        perf_produce "inproc.produce.$size.1.1" "inproc-s$size" "$size" "$(count_for "$size")" 1 \
            -p 0 -X test.mock.num.brokers=1
    done
}

run_iperf() {
    command -v iperf3 >/dev/null || { R[iperf.gbps]="iperf3 missing"; return; }
    local port; port="$(free_port)"
    iperf3 -s -1 -B 127.0.0.1 -p "$port" >"$WORK/iperf-s.log" 2>&1 &
    local spid=$!
    sleep 0.5
    timeout $((IPERF_SECONDS + 20)) iperf3 -c 127.0.0.1 -p "$port" -t "$IPERF_SECONDS" -J >"$WORK/iperf.json" 2>&1
    wait "$spid" 2>/dev/null
    read -r gbps mbs < <(python3 - "$WORK/iperf.json" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    bps = d["end"]["sum_received"]["bits_per_second"]
    print(f"{bps / 1e9:.2f}", f"{bps / 8 / 1e6:.0f}")
except Exception as e:
    print("failed", "-")
EOF
)
    R[iperf.gbps]="$gbps"; R[iperf.mbs]="$mbs"
    log "iperf3 loopback: $gbps Gbit/s ($mbs MB/s)"
}

# The floor under acks=all latency: fdatasync of a small append on the bench data disk, at
# about the latency runs' rate (2000 appends of 120 B, 0.5 ms apart), into a file that grows
# with each append, into blocks reserved ahead with fallocate, and into blocks whose zeros
# were written and fsynced ahead (as Runnel's active segment is: reserved, then zeroed ahead
# of the appends) -> R[fsync.*], R[fsync_reserved.*], R[fsync_zeroed.*]: p50, p99, max in
# ms, and dev: the disk's "writes KiB flushes" per fdatasync. Then fsync_floor at the
# latency runs' rate, 100 B and 1 KiB records, alone and beside a busy loop ->
# R[floor.SIZE.*], R[floorspin.SIZE.*].
run_fsync_probe() {
    local mode key p50 p99 max before after
    for mode in grow reserve zeroed; do
        before="$(dev_stat)"
        read -r p50 p99 max < <(python3 - "$BENCH_DATA" "$mode" <<'EOF'
import os, sys, time
path = os.path.join(sys.argv[1], f"fsync-probe-{os.getpid()}")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
if sys.argv[2] == "reserve":
    os.posix_fallocate(fd, 0, 8 << 20)
    os.fsync(fd)
elif sys.argv[2] == "zeroed":
    os.posix_fallocate(fd, 0, 8 << 20)
    os.pwrite(fd, bytes(1 << 20), 0)
    os.fsync(fd)
lat = []
try:
    for i in range(2000):
        os.pwrite(fd, b"x" * 120, i * 120)
        t = time.perf_counter()
        os.fdatasync(fd)
        lat.append((time.perf_counter() - t) * 1e3)
        time.sleep(0.0005)
finally:
    os.close(fd)
    os.unlink(path)
lat.sort()
print(f"{lat[len(lat) // 2]:.3f} {lat[len(lat) * 99 // 100]:.3f} {lat[-1]:.3f}")
EOF
)
        after="$(dev_stat)"
        case "$mode" in grow) key=fsync ;; reserve) key=fsync_reserved ;; *) key=fsync_zeroed ;; esac
        R[$key.p50]="$p50"; R[$key.p99]="$p99"; R[$key.max]="$max"
        # The zeroed file's own 1 MiB of zeros shows as 0.5 KiB per op.
        R[$key.dev]="$(dev_per_op "$before" "$after" 2000)"
        log "fdatasync probe ($mode): p50 $p50 ms, p99 $p99 ms, max $max ms; disk per op (writes KiB flushes): ${R[$key.dev]}"
    done
    # The group-commit floor at the latency runs' rate and record sizes (in their batches).
    local size
    for size in 100 1024; do
        floor_latency "floor.$size" "$(batch_bytes "$size")"
        floor_spin_latency "floorspin.$size" "$(batch_bytes "$size")"
    done
}

# ---------------------------------------------------------------- run
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
has_phase iperf && run_iperf
has_phase latency && run_fsync_probe
for t in $BROKERS; do
    if [[ "$t" == runnel && -z "$RUNNEL_BIN" ]]; then continue; fi
    run_target "$t"
done
[[ " $TARGETS " == *" mock "* ]] && has_phase inproc && run_inproc_mock
has_phase rounds && run_rounds
[[ -n "$RUNNEL_BIN" ]] && has_phase latrepeat && run_latrepeat
has_phase catchup && run_catchup
if has_phase group; then
    for t in $BROKERS; do
        if [[ "$t" == runnel && -z "$RUNNEL_BIN" ]]; then continue; fi
        run_group "$t"
    done
fi

# ---------------------------------------------------------------- report
v() { local x="${R[$1]:-}"; if [[ -z "$x" ]]; then echo "not yet measured"; else echo "$x"; fi; }
ratio() { # a b -> a/b with 2 decimals, or -
    python3 -c '
import sys
try:
    a = float(sys.argv[1].split()[0]); b = float(sys.argv[2].split()[0])
    print(f"{a / b:.2f}x")
except Exception:
    print("-")' "${R[$1]:-x}" "${R[$2]:-x}"
}
{
    echo "## Kafka throughput benchmark ($STAMP)"
    echo
    echo "- command: \`benches/kafka_throughput.sh ${RUNNEL_BIN:+$RUNNEL_BIN}\` (COUNT_100=$COUNT_100 COUNT_1K=$COUNT_1K LAT_RATE=$LAT_RATE LAT_SECONDS=$LAT_SECONDS PHASES=\"$PHASES\" CATCHUP_SIZE=$CATCHUP_SIZE)"
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
    echo "- load generator: librdkafka $("$PERF" -h 2>&1 | sed -n 's/^librdkafka version \([^ ]*\).*/\1/p') rdkafka_performance"
    if [[ -n "$RUNNEL_BIN" ]]; then
        echo "- runnel: $RUNNEL_BIN (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)), data dir on $(df -P "$BENCH_DATA" | awk 'NR==2{print $1}')"
    fi
    echo "- load average before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- loopback TCP ceiling (iperf3, 1 stream, ${IPERF_SECONDS}s): $(v iperf.gbps) Gbit/s = $(v iperf.mbs) MB/s"
    echo
    echo "### Produce throughput (records/s, MB/s of payload)"
    echo
    echo "| record | partitions | acks | Runnel rec/s | Runnel MB/s | mock rec/s | mock MB/s | Runnel / mock |"
    echo "|---|---|---|---|---|---|---|---|"
    for size in 100 1024; do for parts in 1 3; do for acks in 1 all; do
        k="produce.$size.$parts.$acks"
        echo "| $size B | $parts | $acks | $(v runnel.$k.rps) | $(v runnel.$k.mbs) | $(v mock.$k.rps) | $(v mock.$k.mbs) | $(ratio runnel.$k.rps mock.$k.rps) |"
    done; done; done
    echo
    if has_phase rounds; then
        echo "### Produce throughput, $ROUNDS runs per cell on fresh brokers, targets alternating (records/s)"
        echo
        echo "| record | partitions | acks | Runnel runs, sorted | mock runs, sorted | Runnel / mock (medians) |"
        echo "|---|---|---|---|---|---|"
        for size in 100 1024; do for parts in 1 3; do for acks in 1 all; do
            rs=(); ms=()
            for ((r = 1; r <= ROUNDS; r++)); do
                rs+=("${R[runnel.round$r.$size.$parts.$acks.rps]:-x}")
                ms+=("${R[mock.round$r.$size.$parts.$acks.rps]:-x}")
            done
            echo "| $size B | $parts | $acks | $(python3 "$ROOT/benches/medians.py" "${rs[@]}" -- "${ms[@]}") |"
        done; done; done
        echo
    fi
    if has_phase catchup; then
        echo "### Catch-up consume, $CATCHUP_SIZE B records, one partition, fresh broker per run (records/s, broker CPU-s for the consume)"
        echo
        echo "| variant | $(for ((r = 1; r <= CATCHUP_ROUNDS; r++)); do printf 'round %s | ' "$r"; done)"
        echo "|---|$(for ((r = 1; r <= CATCHUP_ROUNDS; r++)); do printf -- '---|'; done)"
        for cv in $CATCHUP_VARIANTS; do
            printf '| %s |' "$cv"
            for ((r = 1; r <= CATCHUP_ROUNDS; r++)); do
                printf ' %s (%s) |' "$(v "$cv.catchup$r.rps")" "$(v "$cv.catchup$r.cpu")"
            done
            echo
        done
        echo
    fi
    echo "### Consume throughput (simple consumer, from the beginning)"
    echo
    echo "| record | partitions | Runnel rec/s | Runnel MB/s | mock rec/s | mock MB/s | Runnel / mock |"
    echo "|---|---|---|---|---|---|---|"
    for size in 100 1024; do for parts in 1 3; do
        k="consume.$size.$parts"
        echo "| $size B | $parts | $(v runnel.$k.rps) | $(v runnel.$k.mbs) | $(v mock.$k.rps) | $(v mock.$k.mbs) | $(ratio runnel.$k.rps mock.$k.rps) |"
    done; done
    echo
    echo "### Produce latency at a fixed $LAT_RATE rec/s (linger.ms=0), ms from produce() to delivery report"
    echo
    echo "(achieved rate: rdkafka_performance sleeps 1/rate after each record, so the real rate is below the target; it is shown per run)"
    echo
    echo "The floor under acks=all: fdatasync of a 120 B append on the data disk (${DATA_DEV:-no block device}), 2000 times 0.5 ms apart:"
    echo
    echo "| file | p50 (ms) | p99 (ms) | max (ms) | disk writes / KiB / flushes per fdatasync |"
    echo "|---|---|---|---|---|"
    echo "| zeros written and fsynced ahead (as Runnel's active segment) | $(v fsync_zeroed.p50) | $(v fsync_zeroed.p99) | $(v fsync_zeroed.max) | $(v fsync_zeroed.dev) |"
    echo "| blocks reserved with fallocate | $(v fsync_reserved.p50) | $(v fsync_reserved.p99) | $(v fsync_reserved.max) | $(v fsync_reserved.dev) |"
    echo "| growing file | $(v fsync.p50) | $(v fsync.p99) | $(v fsync.max) | $(v fsync.dev) |"
    echo
    echo "The acks=all floor at $LAT_RATE rec/s for $LAT_SECONDS s (fsync_floor: records of the size they have in their batch, written into a zeroed file and group-committed by up to 2 fdatasyncs at once, in one process; ms from when each was due), alone and beside a busy loop (rdkafka_performance spins one vCPU at this rate):"
    echo
    echo "| record | alone p50 | alone p99 | alone fdatasyncs over 0.8 / 1.6 ms | beside a busy loop p50 | beside a busy loop p99 | beside a busy loop fdatasyncs over 0.8 / 1.6 ms |"
    echo "|---|---|---|---|---|---|---|"
    for size in 100 1024; do
        echo "| $size B | $(v floor.$size.p50) | $(v floor.$size.p99) | $(v floor.$size.fsync) | $(v floorspin.$size.p50) | $(v floorspin.$size.p99) | $(v floorspin.$size.fsync) |"
    done
    echo
    echo "| record | partitions | acks | Runnel p50 | Runnel p99 | Runnel max | Runnel rec/s | Runnel fsyncs over 0.8 / 1.6 ms | mock p50 | mock p99 | mock max | mock rec/s | Runnel p99 / mock p99 |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for size in 100 1024; do for parts in 1 3; do for acks in 1 all; do
        k="lat.$size.$parts.$acks"
        echo "| $size B | $parts | $acks | $(v runnel.$k.p50) | $(v runnel.$k.p99) | $(v runnel.$k.max) | $(v runnel.$k.rate) | $(v runnel.$k.fsync) | $(v mock.$k.p50) | $(v mock.$k.p99) | $(v mock.$k.max) | $(v mock.$k.rate) | $(ratio runnel.$k.p99 mock.$k.p99) |"
    done; done; done
    echo
    echo "### Produce latency at $LAT_RATE rec/s from a lean client (produce_latency: one record per request, partition 0, <= 5 in flight), ms from when each request was due to its answer"
    echo
    echo "| record | partitions | acks | Runnel p50 | Runnel p99 | Runnel p99.9 | Runnel max | Runnel disk writes / KiB / flushes per request | CPU steal % (Runnel probe) | mock p50 | mock p99 | mock p99.9 | mock max | Runnel p99 / mock p99 |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for size in 100 1024; do for parts in 1 3; do for acks in 1 all; do
        k="probe.$size.$parts.$acks"
        echo "| $size B | $parts | $acks | $(v runnel.$k.p50) | $(v runnel.$k.p99) | $(v runnel.$k.p999) | $(v runnel.$k.max) | $(v runnel.$k.dev) | $(v runnel.$k.steal) | $(v mock.$k.p50) | $(v mock.$k.p99) | $(v mock.$k.p999) | $(v mock.$k.max) | $(ratio runnel.$k.p99 mock.$k.p99) |"
    done; done; done
    echo
    if has_phase latrepeat && [[ -n "$RUNNEL_BIN" ]]; then
        echo "### Produce latency, $LAT_REPEAT runs on fresh brokers ($LAT_REPEAT_SIZE B, acks=$LAT_REPEAT_ACKS, 1 partition, $LAT_RATE rec/s for $LAT_SECONDS s), ms"
        echo
        echo "Build a: $RUNNEL_BIN${RUNNEL_BIN_B:+; build b: $RUNNEL_BIN_B}; runs alternating: $REP_BUILDS. The mock keeps records in memory, so its acks=all needs no fsync (and its disk column shows only what else wrote to the disk); it shows what the machine alone does to the p99 at that moment. The floor (fsync_floor, in the lean columns) writes $(batch_bytes "$LAT_REPEAT_SIZE") B records into a zeroed file at the same rate and group-commits them with up to 2 fdatasyncs at once, in one process: the p99 the disk allowed an ideal broker at that moment (its fsync column counts its own fdatasyncs; its disk column includes the zeroing of the file before the run); floorspin is the same beside a shell busy loop, as rdkafka_performance spins one vCPU at this rate."
        echo
        echo "| build | run | rdkafka_performance p50 | rdkafka_performance p99 | CPU steal % (rdkafka_performance) | broker fsyncs over 0.8 / 1.6 ms (rdkafka_performance) | lean from due p50 | lean from due p99 | lean service p50 | lean service p99 | disk writes / KiB / flushes per request (lean) | CPU steal % (lean) | broker fsyncs over 0.8 / 1.6 ms (lean) |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        for b in $REP_BUILDS; do
            for ((r = 1; r <= LAT_REPEAT; r++)); do
                k="rep.$b.$r"
                echo "| $b | $r | $(v $k.rdk.p50) | $(v $k.rdk.p99) | $(v $k.rdk.steal) | $(v $k.rdk.fsync) | $(v $k.p50) | $(v $k.p99) | $(v $k.svc.p50) | $(v $k.svc.p99) | $(v $k.dev) | $(v $k.steal) | $(v $k.fsync) |"
            done
            for q in rdk.p99 p99 svc.p99; do
                xs=(); for ((r = 1; r <= LAT_REPEAT; r++)); do xs+=("${R[rep.$b.$r.$q]:-x}"); done
                R[rep.$b.median.$q]="$(python3 "$ROOT/benches/medians.py" --median "${xs[@]}")"
            done
            echo "| $b | median | | $(v rep.$b.median.rdk.p99) | | | | $(v rep.$b.median.p99) | | $(v rep.$b.median.svc.p99) | | | |"
        done
        echo
        if [[ "${WIRE:-0}" == 1 ]]; then
            echo "rdkafka_performance's runs above, split on the wire (WIRE=1, benches/wire_split.py): each record's latency is the time the client held it before its Produce request's packet, the time from that packet to the response's (the broker, fsync included), and the time from the response's packet to the delivery report. p50 / p99 of each in ms; the records over 1 ms counted by their largest part."
            echo
            echo "| build | run | rdkafka_performance p99 | held in the client p50 / p99 | on the wire (broker) p50 / p99 | after the answer p50 / p99 | records over 1 ms: held / wire / after |"
            echo "|---|---|---|---|---|---|---|"
            for b in $REP_BUILDS; do
                [[ $CONTROLS == *" $b "* ]] && continue
                for ((r = 1; r <= LAT_REPEAT; r++)); do
                    k="rep.$b.$r.rdk"
                    echo "| $b | $r | $(v $k.p99) | $(v $k.wire.held) | $(v $k.wire.wire) | $(v $k.wire.after) | $(v $k.wire.over) |"
                done
            done
            echo
        fi
    fi
    echo "### Reference: in-process mock (\`-X test.mock.num.brokers=1\`), produce, partition 0, acks=1"
    echo
    echo "| record | rec/s | MB/s |"
    echo "|---|---|---|"
    for size in 100 1024; do
        echo "| $size B | $(v inproc.produce.$size.1.1.rps) | $(v inproc.produce.$size.1.1.mbs) |"
    done
    echo
    echo "### Consumer groups: 6 partitions, $((GROUP_COUNT / 6 * 6)) records of 100 B"
    echo
    echo "| how | Runnel rec/s | Runnel MB/s | mock rec/s | mock MB/s | Runnel / mock |"
    echo "|---|---|---|---|---|---|"
    echo "| direct (simple consumer, 6 partitions) | $(v runnel.grp.direct.rps) | $(v runnel.grp.direct.mbs) | $(v mock.grp.direct.rps) | $(v mock.grp.direct.mbs) | $(ratio runnel.grp.direct.rps mock.grp.direct.rps) |"
    echo "| group, 1 member | $(v runnel.grp.g1.rps) | $(v runnel.grp.g1.mbs) | $(v mock.grp.g1.rps) | $(v mock.grp.g1.mbs) | $(ratio runnel.grp.g1.rps mock.grp.g1.rps) |"
    echo "| group, 3 members (sum of member rates) | $(v runnel.grp.g3.rps) | - | $(v mock.grp.g3.rps) | - | $(ratio runnel.grp.g3.rps mock.grp.g3.rps) |"
    echo
    echo "3-member group, wall time from launching the members to the last record (join and the 3 s initial rebalance delay included): Runnel $(v runnel.grp.g3.wall) s, mock $(v mock.grp.g3.wall) s."
    echo
    echo "Rebalance timings (benches/group_rebalance.py, 3 rdkafka crate members, Runnel): "
    echo
    echo "- eager (range,roundrobin): $(v runnel.rebalance.default)"
    echo "- cooperative-sticky: $(v runnel.rebalance.cooperative)"
} >"$OUT"
cat "$OUT"
log "report written to $OUT"
