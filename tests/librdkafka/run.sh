#!/usr/bin/env bash
# Run librdkafka's own test suite (tests listed in tests/librdkafka/tests.txt)
# against a Runnel broker.
#
# Usage: tests/librdkafka/run.sh RUNNEL_BIN
#        MOCK=1 tests/librdkafka/run.sh        # against librdkafka's mock cluster
#                                              # (checks the harness, not Runnel)
# Env:
#   ALL=1            run every test in tests.txt, including needs=... ones
#   ONLY="0001 0017" run just these test numbers (whatever tests.txt says)
#   TEST_TIMEOUT=S   hard timeout per test-runner invocation (default 300 s; a tests.txt line's
#                    timeout=S overrides it for that test)
#   RESULTS_DIR=D    where logs go (default: a new temp dir, printed)
#   RETRIES=N        run a failed test again up to N times (default 1; 0 = never). These
#                    tests time rebalances against a real broker on a 2-core machine, and a
#                    rare one loses a race (0113's b_subscribe_with_cb_test once in CI, on
#                    2026-12-03: consumer 2 saw one assignment callback where it counts on
#                    two). A retry is printed as RETRY with the first try's failure, a test
#                    that passed only on a retry is named in the summary, and one that fails
#                    every try fails the run.
#   TEST_KAFKA_VERSION (default 3.9.0)
#   RUST_LOG         the broker's log filter (default info,runnel_broker::group=debug: the group
#                    coordinator logs each join, sync, commit and leave answer and each refused
#                    heartbeat, and a failed try prints the last 40 of those lines)
#   RUNNEL_ARGS      extra `runnel serve` flags (default: --default-partitions 4, because
#                    librdkafka's test scenarios (tests/scenarios/default.json) assume
#                    auto-created topics get num_partitions=4, e.g. 0012/0015 produce to
#                    partitions 1..3 of auto-created topics)
#
# Each test runs as its own `./test-runner -L -E -p1` (never -Q) invocation
# with TESTS=NNNN, so one hang/crash does not hide the others. The broker is
# restarted if it died. Ends with the line `librdkafka: N passed, M failed`
# and exits non-zero if any selected test failed.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RK="$ROOT/.tools/librdkafka"
LIST="$HERE/tests.txt"
TEST_TIMEOUT="${TEST_TIMEOUT:-300}"
RETRIES="${RETRIES:-1}"
RUNNEL_ARGS="${RUNNEL_ARGS:---default-partitions 4}"
export TEST_KAFKA_VERSION="${TEST_KAFKA_VERSION:-3.9.0}"

RUNNEL_BIN="${1:-}"
if [[ -z "${MOCK:-}" ]]; then
    if [[ -z "$RUNNEL_BIN" || ! -x "$RUNNEL_BIN" ]]; then
        echo "usage: $0 RUNNEL_BIN   (or MOCK=1 $0)" >&2
        exit 2
    fi
    RUNNEL_BIN="$(cd "$(dirname "$RUNNEL_BIN")" && pwd)/$(basename "$RUNNEL_BIN")"
fi

if [[ ! -x "$RK/tests/test-runner" ]]; then
    bash "$HERE/build.sh" || exit 2
fi

RESULTS_DIR="${RESULTS_DIR:-$(mktemp -d /tmp/librdkafka-results.XXXXXX)}"
mkdir -p "$RESULTS_DIR"
WORK="$(mktemp -d /tmp/runnel-librdkafka.XXXXXX)"
BROKER_PID=""
BOOTSTRAP=""
restarts=0

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # host port timeout_s
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        if [[ -n "$BROKER_PID" ]] && ! kill -0 "$BROKER_PID" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

