#!/usr/bin/env bash
# Soak test of asyncjob (`conformance stress`): 4 threads of random start/pause/resume/cancel/panic
# patterns with shared wait contexts and real fds (pipes, eventfds) closed by fd cleanups, for
# SOAK_SECONDS (default 60). Fails if a job returns a wrong result, a closure or fd is never cleaned
# up, or, at the quiescent points between rounds, the open fds differ from the start or RSS / the
# memory-map count grow past the warm-up's peak plus the bounds in conformance/src/stress.rs.
# Run time: SOAK_SECONDS plus the release build (~2 min cold, shared with step-50).
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECONDS=${SOAK_SECONDS:-60}
SOAK_THREADS=${SOAK_THREADS:-4}
if ! dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libssl-dev pkg-config
fi
cargo run --release -p conformance -- stress --seconds "$SOAK_SECONDS" --threads "$SOAK_THREADS"
