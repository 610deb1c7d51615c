# shellcheck shell=bash
# Helpers shared by the cross-target CI steps (Windows under Wine, aarch64 under qemu-user, MSRV).
# Source it; it defines functions only, plus the cache location below.
#
# Why a private toolchain: no rustup targets can be downloaded on the CI host (only crates.io, Debian,
# PyPI and npm are reachable). Debian ships its own Rust as `rustc-web`/`cargo-web`: the newest one in
# bookworm-security (1.96 at the time of writing) and 1.85 in bookworm main. Their .debs are unpacked
# with `dpkg-deb -x` into a private folder, so nothing clashes with rustup or with apt's rustc 1.63.
# Only plain shared libraries (libllvmNN) and the cross tools (mingw-w64, Wine, aarch64 gcc, qemu)
# are installed with apt.
#
# Everything downloaded or unpacked goes under $XP, so a rerun costs seconds.

XP=${ASYNCJOB_XPLAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/asyncjob-xplat}
XPLAT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

xplat_log() { echo "[xplat] $*" >&2; }

# apt needs root: the CI host runs as root, GitHub's runners have passwordless sudo.
xplat_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install Debian packages that are missing. `apt-get update` only runs when something is missing, so
# warm reruns do not touch the network.
xplat_apt_install() {
  local need=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  xplat_log "apt-get install ${need[*]}"
  xplat_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  xplat_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# Print the newest rustc-web version apt knows (refreshing the lists once if apt knows none).
xplat_rustweb_candidate() {
  local v
  v=$(apt-cache policy rustc-web 2>/dev/null | awk '/Candidate:/{print $2}')
  if [ -z "$v" ] || [ "$v" = "(none)" ]; then
    xplat_root apt-get update -qq
    v=$(apt-cache policy rustc-web | awk '/Candidate:/{print $2}')
  fi
  echo "$v"
}

# Runtime dependencies of rustc-web/cargo-web/libstd-rust-web VERSION, one name per line (first
# alternative of each, virtual libc-dev mapped to libc6-dev). Empty when apt does not know VERSION.
xplat_rustweb_deps() {
  local ver=$1 mm=$2
  apt-cache show "rustc-web=$ver" "cargo-web=$ver" "libstd-rust-web-$mm=$ver" 2>/dev/null |
    sed -n 's/^Depends: //p' | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/^ *//; s/ *$//' |
    grep -v -e rust -e '^$' | sed 's/^libc-dev$/libc6-dev/' | sort -u
}

# xplat_rustweb VERSION [arm64-std] [src]
# Unpack Debian's rustc-web/cargo-web VERSION (e.g. 1.85.0+dfsg3-1~deb12u3) under $XP/rustweb-VERSION
# and print that directory. Its bin/ holds cargo/rustc/rustdoc wrappers that find their own libraries.
#   arm64-std  also unpack the prebuilt aarch64-unknown-linux-gnu std (libstd-rust-web-dev:arm64)
#   src        also unpack rust-web-src (std sources, for -Zbuild-std, e.g. x86_64-pc-windows-gnu)
xplat_rustweb() {
  local ver=$1; shift
  local want_arm64=0 want_src=0 a
  for a in "$@"; do
    case $a in
      arm64-std) want_arm64=1 ;;
      src) want_src=1 ;;
      *) xplat_log "unknown option $a"; return 2 ;;
    esac
  done
  local mm tc debs
  mm=$(echo "$ver" | cut -d. -f1,2)
  tc=$XP/rustweb-$ver
  debs=$XP/debs/rustweb-$ver
  # The compiler, cargo and std link against plain Debian libraries (libllvmNN, libgit2, libcurl, ...):
  # install exactly what the three packages of this version depend on, minus the Rust packages
  # themselves (those are unpacked privately below).
  local deps
  deps=$(xplat_rustweb_deps "$ver" "$mm")
  if [ -z "$deps" ]; then
    xplat_root apt-get update -qq
    deps=$(xplat_rustweb_deps "$ver" "$mm")
  fi
  [ -n "$deps" ] || { xplat_log "Debian has no rustc-web=$ver (see: apt-cache madison rustc-web)"; return 1; }
  # shellcheck disable=SC2086 # one package name per word
  xplat_apt_install $deps

  local stamp="$tc/.complete-base"
  if [ ! -f "$stamp" ]; then
    mkdir -p "$debs"
    (cd "$debs" && apt-get -o APT::Sandbox::User=root download -qq rustc-web="$ver" cargo-web="$ver" "libstd-rust-web-$mm=$ver" \
      "libstd-rust-web-dev=$ver")
    rm -rf "$tc"
    mkdir -p "$tc/bin"
    local d
    for d in "$debs"/rustc-web_*.deb "$debs"/cargo-web_*.deb "$debs"/libstd-rust-web-"$mm"_*.deb \
      "$debs"/libstd-rust-web-dev_*_amd64.deb; do
      dpkg-deb -x "$d" "$tc/root"
    done
    local r=$tc/root/usr
    # The wrappers pin LD_LIBRARY_PATH for the compiler only (librustc_driver lives beside libstd).
    cat >"$tc/bin/rustc" <<EOS
