#!/usr/bin/env bash
# aarch64-unknown-linux-gnu, run under qemu-user on the x86_64 CI host:
#   1. C-level tests of arch/aarch64_aapcs64.S (ci/xplat/aarch64_switch_test.c): built plain and with
#      -mbranch-protection=standard (qemu's CPU implements PAC, so a bad return-address signature
#      faults), plus a look at the GNU property note;
#   2. `cargo test` of the crates below with the asm backend and with `--features ucontext`, using
#      Debian's newest rustc-web and its prebuilt arm64 std (or rustup's with ASYNCJOB_XPLAT_RUSTUP=1).
# Installs what it needs (aarch64 gcc, qemu-user, the private toolchain under ~/.cache/asyncjob-xplat).
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/xplat/lib.sh
PACKAGES=(-p asyncjob-sys)

xplat_cross_cargo aarch64-unknown-linux-gnu
xplat_aarch64_setup
out=${CARGO_TARGET_DIR:-$PWD/target}/xplat-aarch64
mkdir -p "$out"
run() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$@"; }

srcs=(ci/xplat/aarch64_switch_test.c ci/xplat/aarch64_regcheck.S asyncjob-sys/arch/aarch64_aapcs64.S
  asyncjob-sys/csrc/fiber_asm.c asyncjob-sys/csrc/stack_posix.c)
for variant in plain pac; do
  flags=()
  [ "$variant" = pac ] && flags=(-mbranch-protection=standard)
  echo "--- C: aarch64 asm backend under qemu ($variant)"
  aarch64-linux-gnu-gcc -O2 -g -Wall -Wextra -Werror -rdynamic "${flags[@]}" -I asyncjob-sys/csrc \
    -o "$out/switch_test_$variant" "${srcs[@]}"
  run "$out/switch_test_$variant"
done
# The object must announce exactly what it does: BTI always, PAC only when it signs.
aarch64-linux-gnu-gcc -c -o "$out/plain.o" asyncjob-sys/arch/aarch64_aapcs64.S
aarch64-linux-gnu-gcc -c -mbranch-protection=standard -o "$out/pac.o" asyncjob-sys/arch/aarch64_aapcs64.S
note_plain=$(aarch64-linux-gnu-readelf -n "$out/plain.o" | sed -n 's/.*AArch64 feature: //p')
note_pac=$(aarch64-linux-gnu-readelf -n "$out/pac.o" | sed -n 's/.*AArch64 feature: //p')
echo "GNU property note: plain build '$note_plain', PAC build '$note_pac'"
[ "$note_plain" = "BTI" ] && [ "$note_pac" = "BTI, PAC" ]

export CARGO_TARGET_DIR=$out/cargo
echo "--- cargo test ${PACKAGES[*]} --target aarch64-unknown-linux-gnu (qemu, asm backend, $XPLAT_RUSTC)"
"${XCARGO[@]}" test --target aarch64-unknown-linux-gnu "${PACKAGES[@]}"
echo "--- cargo test ${PACKAGES[*]} --target aarch64-unknown-linux-gnu --features asyncjob-sys/ucontext"
"${XCARGO[@]}" test --target aarch64-unknown-linux-gnu "${PACKAGES[@]}" --features asyncjob-sys/ucontext
