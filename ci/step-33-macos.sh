#!/usr/bin/env bash
# macOS (aarch64-apple-darwin, x86_64-apple-darwin): compile and link on the Linux CI host; nothing
# runs (there is no macOS here; GitHub Actions runs the tests on macOS).
#   1. The shim's asm and C compile with -Werror in every flavour: plain, branch protection
#      (-mbranch-protection=standard on arm64, -fcf-protection=full on x86_64) and the sanitizer
#      defines (ASYNCJOB_SANITIZERS alone, with ASYNCJOB_ASAN, with ASYNCJOB_VALGRIND).
#   2. Every test executable of asyncjob-sys and asyncjob links (`cargo test --no-run`): each is a
#      Mach-O executable stamped with rustc's minimum macOS (11.0 arm64, 10.12 x86_64), the asm
#      backend was chosen, and the fiber symbols (with Mach-O's `_` prefix) are in it.
#   3. asyncjob-capi: the exported symbols list rustc gives the linker for libasyncjob.dylib is exactly
#      the 22 ASYNC_* names (zig's linker ignores that list; Apple's ld, on GitHub Actions, applies
#      it), the dylib and libasyncjob.a define all 22, and a C program links against either one.
# Rust: Debian's newest rustc-web with std built from source (-Zbuild-std, see ci/xplat/lib.sh);
# C, asm and the linker: zig from PyPI (it ships macOS's libSystem stubs and headers) through
# cargo-zigbuild. llvm-nm/llvm-objdump (Debian `llvm`) read Mach-O; GNU binutils cannot.
# Time on the shared 2-core host (load average 8-12): 392 s cold (std built once per target; the
# toolchain setup under ~/.cache/asyncjob-xplat adds about 65 s once), 24 s warm.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/xplat/lib.sh
# shellcheck disable=SC2206 # word splitting of the override is intended
TARGETS=(${ASYNCJOB_MACOS_TARGETS:-aarch64-apple-darwin x86_64-apple-darwin})
# shellcheck disable=SC2206 # word splitting of the override is intended
PACKAGES=(${ASYNCJOB_XPLAT_PACKAGES:--p asyncjob-sys -p asyncjob})
EXPORTS=(ASYNC_WAIT_CTX_clear_fd ASYNC_WAIT_CTX_free ASYNC_WAIT_CTX_get_all_fds
  ASYNC_WAIT_CTX_get_callback ASYNC_WAIT_CTX_get_changed_fds ASYNC_WAIT_CTX_get_fd
  ASYNC_WAIT_CTX_get_status ASYNC_WAIT_CTX_new ASYNC_WAIT_CTX_set_callback ASYNC_WAIT_CTX_set_status
  ASYNC_WAIT_CTX_set_wait_fd ASYNC_block_pause ASYNC_cleanup_thread ASYNC_get_current_job
  ASYNC_get_mem_functions ASYNC_get_wait_ctx ASYNC_init_thread ASYNC_is_capable ASYNC_pause_job
  ASYNC_set_mem_functions ASYNC_start_job ASYNC_unblock_pause)

xplat_lock
xplat_cross_cargo "${TARGETS[0]}"
xplat_zig_setup
xplat_apt_install llvm file
xplat_unlock
out=${CARGO_TARGET_DIR:-$PWD/target}/xplat-macos
mkdir -p "$out/obj"
export CARGO_TARGET_DIR=$out/cargo
# Debug info makes the std build about three times slower and is of no use without a Mac. With
# debug=0 cargo strips debuginfo, and rustc strips Mach-O with `rust-objcopy`, which Debian's
# rustc-web does not ship.
export CARGO_PROFILE_DEV_DEBUG=0
export CARGO_PROFILE_DEV_STRIP=none
unset SDKROOT DEVELOPER_DIR
wanted=$(printf '_%s\n' "${EXPORTS[@]}" | sort)

# The minimum macOS version stamped in a Mach-O file (LC_BUILD_VERSION minos, or the older
# LC_VERSION_MIN_MACOSX version).
minos() {
  llvm-objdump --macho --private-headers "$1" |
    awk '/cmd LC_BUILD_VERSION|cmd LC_VERSION_MIN_MACOSX/ { f = 1 }
         f && ($1 == "minos" || $1 == "version") { print $2; exit }'
}

