#!/usr/bin/env bash
# Replicated produce (issue 6): the same rdkafka_performance produce runs as
# benches/kafka_throughput.sh, against one `runnel serve` node and against a 3-node cluster
# (`[cluster] nodes`, Raft per partition) with an RF-3 topic, acks=all, alternating
# single / cluster in every round, so both see the same machine load.
#
# Usage: benches/replication_throughput.sh RUNNEL_BIN FAILOVER_BIN
#   RUNNEL_BIN   release `runnel` (cargo build --release -p runnel-broker --bin runnel)
#   FAILOVER_BIN release `failover` (cargo build --release -p runnel-benches --bin failover);
#                only its `create-topic` subcommand is used here: it creates the topic with
#                the cluster's default replication factor (3), while rk_helper asks for 1.
#
# Env knobs (defaults in brackets):
#   ROUNDS [3]            single/cluster pairs
#   SIZES ["100 1024"]    record sizes
#   COUNT_100 [2000000]   records per throughput run, 100 B records
#   COUNT_1K  [500000]    records per throughput run, 1 KiB records
#   LAT_RATE [2000]  LAT_SECONDS [10]   fixed-rate latency runs (linger.ms=0)
#   RUN_CAP [90]          hard cap (s) on any single client run
#   BENCH_DATA [/tmp]     parent of the data dirs (must be a real disk: fsync is measured)
#   BALLAST_MB [0]        hold this much touched anonymous memory for the whole run ("auto":
#                         MemFree less 768 MiB). On a VM whose balloon reports free pages to the
#                         host (virtio free page reporting, as on the machine of BENCHMARKS.md),
#                         the first write into a reported page costs a host fault: page-cache
#                         writes into free memory ran ~7x slower per byte (dd, 2 GB: 4.1 s of
#                         system time vs 0.6 s re-using just-freed pages). With the ballast,
#                         free memory is near the watermark, so new page cache recycles old page
#                         cache, as on a long-running host, and single and cluster pay the same.
#                         (Leaving GBs free is not enough: those free pages are reported ones.)
#   OUT [target/bench/replication_throughput-<utc>.md]
#
# What is measured (as in kafka_throughput.sh): one topic with 1 partition per run,
#   throughput: rdkafka_performance -P -s SIZE -c COUNT -a -1 -X linger.ms=5 -> rec/s, MB/s
#               (delivered records / (last delivery report - first produce)), and the brokers'
#               CPU time (user + system, all nodes of the target) per MB of payload, from
#               /proc/PID/stat before and after the run (robust to other load on the machine).
#   latency:    rdkafka_performance -P -l -A FILE -r LAT_RATE -a -1 -X linger.ms=0 -> per record
#               produce() to delivery report, p50/p99/max ms.
# The client is given all three cluster addresses and follows the leader named in Metadata.
# Everything runs on 127.0.0.1.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PERF="$ROOT/.tools/librdkafka/examples/rdkafka_performance"
RUNNEL_BIN="$(realpath "${1:?usage: $0 RUNNEL_BIN FAILOVER_BIN}")"
FAILOVER_BIN="$(realpath "${2:?usage: $0 RUNNEL_BIN FAILOVER_BIN}")"
ROUNDS="${ROUNDS:-3}"
SIZES="${SIZES:-100 1024}"
COUNT_100="${COUNT_100:-2000000}"
COUNT_1K="${COUNT_1K:-500000}"
LAT_RATE="${LAT_RATE:-2000}"
LAT_SECONDS="${LAT_SECONDS:-10}"
RUN_CAP="${RUN_CAP:-90}"
BENCH_DATA="${BENCH_DATA:-/tmp}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-$ROOT/target/bench/replication_throughput-$STAMP.md}"
mkdir -p "$(dirname "$OUT")"
[[ -x "$PERF" ]] || bash "$ROOT/benches/build_tools.sh" >&2 || { echo "tool build failed" >&2; exit 2; }
WORK="$(mktemp -d "$BENCH_DATA/runnel-repl.XXXXXX")"

