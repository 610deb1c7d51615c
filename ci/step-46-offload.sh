#!/usr/bin/env bash
# A real async offload load on both ASYNC backends: libcrypto's own, and libasyncjob (release
# build) under LD_PRELOAD and linked directly (-lasyncjob before -lcrypto). Sources in
# asyncjob-capi/tests/offload/:
#   offload_provider.c  an OpenSSL 3 provider whose SHA2-256/384 pause the job while a worker
#                       thread (a simulated accelerator) completes each operation
#   tls_driver.c        N concurrent TLS 1.3 handshakes + data, one thread, one epoll loop,
#                       SSL_MODE_ASYNC, fd / callback / eager resumption
#   offload.cnf.in      the config that loads the provider and selects it (default_properties)
# Checks:
#   1. every driver case gives identical counts on the three backends (latency 0: every count;
#      latency 50 us: fd and callback modes, where counts do not depend on timing);
#   2. LD_DEBUG=bindings: the provider's and libssl's ASYNC_* calls bind to libasyncjob;
#   3. `openssl speed ... -provider offload -async_jobs 8 -elapsed -evp sha256` and an
#      s_server -async / s_client -async session pause through the provider on both backends;
#   4. Valgrind memcheck of the driver: 0 errors, 0 bytes definitely lost, and Valgrind itself
#      never crashes, with libcrypto, with libasyncjob's default release build (which detects
#      Valgrind at run time and registers job stacks) and with its `sanitizers` build;
#   5. 1,000 concurrent paused handshakes on one thread: RSS per paused handshake;
# and prints handshakes/s for N = 1, 16, 256 at latency 0 and 50 us.
# Run time: about 2 minutes on 2 idle cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/capi"

need=()
command -v cc >/dev/null || need+=(gcc)
command -v openssl >/dev/null || need+=(openssl)
command -v valgrind >/dev/null || need+=(valgrind)
command -v python3 >/dev/null || need+=(python3)
[ -e /usr/include/openssl/provider.h ] || need+=(libssl-dev)
if [ ${#need[@]} -ne 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo build --release -p asyncjob-capi
cargo build -p asyncjob-capi --features sanitizers
rel=$CARGO_TARGET_DIR/release/libasyncjob.so
dbg=$CARGO_TARGET_DIR/debug/libasyncjob.so
src=asyncjob-capi/tests/offload
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
section() { echo; echo "---- [offload] $*"; }
fail() { echo "FAILED: $*"; exit 1; }

cflags=(-std=gnu11 -O2 -g -Wall -Wextra -Werror)
cc "${cflags[@]}" -fPIC -shared -o "$work/offload.so" "$src/offload_provider.c" -lcrypto -lpthread
mkdir "$work/pipe"
cc "${cflags[@]}" -DOFFLOAD_USE_PIPE -fPIC -shared -o "$work/pipe/offload.so" \
  "$src/offload_provider.c" -lcrypto -lpthread
cc "${cflags[@]}" -o "$work/tls_driver" "$src/tls_driver.c" -lssl -lcrypto
cc "${cflags[@]}" -o "$work/tls_driver_linked" "$src/tls_driver.c" \
  -Wl,--no-as-needed -L "$(dirname "$rel")" -lasyncjob "-Wl,-rpath,$(dirname "$rel")" -lssl -lcrypto
sed "s|@MODULE@|$work/offload.so|" "$src/offload.cnf.in" > "$work/offload.cnf"
sed "s|@MODULE@|$work/pipe/offload.so|" "$src/offload.cnf.in" > "$work/pipe.cnf"
export OPENSSL_CONF=$work/offload.cnf
backends=(libcrypto preload linked)

# drive <backend> <driver args...>: one driver run on one backend (the provider's settings come
# from the OFFLOAD_* environment of the caller).
drive() {
  local backend=$1; shift
  case $backend in
    libcrypto) timeout 120 "$work/tls_driver" "$@" ;;
    preload) LD_PRELOAD=$rel timeout 120 "$work/tls_driver" "$@" ;;
    linked) timeout 120 "$work/tls_driver_linked" "$@" ;;
  esac
}

