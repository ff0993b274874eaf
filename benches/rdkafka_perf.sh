# Shared by benches/kafka_throughput.sh and benches/replication_throughput.sh (sourced, not
# run): librdkafka's rdkafka_performance runs and the parsing of their summaries.
# The caller sets PERF (rdkafka_performance), BOOTSTRAP, RUN_CAP, WORK, LAT_RATE, LAT_SECONDS,
# COUNT_100, COUNT_1K, optionally LINGER_MS [5], declares the associative array R (results)
# and defines log().

# perf_produce KEY TOPIC SIZE COUNT ACKS [extra args...]  -> R[KEY.rps], R[KEY.mbs]
perf_produce() {
    local key="$1" topic="$2" size="$3" count="$4" acks="$5"; shift 5
    local f="$WORK/$key.produce.log"
    timeout -k 5 "$RUN_CAP" "$PERF" -P -t "$topic" -b "$BOOTSTRAP" -s "$size" -c "$count" \
        -a "$acks" -X linger.ms="${LINGER_MS:-5}" -q "$@" >"$f" 2>&1
    local rc=$?
    local line; line="$(grep -E 'messages produced' "$f" | tail -1)"
    if [[ -z "$line" || $rc -ne 0 ]]; then
        R[$key.rps]="failed (rc=$rc)"; R[$key.mbs]="-"
        log "produce $key failed rc=$rc: $(tail -3 "$f" | tr '\n' ' ')"
        return 1
    fi
    local delivered failed
    delivered="$(sed -E 's/.* ([0-9]+) delivered.*/\1/' <<<"$line")"
    failed="$(sed -E 's/.*, ([0-9]+) failed\).*/\1/' <<<"$line")"
    R[$key.rps]="$(sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/' <<<"$line")"
    R[$key.mbs]="$(sed -E 's/.* and ([0-9.]+) MB\/s.*/\1/' <<<"$line")"
    if [[ "$failed" != "0" || "$delivered" != "$count" ]]; then
        R[$key.rps]="${R[$key.rps]} (!$failed failed)"
    fi
    log "produce $key: ${R[$key.rps]} rec/s ${R[$key.mbs]} MB/s"
}

# perf_consume KEY TOPIC PARTS COUNT -> R[KEY.rps], R[KEY.mbs]
perf_consume() {
    local key="$1" topic="$2" parts="$3" count="$4"
    local f="$WORK/$key.consume.log" pargs=() p
    for ((p = 0; p < parts; p++)); do pargs+=(-p "$p"); done
    timeout -k 5 "$RUN_CAP" "$PERF" -C -t "$topic" -b "$BOOTSTRAP" "${pargs[@]}" -o beginning \
        -c "$count" -q >"$f" 2>&1
    parse_consume "$key" "$f" "$count" $?
}

# parse_consume KEY LOGFILE COUNT RC -> R[KEY.rps], R[KEY.mbs] from rdkafka_performance's summary
parse_consume() {
    local key="$1" f="$2" count="$3" rc="$4"
    local line; line="$(grep -E 'messages \(.*bytes\) consumed' "$f" | grep -v INTERVAL | tail -1)"
    if [[ -z "$line" ]]; then
        R[$key.rps]="failed (rc=$rc)"; R[$key.mbs]="-"
        log "consume $key failed rc=$rc: $(tail -3 "$f" | tr '\n' ' ')"
        return 1
    fi
    local got; got="$(sed -E 's/^% ([0-9]+) messages.*/\1/' <<<"$line")"
    R[$key.rps]="$(sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/' <<<"$line")"
    R[$key.mbs]="$(sed -E 's/.*\(([0-9.]+) MB\/s\).*/\1/' <<<"$line")"
    [[ "$got" != "$count" ]] && R[$key.rps]="${R[$key.rps]} (only $got of $count, rc=$rc)"
    log "consume $key: ${R[$key.rps]} rec/s ${R[$key.mbs]} MB/s"
}

# steal_mark -> "TICKS SECONDS": CPU time the hypervisor gave to others so far, all CPUs, in
# clock ticks (/proc/stat "cpu" line, field 8), and the time now
steal_mark() { awk -v now="$EPOCHREALTIME" '/^cpu /{print $9, now; exit}' /proc/stat; }
# steal_since MARK -> the steal since MARK as a share of all CPUs' time since then, in %
steal_since() {
    local mark=($1)
    awk -v t0="${mark[0]}" -v s0="${mark[1]}" -v now="$EPOCHREALTIME" -v n="$(nproc)" \
        -v hz="$(getconf CLK_TCK)" '/^cpu /{ printf "%.1f\n", 100 * ($9 - t0) / ((now - s0) * n * hz); exit }' /proc/stat
}