log() { echo "[repl $(date +%H:%M:%S)] $*" >&2; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
PIDS=()
BOOTSTRAP=""
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    PIDS=()
}
BALLAST_PID=""
cleanup() { stop_all; [[ -n "$BALLAST_PID" ]] && kill "$BALLAST_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

BALLAST_MB="${BALLAST_MB:-0}"
if [[ "$BALLAST_MB" == auto ]]; then
    BALLAST_MB=$(( $(awk '/^MemFree:/{print $2}' /proc/meminfo) / 1024 - 768 ))
    (( BALLAST_MB < 0 )) && BALLAST_MB=0
fi
if (( BALLAST_MB > 0 )); then
    python3 - "$BALLAST_MB" "$WORK/ballast.ready" <<'EOF' &
import sys, time
mb = int(sys.argv[1])
hold = [bytearray(1 << 20) for _ in range(mb)]   # zero-filled: every page touched
for chunk in hold:
    for i in range(0, len(chunk), 4096):
        chunk[i] = 1
open(sys.argv[2], "w").close()
while True:
    time.sleep(3600)
EOF
    BALLAST_PID=$!
    for ((i = 0; i < 600; i++)); do [[ -e "$WORK/ballast.ready" ]] && break; sleep 0.5; done
    [[ -e "$WORK/ballast.ready" ]] || { log "ballast of $BALLAST_MB MiB not ready"; exit 2; }
    log "holding a ballast of $BALLAST_MB MiB (MemFree now $(awk '/^MemFree:/{print int($2/1024)}' /proc/meminfo) MiB)"
fi

# start_single DIR -> BOOTSTRAP
start_single() {
    local dir="$1" port; port="$(free_port)"
    mkdir -p "$dir"
    RUST_LOG=warn "$RUNNEL_BIN" serve --data-dir "$dir/data" --kafka-addr "127.0.0.1:$port" \
        --grpc-addr 127.0.0.1:0 --http-addr "127.0.0.1:$(free_port)" >>"$WORK/single.log" 2>&1 &
    PIDS+=($!)
    BOOTSTRAP="127.0.0.1:$port"
}

# start_cluster DIR -> BOOTSTRAP (three nodes, default [cluster] timing)
start_cluster() {
    local dir="$1" i entries="" k=() r=()
    mkdir -p "$dir"
    for i in 1 2 3; do k[$i]="$(free_port)"; r[$i]="$(free_port)"; done
    for i in 1 2 3; do
        entries+="  { id = $i, kafka = \"127.0.0.1:${k[$i]}\", raft = \"127.0.0.1:${r[$i]}\" },"$'\n'
    done
    for i in 1 2 3; do
        cat >"$dir/node$i.toml" <<EOF
data_dir = "$dir/node$i"
kafka_addr = "127.0.0.1:${k[$i]}"
grpc_addr = "127.0.0.1:0"
http_addr = "127.0.0.1:$(free_port)"
node_id = $i

[processor]
enabled = false

[cluster]
nodes = [
$entries]
EOF
        RUST_LOG=warn "$RUNNEL_BIN" serve --config "$dir/node$i.toml" >>"$WORK/cluster.log" 2>&1 &
        PIDS+=($!)
    done
    BOOTSTRAP="127.0.0.1:${k[1]},127.0.0.1:${k[2]},127.0.0.1:${k[3]}"
}

create_topic() { # TOPIC
    local i
    for ((i = 0; i < 60; i++)); do
        timeout 30 "$FAILOVER_BIN" create-topic --bootstrap "$BOOTSTRAP" --topic "$1" \
            --partitions 1 >>"$WORK/create.log" 2>&1 && return 0
        sleep 0.5
    done
    log "cannot create $1"; tail -5 "$WORK/create.log" >&2
    return 1
}

declare -A R
# perf_produce, perf_latency, count_for
# shellcheck source=benches/rdkafka_perf.sh
source "$ROOT/benches/rdkafka_perf.sh"

LOADS=()
for ((round = 1; round <= ROUNDS; round++)); do
    for target in single cluster; do
        dir="$WORK/$target-$round"
        "start_$target" "$dir"
        LOADS+=("round $round $target: $(cut -d' ' -f1-3 /proc/loadavg)")
        log "round $round: $target at $BOOTSTRAP (load $(cut -d' ' -f1-3 /proc/loadavg))"
        for size in $SIZES; do
            if create_topic "tp-$size"; then
                before="$(cpu_ticks "${PIDS[@]}")"
                perf_produce "$round.$target.$size" "tp-$size" "$size" "$(count_for "$size")" -1
                after="$(cpu_ticks "${PIDS[@]}")"
                # Broker CPU (every node of the target) per MB of payload acknowledged.
                R[$round.$target.$size.cpu]="$(python3 -c 'import sys
t, hz, size, n = (float(x) for x in sys.argv[1:])
print(f"{t / hz * 1000 / (size * n / 1e6):.2f}")' "$((after - before))" "$(getconf CLK_TCK)" "$size" "$(count_for "$size")")"
            fi
            create_topic "lat-$size" && perf_latency "$round.$target.$size" "lat-$size" "$size" -1
        done
        stop_all
    done
done

median() { # values... -> median (non-numeric skipped)
    python3 -c '
import sys, statistics
v = []
for x in sys.argv[1:]:
    try: v.append(float(x.split()[0]))
    except Exception: pass
print(f"{statistics.median(v):.3f}".rstrip("0").rstrip(".") if v else "-")' "$@"
}
{
    echo "## Replicated produce ($STAMP)"
    echo
    echo "- command: \`benches/replication_throughput.sh $RUNNEL_BIN $FAILOVER_BIN\` (ROUNDS=$ROUNDS BALLAST_MB=$BALLAST_MB SIZES=\"$SIZES\" COUNT_100=$COUNT_100 COUNT_1K=$COUNT_1K LAT_RATE=$LAT_RATE LAT_SECONDS=$LAT_SECONDS)"
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r)"
    echo "- runnel: git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null), data on $(df -P "$BENCH_DATA" | awk 'NR==2{print $1}')"
    echo "- load average at each start: ${LOADS[*]}; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| round | record | single rec/s | single MB/s | RF-3 rec/s | RF-3 MB/s | RF-3 / single | broker CPU ms per MB, single / RF-3 (3 nodes) | single p50 / p99 / max ms | RF-3 p50 / p99 / max ms | single / RF-3 achieved rec/s |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for size in $SIZES; do
        s=() c=() sp50=() sp99=() cp50=() cp99=()
        for ((round = 1; round <= ROUNDS; round++)); do
            a="$round.single.$size" b="$round.cluster.$size"
            ratio="$(python3 -c 'import sys
try: print(f"{float(sys.argv[1].split()[0]) / float(sys.argv[2].split()[0]):.2f}x")
except Exception: print("-")' "${R[$b.rps]:-x}" "${R[$a.rps]:-x}")"
            echo "| $round | $size B | ${R[$a.rps]:--} | ${R[$a.mbs]:--} | ${R[$b.rps]:--} | ${R[$b.mbs]:--} | $ratio | ${R[$a.cpu]:--} / ${R[$b.cpu]:--} | ${R[$a.p50]:--} / ${R[$a.p99]:--} / ${R[$a.max]:--} | ${R[$b.p50]:--} / ${R[$b.p99]:--} / ${R[$b.max]:--} | ${R[$a.rate]:--} / ${R[$b.rate]:--} |"
            s+=("${R[$a.rps]:-x}"); c+=("${R[$b.rps]:-x}")
            sp50+=("${R[$a.p50]:-x}"); sp99+=("${R[$a.p99]:-x}"); cp50+=("${R[$b.p50]:-x}"); cp99+=("${R[$b.p99]:-x}")
        done
        ms="$(median "${s[@]}")" mc="$(median "${c[@]}")"
        mr="$(python3 -c 'import sys
try: print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}x")
except Exception: print("-")' "$mc" "$ms")"
        echo "| **median** | $size B | $ms | | $mc | | $mr | | p50 $(median "${sp50[@]}"), p99 $(median "${sp99[@]}") | p50 $(median "${cp50[@]}"), p99 $(median "${cp99[@]}") | |"
    done
} | tee "$OUT"
