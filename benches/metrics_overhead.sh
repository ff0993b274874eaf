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
for tool in "$PERF" "$HELPER" "$BIN"; do
    [[ -x "$tool" ]] || { echo "missing $tool (see the header of this script)" >&2; exit 1; }
done
WORK="$(mktemp -d)"
PID=""
stop() { [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; PID=""; }
trap 'stop; rm -rf "$WORK" "$BENCH_DATA/metrics-$$"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run_once on|off -> prints records/s
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
    timeout -k 5 120 "$PERF" -P -t bench -b "127.0.0.1:$port" -s "$SIZE" -c "$COUNT" -a 1 \
        -X linger.ms=5 -q >"$WORK/perf.log" 2>&1
    local line; line="$(grep -E 'messages produced' "$WORK/perf.log" | tail -1)"
    if [[ "$mode" == on ]]; then
        # Sanity: the "on" broker really recorded the produce.
        local http=$((port + 2)) got
        got="$(python3 - "$http" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
print(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("runnel_produce_records_total{")))
PY
)"
        echo "on: runnel_produce_records_total = $got" >&2
    fi
    stop
    [[ -n "$line" ]] || { echo "produce failed: $(tail -3 "$WORK/perf.log")" >&2; return 1; }
    sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/' <<<"$line"
}

on=(); off=()
for ((r = 1; r <= ROUNDS; r++)); do
    # Alternate which goes first: the run after another pays for its predecessor's writeback.
    if ((r % 2)); then
        a="$(run_once on)" || exit 1
        b="$(run_once off)" || exit 1
    else
        b="$(run_once off)" || exit 1
        a="$(run_once on)" || exit 1
    fi
    on+=("$a"); off+=("$b")
    echo "round $r: on $a rec/s, off $b rec/s" >&2
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mo="$(median "${on[@]}")"; mf="$(median "${off[@]}")"
echo "| metrics | runs (rec/s) | median rec/s |"
echo "|---|---|---|"
echo "| on  | ${on[*]} | $mo |"
echo "| off | ${off[*]} | $mf |"
awk -v on="$mo" -v off="$mf" 'BEGIN { printf "cost of recording: %.2f%% (1 - on/off, medians)\n", (1 - on / off) * 100 }'
