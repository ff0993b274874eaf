#!/usr/bin/env bash
# Consumer-group member and idempotent producer for kcat (Debian's kcat 1.7.1, librdkafka 2.0.2),
# driven by tests/tests/groups.rs. Implements the `member` and `produce` sub-commands and the
# stdout line protocol of tests/clients/GROUPS.md.
#
# member: `kcat -G` (balanced KafkaConsumer) prints REC lines itself (-f, line-buffered through
# stdbuf so every line is one write and lines from kcat and from this script never mix). kcat
# reports rebalances only on stderr ("% Group G rebalanced (memberid M): assigned: T [0], T [3]",
# "... revoked: ...", or "incremental assignment/revoke" lines with cooperative-sticky); a reader
# turns them into ASSIGN lines and copies all of kcat's stderr to stderr. No -o: in -G mode kcat
# would apply it to every assignment and ignore committed offsets, so auto.offset.reset=earliest
# does the job. kcat auto-commits and cannot commit explicitly, so there are no COMMIT lines.
# kcat exits on any consumer error, so the topic must exist before the member starts: on
# "Subscribed topic not available" it exits 1 (librdkafka's consumer ignores
# allow.auto.create.topics for subscriptions, so it cannot create the topic either).
# SIGTERM/SIGINT are forwarded to kcat, which closes the consumer (leaving the group); then
# CLOSED. kcat runs under `setpriv --pdeathsig KILL`, so SIGKILL on this script kills it too (a
# crashed member must stop heartbeating).
#
# produce: kcat cannot choose a partition per record, so one idempotent kcat -P per partition
# (run concurrently) sends that partition's records in order. kcat prints no offsets, so no ACKED
# lines; each run's delivery reports (-v -v) are counted and the script exits non-zero if kcat
# failed or not every record was reported delivered.
#
# Usage: tests/clients/sh/kcat_group.sh member --bootstrap HOST:PORT --topic T --group G --name NAME
#          [--session-timeout-ms 6000] [--strategy default|cooperative]
#        tests/clients/sh/kcat_group.sh produce --bootstrap HOST:PORT --topic T --count N
#          --partitions P [--prefix S]
set -uo pipefail

KCAT=${KCAT:-kcat}

usage() {
  echo "$*" >&2
  echo "usage: kcat_group.sh member --bootstrap HOST:PORT --topic T --group G --name NAME" \
    "[--session-timeout-ms MS] [--strategy default|cooperative]" >&2
  echo "       kcat_group.sh produce --bootstrap HOST:PORT --topic T --count N --partitions P" \
    "[--prefix S]" >&2
  exit 2
}
log() { echo "[kcat_group] $*" >&2; }

COMMAND=${1:-}
shift || true
BOOTSTRAP= TOPIC= GROUP= NAME= SESSION_TIMEOUT=6000 STRATEGY=default COUNT= PARTITIONS= PREFIX=idem
while (($#)); do
  (($# >= 2)) || usage "missing value for $1"
  case "$COMMAND:$1" in
  *:--bootstrap) BOOTSTRAP=$2 ;;
  *:--topic) TOPIC=$2 ;;
  *:--name) NAME=$2 ;;
  member:--group) GROUP=$2 ;;
  member:--session-timeout-ms) SESSION_TIMEOUT=$2 ;;
  member:--strategy) STRATEGY=$2 ;;
  produce:--count) COUNT=$2 ;;
  produce:--partitions) PARTITIONS=$2 ;;
  produce:--prefix) PREFIX=$2 ;;
  *) usage "unknown argument $1 for sub-command '$COMMAND'" ;;
  esac
  shift 2
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- member --------------------------------------------------------------------------------

# Reads kcat's stderr: copies every line to stderr, prints READY once kcat has subscribed and
# ASSIGN after every rebalance callback. kcat writes a rebalance line with several fprintf calls,
# so a librdkafka log line from another thread ("%N|...") may land inside it; the rest of the
# partition list then follows on its own line(s), which are collected before printing.
read_kcat_stderr() {
  trap '' TERM INT # the reader must outlive kcat to print its last lines
  local line rest mode= pending=0 ready=0
  local -A owned=() listed=()
  parse_list() { # "T [0], T [3]" (possibly cut short by a spliced log line)
    local s=$1
    if [[ $s == *%* ]]; then
      s=${s%%%*}
      pending=1
    else
      pending=0
    fi
    while [[ $s =~ \[([0-9]+)\] ]]; do
      listed[${BASH_REMATCH[1]}]=1
      s=${s#*"${BASH_REMATCH[0]}"}
    done
  }
  finish() { # apply the collected list and print the member's full current set
    local p
    case $mode in
    replace) owned=() ;&
    add) for p in "${!listed[@]}"; do owned[$p]=1; done ;;
    remove) for p in "${!listed[@]}"; do unset "owned[$p]"; done ;;
    esac
    if ((${#owned[@]})); then
      printf 'ASSIGN %s\n' "$(printf '%s\n' "${!owned[@]}" | sort -n | paste -sd, -)"
    else
      printf 'ASSIGN -\n'
    fi
  }
  while IFS= read -r line; do
    printf '%s\n' "$line" >&2
    if ((pending)); then
      if [[ -z $line || $line == "T ["* || $line == ", "* ]]; then
        parse_list "$line"
        ((pending)) || finish
      fi
      continue # log lines that came in between are only copied
    fi
    listed=()
    case $line in
    "% Waiting for group rebalance"*)
      ((ready)) || printf 'READY\n'
      ready=1
      continue
      ;;
    "% Group "*" rebalanced (memberid "*"): assigned: "*)
      mode=replace rest=${line#*"): assigned: "}
      ;;
    "% Group "*" rebalanced (memberid "*"): revoked: "*)
      mode=remove rest=${line#*"): revoked: "}
      ;;
    "% Group "*" rebalanced: incremental assignment of "*"rebalance protocol): "*)
      mode=add rest=${line#*"rebalance protocol): "}
      ;;
    "% Group "*" rebalanced: incremental revoke of "*"rebalance protocol): "*)
      mode=remove rest=${line#*"rebalance protocol): "}
      ;;
    *) continue ;;
    esac
    parse_list "$rest"
    ((pending)) || finish
  done
}

