#!/usr/bin/env bash
# Every test binary of the safe crate `asyncjob`, the fault-injection ones included, under Valgrind
# memcheck, built the way users build it: release profile, default features. asyncjob-sys detects
# Valgrind at run time in every build (it then makes mprotect gaps and registers every fiber stack),
# so no special feature is needed. Any Valgrind error, any byte definitely lost, or a Valgrind crash
# fails the step. Tests that run a child process (child_process.rs, faults.rs, soundness.rs) run
# their children natively. About 2.5 minutes on 2 cores, most of it building.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/asyncjob-valgrind"

if ! command -v valgrind >/dev/null || [ ! -f /usr/include/valgrind/valgrind.h ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

mapfile -t exes < <(cargo test --release -p asyncjob --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
[ ${#exes[@]} -gt 0 ] || { echo "no asyncjob test executables" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail=0
for exe in "${exes[@]}"; do
  name=$(basename "$exe")
  # Test binaries take libtest's options (harness=false ones ignore them); the examples (man_page,
  # op_loop, driver) run with their defaults.
  args=(--test-threads=1 -q)
  case $exe in */examples/*) args=() ;; esac
  if RUST_BACKTRACE=0 valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
      "$exe" "${args[@]}" > "$log" 2>&1; then
    rc=0
  else
    rc=$?
  fi
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n 1)
  definite=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1)
  echo "valgrind $name: exit $rc, errors ${errors:-?}, definitely lost ${definite:-0} bytes"
  if [ "$rc" != 0 ] || [ "${errors:-1}" != 0 ] || { [ -n "$definite" ] && [ "$definite" != 0 ]; } \
      || grep -qE "client switching stacks|the 'impossible' happened" "$log"; then
    cat "$log"
    fail=1
  fi
done
[ "$fail" = 0 ] || { echo "[asyncjob-valgrind] valgrind found problems" >&2; exit 1; }
echo "[asyncjob-valgrind] ${#exes[@]} test binaries clean under valgrind (release, default features)"
