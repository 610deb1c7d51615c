#!/usr/bin/env bash
# libasyncjob (asyncjob-capi), the heavier checks that `cargo test` does not run:
#   1. every C test program under Valgrind memcheck, twice: against the debug library built with
#      feature `sanitizers` and against the release library with default features (as installed):
#      0 errors, 0 bytes definitely lost and no Valgrind crash, or the step fails;
#   2. install.sh into a temporary prefix, then build the man page example with pkg-config, both
#      shared and static, and check its eight lines.
# The LD_PRELOAD clients are step-41, the benchmark step-42.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/capi"

need=()
for cmd in cc valgrind pkg-config; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
[ -e /usr/include/openssl/async.h ] || need+=(libssl-dev)
[ -e /usr/include/valgrind/valgrind.h ] || need+=(valgrind)
if [ ${#need[@]} -ne 0 ]; then
  pkgs=()
  for n in "${need[@]}"; do case $n in cc) pkgs+=(gcc) ;; *) pkgs+=("$n") ;; esac; done
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
section() { echo; echo "---- [capi] $*"; }

fail=0
vg() {
  local name=$1; shift
  local log=$work/vg-$name.log
  local rc=0
  valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --log-file="$log" "$@" > "$work/out-$name.txt" || rc=$?
  if grep -qE "VALGRIND INTERNAL ERROR|the 'impossible' happened" "$log"; then
    echo "FAILED: $name: Valgrind itself crashed"; cat "$log"; fail=1; return
  fi
  if [ "$rc" != 0 ]; then
    echo "FAILED: $name (exit $rc)"; cat "$log"; cat "$work/out-$name.txt"; fail=1; return
  fi
  local errors definite
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n1)
  definite=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n1)
  echo "$name: $(grep -E 'checks,|Finishing' "$work/out-$name.txt" | tail -n1) | valgrind errors=${errors:-?} definitely-lost=${definite:-0}"
  if [ "${errors:-1}" != 0 ] || { [ -n "$definite" ] && [ "$definite" != 0 ]; }; then
    cat "$log"; fail=1
  fi
}
src=asyncjob-capi/tests/c
cflags=(-std=gnu11 -O1 -g -Wall -Wextra -Werror -I asyncjob-capi/include -I "$src")
# memcheck_suite <label> <dir holding libasyncjob.so>: every C test program (allocs.c interposes
# malloc, which memcheck replaces; bench.c only measures) linked against that library, under memcheck.
memcheck_suite() {
  local label=$1 lib=$2 bin=$work/$1
  mkdir -p "$bin"
  local link=(-L "$lib" -lasyncjob "-Wl,-rpath,$lib" -lpthread)
  for t in example api deviations memfns pool_cycles reliability; do
    cc "${cflags[@]}" -o "$bin/$t" "$src/$t.c" "${link[@]}"
  done
  cc "${cflags[@]}" -o "$bin/with_libcrypto" "$src/with_libcrypto.c" -Wl,--no-as-needed "${link[@]}" -lcrypto
  cc "${cflags[@]}" -o "$bin/dlclose" "$src/dlclose.c" -ldl -lpthread
  vg "$label-example" "$bin/example"
  vg "$label-api" "$bin/api"
  vg "$label-deviations" "$bin/deviations"
  vg "$label-memfns" "$bin/memfns"
  vg "$label-memfns-precreate" "$bin/memfns" precreate
  vg "$label-with_libcrypto" "$bin/with_libcrypto"
  vg "$label-pool_cycles" "$bin/pool_cycles"
  vg "$label-reliability" "$bin/reliability"
  vg "$label-reliability-ctx" "$bin/reliability" ctx_of_leaked_job
  vg "$label-dlclose" "$bin/dlclose" "$lib/libasyncjob.so"
}

section "valgrind memcheck on the C test programs: library built with feature sanitizers (debug)"
cargo build -p asyncjob-capi --features sanitizers
memcheck_suite sanitizers "$CARGO_TARGET_DIR/debug"

# The library as shipped (release, default features): Valgrind must cope with it too (it once crashed
# on it: "Valgrind received a signal 11").
section "valgrind memcheck on the C test programs: release library, default features"
cargo build --release -p asyncjob-capi
memcheck_suite release "$CARGO_TARGET_DIR/release"
[ "$fail" = 0 ] || { echo "valgrind found problems"; exit 1; }

section "install.sh + pkg-config"
prefix=$work/prefix
bash asyncjob-capi/install.sh "$prefix"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
echo "pkg-config: $(pkg-config --modversion asyncjob) | $(pkg-config --cflags --libs asyncjob)"
expected=$'Starting...\nExecuting within a job\nPassed in message is: Hello world!\nJob was paused\nWaiting for the job to be woken up\nResumed the job after a pause\nJob finished with return value 1\nFinishing'
# shellcheck disable=SC2046
cc -O2 -o "$work/example-pc" "$src/example.c" $(pkg-config --cflags --libs asyncjob) -Wl,-rpath,"$prefix/lib"
# shellcheck disable=SC2046
cc -O2 -o "$work/example-pc-static" "$src/example.c" $(pkg-config --cflags asyncjob) \
  "$prefix/lib/libasyncjob.a" $(pkg-config --static --libs-only-l asyncjob | sed 's/-lasyncjob//')
for bin in example-pc example-pc-static; do
  out=$("$work/$bin")
  if [ "$out" != "$expected" ]; then
    echo "$bin printed:"; echo "$out"; exit 1
  fi
  echo "$bin: the man page's eight lines"
done
if ldd "$work/example-pc-static" | grep -q libasyncjob; then
  echo "example-pc-static is linked dynamically"; exit 1
fi
cd "$root"
echo "capi checks passed"