# Valgrind's header is architecture-neutral; give the cross compiler that one directory only.
vg=
if [ -f /usr/include/valgrind/valgrind.h ]; then
  vg=$out/valgrind-include
  mkdir -p "$vg"
  ln -sfn /usr/include/valgrind "$vg/valgrind"
fi

for t in "${TARGETS[@]}"; do
  case $t in
    aarch64-apple-darwin) z=aarch64-macos.11.0 asm=arch/aarch64_aapcs64.S bp=-mbranch-protection=standard min=11.0 ;;
    x86_64-apple-darwin) z=x86_64-macos.10.12 asm=arch/x86_64_sysv.S bp=-fcf-protection=full min=10.12 ;;
    *) echo "unknown target $t" >&2; exit 1 ;;
  esac

  echo "--- $t: the shim's asm and C, -Werror, every flavour"
  flavours=("" "$bp" "-DASYNCJOB_SANITIZERS=1" "-DASYNCJOB_SANITIZERS=1 -DASYNCJOB_ASAN=1"
    "$bp -DASYNCJOB_SANITIZERS=1 -DASYNCJOB_ASAN=1")
  [ -z "$vg" ] || flavours+=("-DASYNCJOB_SANITIZERS=1 -DASYNCJOB_VALGRIND=1 -I$vg")
  for f in "$asm" csrc/fiber_asm.c csrc/stack_posix.c; do
    for fl in "${flavours[@]}"; do
      # shellcheck disable=SC2086 # one flag per word
      (cd asyncjob-sys && xplat_zig_cc "$z" -std=c11 -Wall -Wextra -Werror -O2 -fPIC -Icsrc $fl \
        -c "$f" -o "$out/obj/$t-$(basename "$f").o")
    done
  done
  echo "ok: ${#flavours[@]} flavours of $asm, fiber_asm.c, stack_posix.c"

  echo "--- $t: cargo test --no-run ${PACKAGES[*]} ($XPLAT_RUSTC, zig $(python3 -m ziglang version))"
  export MACOSX_DEPLOYMENT_TARGET=$min # without it zig stamps its own default (macOS 15)
  xplat_zigbuild test --no-run --target "$t" "${PACKAGES[@]}"
  d=$CARGO_TARGET_DIR/$t/debug
  grep -qx 'cargo:backend=asm' "$d"/build/asyncjob-sys-*/output
  n=0
  while IFS= read -r b; do
    file -b "$b" | grep -q '^Mach-O 64-bit .*executable' || { echo "not Mach-O: $b: $(file -b "$b")" >&2; exit 1; }
    [ "$(minos "$b")" = "$min" ] || { echo "$b: minimum macOS $(minos "$b"), expected $min" >&2; exit 1; }
    n=$((n + 1))
  done < <(find "$d/deps" -maxdepth 1 -type f -perm -u+x ! -name '*.*')
  [ "$n" -gt 0 ]
  fiber=$(find "$d/deps" -maxdepth 1 -type f -perm -u+x -name 'fiber-*' ! -name '*.*' | head -n1)
  syms=$(llvm-nm -m "$fiber") # not piped into grep -q: with pipefail an early exit fails the pipe
  for s in _asyncjob_fiber_create _asyncjob_fiber_switch _asyncjob__arch_init_stack; do
    grep -q " $s\$" <<<"$syms" || { echo "missing $s in $fiber" >&2; exit 1; }
  done
  # The trampoline's call into the fiber's entry must have DWARF unwind info (its CFI leads the
  # unwinder to the resumer). Mach-O linkers give each address range a compact-unwind entry; a
  # range with encoding 0 has none, and backtraces from inside a fiber then stop there.
  base=$(llvm-nm "$fiber" | awk '$3 == "__mh_execute_header" { print $1 }')
  tramp=$(llvm-nm "$fiber" | awk '$3 ~ /^_asyncjob__(x86_64|aarch64)_trampoline$/ { print $1 }')
  ret=$((16#$tramp - 16#$base + 8)) # past the first instruction, before the call returns
  enc=
  while read -r off e; do
    [ $((off)) -le "$ret" ] && enc=$e
  done < <(llvm-objdump --macho --unwind-info "$fiber" |
    sed -n 's/.*function offset=\(0x[0-9a-f]*\), encoding=\(0x[0-9a-f]*\).*/\1 \2/p')
  case $t in x86_64-*) dwarf=0x04000000 ;; *) dwarf=0x03000000 ;; esac
  if [ -z "$enc" ] || [ $((enc & 0x0f000000)) -ne $((dwarf)) ]; then
    echo "the trampoline (0x$tramp) has unwind encoding '$enc', not DWARF ($dwarf)" >&2
    exit 1
  fi
  echo "ok: $n Mach-O test executables ($(file -b "$fiber")), asm backend, minimum macOS $min"

  echo "--- $t: libasyncjob.dylib and libasyncjob.a"
  # zig's Mach-O linker ignores -exported_symbols_list (Apple's ld applies it), so the list is
  # checked where rustc hands it to the linker: --print link-args names the file, -C save-temps
  # keeps it. The crate is cleaned first so that rustc really links (and prints) again.
  "${XCARGO[0]}" clean -q --target "$t" -p asyncjob-capi
  link=$(xplat_zigbuild rustc --target "$t" -p asyncjob-capi --lib -- --print link-args -C save-temps 2>&1) ||
    { echo "$link" >&2; exit 1; }
  list=$(grep -o '"-Wl,-exported_symbols_list" "-Wl,[^"]*"' <<<"$link" | sed 's/.*"-Wl,\([^"]*\)"$/\1/' | head -n1)
  if [ -z "$list" ] || [ ! -f "$list" ]; then
    echo "$link" >&2
    echo "no -exported_symbols_list in rustc's link of the cdylib" >&2
    exit 1
  fi
  got=$(sort "$list")
  # -C save-temps leaves rustc's temporary directories (rustcXXXXXX) behind.
  find "$d/deps" -maxdepth 1 -type d -name 'rustc??????' -exec rm -rf {} +
  if [ "$got" != "$wanted" ]; then
    diff <(echo "$wanted") <(echo "$got") >&2 || true
    echo "the cdylib's exported symbols list must be exactly the ${#EXPORTS[@]} ASYNC_* names" >&2
    exit 1
  fi
  dylib=$d/libasyncjob.dylib
  file -b "$dylib" | grep -q '^Mach-O 64-bit .*dynamically linked shared library' || { file "$dylib"; exit 1; }
  [ "$(minos "$dylib")" = "$min" ] || { echo "dylib: minimum macOS $(minos "$dylib")" >&2; exit 1; }
  # The dylib defines and exports each of them (zig exports every other global too, see above).
  got=$(llvm-nm -gU --just-symbol-name "$dylib" | grep '^_ASYNC_' | sort)
  [ "$got" = "$wanted" ] || { diff <(echo "$wanted") <(echo "$got") >&2; echo "libasyncjob.dylib" >&2; exit 1; }
  # Every ASYNC_* name is defined in the archive (which also holds Rust's std, as any staticlib).
  got=$(llvm-nm -gU --just-symbol-name "$d/libasyncjob.a" 2>/dev/null | grep '^_ASYNC_' | sort -u)
  [ "$got" = "$wanted" ] || { diff <(echo "$wanted") <(echo "$got") >&2; echo "libasyncjob.a" >&2; exit 1; }
  cat >"$out/probe.c" <<'EOF'
