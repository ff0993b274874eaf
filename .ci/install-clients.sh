#!/usr/bin/env bash
# Installs the third-party Kafka clients the conformance tests drive (tests/clients/).
#
# Idempotent; meant to run as root on a Debian bookworm machine that already has the Rust
# toolchain, gcc, python3 (3.11+) with pip, and node 20 with npm. Only Debian's packages,
# PyPI and the npm registry are used; nothing downloads prebuilt binaries from elsewhere.
#
#   kcat (Debian, links librdkafka 2.0.2)           -> /usr/bin/kcat
#   confluent-kafka, kafka-python, aiokafka + codecs -> <repo>/.venv
#   kafkajs + snappy/lz4/zstd codec plugins          -> <repo>/tests/clients/js/node_modules
#   playwright-core (drives Debian's chromium)       -> <repo>/tests/clients/js/node_modules
#   C build deps for the rdkafka crate (librdkafka from source via rdkafka-sys)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[install-clients] %s\n' "$*" >&2; }
start=$(date +%s)

# Pinned versions (keep in sync with tests/clients/README.md).
PY_PACKAGES=(
  confluent-kafka==2.16.1 # bundles librdkafka 2.16.0
  kafka-python==3.0.12
  aiokafka==0.14.0
  cramjam==2.14.0       # aiokafka's snappy/lz4/zstd
  python-snappy==0.7.3  # kafka-python's snappy
  lz4==4.4.5            # kafka-python's lz4
  zstandard==0.25.0     # kafka-python's zstd
  grpcio==1.85.1        # generated Python gRPC client (tests/grpc_python)
  grpcio-tools==1.85.1
  protobuf==7.36.2
)

# --- Debian packages ---------------------------------------------------------------------
APT_PACKAGES=(
  kcat          # the CLI client under test
  build-essential make perl pkg-config  # rdkafka-sys runs librdkafka's ./configure && make
  zlib1g-dev    # rdkafka's libz feature (libz-sys finds the system zlib)
  python3-venv
  chromium      # headless browser for the dashboard test (driven by playwright-core)
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    log "need root to install: ${missing[*]}"
    exit 1
  fi
  log "apt-get install ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "Debian packages already installed"
fi

# --- Node.js (only if missing) -------------------------------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing nodejs + npm from Debian"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
fi

# --- Python venv ---------------------------------------------------------------------------
PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
if .venv/bin/python - "${PY_PACKAGES[@]}" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
then
  log "Python clients already installed"
else
  log "pip install ${PY_PACKAGES[*]}"
  .venv/bin/python -m pip install --disable-pip-version-check -q "${PY_PACKAGES[@]}"
fi

# --- KafkaJS -------------------------------------------------------------------------------
# lz4@0.6.5 (kafkajs-lz4) and cppzst@2.0.6 (@kafkajs/zstd) are native addons that node-gyp
# builds from source against node's headers. Node 20's headers need C++17; cppzst's
# binding.gyp asks for an older standard, so force C++17 (a later -std flag wins).
JS_DIR=tests/clients/js
stamp="$JS_DIR/node_modules/.runnel-lock-sha"
want_sha="$(cat "$JS_DIR/package.json" "$JS_DIR/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_sha" ]]; then
  log "KafkaJS already installed"
else
  log "npm ci in $JS_DIR"
  # Build native addons against the installed node headers, never downloaded ones.
  if [[ -z "${npm_config_nodedir:-}" && -f /usr/include/node/node.h ]]; then
    export npm_config_nodedir=/usr
  fi
  (cd "$JS_DIR" && CXXFLAGS="${CXXFLAGS:-} -std=gnu++17" npm ci --no-audit --no-fund --loglevel=error)
  echo "$want_sha" >"$stamp"
fi

# --- sanity checks -------------------------------------------------------------------------
kcat -V | head -n 2 >&2
.venv/bin/python -c 'import confluent_kafka, kafka, aiokafka, cramjam, snappy, lz4.frame, zstandard; print("confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()[0], "kafka-python", kafka.__version__, "aiokafka", aiokafka.__version__)' >&2
chromium --version >&2 || true
(cd "$JS_DIR" && node -e 'require("playwright-core"); require("kafkajs"); require("kafkajs-snappy"); require("kafkajs-lz4"); require("@kafkajs/zstd"); console.log("kafkajs", require("kafkajs/package.json").version, "+ snappy/lz4/zstd codecs")') >&2

log "done in $(($(date +%s) - start))s"