#!/bin/sh
LD_LIBRARY_PATH=$r/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec $r/bin/rustc "\$@"
EOS
    cat >"$tc/bin/rustdoc" <<EOS
#!/bin/sh
LD_LIBRARY_PATH=$r/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec $r/bin/rustdoc "\$@"
EOS
    cat >"$tc/bin/cargo" <<EOS
#!/bin/sh
# Debian cargo $ver driving Debian rustc $ver, independent of rustup and PATH.
RUSTC=$tc/bin/rustc RUSTDOC=$tc/bin/rustdoc exec $r/bin/cargo "\$@"
EOS
    chmod +x "$tc/bin/"*
    touch "$stamp"
  fi
  if [ "$want_src" = 1 ] && [ ! -f "$tc/.complete-src" ]; then
    (cd "$debs" && apt-get -o APT::Sandbox::User=root download -qq rust-web-src="$ver")
    dpkg-deb -x "$debs"/rust-web-src_*.deb "$tc/root"
    # rust-web-src links usr/lib/rustlib/src/rust -> ../../../src/rustc-X.Y (stays inside root/).
    [ -f "$tc/root/usr/lib/rustlib/src/rust/library/std/src/lib.rs" ]
    touch "$tc/.complete-src"
  fi
  if [ "$want_arm64" = 1 ] && [ ! -f "$tc/.complete-arm64" ]; then
    # Fetch the arm64 package list only for this download: dpkg's own architecture list stays as is.
    # The lists go to a private directory so the host's apt state is untouched.
    local lists=$XP/apt-arm64-lists
    mkdir -p "$lists/partial"
    # shellcheck disable=SC2054 # the commas belong to apt's option value
    local aopt=(-o APT::Architectures=amd64,arm64 -o Dir::State::Lists="$lists"
      -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
    apt-get -o APT::Sandbox::User=root "${aopt[@]}" update -qq
    (cd "$debs" && apt-get -o APT::Sandbox::User=root "${aopt[@]}" download -qq "libstd-rust-web-dev:arm64=$ver")
    dpkg-deb -x "$debs"/libstd-rust-web-dev_*_arm64.deb "$tc/root"
    [ -d "$tc/root/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib" ]
    touch "$tc/.complete-arm64"
  fi
  echo "$tc"
}

# Wine for x86_64-pc-windows-gnu tests: mingw-w64 for the C shim, a private prefix, and a stub
# bcryptprimitives.dll (Wine 8 in Debian 12 lacks ProcessPrng, which Rust std >= 1.78 imports).
# Exports the variables cargo and Wine need.
xplat_wine_setup() {
  xplat_apt_install gcc-mingw-w64-x86-64 wine wine64
  export WINEPREFIX=${WINEPREFIX:-$XP/wineprefix}
  export WINEDEBUG=-all
  # winedbg off: with Wine's crash debugger a crashing test can exit 0. No Mono/Gecko installers.
  export WINEDLLOVERRIDES="winedbg.exe=d;mscoree,mshtml="
  # A panicking test with backtraces on crashes Wine's dbghelp.
  export RUST_BACKTRACE=0
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
  if [ ! -f "$WINEPREFIX/system.reg" ]; then
    xplat_log "creating wine prefix $WINEPREFIX"
    wine wineboot -i >/dev/null 2>&1
    wineserver -w
  fi
  local dll=$XP/bcryptprimitives.dll
  if [ ! -f "$dll" ] || [ "$XPLAT_DIR/bcryptprimitives.c" -nt "$dll" ]; then
    x86_64-w64-mingw32-gcc -O2 -shared -o "$dll" "$XPLAT_DIR/bcryptprimitives.c" -lbcrypt
  fi
  cp -f "$dll" "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
}

# Start wineserver and Wine's services once, detached from cargo's pipes. Otherwise services.exe and
# friends are spawned by the first test process and inherit its output pipe, and `cargo test` hangs.
xplat_wine_start() {
  wineserver -p || true
  wine cmd /c exit </dev/null >/dev/null 2>&1 || true
}

xplat_wine_stop() {
  wineserver -k 2>/dev/null || true
}

# xplat_cross_cargo TARGET: fills the array XCARGO with the cargo command line prefix to test TARGET.
# Default: Debian's newest rustc-web, unpacked privately (no rustup targets can be downloaded on the
# CI host); Windows needs -Zbuild-std because Debian has no prebuilt Windows std.
# ASYNCJOB_XPLAT_RUSTUP=1 (GitHub Actions): the rustup toolchain on PATH plus `rustup target add`.
# shellcheck disable=SC2034 # XCARGO and XPLAT_RUSTC are read by the sourcing step scripts
xplat_cross_cargo() {
  local target=$1
  if [ "${ASYNCJOB_XPLAT_RUSTUP:-0}" = 1 ]; then
    rustup target add "$target" >&2
    XCARGO=(cargo)
    XPLAT_RUSTC=$(rustc -V)
    return 0
  fi
  local ver tc
  ver=$(xplat_rustweb_candidate)
  case $target in
    aarch64-unknown-linux-gnu)
      tc=$(xplat_rustweb "$ver" arm64-std)
      XCARGO=("$tc/bin/cargo")
      ;;
    *)
      tc=$(xplat_rustweb "$ver" src)
      export RUSTC_BOOTSTRAP=1 # -Zbuild-std on a stable compiler
      XCARGO=("$tc/bin/cargo" -Zbuild-std)
      ;;
  esac
  XPLAT_RUSTC=$("$tc/bin/rustc" -V)
}

