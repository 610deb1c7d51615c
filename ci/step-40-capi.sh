#!/usr/bin/env bash
# libasyncjob (asyncjob-capi), the heavier checks that `cargo test` does not run:
#   1. every C test program under Valgrind memcheck (library built with feature `sanitizers`, so job
#      stacks are registered): 0 errors and 0 bytes definitely lost, or the step fails;
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

section "valgrind memcheck on the C test programs"
cargo build -p asyncjob-capi --features sanitizers
lib=$CARGO_TARGET_DIR/debug
src=asyncjob-capi/tests/c
fail=0
vg() {
  local name=$1; shift
  local log=$work/vg-$name.log
  if valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
      --log-file="$log" "$@" > "$work/out-$name.txt"; then
    :
  else
    echo "FAILED: $name (exit $?)"; cat "$log"; cat "$work/out-$name.txt"; fail=1; return
  fi
  local errors definite
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n1)
  definite=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n1)
  echo "$name: $(grep -E 'checks,|Finishing' "$work/out-$name.txt" | tail -n1) | valgrind errors=${errors:-?} definitely-lost=${definite:-0}"
  if [ "${errors:-1}" != 0 ] || { [ -n "$definite" ] && [ "$definite" != 0 ]; }; then
    cat "$log"; fail=1
  fi
}
cflags=(-std=gnu11 -O1 -g -Wall -Wextra -Werror -I asyncjob-capi/include -I "$src")
link=(-L "$lib" -lasyncjob "-Wl,-rpath,$lib" -lpthread)
for t in example api deviations memfns; do
  cc "${cflags[@]}" -o "$work/$t" "$src/$t.c" "${link[@]}"
done
cc "${cflags[@]}" -o "$work/with_libcrypto" "$src/with_libcrypto.c" -Wl,--no-as-needed "${link[@]}" -lcrypto
vg example "$work/example"
vg api "$work/api"
vg deviations "$work/deviations"
vg memfns "$work/memfns"
vg memfns-precreate "$work/memfns" precreate
vg with_libcrypto "$work/with_libcrypto"
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
