#!/usr/bin/env bash
# asyncjob-tokio under Valgrind memcheck and AddressSanitizer: every test binary and the example of the tokio integration
# (cancellation by timeout and abort, panics, nested block_on, fds shared by two jobs), built the way
# users build it (release profile, default features). asyncjob-sys detects Valgrind at run time and
# registers every fiber stack, so no special feature is needed. Any Valgrind error, any byte
# definitely lost, or a Valgrind crash fails the step. About 2 minutes on 2 shared cores (most of it
# building tokio in release), 30 s warm; the ASan half about 1 minute cold.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/tokio-valgrind"

if ! command -v valgrind >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

mapfile -t exes < <(cargo test --release -p asyncjob-tokio --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
[ ${#exes[@]} -gt 0 ] || { echo "no asyncjob-tokio test executables" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail=0
for exe in "${exes[@]}"; do
  name=$(basename "$exe")
  # Test binaries take libtest's options; the example runs with its defaults.
  args=(--test-threads=1 -q)
  case $exe in */examples/*) args=() ;; esac
  if RUST_BACKTRACE=0 valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
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
[ "$fail" = 0 ] || { echo "[tokio-valgrind] valgrind found problems" >&2; exit 1; }
echo "[tokio-valgrind] ${#exes[@]} binaries clean under valgrind (release, default features)"

# The same binaries under AddressSanitizer (nightly; asyncjob-sys built with `sanitizers` so that
# every fiber switch is announced to ASan). std itself is not instrumented (no rust-src here), so
# this checks asyncjob, asyncjob-tokio and tokio's own code: use-after-free of a job's stack or of a
# registration after cancellation, double frees, leaks at exit (LeakSanitizer).
if ! cargo +nightly -V >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
host=$(rustc -vV | sed -n 's/^host: //p')
mapfile -t asan_exes < <(RUSTFLAGS="-Zsanitizer=address" \
  CARGO_TARGET_DIR="$CARGO_TARGET_DIR/asan" \
  cargo +nightly test -p asyncjob-tokio -p asyncjob-sys --features asyncjob-sys/sanitizers \
    --target "$host" --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | grep '/asyncjob_tokio-\|/run-\|/fds-\|/cancel-' || true)
[ ${#asan_exes[@]} -gt 0 ] || { echo "no asyncjob-tokio ASan executables" >&2; exit 1; }
for exe in "${asan_exes[@]}"; do
  echo "asan $(basename "$exe")"
  ASAN_OPTIONS=detect_leaks=1 RUST_BACKTRACE=0 "$exe" --test-threads=1 -q
done
echo "[tokio-asan] ${#asan_exes[@]} binaries clean under AddressSanitizer"
