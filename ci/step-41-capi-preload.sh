#!/usr/bin/env bash
# libasyncjob as a drop-in for libcrypto's ASYNC_* under LD_PRELOAD, with the unmodified system
# `openssl` binary, libssl and libcrypto (Linux only; loopback only; every client under `timeout`):
#   1. `openssl speed -async_jobs 4 -seconds 1 sha256` completes and prints its table;
#   2. `openssl s_server -async` + `openssl s_client -async` complete a TLS 1.3 handshake and carry
#      data both ways;
# and LD_DEBUG=bindings proves that the openssl binary, libssl and libcrypto itself were bound to
# libasyncjob's ASYNC_* and not to libcrypto's.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/capi"

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -ne 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo build --release -p asyncjob-capi
lib=$CARGO_TARGET_DIR/release/libasyncjob.so
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
section() { echo; echo "---- [capi-preload] $*"; }
fail() { echo "FAILED: $*"; exit 1; }

# (grep reads the files itself: with pipefail, `cat | grep -q` can fail on SIGPIPE.)
# bound <ld-debug-file-prefix> <object-regex> <symbol>: the object's reference to <symbol> was bound
# to libasyncjob.
bound() {
  grep -hqE "binding file ([^ ]*/)?$2 \[0\] to [^ ]*libasyncjob\.so \[0\]: normal symbol \`$3'" "$1".*
}
# not_bound_to_libcrypto <prefix> <symbol>: no ASYNC reference went to libcrypto's definition.
not_bound_to_libcrypto() {
  ! grep -hqE "to [^ ]*libcrypto\.so\.3 \[0\]: normal symbol \`ASYNC_" "$1".*
}

section "openssl speed -async_jobs 4 -seconds 1 sha256"
LD_PRELOAD=$lib LD_DEBUG=bindings LD_DEBUG_OUTPUT=$work/ld-speed \
  timeout 120 openssl speed -async_jobs 4 -seconds 1 sha256 > "$work/speed.out" 2> "$work/speed.err" \
  || { cat "$work/speed.err"; fail "openssl speed exited with $?"; }
cat "$work/speed.out"
grep -Eq '^sha256( +[0-9.]+k){6}' "$work/speed.out" || fail "no sha256 result table"
for sym in ASYNC_start_job ASYNC_init_thread ASYNC_WAIT_CTX_new ASYNC_cleanup_thread; do
  bound "$work/ld-speed" "openssl" "$sym" || fail "openssl's $sym not bound to libasyncjob"
done
not_bound_to_libcrypto "$work/ld-speed" "" || fail "some ASYNC_* bound to libcrypto"
echo "openssl speed: table printed; openssl's ASYNC_* bound to libasyncjob"

section "openssl s_server -async / s_client -async, TLS 1.3 on 127.0.0.1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2> "$work/req.err" \
  || { cat "$work/req.err"; fail "openssl req"; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The server answers once the client's line arrived, then keeps the connection open briefly. Each
# feeder watches the output of the program it feeds, on purpose.
# shellcheck disable=SC2094
(
  for _ in $(seq 100); do
    grep -q hello-from-client "$work/server.out" 2>/dev/null && break
    sleep 0.1
  done
  echo hello-from-server
  sleep 2
) | LD_PRELOAD=$lib LD_DEBUG=bindings LD_DEBUG_OUTPUT=$work/ld-server \
  timeout 60 openssl s_server -async -accept "127.0.0.1:$port" -naccept 1 -tls1_3 \
    -cert "$work/cert.pem" -key "$work/key.pem" > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
for _ in $(seq 100); do
  grep -q ACCEPT "$work/server.out" 2>/dev/null && break
  sleep 0.1
done
# shellcheck disable=SC2094
(
  echo hello-from-client
  for _ in $(seq 100); do
    grep -q hello-from-server "$work/client.out" 2>/dev/null && break
    sleep 0.1
  done
) | LD_PRELOAD=$lib LD_DEBUG=bindings LD_DEBUG_OUTPUT=$work/ld-client \
  timeout 60 openssl s_client -async -connect "127.0.0.1:$port" -tls1_3 -servername localhost \
    > "$work/client.out" 2> "$work/client.err" || true
wait "$server_pid" || true
server_pid=
echo "client: $(grep -E 'New, TLSv1.3|^hello' "$work/client.out" | tr '\n' ' ')"
echo "server: $(grep -E 'CIPHER is|^hello' "$work/server.out" | tr '\n' ' ')"
grep -q 'New, TLSv1.3, Cipher is TLS_' "$work/client.out" || { cat "$work/client.out" "$work/client.err"; fail "no TLS 1.3 session"; }
grep -q '^hello-from-server' "$work/client.out" || { cat "$work/client.out"; fail "server->client data"; }
grep -q '^hello-from-client' "$work/server.out" || { cat "$work/server.out" "$work/server.err"; fail "client->server data"; }
for who in server client; do
  bound "$work/ld-$who" "libssl\.so\.3" ASYNC_start_job || fail "$who: libssl's ASYNC_start_job not bound to libasyncjob"
  bound "$work/ld-$who" "libssl\.so\.3" ASYNC_get_current_job || fail "$who: libssl's ASYNC_get_current_job not bound"
  bound "$work/ld-$who" "libssl\.so\.3" ASYNC_WAIT_CTX_new || fail "$who: libssl's ASYNC_WAIT_CTX_new not bound"
  bound "$work/ld-$who" "libcrypto\.so\.3" ASYNC_init_thread || fail "$who: libcrypto's own ASYNC_init_thread not bound"
  not_bound_to_libcrypto "$work/ld-$who" || fail "$who: some ASYNC_* bound to libcrypto"
done
echo "TLS 1.3 handshake and data both ways through libasyncjob; libssl and libcrypto bound to it"
