#!/usr/bin/env bash
# Windows, x86_64-pc-windows-gnu, run under Wine on the Linux CI host:
#   1. C-level tests of csrc/fiber_windows.c (ci/xplat/windows_fiber_test.c), built with mingw-w64;
#   2. `cargo test` of the crates below (the fiber shim, the Rust API with its driver, asyncjob-tokio), with Debian's newest rustc-web and std built from source
#      (-Zbuild-std: Debian ships no prebuilt Windows std, and rustup targets cannot be downloaded;
#      with ASYNCJOB_XPLAT_RUSTUP=1, rustup's toolchain and target instead).
# Installs what it needs (mingw-w64, Wine, the private toolchain under ~/.cache/asyncjob-xplat).
# GitHub Actions also tests natively on Windows (msvc and gnu); see .github/workflows/ci.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/xplat/lib.sh
# Crates tested (override with ASYNCJOB_XPLAT_PACKAGES).
# shellcheck disable=SC2206 # word splitting of the override is intended
PACKAGES=(${ASYNCJOB_XPLAT_PACKAGES:--p asyncjob-sys -p asyncjob -p asyncjob-tokio})
# Wine only: a stack overflow on a fiber stack never reaches Rust's overflow handler under Wine 8;
# the child process hangs instead of aborting. Real Windows runs this test (GitHub Actions job
# windows-msvc / windows-gnu), so only the emulated run leaves it out.
WINE_SKIP=(--skip stack_overflow_in_a_job_hits_the_guard_page_and_aborts_with_a_message)

xplat_cross_cargo x86_64-pc-windows-gnu
xplat_wine_setup
out=${CARGO_TARGET_DIR:-$PWD/target}/xplat-windows
mkdir -p "$out"

xplat_wine_start
trap xplat_wine_stop EXIT

echo "--- C: fiber_windows.c under Wine"
x86_64-w64-mingw32-gcc -O2 -Wall -Wextra -Werror -I asyncjob-sys/csrc -o "$out/windows_fiber_test.exe" \
  ci/xplat/windows_fiber_test.c asyncjob-sys/csrc/fiber_windows.c
wine "$out/windows_fiber_test.exe"

echo "--- cargo test ${PACKAGES[*]} --target x86_64-pc-windows-gnu (Wine, $XPLAT_RUSTC)"
export CARGO_TARGET_DIR=$out/cargo
"${XCARGO[@]}" test --no-fail-fast --target x86_64-pc-windows-gnu "${PACKAGES[@]}" -- "${WINE_SKIP[@]}"
