#!/usr/bin/env bash
# Metrics overhead: Kafka produce throughput of one Runnel binary with per-request metrics
# recorded (`metrics = true`, the default) and not recorded (`metrics = false`), in the same
# run, in on/off pairs (which one goes first alternates) so that drift hits both alike.
#
# Usage: benches/metrics_overhead.sh RUNNEL_BIN
#   ROUNDS [5]        on/off pairs
#   COUNT  [3000000]  100 B records per run (rdkafka_performance -P, acks=1, 1 partition)
#   SIZE   [100]      record size
#   PARTS  [1]        partitions
#   BENCH_DATA [.tools/bench/runnel-data]  data dir parent (on disk: fsync is real)
#   PRODUCER_ARGS ["-X linger.ms=5"]  more rdkafka_performance arguments; the worst case for
#                     per-request recording is one record per request:
#                     "-X linger.ms=0 -X batch.num.messages=1"
#   COST_BIN [target/release/metrics_cost]  if present: ns per request spent recording,
#                     multiplied by the requests the "on" runs served, over their broker CPU
# Needs .tools/librdkafka (tests/librdkafka/build.sh) and .tools/bench/rk_helper
# (benches/build_tools.sh). Loopback only.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PERF="$ROOT/.tools/librdkafka/examples/rdkafka_performance"
HELPER="$ROOT/.tools/bench/rk_helper"
BIN="${1:?usage: benches/metrics_overhead.sh RUNNEL_BIN}"
ROUNDS="${ROUNDS:-5}"
COUNT="${COUNT:-3000000}"
SIZE="${SIZE:-100}"
PARTS="${PARTS:-1}"
BENCH_DATA="${BENCH_DATA:-$ROOT/.tools/bench/runnel-data}"
PRODUCER_ARGS="${PRODUCER_ARGS:--X linger.ms=5}"
COST_BIN="${COST_BIN:-$ROOT/target/release/metrics_cost}"
for tool in "$PERF" "$HELPER" "$BIN"; do
    [[ -x "$tool" ]] || { echo "missing $tool (see the header of this script)" >&2; exit 1; }
done
WORK="$(mktemp -d)"
PID=""
stop() { [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; PID=""; }
trap 'stop; rm -rf "$WORK" "$BENCH_DATA/metrics-$$"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# cpu_ticks PID: its CPU time so far, in clock ticks
# shellcheck source=benches/rdkafka_perf.sh
source "$ROOT/benches/rdkafka_perf.sh"

# run_once on|off -> prints "records/s broker-cpu-ms-per-million-records"
run_once() {
    local mode="$1" port dir="$BENCH_DATA/metrics-$$"
    rm -rf "$dir"; mkdir -p "$dir"
    port="$(free_port)"
    printf 'metrics = %s\n[processor]\nenabled = false\n' "$([[ $mode == on ]] && echo true || echo false)" >"$WORK/runnel.toml"
    RUST_LOG=warn "$BIN" serve --config "$WORK/runnel.toml" --data-dir "$dir" \
        --kafka-addr "127.0.0.1:$port" >>"$WORK/runnel.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    timeout 30 "$HELPER" create-topic "127.0.0.1:$port" bench "$PARTS" >>"$WORK/runnel.log" 2>&1 || { echo "create-topic failed" >&2; return 1; }
    # shellcheck disable=SC2086 # PRODUCER_ARGS is a list of arguments
    timeout -k 5 300 "$PERF" -P -t bench -b "127.0.0.1:$port" -s "$SIZE" -c "$COUNT" -a 1 \
        $PRODUCER_ARGS -q >"$WORK/perf.log" 2>&1
    local line; line="$(grep -E 'messages produced' "$WORK/perf.log" | tail -1)"
    local requests=0
    if [[ "$mode" == on ]]; then
        # Sanity: the "on" broker really recorded the produce.
        local http=$((port + 2)) got
        got="$(python3 - "$http" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
def total(prefix):
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(prefix))
print("%.0f %.0f" % (total("runnel_produce_records_total{"), total('runnel_kafka_requests_total{api="Produce"}')))
PY
)"
        read -r got requests <<<"$got"
        echo "on: runnel_produce_records_total = $got in $requests Produce requests" >&2
    fi
    local ticks hz; ticks="$(cpu_ticks "$PID")"; hz="$(getconf CLK_TCK)"
    stop
    [[ -n "$line" ]] || { echo "produce failed: $(tail -3 "$WORK/perf.log")" >&2; return 1; }
    printf '%s %s %s\n' "$(sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/' <<<"$line")" \
        "$(awk -v t="$ticks" -v hz="$hz" -v n="$COUNT" 'BEGIN { printf "%.0f", t * 1000 / hz * 1e6 / n }')" \
        "$requests"
}

on=(); off=(); oncpu=(); offcpu=(); onreq=()
for ((r = 1; r <= ROUNDS; r++)); do
    # Alternate which goes first: the run after another pays for its predecessor's writeback.
    if ((r % 2)); then
        read -r a ac ar < <(run_once on) || exit 1
        read -r b bc _ < <(run_once off) || exit 1
    else
        read -r b bc _ < <(run_once off) || exit 1
        read -r a ac ar < <(run_once on) || exit 1
    fi
    [[ -n "$a" && -n "$b" ]] || exit 1
    on+=("$a"); off+=("$b"); oncpu+=("$ac"); offcpu+=("$bc"); onreq+=("$ar")
    echo "round $r: on $a rec/s ($ac broker CPU ms per 1M records), off $b rec/s ($bc ms)" >&2
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.0f\n", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mo="$(median "${on[@]}")"; mf="$(median "${off[@]}")"
echo "| metrics | runs (rec/s) | median rec/s |"
echo "|---|---|---|"
echo "| on  | ${on[*]} | $mo |"
echo "| off | ${off[*]} | $mf |"
awk -v on="$mo" -v off="$mf" 'BEGIN { printf "cost of recording: %.2f%% (1 - on/off, medians)\n", (1 - on / off) * 100 }'
mco="$(median "${oncpu[@]}")"; mcf="$(median "${offcpu[@]}")"
echo
echo "| metrics | broker CPU ms per 1M records | median |"
echo "|---|---|---|"
echo "| on  | ${oncpu[*]} | $mco |"
echo "| off | ${offcpu[*]} | $mcf |"
awk -v on="$mco" -v off="$mcf" 'BEGIN { printf "broker CPU cost of recording: %.2f%% (on/off - 1, medians)\n", (on / off - 1) * 100 }'

if [[ -x "$COST_BIN" ]]; then
    # Direct: ns of recording per request x requests per 1M records, over broker CPU per 1M.
    cost="$("$COST_BIN" --threads 1 --requests 2000000)"
    echo
    echo "$cost"
    ns="$(sed -E 's/.*cost: ([0-9.-]+) ns.*/\1/' <<<"$cost")"
    mr="$(median "${onreq[@]}")"
    awk -v ns="$ns" -v req="$mr" -v n="$COUNT" -v cpu="$mco" 'BEGIN {
        per_m = req * 1e6 / n
        printf "Produce requests per 1M records: %.0f; recording: %.3f ms of CPU per 1M records = %.3f%% of the broker CPU (%s ms per 1M records)\n", per_m, per_m * ns / 1e6, per_m * ns / 1e6 / cpu * 100, cpu
    }'
fi
