#!/usr/bin/env bash
# asyncjob-sys reliability checks that `cargo test --workspace` cannot make by itself:
#   1. every asyncjob-sys test binary of the DEFAULT build (no features; then the ucontext backend)
#      under Valgrind memcheck: 0 errors, no Valgrind crash, and no "client switching stacks?"
#      warning (the shim detects Valgrind at run time in every build, guards the gap below each stack
#      with mprotect and registers every fiber stack; tests/main_thread.rs switches from the main
#      thread, whose stack is far from the fiber stacks);
#   2. the stack tests once more with the mprotect fallback forced (ASYNCJOB_STACK_GUARD=mprotect),
#      as on kernels before 6.13: map-count cap, gap and overflow reports.
#   3. ThreadSanitizer (nightly, feature sanitizers: TSan fiber annotations) on the test binaries
#      without libtest's harness (main_thread, many_fibers, and asyncjob's threads and
#      notify_threads), both backends. std is not instrumented (-Cunsafe-allow-abi-mismatch=sanitizer):
#      the nightly here has no rust-src for -Zbuild-std, and without it the libtest-based binaries
#      report races inside libtest's own channels; for the same reason asyncjob's notifier and
#      driver use no std Mutex on their cross-thread path, and Arc's last drop is suppressed
#      (ci/tsan-arc-fence.supp).
# Run time here (2 shared cores): 56 s with warm target dirs, 200 s cold (the TSan build of the
# dependencies is most of that); Valgrind is most of the warm run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/sys-reliability"

section() { echo; echo "---- [sys-reliability] $*"; }

if ! command -v valgrind >/dev/null || [ ! -f /usr/include/valgrind/valgrind.h ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail=0
for features in "" ucontext; do
  section "valgrind, default build${features:+ + $features}"
  mapfile -t exes < <(cargo test -p asyncjob-sys ${features:+--features "$features"} --no-run \
    --message-format=json | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
  [ ${#exes[@]} -gt 0 ] || { echo "no test executables for features '$features'" >&2; exit 1; }
  for exe in "${exes[@]}"; do
    name=$(basename "$exe")
    # Test binaries take libtest's options; main_thread (no harness) ignores them.
    if valgrind --error-exitcode=99 --leak-check=no "$exe" --test-threads=1 -q >"$log" 2>&1; then
      rc=0
    else
      rc=$?
    fi
    errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n 1)
    echo "valgrind [${features:-default}] $name: exit $rc, errors ${errors:-?}"
    if [ "$rc" != 0 ] || [ "${errors:-1}" != 0 ] || grep -qE "client switching stacks|the 'impossible' happened" "$log"; then
      cat "$log"
      fail=1
    fi
  done
done

section "stack tests with the mprotect fallback forced"
ASYNCJOB_STACK_GUARD=mprotect cargo test -p asyncjob-sys --test stacks --test overflow --test fiber

section "ThreadSanitizer (nightly, feature sanitizers), harness-free test binaries"
if ! cargo +nightly -V >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
host=$(rustc -vV | sed -n 's/^host: //p')
for features in sanitizers "sanitizers ucontext"; do
  RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer" \
    CARGO_TARGET_DIR="$CARGO_TARGET_DIR/tsan" \
    cargo +nightly test -p asyncjob-sys --features "$features" --target "$host" \
    --test main_thread --test many_fibers
  # The job layer on top: four threads running jobs, wait contexts and pools at once; notifiers
  # called from three threads while the job's thread drives (a Driver on both backends, then the
  # set_waker/take_notification protocol by hand). ci/tsan-arc-fence.supp: Arc's last drop only
  # (its acquire fence is invisible to TSan); see that file.
  RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer" \
    TSAN_OPTIONS="suppressions=$PWD/ci/tsan-arc-fence.supp" \
    CARGO_TARGET_DIR="$CARGO_TARGET_DIR/tsan" \
    cargo +nightly test -p asyncjob --features "asyncjob-sys/${features// / asyncjob-sys/}" \
    --target "$host" --test threads --test notify_threads
done

[ "$fail" = 0 ] || { echo "[sys-reliability] valgrind found problems" >&2; exit 1; }
echo "[sys-reliability] all checks passed"
