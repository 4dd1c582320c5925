#!/usr/bin/env bash
# End-to-end suite: a real Synapse, a real js-ipfs node and the proxy's release binary, all on
# 127.0.0.1, driven by pytest scenarios (tests/e2e/test_*.py).
#
#   tests/e2e/run.sh [pytest arguments...]      e.g. tests/e2e/run.sh -k range -x
#
# It installs what it needs, with the versions pinned in tests/e2e/requirements.txt and
# tests/e2e/package.json (+ package-lock.json), under .e2e/ (git-ignored); a later run skips an
# install whose inputs did not change. Then it runs the suite twice: against a Synapse with
# authenticated media on (everything), and with `enable_authenticated_media: false` (the tests
# marked `noauth_too`). Logs: .e2e/logs/<mode>/. Everything it starts is stopped on exit.
#
# Environment:
#   E2E_MODES="auth noauth"   which passes to run
#   E2E_PROFILE=release       or debug: build and test target/debug/ipfs-media-proxy instead,
#                             which `cargo test` has already built (a cold release build takes
#                             minutes on 2 cores)
#   E2E_PROXY_BIN=PATH        test this binary; skips the cargo build
#   E2E_PYTHON=python3.11     interpreter for the venv (3.10 or later; Synapse needs it)
#   E2E_PASS_TIMEOUT=600      seconds one pytest pass may take before it is killed
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
E2E="$ROOT/.e2e"
VENV="$E2E/venv"
NODE_DIR="$E2E/node"
LOGS="$E2E/logs"
RUN="$E2E/run"
PIDS="$RUN/pids"
MODES="${E2E_MODES:-auth noauth}"
PASS_TIMEOUT="${E2E_PASS_TIMEOUT:-600}"
PROFILE="${E2E_PROFILE:-release}"
case "$PROFILE" in
    release) PROXY_BIN="${E2E_PROXY_BIN:-$ROOT/target/release/ipfs-media-proxy}" ;;
    debug) PROXY_BIN="${E2E_PROXY_BIN:-$ROOT/target/debug/ipfs-media-proxy}" ;;
    *) echo "E2E_PROFILE must be release or debug" >&2; exit 2 ;;
esac
STARTED=$SECONDS
export COLUMNS="${COLUMNS:-160}"  # pytest's summary lines, when no terminal says how wide

say() { printf '[e2e %4ds] %s\n' "$((SECONDS - STARTED))" "$*"; }

# -- cleanup: whatever is still running when we leave, however we leave ---------------------------
JOBS=()