# qemu-user and the aarch64 cross compiler for aarch64-unknown-linux-gnu tests.
xplat_aarch64_setup() {
  xplat_apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
  export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
  export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
  # For binaries started through binfmt_misc (below), which get no -L.
  export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
  # Tests that measure the process's own address space (RLIMIT_AS, VmSize) would measure qemu's.
  export ASYNCJOB_UNDER_EMULATION=qemu-user
  xplat_aarch64_binfmt
}

# Tests that re-execute their own binary in a child process (stack overflow, abort) need the kernel
# to run an aarch64 ELF through qemu: register qemu-aarch64 with binfmt_misc, as Debian's
# qemu-user-binfmt or docker's setup-qemu would. This is machine-wide (until reboot) and only makes
# aarch64 Linux binaries runnable. Skipped when already registered.
xplat_aarch64_binfmt() {
  local dir=/proc/sys/fs/binfmt_misc
  [ -e "$dir/qemu-aarch64" ] && return 0
  if [ ! -e "$dir/register" ]; then
    xplat_root mount -t binfmt_misc binfmt_misc "$dir" || {
      xplat_log "cannot mount binfmt_misc: tests that re-execute themselves will fail"
      return 0
    }
  fi
  local magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  local mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  local qemu
  qemu=$(command -v qemu-aarch64)
  echo ":qemu-aarch64:M::$magic:$mask:$qemu:" | xplat_root tee "$dir/register" >/dev/null
  xplat_log "registered $qemu for aarch64 ELF binaries with binfmt_misc"
}

# Serialise toolchain setup: several CI runs (or developers) may share $XP, and xplat_rustweb and
# xplat_zig_setup unpack into it. xplat_lock takes an exclusive lock on $XP/.lock for the rest of
# the calling shell (or until xplat_unlock); it is released when the shell exits.
xplat_lock() {
  mkdir -p "$XP"
  exec {XPLAT_LOCK_FD}>"$XP/.lock"
  flock "$XPLAT_LOCK_FD"
}

xplat_unlock() {
  [ -n "${XPLAT_LOCK_FD:-}" ] || return 0
  flock -u "$XPLAT_LOCK_FD"
  exec {XPLAT_LOCK_FD}>&-
  unset XPLAT_LOCK_FD
}

# zig (C compiler, assembler and linker for macOS and musl targets; it ships the macOS libSystem
# .tbd stubs and headers and the musl sources) and cargo-zigbuild (sets CC_<target>, AR_<target> and
# the linker for cargo, and rewrites the clang/rustc flags zig rejects such as
# --target=arm64-apple-macosx), both from PyPI into a venv under $XP. Puts the venv first on PATH:
# cargo-zigbuild runs `python3 -m ziglang`.
XPLAT_ZIG_VERSION=${ASYNCJOB_XPLAT_ZIG:-0.17.1}
XPLAT_ZIGBUILD_VERSION=${ASYNCJOB_XPLAT_ZIGBUILD:-0.24.1}
xplat_zig_setup() {
  local venv=$XP/zig-$XPLAT_ZIG_VERSION-zigbuild-$XPLAT_ZIGBUILD_VERSION
  if [ ! -f "$venv/.complete" ]; then
    xplat_apt_install python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "ziglang==$XPLAT_ZIG_VERSION" \
      "cargo-zigbuild==$XPLAT_ZIGBUILD_VERSION"
    touch "$venv/.complete"
  fi
  export PATH="$venv/bin:$PATH"
}

# zig's C compiler: `xplat_zig_cc ZIG_TARGET ARGS...` (e.g. aarch64-macos, x86_64-linux-musl).
xplat_zig_cc() {
  local t=$1; shift
  python3 -m ziglang cc -target "$t" "$@"
}

# xplat_zigbuild SUBCOMMAND ARGS...: run `cargo SUBCOMMAND` through cargo-zigbuild with the cargo
# chosen by xplat_cross_cargo (its extra flags such as -Zbuild-std included). Call xplat_cross_cargo
# and xplat_zig_setup first.
xplat_zigbuild() {
  local sub=$1; shift
  local cargo_dir=
  case ${XCARGO[0]} in */*) cargo_dir=$(dirname "${XCARGO[0]}") ;; esac
  PATH=${cargo_dir:+$cargo_dir:}$PATH cargo-zigbuild "$sub" "${XCARGO[@]:1}" "$@"
}