#include "asyncjob.h"
static int job(void *arg) { (void)arg; return ASYNC_pause_job(); }
int main(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *j = NULL;
    int ret = 0;
    int r = ASYNC_start_job(&j, ctx, &ret, job, NULL, 0);
    ASYNC_WAIT_CTX_free(ctx);
    return r == ASYNC_PAUSE ? 0 : 1;
}
EOF
  xplat_zig_cc "$z" -std=c99 -Wall -Wextra -Werror -I asyncjob-capi/include -o "$out/probe-dylib-$t" \
    "$out/probe.c" -L"$d" -lasyncjob
  # rustc's list of the native libraries a staticlib needs on macOS (-lSystem, -lc, -lm, -liconv):
  # zig provides libSystem; libiconv has no stub in zig and asyncjob does not use it.
  xplat_zig_cc "$z" -std=c99 -Wall -Wextra -Werror -I asyncjob-capi/include -o "$out/probe-static-$t" \
    "$out/probe.c" "$d/libasyncjob.a"
  for p in "$out/probe-dylib-$t" "$out/probe-static-$t"; do
    file -b "$p" | grep -q '^Mach-O 64-bit .*executable' || { file "$p"; exit 1; }
  done
  echo "ok: the exported symbols list is exactly ${#EXPORTS[@]} names, libasyncjob.dylib (install name $(llvm-objdump --macho --dylib-id "$dylib" | tail -n1)), libasyncjob.a define them, C programs link against both"
done
