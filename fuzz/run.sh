#!/usr/bin/env bash
# Builds the AFL++ targets and fuzzes them: `fuzz/run.sh [SECONDS [TARGET...]]`.
#
# Each target runs for SECONDS (default 5) from its seed corpus (corpus/<target>/, plus the
# kept crashes in regressions/<target>/), into target/afl/<target>/; any crash found fails the
# run and is listed. Then every seed and regression is replayed with `cargo afl test`.
# Installs cargo-afl (which builds AFL++ from source) when it is missing. See README.md.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-5}
shift || true
all=(car unixfs_node walk route_and_media_id denylist byte_range thumbnail_probe)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if ! cargo afl --version >/dev/null 2>&1; then
  echo "-- installing cargo-afl (builds AFL++)"
  cargo install --locked cargo-afl
fi
# cargo-afl builds AFL++ when installed; an older install may need it built.
if ! cargo afl --version 2>/dev/null | grep -q 'AFL++'; then
  cargo afl config --build
fi

# Host crates (build scripts, proc macros) are left uninstrumented by naming the target.
# opt-level 0 keeps the cold build to a third of the CPU time of opt-level 1 (all of the
# proxy's dependencies are built with codegen-units=1): right for seconds of fuzzing; for a
# long run AFL_OPT_LEVEL=1 or 3 (and CARGO_TARGET_DIR to keep both builds) gives more execs.
host=$(rustc -vV | sed -n 's/^host: //p')
export AFL_OPT_LEVEL=${AFL_OPT_LEVEL:-0}
echo "-- building the targets (AFL_OPT_LEVEL=$AFL_OPT_LEVEL)"
cargo afl build --release --locked --target "$host"
bin=${CARGO_TARGET_DIR:-target}/$host/release

# Containers: no CPU governor, no core_pattern, no UI, no CPU binding on shared cores.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
export AFL_FAST_CAL=1 AFL_NO_STARTUP_CALIBRATION=1

failed=()
for t in "${targets[@]}"; do
  out=target/afl/$t
  seeds=target/afl/seeds-$t
  rm -rf "$out" "$seeds"
  mkdir -p "$seeds"
  cp corpus/"$t"/* "$seeds"/
  if [ -d regressions/"$t" ]; then
    # Open (unfixed) bugs would stop the fuzzer at its first run of the seeds.
    find regressions/"$t" -maxdepth 1 -type f ! -name 'open-*' -exec cp {} "$seeds"/ \;
  fi
  echo "-- fuzzing $t for ${seconds}s"
  status=0
  cargo afl fuzz -V "$seconds" -i "$seeds" -o "$out" -- "$bin/$t" </dev/null >"$out.log" 2>&1 || status=$?
  stats=$out/default/fuzzer_stats
  if [ "$status" -ne 0 ] || [ ! -f "$stats" ]; then
    tail -30 "$out.log"
    echo "!! afl-fuzz failed on $t (exit $status), log: fuzz/$out.log"
    failed+=("$t")
    continue
  fi
  execs=$(sed -n 's/^execs_done *: //p' "$stats")
  speed=$(sed -n 's/^execs_per_sec *: //p' "$stats")
  paths=$(sed -n 's/^corpus_count *: //p' "$stats")
  crashes=$(find "$out/default/crashes" -name 'id:*' | wc -l)
  hangs=$(find "$out/default/hangs" -name 'id:*' | wc -l)
  echo "   $t: $execs execs ($speed/s), corpus $paths, $crashes crashes, $hangs hangs"
  if [ "$crashes" -ne 0 ]; then
    find "$out/default/crashes" -name 'id:*' | sed 's/^/   crash: fuzz\//'
    failed+=("$t")
  fi
done

echo "-- replaying the seeds and regressions (cargo afl test)"
cargo afl test --release --locked --target "$host" --test replay

if [ ${#failed[@]} -gt 0 ]; then
  echo "!! fuzzing found crashes or failed in: ${failed[*]} (see README.md to keep and replay them)"
  exit 1
fi
