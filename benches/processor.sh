#!/usr/bin/env bash
# Processor benchmarks (BENCHMARKS.md, "Processor"): runs processor_bench for the default
# sensor pipeline — embedded and standalone throughput over JSON and protobuf readings,
# publish → alert latency at a fixed rate, and state size / checkpoint time for 100k devices —
# printing `uptime` before and after each run.
#
# usage: benches/processor.sh [RUNNEL_BIN] [BENCH_BIN]
# knobs (env): EVENTS (1000000), DEVICES (10000), STATE_DEVICES (100000), STATE_EVENTS
# (1000000), RATE (50000), LAT_SECONDS (20), PHASES ("throughput latency state"), DIR.
set -euo pipefail

RUNNEL=${1:-target/release/runnel}
BENCH=${2:-target/release/processor_bench}
EVENTS=${EVENTS:-1000000}
DEVICES=${DEVICES:-10000}
STATE_DEVICES=${STATE_DEVICES:-100000}
STATE_EVENTS=${STATE_EVENTS:-1000000}
RATE=${RATE:-50000}
LAT_SECONDS=${LAT_SECONDS:-20}
PHASES=${PHASES:-"throughput latency state"}
DIR=${DIR:-/tmp/runnel-processor-bench}

run() {
  echo "== $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "\$ $*"
  "$@"
  echo "== $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
}

echo "runnel: $RUNNEL; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for phase in $PHASES; do
  case $phase in
    throughput)
      for format in json protobuf; do
        for mode in embedded standalone; do
          run "$BENCH" throughput --runnel "$RUNNEL" --dir "$DIR" --mode $mode \
            --format $format --events "$EVENTS" --devices "$DEVICES"
        done
      done
      ;;
    latency)
      run "$BENCH" latency --runnel "$RUNNEL" --dir "$DIR" --rate "$RATE" \
        --seconds "$LAT_SECONDS" --devices "$DEVICES"
      ;;
    state)
      run "$BENCH" throughput --runnel "$RUNNEL" --dir "$DIR" --mode embedded \
        --format json --events "$STATE_EVENTS" --devices "$STATE_DEVICES"
      ;;
    *)
      echo "unknown phase $phase" >&2
      exit 2
      ;;
  esac
done
rm -rf "$DIR"