start_broker() {
    local n="$1"
    if [[ -n "${MOCK:-}" ]]; then
        [[ -x "$ROOT/.tools/bench/rk_helper" ]] || bash "$ROOT/benches/build_tools.sh" >&2 || exit 2
        local fifo="$WORK/mock-stdin"
        rm -f "$fifo"; mkfifo "$fifo"
        # keep the mock alive as long as this script holds the fifo open
        "$ROOT/.tools/bench/rk_helper" mock <"$fifo" >"$WORK/mock.out" 2>"$RESULTS_DIR/broker-$n.log" &
        BROKER_PID=$!
        exec 7>"$fifo"
        local i
        for ((i = 0; i < 100; i++)); do
            grep -q '^BOOTSTRAP' "$WORK/mock.out" 2>/dev/null && break
            sleep 0.1
        done
        BOOTSTRAP="$(awk '/^BOOTSTRAP/{print $2}' "$WORK/mock.out")"
        [[ -n "$BOOTSTRAP" ]] || { echo "mock did not start" >&2; exit 2; }
    else
        local port data
        port="$(free_port)"
        data="$WORK/data-$n"
        mkdir -p "$data"
        NO_COLOR=1 RUST_LOG="${RUST_LOG:-info,runnel_broker::group=debug}" "$RUNNEL_BIN" serve --data-dir "$data" --kafka-addr "127.0.0.1:$port" $RUNNEL_ARGS \
            >"$RESULTS_DIR/broker-$n.log" 2>&1 &
        BROKER_PID=$!
        BOOTSTRAP="127.0.0.1:$port"
        if ! wait_port 127.0.0.1 "$port" 30; then
            echo "runnel did not start listening on $BOOTSTRAP; log:" >&2
            tail -20 "$RESULTS_DIR/broker-$n.log" >&2
            exit 2
        fi
    fi
    cat >"$RK/tests/test.conf" <<EOF
# written by runnel tests/librdkafka/run.sh
bootstrap.servers=$BOOTSTRAP
EOF
    echo "broker: $([[ -n "${MOCK:-}" ]] && echo "librdkafka mock" || echo "$RUNNEL_BIN") at $BOOTSTRAP (pid $BROKER_PID, log $RESULTS_DIR/broker-$n.log)"
}

