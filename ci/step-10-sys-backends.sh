#!/usr/bin/env bash
# asyncjob-sys on every native x86_64 build variant (the plain asm build runs in `cargo test --workspace`):
#   1. the portable backend (feature `ucontext`: getcontext/makecontext + _setjmp/_longjmp);
#   2. both backends built with -fcf-protection=full (asm: ret + IBT note; ucontext: swapcontext);
#   3. feature `sanitizers`, every test binary under valgrind (errors fail the step);
#   4. feature `sanitizers` under AddressSanitizer (nightly rustc, -Zsanitizer=address).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/sys-backends"

section() { echo; echo "---- [sys-backends] $*"; }

section "ucontext backend"
cargo test -p asyncjob-sys --features ucontext

section "asm backend, -fcf-protection=full (IBT build: ret-based switch, IBT property note)"
# A target dir of its own: the object checked below is then certainly the one this build made.
cet_dir="$CARGO_TARGET_DIR/cet"
CFLAGS="-fcf-protection=full" CARGO_TARGET_DIR="$cet_dir" cargo test -p asyncjob-sys
note=$(find "$cet_dir/debug/build" -path '*asyncjob-sys-*' -name '*x86_64_sysv.o' | head -n 1)
[ -n "$note" ] || { echo "no x86_64_sysv.o found under $cet_dir" >&2; exit 1; }
command -v readelf >/dev/null || { apt-get update -qq; apt-get install -y -qq binutils >/dev/null; }
readelf -n "$note" | grep -q 'x86 feature: IBT' || { echo "IBT property note missing in $note" >&2; exit 1; }
echo "IBT property note present in $(basename "$note")"

section "ucontext backend, -fcf-protection=full (swapcontext throughout)"
CFLAGS="-fcf-protection=full" CARGO_TARGET_DIR="$cet_dir" cargo test -p asyncjob-sys --features ucontext

section "valgrind (feature sanitizers)"
if ! command -v valgrind >/dev/null || [ ! -f /usr/include/valgrind/valgrind.h ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
for features in sanitizers "sanitizers ucontext"; do
  mapfile -t exes < <(cargo test -p asyncjob-sys --features "$features" --no-run --message-format=json \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
  [ ${#exes[@]} -gt 0 ] || { echo "no test executables for features '$features'" >&2; exit 1; }
  for exe in "${exes[@]}"; do
    echo "valgrind [$features]: $(basename "$exe")"
    valgrind -q --error-exitcode=99 --leak-check=no "$exe" --test-threads=1 -q
  done
done

section "AddressSanitizer (nightly, feature sanitizers)"
if ! cargo +nightly -V >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
host=$(rustc -vV | sed -n 's/^host: //p')
for features in sanitizers "sanitizers ucontext"; do
  RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
    CARGO_TARGET_DIR="$CARGO_TARGET_DIR/asan" \
    cargo +nightly test -p asyncjob-sys --features "$features" --target "$host"
done
echo "[sys-backends] all variants passed"