member() {
  [[ -n $BOOTSTRAP && -n $TOPIC && -n $GROUP && -n $NAME ]] ||
    usage "member needs --bootstrap, --topic, --group and --name"
  local props=(
    -X "client.id=$NAME"
    -X "session.timeout.ms=$SESSION_TIMEOUT"
    -X heartbeat.interval.ms=1000
    -X auto.offset.reset=earliest
  )
  case $STRATEGY in
  default) ;;
  cooperative) props+=(-X partition.assignment.strategy=cooperative-sticky) ;;
  *) usage "unknown strategy $STRATEGY" ;;
  esac

  mkfifo "$WORK/stderr"
  read_kcat_stderr <"$WORK/stderr" &
  local reader=$!
  # -E: while the broker restarts librdkafka reports "all brokers down", on which kcat would
  # otherwise quit; the consumer reconnects and rejoins on its own.
  setpriv --pdeathsig KILL stdbuf -oL "$KCAT" -b "$BOOTSTRAP" -E -G "$GROUP" "${props[@]}" \
    -f 'REC %p %o %s\n' "$TOPIC" 2>"$WORK/stderr" &
  local kcat=$!
  local terminating=0 rc
  trap 'terminating=1; kill -TERM "$kcat" 2>/dev/null' TERM INT
  # wait returns early when a trapped signal arrives, so wait until the process is gone; bash
  # keeps a reaped child's status, which the last wait then returns.
  while kill -0 "$kcat" 2>/dev/null; do wait "$kcat"; done
  wait "$kcat"
  rc=$?
  while kill -0 "$reader" 2>/dev/null; do wait "$reader"; done
  if ((terminating)); then
    if ((rc != 0)); then
      log "kcat exited with status $rc while closing"
      exit 1
    fi
    printf 'CLOSED\n'
    exit 0
  fi
  log "kcat exited unexpectedly with status $rc"
  exit $((rc == 0 ? 1 : rc))
}

# --- produce -------------------------------------------------------------------------------

produce() {
  [[ -n $BOOTSTRAP && -n $TOPIC && -n $COUNT && -n $PARTITIONS ]] ||
    usage "produce needs --bootstrap, --topic, --count and --partitions"
  [[ $COUNT =~ ^[0-9]+$ && $PARTITIONS =~ ^[1-9][0-9]*$ ]] || usage "--count and --partitions must be numbers"
  local p pids=() expected=() failed=0
  for ((p = 0; p < PARTITIONS; p++)); do
    if ((p < COUNT)); then
      seq "$p" "$PARTITIONS" $((COUNT - 1)) | awk -v prefix="$PREFIX" '{ printf "k-%d\t%s-%d\n", $1, prefix, $1 }'
    fi >"$WORK/in-$p"
    expected[p]=$(wc -l <"$WORK/in-$p")
    # -v -v makes kcat report every successful delivery on stderr; they are counted below.
    # -E: a dropped connection makes librdkafka report "all brokers down", on which kcat would
    # otherwise quit; librdkafka reconnects and retries until message.timeout.ms (default 300 s).
    "$KCAT" -b "$BOOTSTRAP" -P -t "$TOPIC" -p "$p" -K '\t' -v -v -E \
      -X "client.id=${NAME:-runnel-group-kcat-producer}" \
      -X enable.idempotence=true -X acks=all -X linger.ms=5 \
      -X batch.size=1024 \
      <"$WORK/in-$p" 2>"$WORK/err-$p" &
    pids[p]=$!
  done
  for ((p = 0; p < PARTITIONS; p++)); do
    local rc=0 delivered
    wait "${pids[p]}" || rc=$?
    delivered=$(grep -c "Message delivered to partition $p " "$WORK/err-$p")
    grep -v "Message delivered to partition" "$WORK/err-$p" | sed "s/^/[partition $p] /" >&2
    if ((rc != 0)); then
      log "kcat -P for partition $p exited with status $rc"
      failed=1
    fi
    if grep -q "Delivery failed" "$WORK/err-$p"; then
      log "kcat -P for partition $p reported delivery failures"
      failed=1
    fi
    if ((delivered != expected[p])); then
      log "partition $p: $delivered of ${expected[p]} records reported delivered"
      failed=1
    fi
  done
  exit $failed
}

case $COMMAND in
member) member ;;
produce) produce ;;
*) usage "unknown sub-command '$COMMAND'" ;;
esac
