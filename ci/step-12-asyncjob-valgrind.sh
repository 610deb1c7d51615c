#!/usr/bin/env bash
# Every test binary (and example) of the safe crate `asyncjob`, the fault-injection ones included, under valgrind,
# built with asyncjob-sys's feature `sanitizers` so that fiber stacks are registered with Valgrind.
# Any valgrind error fails the step. Tests that run a child process (tests/child_process.rs,
# tests/faults.rs) run their children natively. About 2.5 minutes (2 of them building) on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# Shares the sanitizers build of asyncjob-sys with step-10.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/sys-backends"

if ! command -v valgrind >/dev/null || [ ! -f /usr/include/valgrind/valgrind.h ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

mapfile -t exes < <(cargo test -p asyncjob --features asyncjob-sys/sanitizers --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
[ ${#exes[@]} -gt 0 ] || { echo "no asyncjob test executables" >&2; exit 1; }
for exe in "${exes[@]}"; do
  echo "valgrind: $(basename "$exe")"
  RUST_BACKTRACE=0 valgrind -q --error-exitcode=99 --leak-check=no "$exe" --test-threads=1 -q
done
echo "[asyncjob-valgrind] ${#exes[@]} test binaries clean under valgrind"
