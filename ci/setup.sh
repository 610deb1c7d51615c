#!/usr/bin/env bash
# Installs what the native CI steps need on a fresh Debian/Ubuntu machine. Idempotent and quiet when
# everything is present already. Cross-target toolchains are installed by the steps that need them.
set -euo pipefail
need=()
for pkg in gcc make pkg-config libssl-dev openssl valgrind gdb; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -ne 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
