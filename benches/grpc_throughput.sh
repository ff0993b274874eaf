#!/usr/bin/env bash
# gRPC publish benchmark: streaming publish throughput (records/s, MB/s) and publish->ack
# latency (p50/p99/max) of a release `runnel serve`, measured with the Rust client
# (benches/src/bin/grpc_bench.rs), next to the Kafka-protocol figures of rdkafka_performance
# against the same broker process (if it is built, see benches/build_tools.sh).
#
# Usage: benches/grpc_throughput.sh [RUNNEL_BIN [GRPC_BENCH_BIN]]
#   RUNNEL_BIN     [target/release/runnel]
#   GRPC_BENCH_BIN [$CARGO_TARGET_DIR or target]/release/grpc_bench
#                  (cargo build --release -p runnel-benches --bin grpc_bench)
#
# Env knobs (defaults in brackets):
#   COUNT_100  [3000000]  records per throughput run, 100 B records
#   COUNT_1K   [1000000]  records per throughput run, 1 KiB records
#   LAT_RATE   [2000]     records/s in the paced latency runs
#   LAT_SECONDS [10]      length of each latency run
#   LAT_ACKS   ["all leader"]  acks of the latency runs (leader = Kafka acks=1: no fsync wait,
#                         to tell the fsync from the rest of the path)
#   RUNNEL_REV [git HEAD] the commit RUNNEL_BIN was built from, for the report
#   RUN_CAP    [120]      hard cap (s) on any single client run
#   PERF       [.tools/librdkafka/examples/rdkafka_performance]  Kafka-protocol load generator;
#                         if not executable, the Kafka-protocol rows say "not measured"
#   BENCH_DATA [.tools/bench/runnel-data]  parent of the broker's data dir (on disk: real fsync)
#   OUT        [target/bench/grpc_throughput-<utc>.md]  markdown report (also on stdout)
#
# Per record size (100 B, 1 KiB): a fresh data dir and broker (default config, acks=all
# answered after the group-commit fsync), 1-partition topics, then
#   grpc throughput: grpc_bench unpaced, acks=all, linger 5 ms, 500 records / batch, 8 batches
#                    in flight
#   grpc latency:    grpc_bench paced at LAT_RATE, linger 0, for each of LAT_ACKS, with up to 500
#                    records per batch and with 1 (since 8ec4fde a linger of 0 sends a batch as
#                    soon as the in-flight window allows, without a trip through tokio's 1 ms
#                    timer, so the two differ only in how records gather while the window is full)
#   kafka throughput: rdkafka_performance -P -a -1 -X linger.ms=5 (as benches/kafka_throughput.sh)
#   kafka latency:    rdkafka_performance -P -l -r LAT_RATE -a -1|1 -X linger.ms=0, each of LAT_ACKS
# Everything on 127.0.0.1. /proc/loadavg is recorded around every run: on a shared machine
# the figures are only as good as the idle CPU they got.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNNEL_BIN="${1:-$ROOT/target/release/runnel}"
GRPC_BENCH="${2:-${CARGO_TARGET_DIR:-$ROOT/target}/release/grpc_bench}"
COUNT_100="${COUNT_100:-3000000}"
COUNT_1K="${COUNT_1K:-1000000}"
LAT_RATE="${LAT_RATE:-2000}"
LAT_SECONDS="${LAT_SECONDS:-10}"
LAT_ACKS="${LAT_ACKS:-all leader}"
RUNNEL_REV="${RUNNEL_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)}"
RUN_CAP="${RUN_CAP:-120}"
PERF="${PERF:-$ROOT/.tools/librdkafka/examples/rdkafka_performance}"
BENCH_DATA="${BENCH_DATA:-$ROOT/.tools/bench/runnel-data}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
STARTED="$(date -u '+%Y-%m-%d %H:%M:%S')"
OUT="${OUT:-$ROOT/target/bench/grpc_throughput-$STAMP.md}"
WORK="$(mktemp -d /tmp/runnel-grpc-bench.XXXXXX)"
DATA="$BENCH_DATA/grpc-run-$$"

