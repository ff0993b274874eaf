#!/usr/bin/env bash
# Conformance run for kcat (Debian's kcat 1.7.1, librdkafka 2.0.2).
#
# kcat cannot create topics, so TOPIC must already exist with 3 partitions (the Rust test
# creates it through rdkafka's admin API; a mock cluster auto-creates it). For every codec and
# partition, one kcat -P run produces keyed records with headers to that partition; then each
# partition is consumed from the beginning and diffed against the expected records, and
# ListOffsets is checked through -Q (earliest, latest, by timestamp) and -o end / -o -1 / -o s@TS.
# kcat cannot set record timestamps, so timestamp lookups use the timestamps read back.
#
# Usage: tests/clients/sh/kcat.sh HOST:PORT TOPIC [CODECS]   (CODECS default: none,gzip,snappy,lz4,zstd)
set -uo pipefail

BOOTSTRAP=${1:?usage: kcat.sh HOST:PORT TOPIC [CODECS]}
TOPIC=${2:?usage: kcat.sh HOST:PORT TOPIC [CODECS]}
IFS=, read -r -a CODECS <<<"${3:-none,gzip,snappy,lz4,zstd}"
KCAT=${KCAT:-kcat}
PARTITIONS=3
PER_CODEC=4
TOTAL=$((${#CODECS[@]} * PER_CODEC))
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

failures=0
checks=0
fail() {
  failures=$((failures + 1))
  echo "MISMATCH $*"
}
check_eq() { # what expected actual
  checks=$((checks + 1))
  [[ "$2" == "$3" ]] || fail "$1: expected '$2', got '$3'"
}
step() { echo "[kcat] $*"; }
kc() { "$KCAT" -b "$BOOTSTRAP" -X client.id=runnel-conformance-kcat "$@"; }

step "$("$KCAT" -V 2>&1 | grep -m1 Version)"
step "bootstrap $BOOTSTRAP, topic $TOPIC, codecs ${CODECS[*]}"

# kcat headers apply to every record of one run: codec, partition, a repeated key, an empty value.
expected_line() { # codec partition j
  local v="value-$1-$2-$3-"
  for ((r = 0; r < 8 * $3; r++)); do v+="0123456789abcdef"; done
  printf '%s|%s|key-%s-%s-%s|%s|codec=%s,part=%s,dup=first,dup=second,empty=\n' \
    "$2" "$(($4))" "$1" "$2" "$3" "$v" "$1" "$2"
}

# --- produce ------------------------------------------------------------------------------
for ci in "${!CODECS[@]}"; do
  codec=${CODECS[$ci]}
  step "produce $PER_CODEC records to each partition with compression $codec"
  for ((p = 0; p < PARTITIONS; p++)); do
    for ((j = 0; j < PER_CODEC; j++)); do
      expected_line "$codec" "$p" "$j" "$((ci * PER_CODEC + j))" | awk -F'|' '{print $3 ":" $4}'
    done >"$WORK/in-$ci-$p"
    if ! kc -P -t "$TOPIC" -p "$p" -z "$codec" -K : -X enable.idempotence=false -X linger.ms=50 \
      -H "codec=$codec" -H "part=$p" -H dup=first -H dup=second -H empty= \
      <"$WORK/in-$ci-$p" 2>"$WORK/produce-err"; then
      fail "kcat -P (codec $codec, partition $p) exited non-zero: $(cat "$WORK/produce-err")"
    fi
    if grep -qiE 'fail|error' "$WORK/produce-err"; then
      fail "kcat -P (codec $codec, partition $p) reported: $(cat "$WORK/produce-err")"
    fi
  done
done

# --- metadata -----------------------------------------------------------------------------
meta=$(kc -L -t "$TOPIC" 2>&1)
checks=$((checks + 1))
grep -q "topic \"$TOPIC\" with $PARTITIONS partitions" <<<"$meta" ||
  fail "metadata: expected topic \"$TOPIC\" with $PARTITIONS partitions, got: $meta"

# --- consume from the beginning -----------------------------------------------------------
for ((p = 0; p < PARTITIONS; p++)); do
  step "consume partition $p from the beginning"
  for ci in "${!CODECS[@]}"; do
    for ((j = 0; j < PER_CODEC; j++)); do
      expected_line "${CODECS[$ci]}" "$p" "$j" "$((ci * PER_CODEC + j))"
    done
  done >"$WORK/expected-$p"
  kc -C -t "$TOPIC" -p "$p" -o beginning -e -q -f '%p|%o|%k|%s|%h|%T\n' >"$WORK/raw-$p" 2>"$WORK/consume-err-$p" ||
    fail "kcat -C partition $p exited non-zero: $(cat "$WORK/consume-err-$p")"
  cut -d'|' -f1-5 "$WORK/raw-$p" >"$WORK/actual-$p"
  cut -d'|' -f6 "$WORK/raw-$p" >"$WORK/ts-$p"
  checks=$((checks + 1))
  if ! diff -u "$WORK/expected-$p" "$WORK/actual-$p" >"$WORK/diff-$p"; then
    fail "partition $p records differ (--- expected, +++ consumed: partition|offset|key|value|headers):"
    cat "$WORK/diff-$p"
  fi
  # Timestamps: CreateTime set by kcat, so positive and non-decreasing within the partition.
  checks=$((checks + 1))
  awk 'NR > 1 && $1 < prev { bad = 1 } $1 <= 0 { bad = 1 } { prev = $1 } END { exit bad }' "$WORK/ts-$p" ||
    fail "partition $p timestamps not positive and non-decreasing: $(tr '\n' ' ' <"$WORK/ts-$p")"

  # Start inside the second (compressed) batch: kcat must skip the batch's head.
  mid=$((PER_CODEC + 1))
  if ((mid < TOTAL)); then
    kc -C -t "$TOPIC" -p "$p" -o "$mid" -e -q -f '%p|%o|%k|%s|%h\n' >"$WORK/mid-$p" 2>/dev/null
    checks=$((checks + 1))
    if ! diff -u <(tail -n +$((mid + 1)) "$WORK/expected-$p") "$WORK/mid-$p" >"$WORK/diff-mid-$p"; then
      fail "partition $p records from offset $mid differ:"
      cat "$WORK/diff-mid-$p"
    fi
  fi
  # The last record only (ListOffsets latest, then fetch at latest - 1).
  check_eq "partition $p: kcat -o -1 (last record)" "$(tail -n 1 "$WORK/expected-$p" | cut -d'|' -f2,3)" \
    "$(kc -C -t "$TOPIC" -p "$p" -o -1 -e -q -f '%o|%k\n' 2>/dev/null)"
  # Nothing at the end.
  check_eq "partition $p: kcat -o end (no records)" "" "$(kc -C -t "$TOPIC" -p "$p" -o end -e -q -f '%o\n' 2>/dev/null)"
done

# --- ListOffsets through -Q ---------------------------------------------------------------
query() { # partition timestamp -> offset printed by kcat -Q
  kc -Q -t "$TOPIC:$1:$2" 2>&1 | awk -v t="$TOPIC" '$1 == t && $3 == "offset" { print $4 }'
}
# First offset whose timestamp is >= ts, from the timestamps read back; -1 if none.
first_at_or_after() { # partition ts
  awk -v ts="$2" '$1 >= ts { print NR - 1; found = 1; exit } END { if (!found) print -1 }' "$WORK/ts-$1"
}
step "ListOffsets: earliest, latest and by timestamp (kcat -Q, -o s@TS)"
for ((p = 0; p < PARTITIONS; p++)); do
  check_eq "partition $p: -Q earliest (-2)" 0 "$(query "$p" -2)"
  check_eq "partition $p: -Q latest (-1)" "$TOTAL" "$(query "$p" -1)"
  [[ -s "$WORK/ts-$p" ]] || continue
  for k in 0 1 $PER_CODEC $((PER_CODEC + 1)) $((TOTAL - 1)); do
    ((k < TOTAL)) || continue
    ts=$(sed -n "$((k + 1))p" "$WORK/ts-$p")
    want=$(first_at_or_after "$p" "$ts")
    check_eq "partition $p: -Q timestamp $ts (record $k)" "$want" "$(query "$p" "$ts")"
    check_eq "partition $p: -o s@$ts first offset" "$want" \
      "$(kc -C -t "$TOPIC" -p "$p" -o "s@$ts" -e -q -c 1 -f '%o\n' 2>/dev/null)"
  done
  last=$(tail -n 1 "$WORK/ts-$p")
  check_eq "partition $p: -Q timestamp after the last record" -1 "$(query "$p" $((last + 1)))"
done

if ((failures)); then
  echo "FAILED kcat: $failures of $checks checks failed"
  exit 1
fi
echo "OK kcat: $checks checks passed"