section "the same counts on every backend"
# case <name> <diff: all|none> <env...> -- <driver args...>
case_() {
  local name=$1 cmp=$2; shift 2
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  local b out ref=
  for b in "${backends[@]}"; do
    out=$work/case-$name-$b.txt
    (
      [ ${#envs[@]} -eq 0 ] || export "${envs[@]}"
      drive "$b" "$@"
    ) > "$out" 2>&1 || { cat "$out"; fail "$name on $b"; }
    grep -v -e '^seconds=' -e '^hold:' "$out" > "$out.counts"
    if [ -z "$ref" ]; then
      ref=$out.counts
    elif [ "$cmp" = all ] && ! cmp -s "$ref" "$out.counts"; then
      diff "$ref" "$out.counts" || true
      fail "$name: $b counts differ from libcrypto's"
    fi
  done
  echo "$name ($cmp identical): $(grep -oE '(^| )(handshakes|abandoned|want_async|want_async_job|pauses|spurious|fds_created|fds_open)=[0-9]+' "$ref" | tr -d ' ' | tr '\n' ' ')"
}
l0=(OFFLOAD_LATENCY_US=0)
case_ fd-ctx all "${l0[@]}" OFFLOAD_FD_MODE=ctx -- -n 16 -m fd -a 5 -p 8 -q
case_ fd-op all "${l0[@]}" OFFLOAD_FD_MODE=op -- -n 16 -m fd -a 5 -p 8 -q
case_ callback all "${l0[@]}" -- -n 16 -m callback -a 5 -p 8 -q
case_ eager-ctx all "${l0[@]}" OFFLOAD_FD_MODE=ctx -- -n 16 -m eager -a 5 -p 8 -q
case_ eager-op all "${l0[@]}" OFFLOAD_FD_MODE=op -- -n 16 -m eager -a 5 -p 8 -q
case_ block-every-7 all "${l0[@]}" OFFLOAD_BLOCK_EVERY=7 -- -n 16 -m fd -a 5 -q
case_ pipe-op all "${l0[@]}" OPENSSL_CONF="$work/pipe.cnf" OFFLOAD_FD_MODE=op -- -n 16 -m fd -a 5 -q
case_ fd-50us all OFFLOAD_LATENCY_US=50 -- -n 16 -m fd -q
case_ callback-50us all OFFLOAD_LATENCY_US=50 -- -n 16 -m callback -q
case_ eager-50us none OFFLOAD_LATENCY_US=50 -- -n 16 -m eager -a 5 -q

section "LD_DEBUG=bindings: the provider and libssl call libasyncjob"
bound() { # <ld-debug prefix> <object regex> <symbol>
  grep -hqE "binding file ([^ ]*/)?$2 \[0\] to [^ ]*libasyncjob\.so \[0\]: normal symbol \`$3'" "$1".*
}
not_bound_to_libcrypto() {
  ! grep -hqE "to [^ ]*libcrypto\.so\.3 \[0\]: normal symbol \`ASYNC_" "$1".*
}
OFFLOAD_FD_MODE=op OFFLOAD_BLOCK_EVERY=7 LD_PRELOAD=$rel LD_DEBUG=bindings \
  LD_DEBUG_OUTPUT=$work/ld-fd timeout 60 "$work/tls_driver" -n 2 -q > /dev/null
LD_PRELOAD=$rel LD_DEBUG=bindings LD_DEBUG_OUTPUT=$work/ld-cb \
  timeout 60 "$work/tls_driver" -n 2 -m callback -q > /dev/null
LD_DEBUG=bindings LD_DEBUG_OUTPUT=$work/ld-linked timeout 60 "$work/tls_driver_linked" -n 2 -q > /dev/null
for p in ld-fd ld-linked; do
  for sym in ASYNC_get_current_job ASYNC_get_wait_ctx ASYNC_pause_job ASYNC_WAIT_CTX_get_callback \
      ASYNC_WAIT_CTX_set_wait_fd; do
    bound "$work/$p" 'offload\.so' "$sym" || fail "$p: the provider's $sym not bound to libasyncjob"
  done
  for sym in ASYNC_start_job ASYNC_WAIT_CTX_new ASYNC_WAIT_CTX_get_changed_fds; do
    bound "$work/$p" 'libssl\.so\.3' "$sym" || fail "$p: libssl's $sym not bound to libasyncjob"
  done
  not_bound_to_libcrypto "$work/$p" || fail "$p: some ASYNC_* bound to libcrypto"
done
for sym in ASYNC_WAIT_CTX_clear_fd ASYNC_block_pause ASYNC_unblock_pause; do
  bound "$work/ld-fd" 'offload\.so' "$sym" || fail "the provider's $sym not bound to libasyncjob"
done
bound "$work/ld-cb" 'offload\.so' ASYNC_WAIT_CTX_set_status || fail "set_status not bound"
bound "$work/ld-cb" 'libssl\.so\.3' ASYNC_WAIT_CTX_set_callback || fail "set_callback not bound"
not_bound_to_libcrypto "$work/ld-cb" || fail "callback run: some ASYNC_* bound to libcrypto"
echo "offload.so and libssl bound to libasyncjob (preloaded and linked); none to libcrypto"

section "openssl speed -provider offload -async_jobs 8 -elapsed -evp sha256"
for b in libcrypto preload; do
  pre=; [ "$b" = preload ] && pre=$rel
  OPENSSL_CONF=/dev/null OFFLOAD_STATS=1 LD_PRELOAD=$pre timeout 120 openssl speed \
    -provider-path "$work" -provider offload -provider default -propquery '?provider=offload' \
    -async_jobs 8 -seconds 1 -elapsed -evp sha256 > "$work/speed-$b.out" 2> "$work/speed-$b.err" \
    || { cat "$work/speed-$b.err"; fail "openssl speed on $b"; }
  counters=$(grep '^offload:' "$work/speed-$b.err" || true)
  [ -n "$counters" ] || { cat "$work/speed-$b.err"; fail "speed on $b: no provider counters"; }
  pauses=$(sed -n 's/.* pauses=\([0-9]*\).*/\1/p' <<< "$counters")
  [ "$pauses" -gt 0 ] || fail "speed on $b did not pause"
  grep -Eq '^sha256( +[0-9.]+k){6}' "$work/speed-$b.out" || { cat "$work/speed-$b.out"; fail "no table"; }
  echo "$b: $(grep -E '^sha256 ' "$work/speed-$b.out") | $counters"
done
# ops/s ratio per block size (the table is in kB/s, so the ratio is the same)
python3 - "$work/speed-libcrypto.out" "$work/speed-preload.out" <<'PY'
import sys
rows = [next(l.split()[1:] for l in open(f) if l.startswith("sha256 ")) for f in sys.argv[1:]]
sizes = (16, 64, 256, 1024, 8192, 16384)
print("ops/s libasyncjob / libcrypto: " + "  ".join(
    f"{n}B {float(b.rstrip('k')) / float(a.rstrip('k')):.2f}" for n, a, b in zip(sizes, *rows)))
PY

section "openssl s_server -async / s_client -async through the provider"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2> "$work/req.err" \
  || { cat "$work/req.err"; fail "openssl req"; }
for b in libcrypto preload; do
  pre=; [ "$b" = preload ] && pre=$rel
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  rm -f "$work"/s-*
  # Each feeder watches the output of the program it feeds, on purpose.
  # shellcheck disable=SC2094
  (
    for _ in $(seq 100); do
      grep -q hello-from-client "$work/s-server.out" 2>/dev/null && break
      sleep 0.1
    done
    echo hello-from-server
    sleep 1
  ) | OFFLOAD_STATS=1 LD_PRELOAD=$pre timeout 60 openssl s_server -async \
      -accept "127.0.0.1:$port" -naccept 1 -tls1_3 -cert "$work/cert.pem" -key "$work/key.pem" \
      > "$work/s-server.out" 2> "$work/s-server.err" &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q ACCEPT "$work/s-server.out" 2>/dev/null && break
    sleep 0.1
  done
  # shellcheck disable=SC2094
  (
    echo hello-from-client
    for _ in $(seq 100); do
      grep -q hello-from-server "$work/s-client.out" 2>/dev/null && break
      sleep 0.1
    done
  ) | OFFLOAD_STATS=1 LD_PRELOAD=$pre timeout 60 openssl s_client -async \
      -connect "127.0.0.1:$port" -tls1_3 -servername localhost \
      > "$work/s-client.out" 2> "$work/s-client.err" || true
  wait "$server_pid" || true
  server_pid=
  grep -q 'New, TLSv1.3, Cipher is TLS_' "$work/s-client.out" || { cat "$work"/s-client.*; fail "$b: no TLS 1.3 session"; }
  grep -q '^hello-from-server' "$work/s-client.out" || fail "$b: server->client data"
  grep -q '^hello-from-client' "$work/s-server.out" || fail "$b: client->server data"
  for who in server client; do
    counters=$(grep '^offload:' "$work/s-$who.err" || true)
    pauses=$(sed -n 's/.* pauses=\([0-9]*\).*/\1/p' <<< "$counters")
    [ "${pauses:-0}" -gt 0 ] || { cat "$work/s-$who.err"; fail "$b: s_$who did not pause"; }
    echo "$b s_$who: $counters"
  done
done

section "valgrind memcheck of the driver"
vg() { # <name> <LD_PRELOAD or empty>
  local log=$work/vg-$1.log rc=0
  LD_PRELOAD=$2 valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --log-file="$log" "$work/tls_driver" -n 2 -a 2 -q > "$work/vg-$1.out" 2>&1 || rc=$?
  if grep -qE "VALGRIND INTERNAL ERROR|the 'impossible' happened" "$log"; then
    echo "$1: Valgrind itself crashed (exit $rc):"
    grep -A3 -E "INTERNAL ERROR|impossible" "$log" | head -8
    return 1
  fi
  local errors definite
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n1)
  definite=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n1)
  echo "$1: $(tail -n1 "$work/vg-$1.out") | exit $rc, valgrind errors=${errors:-?} definitely-lost=${definite:-0}"
  if [ "$rc" != 0 ] || [ "${errors:-1}" != 0 ] || { [ -n "$definite" ] && [ "$definite" != 0 ]; }; then
    cat "$log" "$work/vg-$1.out"; return 1
  fi
}
vg libcrypto "" || fail "valgrind, libcrypto backend"
vg libasyncjob-sanitizers "$dbg" || fail "valgrind, libasyncjob (sanitizers build)"
vg libasyncjob-release "$rel" || fail "valgrind, libasyncjob release build"