for bin in "$RUNNEL_BIN" "$GRPC_BENCH"; do
    [[ -x "$bin" ]] || { echo "not executable: $bin (see the usage in $0)" >&2; exit 2; }
done
mkdir -p "$(dirname "$OUT")" "$BENCH_DATA"

log() { echo "[grpc-bench $(date +%H:%M:%S)] $*" >&2; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
load() { cut -d' ' -f1-3 /proc/loadavg; }

BROKER_PID=""
stop_broker() {
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill "$BROKER_PID" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
    fi
    BROKER_PID=""
}
cleanup() { stop_broker; rm -rf "$WORK" "$DATA"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_broker: fresh data dir; sets KAFKA and GRPC (host:port)
start_broker() {
    stop_broker
    rm -rf "$DATA"; mkdir -p "$DATA"
    KAFKA="127.0.0.1:$(free_port)"
    GRPC="127.0.0.1:$(free_port)"
    RUST_LOG="${RUST_LOG:-warn}" "$RUNNEL_BIN" serve --data-dir "$DATA" --kafka-addr "$KAFKA" \
        --grpc-addr "$GRPC" >>"$WORK/runnel.log" 2>&1 &
    BROKER_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        (exec 3<>"/dev/tcp/${KAFKA%:*}/${KAFKA##*:}") 2>/dev/null && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "runnel did not start"; tail -5 "$WORK/runnel.log" >&2
    return 1
}

ROWS=()
# add_row CLIENT ROW LOAD-BEFORE LOAD-AFTER (ROW: the cells after the client, as "| ... |")
add_row() { ROWS+=("| $1 $2 $3 → $4 |"); }

# grpc_run TOPIC SIZE COUNT RATE LINGER ACKS(all|leader) [BATCH_RECORDS]
grpc_run() {
    local before; before="$(load)"
    local line
    line="$(timeout -k 5 "$RUN_CAP" "$GRPC_BENCH" --addr "$GRPC" --topic "$1" --create \
        --partitions 1 --size "$2" --records "$3" --rate "$4" --linger-ms "$5" --acks "$6" --batch-records "${7:-500}" \
        2>>"$WORK/grpc_bench.err")"
    local rc=$?
    if [[ $rc -ne 0 || -z "$line" ]]; then
        line="| $2 B | $3 | failed (rc=$rc) | | | | | | | | |"
        log "grpc_bench failed: $(tail -3 "$WORK/grpc_bench.err" | tr '\n' ' ')"
    fi
    log "gRPC: $line"
    add_row "gRPC (runnel-client)" "$line" "$before" "$(load)"
}

# perf_create TOPIC: 1-partition topic for rdkafka_performance, over gRPC
perf_create() {
    "$RUNNEL_BIN" topics --grpc-addr "$GRPC" create "$1" --partitions 1 >/dev/null 2>>"$WORK/perf.err"
}

# kafka_throughput TOPIC SIZE COUNT
kafka_throughput() {
    local before; before="$(load)"
    perf_create "$1" || { log "create $1 failed"; return 1; }
    local f="$WORK/$1.log"
    timeout -k 5 "$RUN_CAP" "$PERF" -P -t "$1" -b "$KAFKA" -p 0 -s "$2" -c "$3" -a -1 \
        -X linger.ms=5 -q >"$f" 2>&1
    local rc=$? line rps mbs
    line="$(grep -E 'messages produced' "$f" | tail -1)"
    if [[ $rc -ne 0 || -z "$line" ]]; then
        rps="failed (rc=$rc)"; mbs="-"
    else
        rps="$(sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/' <<<"$line")"
        mbs="$(sed -E 's/.* and ([0-9.]+) MB\/s.*/\1/' <<<"$line")"
    fi
    log "Kafka: $2 B throughput $rps rec/s $mbs MB/s"
    add_row "Kafka (rdkafka_performance)" "| $2 B | $3 | unpaced | all | linger.ms=5 | $rps | $mbs | - | - | - | - |" "$before" "$(load)"
}

# kafka_latency TOPIC SIZE ACKS(all|leader)
kafka_latency() {
    local a=-1; [[ $3 == leader ]] && a=1
    local before; before="$(load)"
    perf_create "$1" || { log "create $1 failed"; return 1; }
    local f="$WORK/$1.log" lf="$WORK/$1.lat" count=$((LAT_RATE * LAT_SECONDS))
    timeout -k 5 "$RUN_CAP" "$PERF" -P -t "$1" -b "$KAFKA" -p 0 -s "$2" -c "$count" -a "$a" \
        -r "$LAT_RATE" -l -A "$lf" -X linger.ms=0 -q >"$f" 2>&1
    local rc=$?
    local rps p50="failed (rc=$rc)" p99="-" mx="-" n=0
    rps="$(grep -E 'messages produced' "$f" | tail -1 | sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/')"
    if [[ -s "$lf" ]]; then
        read -r n p50 p99 mx < <(python3 - "$lf" <<'EOF'
import sys, math
v = sorted(int(x) for x in open(sys.argv[1]) if x.strip())
def pct(p): return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))] / 1000.0
print(len(v), f"{pct(0.50):.3f}", f"{pct(0.99):.3f}", f"{v[-1] / 1000.0:.3f}")
EOF
)
    fi
    log "Kafka: $2 B acks=$3 latency n=$n p50=$p50 p99=$p99 max=$mx (achieved ${rps:-?} rec/s)"
    add_row "Kafka (rdkafka_performance)" \
        "| $2 B | $n | paced $LAT_RATE rec/s | $3 | linger.ms=0 | ${rps:--} | - | $p50 | $p99 | $mx | - |" \
        "$before" "$(load)"
}

