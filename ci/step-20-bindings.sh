#!/usr/bin/env bash
# CI step: the committed bindgen output of asyncjob-sys must be current.
set -euo pipefail
exec bash "$(dirname "$0")/check-bindings.sh"
