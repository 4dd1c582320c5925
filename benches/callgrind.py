#!/usr/bin/env python3
"""Instructions per pass-through request, and whose they are (issue #17: "say what is hyper's
and what is ours, per request, in instructions").

Runs the proxy and the bare hyper proxy (`benchkit hyper-proxy`, the least a reverse proxy on
hyper does) under valgrind's callgrind in front of `benchkit serve --role upstream`, sends
`--requests` small JSON GETs over one keep-alive connection to each after a warm-up, and
splits the counted instructions by the crate whose source they were compiled from (inlined
code counts where it was written: callgrind's `fi=`/`fe=` lines). Instruction counts do not
depend on how busy the machine is, unlike the wrk figures.

Usage (after `bash benches/run.sh --smoke` has built benchkit):
    python3 benches/callgrind.py --proxy PATH --benchkit PATH [--requests 5000]
The proxy binary should have line tables (`CARGO_PROFILE_RELEASE_DEBUG=line-tables-only`) so
that inlined code is attributed to its crate; `benches/callgrind.sh` builds one.
"""
import argparse
import collections
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

PATH = "/_matrix/client/versions"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port, proc, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited ({proc.returncode})")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", PATH)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"{what} did not answer within {timeout} s")


def requests(port, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(n):
        c.request("GET", PATH, headers={"User-Agent": "callgrind-bench"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"answered {r.status}")
    c.close()


def measure(argv, port, n, out_dir, label):
    """Instructions counted while `n` requests were served, as a callgrind file."""
    out = os.path.join(out_dir, f"{label}.%p")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + argv,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(port, proc, label)
        requests(port, 300)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL)
        requests(port, n)
        subprocess.run(["callgrind_control", "--dump=measured", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL)
        dump = out.replace("%p", str(proc.pid)) + ".1"
        for _ in range(100):
            if os.path.exists(dump) and os.path.getsize(dump) > 0:
                break
            time.sleep(0.1)
        time.sleep(1)
        return dump
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def self_cost_by_file(path):
    """Self cost (Ir) by source file; the cost lines after a `calls=` line are the callee's
    inclusive cost and are skipped."""
    names = {}

    def name(kind, rest):
        m = re.match(r"\((\d+)\)(?: (.*))?", rest)
        if not m:
            return rest
        key = (kind, m.group(1))
        if m.group(2):
            names[key] = m.group(2)
        return names.get(key, rest)

    by_file = collections.Counter()
    fl = fi = None
    skip = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fl="):
                fl = fi = name("fl", line[3:])
            elif line.startswith(("fi=", "fe=")):
                fi = name("fl", line[3:])
            elif line.startswith("fn="):
                name("fn", line[3:])
                fi = fl
            elif line.startswith("cfn="):
                name("fn", line[4:])
            elif line.startswith(("cfl=", "cfi=")):
                name("fl", line[4:])
            elif line.startswith("calls="):
                skip = True
            elif line and (line[0].isdigit() or line[0] in "+-*"):
                parts = line.split()
                if len(parts) >= 2:
                    if skip:
                        skip = False
                    else:
                        by_file[fi] += int(parts[1])
    return by_file


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def owner(path):
    if not path:
        return "unknown"
    m = re.search(r"/registry/src/[^/]+/([A-Za-z0-9_\-]+?)-\d+\.\d+", path)
    if m:
        return m.group(1)
    if path.startswith(os.path.join(REPO, "src")) or path.startswith("src/"):
        return "ours (src/)"
    if "/rustc/" in path or "/rust/deps/" in path:
        return "std (inlined into its callers)"
    if "sysdeps" in path or path.startswith("./"):
        return "libc (memcpy and the like)"
    return "unknown (no line tables)"


GROUPS = {
    "hyper, http, httparse, h2": ("hyper", "http", "httparse", "h2", "http-body", "http-body-util"),
    "hyper-util, tower, tower-http": ("hyper-util", "tower", "tower-http", "tower-layer", "tower-service"),
    "tokio, mio": ("tokio", "mio"),
    "allocator (mimalloc)": ("libmimalloc-sys", "mimalloc"),
    "bytes, futures": ("bytes", "futures-util", "futures-core", "pin-project-lite", "want", "atomic-waker"),
}


def split(path, n):
    by_owner = collections.Counter()
    for f, c in self_cost_by_file(path).items():
        by_owner[owner(f)] += c
    total = sum(by_owner.values())
    grouped = collections.Counter()
    for o, c in by_owner.items():
        g = next((g for g, crates in GROUPS.items() if o in crates), o)
        grouped[g] += c
    return total / n, {g: c / n for g, c in grouped.most_common()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--benchkit", required=True)
    ap.add_argument("--requests", type=int, default=5000)
    opts = ap.parse_args()
    work = tempfile.mkdtemp(prefix="callgrind-")
    up_port, px_port, hy_port = free_port(), free_port(), free_port()
    upstream = subprocess.Popen([opts.benchkit, "serve", "--role", "upstream", "--listen",
                                 f"127.0.0.1:{up_port}"], stdout=subprocess.DEVNULL)
    try:
        wait_up(up_port, upstream, "upstream")
        config = os.path.join(work, "proxy.toml")
        with open(config, "w") as f:
            # The gateway is never asked: every request here passes through.
            f.write(f'[server]\nlisten = "127.0.0.1:{px_port}"\n[homeserver]\nurl = "http://127.0.0.1:{up_port}"\n'
                    f'[[gateways]]\nurl = "http://127.0.0.1:9"\n[retrieval]\nprobe_interval = "0s"\n'
                    '[log]\nlevel = "warn"\n')
        rows = {}
        for label, argv, port in (
                ("proxy", [opts.proxy, "--config", config], px_port),
                ("hyper proxy", [opts.benchkit, "hyper-proxy", "--listen", f"127.0.0.1:{hy_port}",
                                 "--to", f"127.0.0.1:{up_port}"], hy_port)):
            dump = measure(argv, port, opts.requests, work, label.replace(" ", "-"))
            rows[label] = split(dump, opts.requests)
    finally:
        upstream.terminate()
    print(f"# Instructions per pass-through request ({opts.requests} small JSON GETs, one keep-alive "
          "connection, callgrind)\n")
    for label, (total, groups) in rows.items():
        print(f"## {label}: {total:,.0f} instructions per request\n")
        print("| whose code | instructions / request | share |\n|---|---|---|")
        for g, c in groups.items():
            print(f"| {g} | {c:,.0f} | {c / total:.1%} |")
        print()
    print(f"callgrind files: {work}")


if __name__ == "__main__":
    main()
