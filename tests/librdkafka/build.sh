#!/usr/bin/env bash
# Build librdkafka (library, its test-runner, and examples/rdkafka_performance)
# from the sources shipped inside the rdkafka-sys crate, into .tools/librdkafka/.
#
# The crate source is obtained only through cargo (crates.io): a throwaway
# Cargo project under .tools/ depends on rdkafka-sys and `cargo fetch`es it;
# the vendored librdkafka tree is then copied out of ~/.cargo/registry/src.
#
# Cached: if .tools/librdkafka/tests/test-runner and the examples already
# exist, nothing is rebuilt (FORCE=1 to rebuild).
#
# Usage: tests/librdkafka/build.sh
set -euo pipefail

RDKAFKA_SYS_VERSION="${RDKAFKA_SYS_VERSION:-4.10.0+2.12.1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.tools"
DEST="$TOOLS/librdkafka"
STAMP="$DEST/.runnel-built-$RDKAFKA_SYS_VERSION"
JOBS="${JOBS:-$(nproc)}"

log() { echo "[librdkafka-build] $*" >&2; }

if [[ -z "${FORCE:-}" && -f "$STAMP" && -x "$DEST/tests/test-runner" \
      && -x "$DEST/examples/rdkafka_performance" ]]; then
    log "already built at $DEST (FORCE=1 to rebuild)"
    exit 0
fi

# ---------------------------------------------------------------- packages
need_pkgs=()
for p in build-essential python3 zlib1g-dev libssl-dev libzstd-dev liblz4-dev \
         libsasl2-dev pkg-config; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
    log "installing Debian packages: ${need_pkgs[*]}"
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

# ---------------------------------------------------------------- sources
SRC_PROJ="$TOOLS/rdkafka-sys-fetch"
mkdir -p "$SRC_PROJ/src"
cat >"$SRC_PROJ/Cargo.toml" <<EOF
[package]
name = "rdkafka-sys-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
rdkafka-sys = "=$RDKAFKA_SYS_VERSION"

[workspace]
EOF
echo "" >"$SRC_PROJ/src/lib.rs"
log "cargo fetch rdkafka-sys =$RDKAFKA_SYS_VERSION"
(cd "$SRC_PROJ" && cargo fetch --quiet)

CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
CRATE_DIR=""
for d in "$CARGO_HOME_DIR"/registry/src/*/rdkafka-sys-"$RDKAFKA_SYS_VERSION"; do
    [[ -d "$d/librdkafka/tests" ]] && CRATE_DIR="$d"
done
if [[ -z "$CRATE_DIR" ]]; then
    echo "rdkafka-sys-$RDKAFKA_SYS_VERSION with librdkafka/tests not found under $CARGO_HOME_DIR/registry/src" >&2
    exit 1
fi
log "source: $CRATE_DIR/librdkafka"

rm -rf "$DEST"
mkdir -p "$DEST"
cp -a "$CRATE_DIR/librdkafka/." "$DEST/"
# Files unpacked from the registry are read-only in places; make the copy writable.
chmod -R u+w "$DEST"
# Some scripts lose their exec bit in the .crate archive.
find "$DEST" -maxdepth 2 \( -name configure -o -name '*.sh' -o -name 'mklove*' \) -type f -exec chmod +x {} +
chmod +x "$DEST"/configure "$DEST"/lds-gen.py 2>/dev/null || true
find "$DEST/mklove" "$DEST/packaging" "$DEST/tests" -type f \( -name '*.sh' -o -name '*.py' \) -exec chmod +x {} + 2>/dev/null || true

# ---------------------------------------------------------------- build
cd "$DEST"
start=$(date +%s)
log "configure"
./configure --disable-gssapi --disable-curl >"$DEST/build-configure.log" 2>&1 || {
    tail -50 "$DEST/build-configure.log" >&2; exit 1; }
log "make libs (-j$JOBS)"
make -j"$JOBS" libs >"$DEST/build-make-libs.log" 2>&1 || { tail -50 "$DEST/build-make-libs.log" >&2; exit 1; }
log "make examples (rdkafka_performance)"
make -j"$JOBS" -C examples rdkafka_performance >"$DEST/build-make-examples.log" 2>&1 || {
    tail -50 "$DEST/build-make-examples.log" >&2; exit 1; }
log "tests: make build"
(cd tests && make -j"$JOBS" build) >"$DEST/build-make-tests.log" 2>&1 || {
    tail -50 "$DEST/build-make-tests.log" >&2; exit 1; }
end=$(date +%s)
echo "$((end - start))" >"$STAMP"
log "built in $((end - start)) s -> $DEST (test-runner: $DEST/tests/test-runner)"
