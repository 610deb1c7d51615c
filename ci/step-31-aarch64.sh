#!/usr/bin/env bash
# aarch64-unknown-linux-gnu, run under qemu-user on the x86_64 CI host:
#   1. C-level tests of arch/aarch64_aapcs64.S (ci/xplat/aarch64_switch_test.c) in every
#      -mbranch-protection flavour (qemu's CPU implements PAC, so a bad return-address signature
#      faults), plus a check of the GNU property note each one emits;
#   2. `cargo test` of the crates below with the asm backend and with `--features ucontext`, using
#      Debian's newest rustc-web and its prebuilt arm64 std (or rustup's with ASYNCJOB_XPLAT_RUSTUP=1).
# Installs what it needs (aarch64 gcc, qemu-user, the private toolchain under ~/.cache/asyncjob-xplat).
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/xplat/lib.sh
# Crates tested (override with ASYNCJOB_XPLAT_PACKAGES).
# shellcheck disable=SC2206 # word splitting of the override is intended
PACKAGES=(${ASYNCJOB_XPLAT_PACKAGES:--p asyncjob-sys -p asyncjob})

xplat_cross_cargo aarch64-unknown-linux-gnu
xplat_aarch64_setup
out=${CARGO_TARGET_DIR:-$PWD/target}/xplat-aarch64
mkdir -p "$out"
run() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$@"; }

srcs=(ci/xplat/aarch64_switch_test.c ci/xplat/aarch64_regcheck.S asyncjob-sys/arch/aarch64_aapcs64.S
  asyncjob-sys/csrc/fiber_asm.c asyncjob-sys/csrc/stack_posix.c)
# Each -mbranch-protection flavour: the switch must work (qemu's CPU implements PAC, so a wrong
# return-address signature faults) and the object's GNU property note must claim exactly what the
# flavour does: BTI only with bti (the switch then returns with ret), PAC only when it signs.
for variant in none bti pac-ret standard; do
  echo "--- C: aarch64 asm backend under qemu (-mbranch-protection=$variant)"
  aarch64-linux-gnu-gcc -O2 -g -Wall -Wextra -Werror -rdynamic -mbranch-protection="$variant" \
    -I asyncjob-sys/csrc -o "$out/switch_test_$variant" "${srcs[@]}"
  run "$out/switch_test_$variant"
  aarch64-linux-gnu-gcc -c -mbranch-protection="$variant" -o "$out/switch_$variant.o" \
    asyncjob-sys/arch/aarch64_aapcs64.S
  note=$(aarch64-linux-gnu-readelf -n "$out/switch_$variant.o" | sed -n 's/.*AArch64 feature: //p')
  case $variant in
    none) want="" ;;
    bti) want="BTI" ;;
    pac-ret) want="PAC" ;;
    standard) want="BTI, PAC" ;;
  esac
  echo "GNU property note: '$note'"
  [ "$note" = "$want" ] || { echo "expected '$want'" >&2; exit 1; }
done

export CARGO_TARGET_DIR=$out/cargo
echo "--- cargo test ${PACKAGES[*]} --target aarch64-unknown-linux-gnu (qemu, asm backend, $XPLAT_RUSTC)"
"${XCARGO[@]}" test --no-fail-fast --target aarch64-unknown-linux-gnu "${PACKAGES[@]}"
echo "--- cargo test ${PACKAGES[*]} --target aarch64-unknown-linux-gnu --features asyncjob-sys/ucontext"
"${XCARGO[@]}" test --no-fail-fast --target aarch64-unknown-linux-gnu "${PACKAGES[@]}" --features asyncjob-sys/ucontext
# asyncjob-capi turns on asyncjob's `initial-exec-tls`, whose aarch64 path (the thread's job state
# reached through an initial-exec TLS word) only the C library's build would otherwise exercise here.
echo "--- cargo test -p asyncjob --target aarch64-unknown-linux-gnu --features initial-exec-tls"
"${XCARGO[@]}" test --no-fail-fast --target aarch64-unknown-linux-gnu -p asyncjob --features initial-exec-tls