HAVE_PERF=0
[[ -x "$PERF" ]] && HAVE_PERF=1
log "runnel: $RUNNEL_BIN; grpc_bench: $GRPC_BENCH; rdkafka_performance: $([[ $HAVE_PERF == 1 ]] && echo "$PERF" || echo "not found, Kafka rows not measured")"
for size in 100 1024; do
    count="$COUNT_100"; [[ $size == 1024 ]] && count="$COUNT_1K"
    start_broker || exit 1
    log "size $size B: broker at kafka $KAFKA grpc $GRPC, data $DATA"
    grpc_run "g-tp-$size" "$size" "$count" 0 5 all
    for acks in $LAT_ACKS; do
        for batch in 500 1; do
            grpc_run "g-lat-$size-$acks-$batch" "$size" "$((LAT_RATE * LAT_SECONDS))" "$LAT_RATE" 0 \
                "$acks" "$batch"
        done
    done
    if [[ $HAVE_PERF == 1 ]]; then
        kafka_throughput "k-tp-$size" "$size" "$count"
        for acks in $LAT_ACKS; do
            kafka_latency "k-lat-$size-$acks" "$size" "$acks"
        done
    else
        add_row "Kafka" "| $size B | - | not measured (no rdkafka_performance) | | | | | | | | |" "-" "-"
    fi
    stop_broker
done

{
    echo "### gRPC run — $STARTED to $(date -u '+%H:%M:%S') UTC, Runnel $RUNNEL_REV"
    echo
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
    echo "- broker: $RUNNEL_BIN serve, default config, fresh data dir per record size under $BENCH_DATA, 1-partition topics"
    echo "- gRPC client: $GRPC_BENCH (runnel-client Publisher, one PublishStream); latency = send() to acknowledgement"
    [[ $HAVE_PERF == 1 ]] && echo "- Kafka protocol: $("$PERF" -h 2>&1 | sed -n 's/^librdkafka version \([^ ]*\).*/librdkafka \1/p') rdkafka_performance against the same broker process"
    echo
    echo "| client | record | records | mode | acks | batching | rec/s | MB/s | p50 ms | p99 ms | max ms | failed | load avg (1/5/15 min) before → after |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$OUT"
log "report: $OUT"
