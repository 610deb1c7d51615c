#!/usr/bin/env bash
# libasyncjob (asyncjob-capi) under AddressSanitizer: the library built with nightly rustc
# -Zsanitizer=address and feature `sanitizers` (ASan fiber-switch annotations in the shim), every C
# test program built with gcc -fsanitize=address (its libasan is the runtime; the .so only imports
# __asan_*), run with no ASan or LeakSanitizer report allowed. The Rust std is not rebuilt with ASan
# (-Zbuild-std is not needed: allocations still go through the ASan allocator, only std's own code
# is uninstrumented). First a canary: a heap overflow inside a job must be reported, so that a clean
# run means something. Then ThreadSanitizer on the programs with threads (library built with
# -Zsanitizer=thread, programs with gcc -fsanitize=thread). About 1-2 minutes (mostly the two
# nightly builds).
#
# Options: allocator_may_return_null=1 because reliability.c asks for impossible args copies and
# expects ASYNC_ERR (as glibc's malloc returns NULL); fast_unwind_on_malloc=0 so that leak stacks
# include the C frames. The suppressions name the test functions that leave a job paused at thread
# exit on purpose: those jobs are leaked as in OpenSSL, and LeakSanitizer does not scan the leaked
# stacks that still point to them (Valgrind does: step-40 counts them as reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/capi-asan"

need=()
command -v cc >/dev/null || need+=(gcc)
[ -e /usr/include/openssl/async.h ] || need+=(libssl-dev)
if [ ${#need[@]} -ne 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ! cargo +nightly -V >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
section() { echo; echo "---- [capi-asan] $*"; }

section "build: nightly -Zsanitizer=address, feature sanitizers"
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-Zsanitizer=address" cargo +nightly build -p asyncjob-capi --features sanitizers --target "$host"
lib=$CARGO_TARGET_DIR/$host/debug
src=asyncjob-capi/tests/c
cflags=(-std=gnu11 -O1 -g -fsanitize=address -fno-omit-frame-pointer -Wall -Wextra -Werror
  -I asyncjob-capi/include -I "$src")
link=(-L "$lib" -lasyncjob "-Wl,-rpath,$lib" -lpthread)
printf '%s\n' leak:leave_paused leak:start_and_exit leak:start_free_ctx_and_exit > "$work/lsan.supp"
export ASAN_OPTIONS=allocator_may_return_null=1:fast_unwind_on_malloc=0
export LSAN_OPTIONS=suppressions=$work/lsan.supp

section "canary: a heap overflow inside a job is reported"
cat > "$work/canary.c" <<'EOF'
#include <stdlib.h>
#include "asyncjob.h"
static int overflow(void *arg)
{
    volatile char *p = malloc(16);
    (void)arg;
    ASYNC_pause_job();
    p[16] = 1;
    free((void *)p);
    return 1;
}
int main(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    int ret = 0;
    ASYNC_start_job(&job, ctx, &ret, overflow, NULL, 0);
    ASYNC_start_job(&job, ctx, &ret, NULL, NULL, 0);
    ASYNC_WAIT_CTX_free(ctx);
    return 0;
}
EOF
cc "${cflags[@]}" -o "$work/canary" "$work/canary.c" "${link[@]}"
if "$work/canary" 2> "$work/canary.err"; then
  echo "FAILED: the canary's overflow went unnoticed"; exit 1
fi
grep -q 'ERROR: AddressSanitizer: heap-buffer-overflow' "$work/canary.err" \
  || { cat "$work/canary.err"; echo "FAILED: no heap-buffer-overflow report"; exit 1; }
echo "canary: heap-buffer-overflow reported inside the job"

section "the C test programs"
fail=0
run() {
  local name=$1; shift
  if "$@" > "$work/out-$name.txt" 2> "$work/err-$name.txt" \
      && ! grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)' "$work/err-$name.txt"; then
    echo "$name: $(grep -E 'checks,|Finishing' "$work/out-$name.txt" | tail -n1)"
  else
    echo "FAILED: $name"; cat "$work/out-$name.txt" "$work/err-$name.txt"; fail=1
  fi
}
for t in example api deviations memfns pool_cycles reliability; do
  cc "${cflags[@]}" -o "$work/$t" "$src/$t.c" "${link[@]}"
done
cc "${cflags[@]}" -o "$work/with_libcrypto" "$src/with_libcrypto.c" -Wl,--no-as-needed "${link[@]}" -lcrypto
cc "${cflags[@]}" -o "$work/dlclose" "$src/dlclose.c" -ldl -lpthread
run example "$work/example"
run api "$work/api"
run deviations "$work/deviations"
run memfns "$work/memfns"
run memfns-precreate "$work/memfns" precreate
run with_libcrypto "$work/with_libcrypto"
run pool_cycles "$work/pool_cycles"
run reliability "$work/reliability"
run reliability-ctx "$work/reliability" ctx_of_leaked_job
run dlclose "$work/dlclose" "$lib/libasyncjob.so"
[ "$fail" = 0 ] || { echo "ASan found problems"; exit 1; }
echo "capi ASan checks passed"

section "ThreadSanitizer: the C programs with threads (api: four threads at once; reliability)"
# libasyncjob built with -Zsanitizer=thread and feature sanitizers (TSan fiber annotations); std is
# not instrumented (no rust-src here for -Zbuild-std), which the C programs' checks do not need.
# gcc 12's libtsan is the runtime; it lacks the __tsan_mem* entry points newer LLVM emits, so the
# programs supply them (the calls they make are still intercepted and checked).
tsan_dir=${CARGO_TARGET_DIR%/capi-asan}/capi-tsan
RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer" CARGO_TARGET_DIR=$tsan_dir \
  cargo +nightly build -p asyncjob-capi --features sanitizers --target "$host"
tlib=$tsan_dir/$host/debug
printf '%s\n' '#include <string.h>' \
  'void *__tsan_memcpy(void *d, const void *s, size_t n) { return memcpy(d, s, n); }' \
  'void *__tsan_memmove(void *d, const void *s, size_t n) { return memmove(d, s, n); }' \
  'void *__tsan_memset(void *d, int c, size_t n) { return memset(d, c, n); }' > "$work/tsan_mem.c"
for t in api deviations reliability; do
  cc -std=gnu11 -O1 -g -fsanitize=thread -I asyncjob-capi/include -I "$src" -o "$work/tsan-$t" \
    "$src/$t.c" "$work/tsan_mem.c" -L "$tlib" -lasyncjob "-Wl,-rpath,$tlib" -lpthread
  if TSAN_OPTIONS=allocator_may_return_null=1 "$work/tsan-$t" > "$work/tsan-$t.out" 2>&1 \
      && ! grep -q 'WARNING: ThreadSanitizer' "$work/tsan-$t.out"; then
    echo "tsan $t: $(grep -E 'checks,' "$work/tsan-$t.out" | tail -n1)"
  else
    echo "FAILED: tsan $t"; cat "$work/tsan-$t.out"; fail=1
  fi
done
[ "$fail" = 0 ] || { echo "TSan found problems"; exit 1; }
echo "capi TSan checks passed"
