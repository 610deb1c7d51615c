#!/usr/bin/env bash
# Lint the GitHub Actions workflow (and the cross-CI shell scripts); see ci/actionlint.sh.
exec bash "$(dirname "$0")/actionlint.sh"
