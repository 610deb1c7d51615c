#!/usr/bin/env bash
# Prepare every cross toolchain the CI steps use (useful to warm the cache in one go):
#   the newest Debian rustc-web with std sources and the arm64 std, Wine + mingw-w64, qemu + aarch64 gcc,
#   and the MSRV rustc-web 1.85.
set -euo pipefail
# shellcheck source=ci/xplat/lib.sh
. "$(dirname "$0")/lib.sh"
ver=$(xplat_rustweb_candidate)
xplat_rustweb "$ver" src arm64-std
xplat_wine_setup
xplat_aarch64_setup
xplat_rustweb "${ASYNCJOB_MSRV_RUSTWEB:-1.85.0+dfsg3-1~deb12u3}" >/dev/null
