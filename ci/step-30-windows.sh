#!/usr/bin/env bash
# Windows, x86_64-pc-windows-gnu, run under Wine on the Linux CI host:
#   1. C-level tests of csrc/fiber_windows.c (ci/xplat/windows_fiber_test.c), built with mingw-w64;
#   2. `cargo test` of the crates below, with Debian's newest rustc-web and std built from source
#      (-Zbuild-std: Debian ships no prebuilt Windows std, and rustup targets cannot be downloaded).
# Installs what it needs (mingw-w64, Wine, the private toolchain under ~/.cache/asyncjob-xplat).
# On a real Windows runner (GitHub Actions) use plain `cargo test` instead; see .github/workflows/ci.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/xplat/lib.sh
PACKAGES=(-p asyncjob-sys)

ver=$(xplat_rustweb_candidate)
tc=$(xplat_rustweb "$ver" src)
xplat_wine_setup
out=${CARGO_TARGET_DIR:-$PWD/target}/xplat-windows
mkdir -p "$out"

xplat_wine_start
trap xplat_wine_stop EXIT

echo "--- C: fiber_windows.c under Wine"
x86_64-w64-mingw32-gcc -O2 -Wall -Wextra -Werror -I asyncjob-sys/csrc -o "$out/windows_fiber_test.exe" \
  ci/xplat/windows_fiber_test.c asyncjob-sys/csrc/fiber_windows.c
wine "$out/windows_fiber_test.exe"

echo "--- cargo test ${PACKAGES[*]} --target x86_64-pc-windows-gnu (Wine, rustc $ver)"
export CARGO_TARGET_DIR=$out/cargo
export RUSTC_BOOTSTRAP=1 # -Zbuild-std on a stable compiler
"$tc/bin/cargo" test -Zbuild-std --target x86_64-pc-windows-gnu "${PACKAGES[@]}"
