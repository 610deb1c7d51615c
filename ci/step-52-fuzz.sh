#!/usr/bin/env bash
# Coverage-guided differential fuzzing (cargo-fuzz / libFuzzer, conformance/fuzz): input bytes decode
# to scenario programs that run on the system libcrypto and on asyncjob in one process; any trace
# difference, crash or AddressSanitizer report fails the step and leaves the input in
# conformance/fuzz/artifacts/differential/ (decode it with `cargo run -p conformance -- decode FILE`).
#
# Runs FUZZ_SECONDS of fuzzing (default 120) after the build (first build ~3 min on 2 cores, plus
# ~40 s to install cargo-fuzz once). Long runs: `FUZZ_SECONDS=36000 nice bash ci/step-52-fuzz.sh`.
# The corpus grows in $CARGO_TARGET_DIR/fuzz/corpus-differential, seeded from conformance/fuzz/seeds.
#
# Sanitizer: AddressSanitizer (FUZZ_SANITIZER=none for ~4x the speed without it), with asyncjob-sys's
# feature `sanitizers` so that ASan follows asyncjob's fiber switches. Leak detection is off: libcrypto
# leaks by design in defined programs (a replaced pool), and with LSan running after each leaking input
# the fuzzer drops from ~430 to ~18 runs/s; leaks are the soak step's job (step-53). The same leak is
# why libFuzzer is restarted every FUZZ_CHUNK_SECONDS (60) or FUZZ_CHUNK_RUNS (10000) runs, whichever
# comes first: its RSS grows by ~150 KiB per run under ASan (2058 MiB after 13,423 runs).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-120}
FUZZ_CHUNK_SECONDS=${FUZZ_CHUNK_SECONDS:-60}
FUZZ_CHUNK_RUNS=${FUZZ_CHUNK_RUNS:-10000}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"

need=()
for pkg in libssl-dev pkg-config g++; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -ne 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ! cargo +nightly -V >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi

corpus="$CARGO_TARGET_DIR/corpus-differential"
log="$CARGO_TARGET_DIR/fuzz-differential.log"
mkdir -p "$corpus"
cd conformance
cargo +nightly fuzz build -s "$FUZZ_SANITIZER" differential

export ASAN_OPTIONS="detect_leaks=0:quarantine_size_mb=64${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
end=$((SECONDS + FUZZ_SECONDS))
runs=0
chunk=0
while [ "$SECONDS" -lt "$end" ]; do
  left=$((end - SECONDS))
  t=$(( left < FUZZ_CHUNK_SECONDS ? left : FUZZ_CHUNK_SECONDS ))
  chunk=$((chunk + 1))
  if ! cargo +nightly fuzz run -s "$FUZZ_SANITIZER" differential "$corpus" fuzz/seeds -- \
      -max_total_time="$t" -runs="$FUZZ_CHUNK_RUNS" -max_len=1024 -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    echo "[fuzz] FAILED in chunk $chunk; end of the log ($log):" >&2
    grep -v '^INFO\|^#' "$log" | tail -n 60 >&2
    exit 1
  fi
  n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
  cov=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | sed 's/.*\(cov: [0-9]*\).*\(corp: [^ ]*\).*/\1, \2/' || true)
  runs=$((runs + ${n:-0}))
  echo "[fuzz] chunk $chunk: ${n:-?} runs (${rate:-?}/s), peak RSS ${rss:-?} MiB, $cov"
done
echo "[fuzz] no difference or crash in $runs runs over ${FUZZ_SECONDS}s (sanitizer: $FUZZ_SANITIZER)"
