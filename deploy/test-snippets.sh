#!/usr/bin/env bash
# Tests the reverse-proxy snippets in deploy/ for real, on loopback only:
#   - deploy/nginx/ipfs-media-proxy.conf, included in a plain-HTTP server block: `nginx -t`,
#     then a running nginx;
#   - the (ipfs_media_proxy) routes of deploy/caddy/Caddyfile and deploy/compose/Caddyfile
#     in a plain-HTTP site: `caddy validate` (also of both files as shipped), then a running
#     Caddy;
# each in front of a stub upstream that answers with the request it received (method, raw
# path, headers, body length) as JSON. Checked: /_matrix and /_synapse/client reach the
# upstream with Host, X-Forwarded-For and X-Forwarded-Proto; the raw path (ipfs%3A...) and the
# query arrive unchanged; a 20 MiB upload passes; /_synapse/admin is not routed.
#
# The snippets' upstream 127.0.0.1:8009 (proxy:8009 in compose) is replaced by a free port so
# the test never collides with a proxy running on 8009. Needs nginx, caddy, curl, python3;
# installs missing ones with apt-get when run as root. Waits are bounded; everything started
# is stopped on exit. Exit status 0 only if every check passed.
#
#   bash deploy/test-snippets.sh            # all
#   SKIP_CADDY=1 bash deploy/test-snippets.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
failures=0
pids=()

log() { printf '%s\n' "$*" >&2; }
pass() { log "  ok   $*"; }
fail() { log "  FAIL $*"; failures=$((failures + 1)); }

# --- tools ------------------------------------------------------------------------------
ensure() { # ensure COMMAND DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing $2"
        if [[ -z ${apt_updated:-} ]]; then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
            apt_updated=1
        fi
        # --no-install-recommends: no default site, no extra modules.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >&2
    fi
    command -v "$1" >/dev/null 2>&1 || { log "missing $1 (Debian package $2)"; exit 1; }
}
ensure python3 python3
ensure curl curl
ensure nginx nginx
[[ -n ${SKIP_CADDY:-} ]] || ensure caddy caddy

tmp=$(mktemp -d /tmp/ipfs-media-proxy-snippets.XXXXXX)
chmod 0755 "$tmp" # nginx workers (nobody) must reach their temp directories
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # wait_port PORT PID: up to 10 s for a listener, failing early if PID died
    local i
    for i in $(seq 100); do
        if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.2)' "$1" 2>/dev/null; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# --- stub upstream ----------------------------------------------------------------------
