#!/usr/bin/env bash
# Build the benchmark tools into .tools/bench/:
#   rdkafka_performance  -> .tools/librdkafka/examples/rdkafka_performance
#                           (built by tests/librdkafka/build.sh, same sources)
#   rk_helper            -> .tools/bench/rk_helper (mock cluster / create-topic)
#
# rk_helper links a copy of librdkafka.a whose mock broker keeps more data per
# partition: upstream's mock trims each partition's log to ~5 MiB / 100k
# batches (rdkafka_mock.c: mpart->max_size / max_cnt), which makes a consume
# benchmark over more than a few MB impossible. Only those two constants are
# changed (to 8 GiB / 10M batches); nothing else in the mock differs.
# Also installs iperf3 (Debian) for the loopback TCP ceiling, and tcpdump for WIRE=1 (the
# latency runs' split between client and broker, benches/wire_split.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RK="$ROOT/.tools/librdkafka"
OUT="$ROOT/.tools/bench"
mkdir -p "$OUT"

bash "$ROOT/tests/librdkafka/build.sh"

if ! command -v iperf3 >/dev/null 2>&1 || ! command -v tcpdump >/dev/null 2>&1; then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends iperf3 tcpdump >/dev/null
fi

SRC="$ROOT/benches/tools/rk_helper.c"
if [[ -x "$OUT/rk_helper" && "$OUT/rk_helper" -nt "$SRC" && "$OUT/rk_helper" -nt "$RK/src/librdkafka.a" ]]; then
    exit 0
fi

echo "[bench-build] building rk_helper (mock retention raised)" >&2
# Patched copy of the mock broker source, compiled with the same flags.
sed -e 's/mpart->max_size = 1024 \* 1024 \* 5;/mpart->max_size = (size_t)8 * 1024 * 1024 * 1024;/' \
    -e 's/mpart->max_cnt  = 100000;/mpart->max_cnt  = 10000000;/' \
    "$RK/src/rdkafka_mock.c" >"$OUT/rdkafka_mock_bigretention.c"
grep -q '(size_t)8 \* 1024' "$OUT/rdkafka_mock_bigretention.c" || {
    echo "mock retention patch did not apply" >&2; exit 1; }
CFLAGS="-g -O2 -fPIC -Wall -I$RK/src -I$RK"
gcc $CFLAGS -c "$OUT/rdkafka_mock_bigretention.c" -o "$OUT/rdkafka_mock.o"
cp "$RK/src/librdkafka.a" "$OUT/librdkafka-bigmock.a"
ar d "$OUT/librdkafka-bigmock.a" rdkafka_mock.o
ar r "$OUT/librdkafka-bigmock.a" "$OUT/rdkafka_mock.o" 2>/dev/null
LIBS=$(sed -n 's/^LIBS+=\s*//p' "$RK/Makefile.config" | tr '\n' ' ')
gcc -O2 -Wall -I"$RK/src" "$SRC" -o "$OUT/rk_helper" "$OUT/librdkafka-bigmock.a" $LIBS
echo "[bench-build] ok: $OUT/rk_helper" >&2
