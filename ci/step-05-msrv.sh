#!/usr/bin/env bash
# MSRV check: the workspace declares rust-version = "1.85". Type-check the library crates with Debian's
# rustc-web/cargo-web 1.85 (unpacked privately, see ci/xplat/lib.sh), using the committed Cargo.lock.
# Only --lib of the published crates: dev tooling (criterion, proptest, ...) may need a newer Rust.
# On GitHub Actions the MSRV job sets ASYNCJOB_MSRV_CARGO to a rustup 1.85 cargo instead.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/xplat/lib.sh
MSRV_DEB=${ASYNCJOB_MSRV_RUSTWEB:-1.85.0+dfsg3-1~deb12u3}
if [ -n "${ASYNCJOB_MSRV_CARGO:-}" ]; then
  cargo=$ASYNCJOB_MSRV_CARGO
else
  tc=$(xplat_rustweb "$MSRV_DEB")
  cargo=$tc/bin/cargo
fi
want=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
have=$("$cargo" -V | awk '{print $2}')
echo "MSRV declared: $want; checking with cargo $have"
case $have in
  "$want" | "$want".*) ;;
  *) echo "toolchain $have does not match rust-version $want" >&2; exit 1 ;;
esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/msrv
"$cargo" check --locked --lib -p asyncjob-sys -p asyncjob -p asyncjob-capi -p asyncjob-tokio
# The portable backend must build at the MSRV too.
"$cargo" check --locked --lib -p asyncjob-sys --features ucontext
