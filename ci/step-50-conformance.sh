#!/usr/bin/env bash
# The conformance report against the system libcrypto: every named scenario and 1,000 random programs
# diffed between OpenSSL and asyncjob, the deviation checks, and the speed table. Fails when any
# scenario differs, OpenSSL departs from the reference, or a deviation check fails (speed targets are
# reported, not enforced: this host's timing is shared and noisy).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libssl-dev pkg-config
fi
cargo run --release -p conformance