# Services pytest started (each leads its own process group, pid file in $PIDS) and did not
# stop itself: killed, or a previous run that was killed.
# A pid is only signalled while its process still carries our E2E_DIR (pids get reused).
ours() {
    [[ "$1" =~ ^[0-9]+$ ]] && tr '\0' '\n' < "/proc/$1/environ" 2>/dev/null | grep -qxF "E2E_DIR=$E2E"
}
stop_services() {
    compgen -G "$PIDS/*.pid" >/dev/null || return 0
    local pidfile pid
    for pidfile in "$PIDS"/*.pid; do
        pid="$(cat "$pidfile" 2>/dev/null || true)"
        if ours "$pid"; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
    done
    sleep 2
    for pidfile in "$PIDS"/*.pid; do
        pid="$(cat "$pidfile" 2>/dev/null || true)"
        if ours "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
        rm -f "$pidfile"
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for job in "${JOBS[@]:-}"; do
        [[ -n "$job" ]] && kill "$job" 2>/dev/null || true
    done
    stop_services
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One run at a time per checkout: a second run would stop the first one's services.
mkdir -p "$E2E"
exec 9>"$E2E/run.lock"
if ! flock -n 9; then
    say "another tests/e2e/run.sh is running in this checkout; waiting for it (at most 20 min)"
    flock -w 1200 9 || { say "gave up waiting for the other run"; exit 1; }
fi

stop_services
rm -rf "$LOGS" "$RUN"
mkdir -p "$LOGS" "$RUN" "$PIDS"

# nginx and Caddy from Debian, for the scenarios that put the shipped deploy/ snippets in
# front of the proxy. Installing them must not start system services (they run our own).
if ! command -v nginx >/dev/null || ! command -v caddy >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing nginx and caddy (Debian)"
        policy=/usr/sbin/policy-rc.d
        added_policy=
        if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; added_policy=1; fi
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx caddy; } \
            > "$LOGS/install-fronts.log" 2>&1 || say "nginx/caddy install failed; their scenarios will skip (see $LOGS/install-fronts.log)"
        [[ -n $added_policy ]] && rm -f "$policy"
    else
        say "nginx/caddy missing and not root: their scenarios will skip"
    fi
fi

# -- installs (in parallel: they wait on different things) ------------------------------------------
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

PYTHON="${E2E_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    for candidate in python3.11 python3.12 python3.13 python3.10 python3; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            PYTHON="$candidate"
            break
        fi
    done
fi
[[ -n "$PYTHON" ]] || { say "no Python 3.10+ found (set E2E_PYTHON)"; exit 1; }

install_venv() {
    local want
    want="$(stamp_of "$HERE/requirements.txt") $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
    if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.e2e-stamp" 2>/dev/null)" == "$want" ]]; then
        echo "venv up to date ($want)"
        return 0
    fi
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --no-input --disable-pip-version-check --quiet \
        --only-binary :all: -r "$HERE/requirements.txt"
    echo "$want" > "$VENV/.e2e-stamp"
}

install_node() {
    bash "$HERE/install-node.sh" "$NODE_DIR"
}

build_proxy() {
    if [[ -n "${E2E_PROXY_BIN:-}" ]]; then
        echo "using E2E_PROXY_BIN=$E2E_PROXY_BIN"
        return 0
    fi
    local profile=()
    [[ "$PROFILE" == release ]] && profile=(--release)
    cd "$ROOT" && cargo build "${profile[@]}" --bin ipfs-media-proxy
}

declare -A STEP_PID=()
for step in venv node proxy; do
    case "$step" in
        venv) install_venv > "$LOGS/install-venv.log" 2>&1 & ;;
        node) install_node > "$LOGS/install-node.log" 2>&1 & ;;
        proxy) build_proxy > "$LOGS/build-proxy.log" 2>&1 & ;;
    esac
    STEP_PID[$step]=$!
    JOBS+=("$!")
done
say "installing (venv, node modules) and building the proxy; logs in $LOGS"
failed=0
for step in venv node proxy; do
    if wait "${STEP_PID[$step]}"; then
        say "$step: ready"
    else
        failed=1
        log="$LOGS/install-$step.log"
        [[ "$step" == proxy ]] && log="$LOGS/build-proxy.log"
        say "$step: FAILED; last lines of $log:"
        tail -n 40 "$log" | sed 's/^/    /'
    fi
done
JOBS=()
[[ $failed == 0 ]] || exit 1
[[ -x "$PROXY_BIN" ]] || { say "no proxy binary at $PROXY_BIN"; exit 1; }

# -- the passes ------------------------------------------------------------------------------------
overall=0
junits=()
for mode in $MODES; do
    case "$mode" in
        auth) auth_media=true; select=() ;;
        noauth) auth_media=false; select=(-m noauth_too) ;;
        *) say "unknown mode $mode (auth, noauth)"; exit 2 ;;
    esac
    say "pass '$mode': Synapse with enable_authenticated_media: $auth_media"
    mkdir -p "$LOGS/$mode"
    junit="$LOGS/$mode/junit.xml"
    status=0
    # In the background and waited for, so that a signal to this script is handled at once
    # (bash runs traps only between foreground commands): the trap then ends pytest and, from
    # the pid files, every service.
    (
        cd "$HERE"
        export E2E_DIR="$E2E" E2E_MODE="$mode" E2E_SYNAPSE_AUTH_MEDIA="$auth_media" \
            E2E_PROXY_BIN="$PROXY_BIN" E2E_NODE_DIR="$NODE_DIR" E2E_LOG_DIR="$LOGS/$mode" \
            E2E_STATE_DIR="$RUN/$mode" E2E_PID_DIR="$PIDS" PYTHONDONTWRITEBYTECODE=1
        exec timeout --kill-after=20 "$PASS_TIMEOUT" "$VENV/bin/python" -m pytest -c "$HERE/pytest.ini" \
            --rootdir "$HERE" --junitxml "$junit" -o junit_suite_name="e2e-$mode" "${select[@]}" "$@" "$HERE"
    ) < /dev/null &
    JOBS=("$!")
    wait "$!" || status=$?
    JOBS=()
    if [[ $status == 5 && $# -gt 0 ]]; then
        say "pass '$mode': your arguments selected no test here"
        status=0
    elif [[ $status == 124 || $status == 137 ]]; then
        say "pass '$mode': killed after ${PASS_TIMEOUT}s"
    fi
    [[ -f "$junit" ]] && junits+=("$junit")
    if [[ $status != 0 ]]; then
        overall=1
        say "pass '$mode' FAILED (pytest status $status); logs in $LOGS/$mode"
    fi
done

# One closing line for both passes (pytest printed one per pass above).
if ((${#junits[@]})); then
    "$VENV/bin/python" - "${junits[@]}" <<'EOF'
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = {child.tag for child in case}
        if outcome & {"failure", "error"}:
            failed += 1
        elif "skipped" in outcome:
            skipped += 1
        else:
            passed += 1
print(f"e2e: {passed} passed, {failed} failed, {skipped} skipped")
EOF
fi
say "done in $((SECONDS - STARTED))s"
exit "$overall"