stop_broker() {
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill "$BROKER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
    fi
    if [[ -n "${MOCK:-}" ]]; then exec 7>&-; fi
    BROKER_PID=""
}
cleanup() { stop_broker; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- select tests
selected=()
declare -A timeout_of=()
while IFS= read -r line; do
    line="${line%%#*}"
    read -r num rest <<<"$line" || true
    [[ "$num" =~ ^[0-9]{4}$ ]] || continue
    if [[ "$rest" =~ timeout=([0-9]+) ]]; then timeout_of[$num]="${BASH_REMATCH[1]}"; fi
    if [[ -n "${ONLY:-}" ]]; then
        [[ " $ONLY " == *" $num "* ]] && selected+=("$num")
    elif [[ -n "${ALL:-}" || "$rest" != *needs=* ]]; then
        selected+=("$num")
    fi
done <"$LIST"
echo "tests: ${selected[*]}"
echo "results: $RESULTS_DIR"

start_broker 0
passed=0
failed=0
failed_list=()
flaky_list=()
for t in "${selected[@]}"; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        restarts=$((restarts + 1))
        echo "!! broker died (before $t); restarting" >&2
        start_broker "$restarts"
    fi
    limit="${timeout_of[$t]:-$TEST_TIMEOUT}"
    for ((attempt = 1; attempt <= RETRIES + 1; attempt++)); do
        log="$RESULTS_DIR/$t.log"
        [[ $attempt -gt 1 ]] && log="$RESULTS_DIR/$t.try$attempt.log"
        t0=$(date +%s)
        blog="$RESULTS_DIR/broker-$restarts.log"
        blog_from=$(($(stat -c %s "$blog" 2>/dev/null || echo 0) + 1))
        { (cd "$RK/tests" && LD_LIBRARY_PATH="$RK/src:$RK/src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" RDKAFKA_TEST_CONF="$RK/tests/test.conf" TESTS="$t" \
            timeout -k 10 "$limit" ./test-runner -L -E -p1) >"$log" 2>&1; } 2>/dev/null
        rc=$?
        dt=$(($(date +%s) - t0))
        if [[ $rc -eq 0 ]] && grep -qE "PASSED|passed" "$log" && ! grep -q "0 tests passed\|No tests to run" "$log"; then
            break
        fi
        why="$(grep -m1 -E "TEST FAILURE|FAIL:|Test assertion failed|### Test .* failed|ASSERT|Assertion|TIMEOUT|timed out" "$log" | cut -c1-300)"
        [[ $rc -eq 124 || ( $rc -eq 137 && $dt -ge $limit ) ]] && why="killed after ${limit}s${why:+; $why}"
        why="${why:-see $log; it ends: $(tail -n1 "$log" | cut -c1-200)}"
        # The detail of a failure, from its own log (the test's ### line says what it waited for).
        [[ $attempt -le RETRIES ]] && echo "RETRY $t (try $attempt failed after ${dt}s, rc=$rc): $why" &&
            sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -m2 -E "^### Test|timed out \(timeout" | cut -c1-300
        # What the group coordinator answered during the failed try (the broker logs each
        # JoinGroup / SyncGroup / commit / LeaveGroup answer and each refused Heartbeat at
        # debug): the last of it, next to the failure, to tell a rebalance race from a
        # client-side one.
        tail -c "+$blog_from" "$blog" 2>/dev/null >"$log.broker"
        group_log="$(grep "runnel_broker::group" "$log.broker" | tail -n 40 | cut -c1-300)"
        if [[ -n "$group_log" ]]; then
            echo "--- $t: the last group coordinator answers of that try ($log.broker):"
            echo "$group_log"
        fi
        kill -0 "$BROKER_PID" 2>/dev/null || break
    done
    if [[ $rc -eq 0 ]] && grep -qE "PASSED|passed" "$log" && ! grep -q "0 tests passed\|No tests to run" "$log"; then
        passed=$((passed + 1))
        if [[ $attempt -gt 1 ]]; then
            flaky_list+=("$t")
            echo "PASS $t (${dt}s, on try $attempt)"
        else
            echo "PASS $t (${dt}s)"
        fi
    else
        failed=$((failed + 1))
        failed_list+=("$t")
        echo "FAIL $t (${dt}s, rc=$rc): $why"
    fi
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "!! broker is not running after $t (see $RESULTS_DIR/broker-$restarts.log)" >&2
    fi
done

# When something failed, say what state the machine and the broker were in, here, next to the
# summary (a CI log is often read from its end): free disk and memory, the broker's size, and
# the broker's own warnings and errors.
if [[ ${#failed_list[@]} -gt 0 ]]; then
    echo "--- at the end: disk $(df -h --output=avail,pcent "$WORK" | tail -1 | xargs) free under $WORK;" \
        "memory $(free -m | awk '/^Mem:/{print $7}') MiB available"
    if [[ -n "$BROKER_PID" ]] && [[ -r "/proc/$BROKER_PID/status" ]]; then
        echo "--- broker pid $BROKER_PID: $(grep -E '^(VmRSS|Threads)' "/proc/$BROKER_PID/status" | xargs)," \
            "$(ls "/proc/$BROKER_PID/fd" 2>/dev/null | wc -l) open fds, data $(du -sh "$WORK" 2>/dev/null | cut -f1)"
    fi
    blog="$RESULTS_DIR/broker-$restarts.log"
    echo "--- $blog: $(grep -c ' ERROR ' "$blog") ERROR and $(grep -c ' WARN ' "$blog") WARN lines; the last ones:"
    grep -E ' (ERROR|WARN) ' "$blog" | tail -8 | cut -c1-300
fi
stop_broker

[[ ${#failed_list[@]} -gt 0 ]] && echo "failed: ${failed_list[*]} (logs in $RESULTS_DIR)"
[[ ${#flaky_list[@]} -gt 0 ]] && echo "passed only on a retry: ${flaky_list[*]} (first tries' logs in $RESULTS_DIR)"
[[ $restarts -gt 0 ]] && echo "broker restarts: $restarts"
echo "librdkafka: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