# perf_latency KEY TOPIC SIZE ACKS -> R[KEY.p50], R[KEY.p99], R[KEY.max] (ms), R[KEY.steal] (%)
perf_latency() {
    local key="$1" topic="$2" size="$3" acks="$4"
    local f="$WORK/$key.lat.log" lf="$WORK/$key.lat.txt"
    local count=$((LAT_RATE * LAT_SECONDS)) mark
    local cap=""
    [[ "${WIRE:-0}" == 1 ]] && cap="$(wire_capture_start "$key")"
    mark="$(steal_mark)"
    timeout -k 5 "$RUN_CAP" "$PERF" -P -t "$topic" -b "$BOOTSTRAP" -s "$size" -c "$count" \
        -a "$acks" -r "$LAT_RATE" -l -A "$lf" -X linger.ms=0 -q >"$f" 2>&1
    local rc=$?
    R[$key.steal]="$(steal_since "$mark")"
    [[ -n "$cap" ]] && wire_capture_split "$key" "$cap" "$lf"
    if [[ ! -s "$lf" ]]; then
        R[$key.p50]="failed (rc=$rc)"; R[$key.p99]="-"; R[$key.max]="-"
        log "latency $key failed rc=$rc: $(tail -3 "$f" | tr '\n' ' ')"
        return 1
    fi
    read -r n p50 p99 mx < <(python3 - "$lf" <<'EOF'
import sys, math
v = sorted(int(x) for x in open(sys.argv[1]) if x.strip())
def pct(p): return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))] / 1000.0
print(len(v), f"{pct(0.50):.3f}", f"{pct(0.99):.3f}", f"{v[-1] / 1000.0:.3f}")
EOF
)
    R[$key.p50]="$p50"; R[$key.p99]="$p99"; R[$key.max]="$mx"
    R[$key.rate]="$(grep -E 'messages produced' "$f" | tail -1 | sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/')"
    [[ "$n" != "$count" ]] && R[$key.p50]="$p50 (n=$n/$count)"
    log "latency $key: n=$n p50=${p50}ms p99=${p99}ms max=${mx}ms CPU steal ${R[$key.steal]} %"
}

# wire_capture_start KEY -> "PID PCAP": tcpdump capturing the Produce traffic to BOOTSTRAP on
# loopback (whole packets: benches/wire_split.py reassembles the streams), started
# and running before this returns
wire_capture_start() {
    local pcap="$WORK/$1.pcap" port="${BOOTSTRAP##*:}" i
    command -v tcpdump >/dev/null || { log "WIRE=1 needs tcpdump (benches/build_tools.sh installs it)"; return 1; }
    tcpdump -i lo -n -s 0 -B 32768 -w "$pcap" "tcp port $port" >"$WORK/$1.tcpdump.log" 2>&1 &
    local pid=$!
    for ((i = 0; i < 50; i++)); do
        grep -q "listening on" "$WORK/$1.tcpdump.log" && break
        sleep 0.1
    done
    echo "$pid $pcap"
}

# wire_capture_split KEY "PID PCAP" LATFILE: stop the capture and split each record's latency
# into held (produce() to its request's packet), wire (request packet to response packet) and
# after (response packet to delivery report) -> R[KEY.wire] (p50/p99 of each, ms, and how many
# records were over 1 ms, by their largest part)
wire_capture_split() {
    local key="$1" pid="${2%% *}" pcap="${2#* }" lf="$3" line
    # tcpdump reads the kernel's capture buffer a block at a time, a block once it is full or
    # a second old: wait that second out, or the last packets would be lost
    sleep 1.5
    # not this shell's child (started in a command substitution): poll until it has written
    # the capture out and exited
    kill -INT "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    if line="$(python3 "$ROOT/benches/wire_split.py" "$pcap" "${BOOTSTRAP##*:}" "$lf" 2>&1)"; then
        R[$key.wire.held]="$(sed -E 's/.*held: p50=([0-9.]+) p99=([0-9.]+).*/\1 \/ \2/' <<<"$line")"
        R[$key.wire.wire]="$(sed -E 's/.*wire: p50=([0-9.]+) p99=([0-9.]+).*/\1 \/ \2/' <<<"$line")"
        R[$key.wire.after]="$(sed -E 's/.*after: p50=([0-9.]+) p99=([0-9.]+).*/\1 \/ \2/' <<<"$line")"
        R[$key.wire.over]="$(sed -E 's/.*over1ms=([0-9]+) held=([0-9]+) wire=([0-9]+) after=([0-9]+).*/\1: \2 \/ \3 \/ \4/' <<<"$line")"
        log "wire split $key: $line"
    else
        R[$key.wire.held]="failed"
        log "wire split $key failed: $line"
    fi
    rm -f "$pcap"
}

count_for() { [[ "$1" == 100 ]] && echo "$COUNT_100" || echo "$COUNT_1K"; }

# cpu_ticks PID... -> their CPU time (user + system) so far, summed, in clock ticks
# (/proc/PID/stat fields 14 and 15; the command name may hold spaces, so cut after its ")").
cpu_ticks() {
    local p t=0
    for p in "$@"; do
        t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