cat >"$tmp/stub.py" <<'PY'
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def handle_one_request(self):
        # Every method: answer with what arrived.
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline or not self.parse_request():
            self.close_connection = True
            return
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                n += len(self.rfile.read(size)); self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                chunk = self.rfile.read(min(left, 1 << 20)); n += len(chunk); left -= len(chunk)
        body = json.dumps({
            "method": self.command, "path": self.path, "body_bytes": n,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Stub", "yes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
PY
stub_port=$(free_port)
python3 "$tmp/stub.py" "$stub_port" &
stub_pid=$!
pids+=("$stub_pid")
wait_port "$stub_port" "$stub_pid" || { log "stub upstream did not start"; exit 1; }

# --- the checks, the same for every front end -------------------------------------------
# expect FILE PYTHON-EXPRESSION DESCRIPTION: r is the stub's JSON answer.
expect() {
    if python3 - "$1" "$2" <<'PY' 2>/dev/null; then
import json, sys
r = json.load(open(sys.argv[1]))
h = r["headers"]
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
        pass "$3"
    else
        fail "$3 (upstream saw: $(head -c 600 "$1" 2>/dev/null))"
    fi
}
check_front() { # check_front NAME PORT
    local name=$1 base="http://127.0.0.1:$2" out="$tmp/out.${1//[^A-Za-z0-9]/_}" code
    log "$name on 127.0.0.1:$2 -> stub on 127.0.0.1:$stub_port"
    curl -sS --max-time 10 -H 'Host: matrix.example.org' -o "$out.1" "$base/_matrix/client/versions" || true
    expect "$out.1" 'r["method"] == "GET" and r["path"] == "/_matrix/client/versions"' \
        "$name: GET /_matrix/client/versions reaches the upstream"
    expect "$out.1" 'h.get("host") == "matrix.example.org"' "$name: Host is the client's"
    expect "$out.1" 'h.get("x-forwarded-for", "").split(",")[0].strip() == "127.0.0.1"' \
        "$name: X-Forwarded-For is the client address"
    expect "$out.1" 'h.get("x-forwarded-proto") == "http"' "$name: X-Forwarded-Proto is the scheme"

    local raw='/_matrix/client/v1/media/download/example.org/ipfs%3Abafkqaaa/a%20b.png?allow_redirect=true&timeout_ms=5000'
    curl -sS --max-time 10 --path-as-is -H 'Host: matrix.example.org' -o "$out.2" "$base$raw" || true
    expect "$out.2" "r['path'] == '$raw'" "$name: raw path and query arrive unchanged"

    curl -sS --max-time 10 -H 'Host: matrix.example.org' -o "$out.3" \
        "$base/_synapse/client/rendezvous" || true
    expect "$out.3" 'r["path"] == "/_synapse/client/rendezvous"' "$name: /_synapse/client is routed"

    head -c $((20 << 20)) /dev/zero >"$tmp/upload.bin"
    curl -sS --max-time 30 -H 'Host: matrix.example.org' -H 'Content-Type: application/octet-stream' \
        --data-binary "@$tmp/upload.bin" -o "$out.4" "$base/_matrix/media/v3/upload?filename=z.bin" || true
    expect "$out.4" 'r["method"] == "POST" and r["body_bytes"] == 20 << 20' \
        "$name: a 20 MiB upload passes whole"

    code=$(curl -sS --max-time 10 -H 'Host: matrix.example.org' -D "$out.5h" -o /dev/null \
        -w '%{http_code}' "$base/_synapse/admin/v1/server_version" || true)
    if grep -qi '^x-stub:' "$out.5h"; then
        fail "$name: /_synapse/admin reached the upstream"
    else
        pass "$name: /_synapse/admin is not routed (status $code)"
    fi
}

# --- nginx ------------------------------------------------------------------------------
mkdir -p "$tmp/nginx"
sed "s/127\.0\.0\.1:8009/127.0.0.1:$stub_port/g" "$here/nginx/ipfs-media-proxy.conf" \
    >"$tmp/nginx/ipfs-media-proxy.conf"
grep -q "127.0.0.1:$stub_port" "$tmp/nginx/ipfs-media-proxy.conf" ||
    { log "nginx snippet: upstream 127.0.0.1:8009 not found"; exit 1; }
nginx_port=$(free_port)
cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/client_body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    server {
        listen 127.0.0.1:$nginx_port;
        server_name matrix.example.org;
        include $tmp/nginx/ipfs-media-proxy.conf;
        location / { return 404; }
    }
}
EOF
nginx_cmd=(nginx -e "$tmp/nginx/error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf")
if "${nginx_cmd[@]}" -t 2>"$tmp/nginx/t.log"; then
    pass "nginx -t: $(tr '\n' ' ' <"$tmp/nginx/t.log")"
else
    cat "$tmp/nginx/t.log" >&2
    fail "nginx -t"
fi
"${nginx_cmd[@]}" -g 'daemon off;' &
nginx_pid=$!
pids+=("$nginx_pid")
if wait_port "$nginx_port" "$nginx_pid"; then
    check_front nginx "$nginx_port"
else
    cat "$tmp/nginx/error.log" >&2 || true
    fail "nginx did not start"
fi
kill "$nginx_pid" 2>/dev/null || true
wait "$nginx_pid" 2>/dev/null || true

# --- Caddy ------------------------------------------------------------------------------
if [[ -z ${SKIP_CADDY:-} ]]; then
    export HOME="$tmp/caddy" XDG_DATA_HOME="$tmp/caddy/data" XDG_CONFIG_HOME="$tmp/caddy/config"
    mkdir -p "$XDG_DATA_HOME" "$XDG_CONFIG_HOME"
    log "caddy $(caddy version)"
    # The shipped files as they are (their TLS sites are only validated, never run).
    for file in "$here/caddy/Caddyfile" "$here/compose/Caddyfile"; do
        [[ -f $file ]] || continue
        if MATRIX_HOST=matrix.example.org caddy validate --adapter caddyfile --config "$file" \
            >"$tmp/caddy/validate.log" 2>&1; then
            pass "caddy validate ${file#"$here"/}"
        else
            cat "$tmp/caddy/validate.log" >&2
            fail "caddy validate ${file#"$here"/}"
        fi
    done
    # Their routes, in a plain-HTTP site on loopback.
    for file in "$here/caddy/Caddyfile" "$here/compose/Caddyfile"; do
        [[ -f $file ]] || continue
        name="caddy(${file#"$here"/})"
        caddy_port=$(free_port)
        conf="$tmp/caddy/Caddyfile.${file//\//_}"
        {
            printf '{\n\tadmin off\n\tauto_https off\n}\n\n'
            awk '/^\(ipfs_media_proxy\) *\{/,/^\}/' "$file" |
                sed -E "s/(127\.0\.0\.1|proxy):8009/127.0.0.1:$stub_port/g"
            printf '\nhttp://:%s {\n\tbind 127.0.0.1\n\timport ipfs_media_proxy\n}\n' "$caddy_port"
        } >"$conf"
        grep -q "127.0.0.1:$stub_port" "$conf" ||
            { fail "$name: no (ipfs_media_proxy) snippet with an upstream on :8009"; continue; }
        if ! caddy validate --adapter caddyfile --config "$conf" >"$tmp/caddy/validate.log" 2>&1; then
            cat "$tmp/caddy/validate.log" >&2
            fail "$name: caddy validate of the test site"
            continue
        fi
        caddy run --adapter caddyfile --config "$conf" >"$tmp/caddy/run.log" 2>&1 &
        caddy_pid=$!
        pids+=("$caddy_pid")
        if wait_port "$caddy_port" "$caddy_pid"; then
            check_front "$name" "$caddy_port"
        else
            cat "$tmp/caddy/run.log" >&2
            fail "$name did not start"
        fi
        kill "$caddy_pid" 2>/dev/null || true
        wait "$caddy_pid" 2>/dev/null || true
    done
fi

if ((failures)); then
    log "$failures check(s) failed"
    exit 1
fi
log "all snippet checks passed"