section "1,000 concurrent paused handshakes on one thread"
for b in libcrypto preload; do
  drive "$b" -n 1000 -H -b 100 -q > "$work/hold-$b.txt" || { cat "$work/hold-$b.txt"; fail "hold on $b"; }
  echo "$b: $(grep '^hold:' "$work/hold-$b.txt")"
  grep -q 'hold: paused=1000 ' "$work/hold-$b.txt" || fail "$b: not 1000 paused at once"
done

section "handshakes/s and loop-thread CPU us per handshake (one thread; wall clock is noisy)"
printf '%-8s %-5s %-6s %18s %18s\n' latency N rounds libcrypto libasyncjob
for lat in 0 50; do
  for nr in 1:32 16:4 256:1; do
    n=${nr%:*} r=${nr#*:}
    rates=()
    for b in libcrypto preload; do
      OFFLOAD_LATENCY_US=$lat drive "$b" -n "$n" -r "$r" > "$work/rate.txt" \
        || { cat "$work/rate.txt"; fail "rate run"; }
      rates+=("$(sed -n 's/.*handshakes_per_s=\([0-9]*\) loop_thread_cpu_us_per_handshake=\([0-9]*\).*/\1 hs\/s \2 us/p' "$work/rate.txt")")
    done
    printf '%-8s %-5s %-6s %18s %18s\n' "${lat}us" "$n" "$r" "${rates[0]}" "${rates[1]}"
  done
done
echo "pauses per handshake (client + server): $(sed -n 's/.*pauses_per_handshake=\([0-9.]*\).*/\1/p' "$work/case-fd-50us-libcrypto.txt")"
