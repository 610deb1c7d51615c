#!/usr/bin/env bash
# The same report against OpenSSL 3.6 built from source (openssl-src, feature `vendored`), so that the
# version-gated scenarios are diffed too: init_thread(max > INT_MAX) rejected (3.6+) and
# ASYNC_set/get_mem_functions (3.2+). The first build compiles OpenSSL (~3-4 min on 2 cores); it uses
# its own target dir so that it does not invalidate the system-OpenSSL build.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in gcc make perl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -ne 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/conformance-vendored
cargo build --release -p conformance --features vendored
cargo run --release -p conformance --features vendored
