#!/usr/bin/env bash
# Generate a Python client for runnel.v1 from proto/ with grpcio-tools into a temp dir, then
# publish and subscribe with it against a running broker.
#
#   tests/grpc_python/run.sh 127.0.0.1:9093        (PYTHON=... to choose the interpreter)
#
# Needs grpcio and grpcio-tools (see requirements.txt). Exits non-zero on any mismatch.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
addr="${1:?usage: run.sh HOST:PORT}"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$python" -m grpc_tools.protoc -I "$root/proto/proto" --python_out="$out" --grpc_python_out="$out" \
    "$root"/proto/proto/runnel/v1/*.proto
PYTHONPATH="$out" "$python" "$here/client.py" "$addr"
