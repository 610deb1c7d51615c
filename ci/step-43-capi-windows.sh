#!/usr/bin/env bash
# libasyncjob for Windows (x86_64-pc-windows-gnu, cross-built with Debian's rustc-web and
# -Zbuild-std, see ci/xplat/lib.sh): the library and its unit tests compile (OSSL_ASYNC_FD is a
# HANDLE there), asyncjob.dll exports exactly the 22 ASYNC_* names, and the header compiles for
# Windows with <windows.h> included first. Running it is not required on Windows (no LD_PRELOAD).
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/xplat/lib.sh
xplat_cross_cargo x86_64-pc-windows-gnu
command -v x86_64-w64-mingw32-gcc >/dev/null || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc-mingw-w64-x86-64
}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/capi-windows
"${XCARGO[@]}" check --target x86_64-pc-windows-gnu -p asyncjob-capi --lib --tests
"${XCARGO[@]}" build --target x86_64-pc-windows-gnu -p asyncjob-capi --lib
dll=$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/debug/asyncjob.dll
exports=$(x86_64-w64-mingw32-objdump -p "$dll" | sed -n '/\[Ordinal\/Name Pointer\] Table/,/^$/p' \
  | awk '/\[/ && $NF ~ /^ASYNC_/ { print $NF }' | sort)
count=$(echo "$exports" | grep -c . || true)
others=$(x86_64-w64-mingw32-objdump -p "$dll" | sed -n '/\[Ordinal\/Name Pointer\] Table/,/^$/p' \
  | awk '/\[/ && $NF !~ /^ASYNC_/ && $NF !~ /Table$/ { print $NF }')
echo "asyncjob.dll exports $count ASYNC_* names"
[ "$count" = 22 ] || { echo "$exports"; echo "expected 22 exports"; exit 1; }
[ -z "$others" ] || { echo "unexpected exports: $others"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/probe.c" <<'EOF'
#include <windows.h>
#include "asyncjob.h"
typedef char fd_is_handle[sizeof(OSSL_ASYNC_FD) == sizeof(HANDLE) ? 1 : -1];
static int job(void *arg) { (void)arg; return ASYNC_pause_job(); }
int main(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *j = NULL;
    int ret = 0;
    OSSL_ASYNC_FD fd = OSSL_BAD_ASYNC_FD;
    size_t n = 0;
    ASYNC_WAIT_CTX_set_wait_fd(ctx, &ret, fd, NULL, NULL);
    ASYNC_WAIT_CTX_get_all_fds(ctx, &fd, &n);
    ASYNC_start_job(&j, ctx, &ret, job, NULL, 0);
    ASYNC_WAIT_CTX_free(ctx);
    return 0;
}
EOF
x86_64-w64-mingw32-gcc -std=c99 -Wall -Wextra -Werror -I asyncjob-capi/include -o "$work/probe.exe" \
  "$work/probe.c" "$CARGO_TARGET_DIR/x86_64-pc-windows-gnu/debug/libasyncjob.dll.a"
echo "header + import library link for Windows: ok"
