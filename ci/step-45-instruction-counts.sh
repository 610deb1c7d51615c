#!/usr/bin/env bash
# Instructions per operation under callgrind, for the Rust API (asyncjob/examples/op_loop.rs) and the
# C ABI (asyncjob-capi/tests/c/bench.c: libcrypto's ASYNC, libasyncjob alone, and libasyncjob with
# libcrypto loaded in the process, the real drop-in case). Instruction counts do not depend on the
# machine's load, so this is a pass/fail check: it fails when a count rises more than 10 % above the
# committed baseline in ci/instruction-baseline.txt. OpenSSL's figures are printed for the ratios.
# Each figure is (count at 2N operations - count at N) / N, so process start-up cancels out.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v valgrind >/dev/null || { apt-get update -qq; apt-get install -y -qq --no-install-recommends valgrind >/dev/null; }

cargo build --release -p asyncjob --example op_loop
cargo build --release -p asyncjob-capi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lib=$CARGO_TARGET_DIR/release
src=asyncjob-capi/tests/c/bench.c
cc -O2 -DTEST_OPENSSL -o "$work/bench-openssl" "$src" -lcrypto
cc -O2 -I asyncjob-capi/include -o "$work/bench-asyncjob" "$src" -L "$lib" -lasyncjob -Wl,-rpath,"$lib"
# libasyncjob first, so its ASYNC_* win; libcrypto loaded too (the library then swaps each job's
# default OSSL_LIB_CTX and keeps the error queue, as OpenSSL does).
cc -O2 -I asyncjob-capi/include -o "$work/bench-asyncjob-libcrypto" "$src" -L "$lib" \
  -Wl,--no-as-needed -lasyncjob -lcrypto -Wl,-rpath,"$lib"

irefs() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 | sed -n 's/.*I *refs: *//p' | tr -d ,; }
# rust_per_op CASE: op_loop runs its loop once.
rust_per_op() {
  local a b
  a=$(irefs "$lib/examples/op_loop" "$1" 5000)
  b=$(irefs "$lib/examples/op_loop" "$1" 10000)
  echo $(((b - a) / 5000))
}
# c_per_op BINARY CASE: bench.c times 7 runs of its loop.
c_per_op() {
  local a b
  a=$(irefs "$1" 2000 "$2")
  b=$(irefs "$1" 4000 "$2")
  echo $(((b - a) / (7 * 2000)))
}

declare -A measured
measured[rust.pause_resume]=$(rust_per_op pause_resume)
measured[rust.start_finish]=$(rust_per_op start_finish)
measured[rust.start_finish_a16]=$(rust_per_op start_finish_a16)
for k in pr:pause_resume sf:start_finish sa:start_finish_a16; do
  measured[openssl.${k##*:}]=$(c_per_op "$work/bench-openssl" "${k%%:*}")
  measured[capi.${k##*:}]=$(c_per_op "$work/bench-asyncjob" "${k%%:*}")
  measured[capi_libcrypto.${k##*:}]=$(c_per_op "$work/bench-asyncjob-libcrypto" "${k%%:*}")
done

baseline=$root/ci/instruction-baseline.txt
fail=0
printf '%-32s %10s %10s %10s %12s\n' "instructions per op" measured baseline target "vs OpenSSL"
while read -r key base target; do
  case $key in ''|'#'*) continue ;; esac
  m=${measured[$key]:?no measurement for $key}
  case_name=${key#*.}
  o=${measured[openssl.$case_name]}
  verdict=""
  if [ "$m" -gt $((base * 110 / 100)) ]; then
    verdict="  REGRESSION: more than 10 % above the baseline"
    fail=1
  fi
  awk -v k="$key" -v m="$m" -v b="$base" -v t="$target" -v o="$o" -v v="$verdict" \
    'BEGIN { printf "%-32s %10d %10d %10s %11.2fx%s\n", k, m, b, t, o / m, v }'
done < "$baseline"
for case_name in pause_resume start_finish start_finish_a16; do
  printf '%-32s %10d\n' "openssl.$case_name" "${measured[openssl.$case_name]}"
done
[ "$fail" = 0 ] || { echo "instruction counts regressed (update ci/instruction-baseline.txt only for a change that must cost more, and say why)"; exit 1; }
echo "instruction counts within 10 % of the baseline"
