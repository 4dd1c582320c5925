#!/usr/bin/env bash
# Instructions per pass-through request, split by whose code they are (see callgrind.py).
# Builds the proxy and benchkit with line tables (so inlined code is attributed to its crate)
# into benches/out/target-callgrind, then runs both under callgrind. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "callgrind.sh needs valgrind (apt-get install valgrind)" >&2; exit 2; }
export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_INCREMENTAL=0
target=benches/out/target-callgrind
cargo build --release --locked --target-dir "$target"
cargo build --release --locked --manifest-path benches/harness/Cargo.toml --target-dir "$target"
python3 benches/callgrind.py --proxy "$target/release/ipfs-media-proxy" \
  --benchkit "$target/release/benchkit" "$@"
