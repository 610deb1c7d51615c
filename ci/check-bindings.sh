#!/usr/bin/env bash
# Fails (with a diff) when the committed asyncjob-sys/src/bindings.rs differs from what bindgen
# generates from csrc/asyncjob_fiber.h. Installs libclang itself; users of the crate never need it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libclang-dev >/dev/null
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/check-bindings"
# The build script writes the bindings into its OUT_DIR; cargo reports that directory.
out_dir=$(cargo build -p asyncjob-sys --features bindgen --message-format=json \
  | grep '"reason":"build-script-executed"' | grep '"package_id":"[^"]*asyncjob-sys' \
  | sed -n 's/.*"out_dir":"\([^"]*\)".*/\1/p' | tail -n 1)
generated="$out_dir/bindings.rs"
if [ -z "$out_dir" ] || [ ! -f "$generated" ]; then
  echo "check-bindings: bindgen produced no bindings.rs (out_dir: '$out_dir')" >&2
  exit 1
fi
if ! diff -u asyncjob-sys/src/bindings.rs "$generated"; then
  echo "check-bindings: asyncjob-sys/src/bindings.rs is stale; regenerate it with" >&2
  echo "  cargo build -p asyncjob-sys --features bindgen && cp \"$generated\" asyncjob-sys/src/bindings.rs" >&2
  exit 1
fi
echo "check-bindings: asyncjob-sys/src/bindings.rs is up to date"
