#!/usr/bin/env bash
# Builds libasyncjob in release mode and installs it under PREFIX:
#   PREFIX/lib/libasyncjob.so, PREFIX/lib/libasyncjob.a, PREFIX/include/asyncjob.h,
#   PREFIX/lib/pkgconfig/asyncjob.pc
# Usage: asyncjob-capi/install.sh PREFIX [LIBDIR]      (LIBDIR defaults to PREFIX/lib)
# Then:  cc app.c $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs asyncjob)
# Or, to replace libcrypto's ASYNC_* in an existing program: LD_PRELOAD=PREFIX/lib/libasyncjob.so app
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 PREFIX [LIBDIR]" >&2
  exit 2
fi
prefix=$(realpath -m "$1")
libdir=$(realpath -m "${2:-$prefix/lib}")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}

cd "$root"
# The staticlib's link line (Rust's runtime needs a few system libraries) goes into Libs.private.
native=$(cargo rustc --release -p asyncjob-capi --lib --crate-type staticlib -- --print native-static-libs 2>&1 \
  | sed -n 's/.*native-static-libs: //p' | tail -n1)
cargo build --release -p asyncjob-capi
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)

install -d "$libdir/pkgconfig" "$prefix/include"
install -m 0755 "$target_dir/release/libasyncjob.so" "$libdir/libasyncjob.so"
install -m 0644 "$target_dir/release/libasyncjob.a" "$libdir/libasyncjob.a"
install -m 0644 "$here/include/asyncjob.h" "$prefix/include/asyncjob.h"
sed -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$libdir|" -e "s|@VERSION@|$version|" \
    -e "s|@LIBS_PRIVATE@|$native|" "$here/asyncjob.pc.in" > "$libdir/pkgconfig/asyncjob.pc"
echo "installed libasyncjob $version into $prefix"
