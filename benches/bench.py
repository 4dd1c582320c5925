#!/usr/bin/env python3
"""The benchmark harness of ipfs-media-proxy (issue #7). Run it through `bash benches/run.sh`,
which builds the binaries first; see benches/README.md for what every scenario measures.

    python3 benches/bench.py [--smoke] [--only 1,3,5] [--strict]

Everything listens on 127.0.0.1 only, every load is bounded in time, and every process this
script starts is stopped again (also on failure or Ctrl-C). Results go to
benches/out/results-{full,smoke}.{md,json}. Standard library only.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
OUT = os.path.join(BENCH, "out")
CLK_TCK = os.sysconf("SC_CLK_TCK")

SMALL_PATH = "/_matrix/client/versions"
UPLOAD_PATH = "/_matrix/media/v3/upload"
MEDIA_PATH = "/_matrix/media/v3/download/bench/ipfs:{cid}"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class HarnessError(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# processes


class Procs:
    """Every process we start, so that all of them are stopped whatever happens."""

    def __init__(self, pidfile):
        self.procs = []
        self.pidfile = pidfile

    def start(self, name, argv, env=None, stdout=None):
        logf = open(os.path.join(OUT, "logs", f"{name}.log"), "wb")
        p = subprocess.Popen(
            argv,
            stdout=stdout if stdout is not None else logf,
            stderr=logf,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
        self.procs.append((name, p))
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid} {name}\n")
        return p

    def stop(self, p, sig=signal.SIGTERM, wait=5.0):
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            except ProcessLookupError:
                pass

    def stop_all(self):
        for name, p in reversed(self.procs):
            # nginx: SIGTERM is a fast shutdown of master and workers.
            self.stop(p)
        self.procs.clear()
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(p, name, timeout=60):
    """benchkit prints `LISTENING addr` on stdout."""
    deadline = time.time() + timeout
    line = b""
    while time.time() < deadline:
        if p.poll() is not None:
            raise HarnessError(f"{name} exited with {p.returncode}; see benches/out/logs/{name}.log")
        line = p.stdout.readline()
        if line.startswith(b"LISTENING "):
            return line.split()[1].decode()
    raise HarnessError(f"{name} did not start listening")


def http_get(url, timeout=30, method="GET"):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def wait_http(url, p, name, timeout=30):
    deadline = time.time() + timeout
    err = None
    while time.time() < deadline:
        if p.poll() is not None:
            raise HarnessError(f"{name} exited with {p.returncode}; see benches/out/logs/{name}.log")
        try:
            status, _ = http_get(url, timeout=2)
            if status == 200:
                return
        except Exception as e:  # noqa: BLE001 - still starting
            err = e
        time.sleep(0.1)
    raise HarnessError(f"{name} not answering {url}: {err}")


# ------------------------------------------------------------------------------------------------
# /proc


def proc_children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / CLK_TCK


def sched_totals(pids):
    """Summed over every thread of `pids` (and nginx's workers): nanoseconds spent runnable but
    waiting for a CPU (`schedstat`'s second field), involuntary context switches (preempted
    while it still had work), and the thread count. Evidence for tail latency: a request whose
    thread waits in the run queue waits that long too."""
    wait_ns = preempted = threads = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    wait_ns += int(f.read().split()[1])
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("nonvoluntary_ctxt_switches:"):
                            preempted += int(line.split()[1])
                threads += 1
            except (OSError, IndexError, ValueError):
                pass
    return wait_ns, preempted, threads


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_hwm(pids):
    ok = True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


# ------------------------------------------------------------------------------------------------
# CIDs


def cid_digest(cid):
    """sha2-256 digest (hex) of a base32 CIDv1 raw sha2-256."""
    s = cid[1:].upper()
    raw = base64.b32decode(s + "=" * (-len(s) % 8))
    assert raw[:4] == bytes([1, 0x55, 0x12, 0x20]), cid
    return raw[4:].hex()


# ------------------------------------------------------------------------------------------------
# wrk

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""

WRK_UPLOAD = r"""
wrk.method = "POST"
wrk.body = string.rep("u", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def write_wrk_scripts():
    d = os.path.join(OUT, "wrk")
    os.makedirs(d, exist_ok=True)
    get = os.path.join(d, "get.lua")
    up = os.path.join(d, "upload.lua")
    with open(get, "w") as f:
        f.write(WRK_DONE)
    with open(up, "w") as f:
        f.write(WRK_UPLOAD + WRK_DONE)
    return {"get": get, "upload": up}


def run_wrk(url, script, conns, threads, duration, pids):
    hwm_reset = reset_hwm(pids)
    cpu0 = cpu_seconds(pids)
    sched0 = sched_totals(pids)
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", script, url]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"wrk did not finish: {url}")
    cpu1 = cpu_seconds(pids)
    sched1 = sched_totals(pids)
    line = next((l for l in r.stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if r.returncode != 0 or line is None:
        raise HarnessError(f"wrk failed on {url}: {r.stderr.strip() or r.stdout.strip()}")
    res = json.loads(line[len("WRKJSON "):])
    secs = res["duration_us"] / 1e6
    n = res["requests"]
    hwm = [status_kib(p, "VmHWM:") for p in pids]
    res.update(
        rps=n / secs if secs else 0.0,
        mib_s=res["bytes"] / secs / 2**20 if secs else 0.0,
        cpu_s=cpu1 - cpu0,
        cpu_s_per_10k=(cpu1 - cpu0) / n * 1e4 if n else None,
        runq_us_per_req=(sched1[0] - sched0[0]) / 1e3 / n if n else None,
        preempted_per_1k=(sched1[1] - sched0[1]) / n * 1e3 if n else None,
        threads=sched1[2],
        hwm_kib=sum(h for h in hwm if h),
        hwm_reset=hwm_reset,
        errors=res["connect"] + res["read"] + res["write"] + res["timeout"],
        non2xx=res["status"],
    )
    if n == 0:
        raise HarnessError(f"wrk made no requests to {url}")
    return res


def aggregate(runs):
    def med(k):
        vals = [r[k] for r in runs if r.get(k) is not None]
        return statistics.median(vals) if vals else None

    return {
        "rounds": len(runs),
        "rps": med("rps"),
        "mib_s": med("mib_s"),
        "p50_us": med("p50_us"),
        "p99_us": med("p99_us"),
        "cpu_s_per_10k": med("cpu_s_per_10k"),
        "runq_us_per_req": med("runq_us_per_req"),
        "preempted_per_1k": med("preempted_per_1k"),
        "threads": max((r["threads"] for r in runs), default=None),
        "peak_rss_kib": max((r["hwm_kib"] for r in runs), default=None),
        "hwm_reset": all(r["hwm_reset"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "non2xx": sum(r["non2xx"] for r in runs),
        "runs": runs,
    }


# ------------------------------------------------------------------------------------------------
# the harness


class Bench:
    def __init__(self, opts):
        self.opts = opts
        self.smoke = opts.smoke
        self.mode = "smoke" if opts.smoke else "full"
        self.duration = opts.duration or (2 if self.smoke else 5)
        self.rounds = opts.rounds or (1 if self.smoke else 3)
        self.warmup = 0 if self.smoke else 2
        self.conns = 32
        self.threads = 2
        self.procs = Procs(os.path.join(OUT, "run.pids"))
        self.results = {"mode": self.mode, "scenarios": {}, "targets": [], "notes": []}
        self.only = set(opts.only.split(",")) if opts.only else None

    def perf_start(self, key, pid, seconds):
        """--perf: sample the proxy (cpu-clock, flat by symbol) during its first run of a scenario."""
        if not self.opts.perf:
            return None
        d = os.path.join(OUT, "perf")
        os.makedirs(d, exist_ok=True)
        data = os.path.join(d, f"{key}.data")
        p = subprocess.Popen(["perf", "record", "-q", "-g", "-e", "cpu-clock", "-F", "1999", "-p", str(pid), "-o", data,
                              "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return p, key, data, seconds

    def perf_finish(self, h):
        if h is None:
            return
        p, key, data, seconds = h
        try:
            p.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            p.kill()
        txt = os.path.join(OUT, "perf", f"{key}.txt")
        reports = (
            ("self time by DSO", ["--no-children", "--sort", "dso", "-g", "none"]),
            ("self time by symbol", ["--no-children", "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.3"]),
            # Meaningful when the proxy was built with frame pointers (see README: profiling).
            ("inclusive time by symbol (frame-pointer call chains)",
             ["--children", "--sort", "symbol", "-g", "none", "--percent-limit", "1.5"]),
        )
        with open(txt, "w") as f:
            for title, extra in reports:
                r = subprocess.run(["perf", "report", "-i", data, "--stdio", *extra],
                                   capture_output=True, text=True, timeout=300)
                lines = [l.rstrip() for l in r.stdout.splitlines() if l.strip() and not l.startswith("#")]
                f.write(f"## {title}\n" + "\n".join(lines) + "\n\n")
        log(f"  perf profile of the proxy: {txt}")

    def want(self, n):
        # 8 (the pass-through client A/B) is an experiment: only when named.
        if n == 8:
            return self.only is not None and "8" in self.only
        return self.only is None or str(n) in self.only

    # --- machine ---------------------------------------------------------------------------

    def machine(self):
        def cmd(argv):
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                return (r.stdout + r.stderr).strip().splitlines()[0]
            except Exception:  # noqa: BLE001
                return None

        model = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        mem = None
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1])
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        git = cmd(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml"],
                               capture_output=True, text=True).stdout.strip()
        return {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "nproc": len(os.sched_getaffinity(0)),
            "cpu_model": model,
            "mem_total_gib": round(mem / 2**20, 1) if mem else None,
            "kernel": platform.release(),
            "ulimit_n": soft,
            "ulimit_n_hard": hard,
            "loadavg_start": open("/proc/loadavg").read().split()[:3],
            "wrk": cmd(["wrk", "-v"]),
            "nginx": cmd(["nginx", "-v"]),
            "rustc": cmd(["rustc", "-V"]),
            "proxy_commit": (git or "?") + ("+dirty" if dirty else ""),
        }

    # --- set-up ----------------------------------------------------------------------------

    def start(self):
        os.makedirs(os.path.join(OUT, "logs"), exist_ok=True)
        kit = self.opts.benchkit
        self.upstream_p = self.procs.start(
            "upstream", [kit, "serve", "--role", "upstream", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE)
        self.upstream = wait_listening(self.upstream_p, "upstream")
        self.gateway_p = self.procs.start(
            "gateway",
            [kit, "serve", "--role", "gateway", "--listen", "127.0.0.1:0",
             "--cid-cache", os.path.join(OUT, "cids.txt"), "--burst-delay-ms", "100"],
            stdout=subprocess.PIPE)
        self.gateway = wait_listening(self.gateway_p, "gateway", timeout=120)
        # Pass-through calibration: the least any reverse proxy built on hyper does.
        self.hyper_p = self.procs.start(
            "hyper-proxy", [kit, "hyper-proxy", "--listen", "127.0.0.1:0", "--to", self.upstream],
            stdout=subprocess.PIPE)
        self.hyper = wait_listening(self.hyper_p, "hyper-proxy")
        self.objects = {o["name"]: o for o in self.gateway_stats()["objects"]}
        log(f"upstream {self.upstream}, gateway {self.gateway}")

        # nginx, with the same 64 KiB / 1 MiB bytes the gateway serves, as static files
        ng = os.path.join(OUT, "nginx")
        for sub in ("www/static", "tmp", "logs"):
            os.makedirs(os.path.join(ng, sub), exist_ok=True)
        for name in ("64k", "1m"):
            _, body = http_get(f"http://{self.gateway}/ipfs/{self.objects[name]['cid']}")
            if hashlib.sha256(body).hexdigest() != cid_digest(self.objects[name]["cid"]):
                raise HarnessError(f"stub gateway bytes for {name} do not match their CID")
            with open(os.path.join(ng, "www/static", f"{name}.bin"), "wb") as f:
                f.write(body)
        self.nginx_port = free_port()
        conf = os.path.join(ng, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(prefix=ng, port=self.nginx_port, upstream=self.upstream, gateway=self.gateway,
                                      nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
        self.nginx_p = self.procs.start("nginx", ["nginx", "-p", ng + "/", "-c", conf, "-e", os.path.join(ng, "logs/error.log")])
        self.nginx = f"127.0.0.1:{self.nginx_port}"
        wait_http(f"http://{self.nginx}/static/64k.bin", self.nginx_p, "nginx")
        self.nginx_pids = [self.nginx_p.pid] + proc_children(self.nginx_p.pid)

        self.start_proxy()

    def start_proxy(self):
        self.proxy_port = free_port()
        cfg = os.path.join(OUT, "proxy.toml")
        with open(cfg, "w") as f:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            f.write(PROXY_CONF.format(port=self.proxy_port, upstream=self.upstream, gateway=self.gateway,
                                      max_connections=max(1000, soft - 500)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("IPFS_MEDIA_PROXY_") and k != "RUST_LOG"}
        for kv in self.opts.proxy_env or []:
            k, _, v = kv.partition("=")
            env[k] = v
        self.proxy_p = self.procs.start("proxy", [self.opts.proxy, "--config", cfg], env=env)
        self.proxy = f"127.0.0.1:{self.proxy_port}"
        wait_http(f"http://{self.proxy}{SMALL_PATH}", self.proxy_p, "proxy")
        log(f"nginx {self.nginx} (pids {self.nginx_pids}), proxy {self.proxy} (pid {self.proxy_p.pid})")

    def gateway_stats(self):
        _, body = http_get(f"http://{self.gateway}/stats")
        return json.loads(body)

    def gateway_count(self, name):
        return next(o["requests"] for o in self.gateway_stats()["objects"] if o["name"] == name)

    def check_alive(self):
        for name, p in (("upstream", self.upstream_p), ("gateway", self.gateway_p),
                        ("nginx", self.nginx_p), ("proxy", self.proxy_p)):
            if p.poll() is not None:
                raise HarnessError(f"{name} died (exit {p.returncode}); see benches/out/logs/{name}.log")

    # --- wrk scenarios ---------------------------------------------------------------------

    def wrk_scenario(self, key, title, variants, script="get", conns=None, threads=None):
        """variants: [(label, url, pids)]; rounds interleave the variants to share the noise."""
        conns = conns or self.conns
        threads = threads or self.threads
        sc = self.scripts[script]
        log(f"scenario {key}: {title}")
        if self.warmup:
            for label, url, pids in variants:
                run_wrk(url, sc, conns, threads, self.warmup, pids)
        runs = {label: [] for label, _, _ in variants}
        for rnd in range(self.rounds):
            for label, url, pids in variants:
                self.check_alive()
                prof = self.perf_start(key, self.proxy_p.pid, self.duration) \
                    if rnd == 0 and label.startswith("proxy") else None
                r = run_wrk(url, sc, conns, threads, self.duration, pids)
                self.perf_finish(prof)
                runs[label].append(r)
                log(f"  {label:>14} round {rnd + 1}: {r['rps']:9.0f} req/s  p50 {r['p50_us']:6d} us  "
                    f"p99 {r['p99_us']:6d} us  cpu/10k {r['cpu_s_per_10k']:.3f} s  "
                    f"runq {r['runq_us_per_req']:.1f} us/req  preempted {r['preempted_per_1k']:.2f}/1k  "
                    f"err {r['errors']}+{r['non2xx']}")
        res = {"title": title, "connections": conns, "threads": threads, "duration_s": self.duration,
               "kind": "wrk", "variants": {label: aggregate(rs) for label, rs in runs.items()}}
        for label, v in res["variants"].items():
            if v["errors"] or v["non2xx"]:
                self.results["notes"].append(
                    f"{key}/{label}: {v['errors']} socket errors and {v['non2xx']} non-2xx answers in "
                    f"{v['requests']} requests")
        self.results["scenarios"][key] = res
        return res

    def scenario1(self):
        up, ng, px = [self.upstream_p.pid], self.nginx_pids, [self.proxy_p.pid]
        v = [("direct", f"http://{self.upstream}{SMALL_PATH}", up),
             ("nginx", f"http://{self.nginx}{SMALL_PATH}", ng),
             ("hyper proxy", f"http://{self.hyper}{SMALL_PATH}", [self.hyper_p.pid]),
             ("proxy", f"http://{self.proxy}{SMALL_PATH}", px)]
        self.wrk_scenario("1-small", "pass-through, small JSON (GET)", v)
        self.wrk_scenario("1-small-1conn", "pass-through, small JSON, 1 connection (latency)", v,
                          conns=1, threads=1)

    def scenario2(self):
        up, ng, px = [self.upstream_p.pid], self.nginx_pids, [self.proxy_p.pid]
        self.wrk_scenario("2-down-1m", "pass-through, 1 MiB response", [
            ("direct", f"http://{self.upstream}/1m", up),
            ("nginx", f"http://{self.nginx}/1m", ng),
            ("proxy", f"http://{self.proxy}/1m", px)])
        self.wrk_scenario("2-up-1m", "pass-through, 1 MiB upload (POST)", [
            ("direct", f"http://{self.upstream}{UPLOAD_PATH}", up),
            ("nginx", f"http://{self.nginx}{UPLOAD_PATH}", ng),
            ("proxy", f"http://{self.proxy}{UPLOAD_PATH}", px)], script="upload")

    def scenario3(self):
        notes = {}
        for name in ("64k", "1m"):
            cid = self.objects[name]["cid"]
            url = f"http://{self.proxy}{MEDIA_PATH.format(cid=cid)}"
            before = self.gateway_count(name)
            status, body = http_get(url)  # warm the cache
            http_get(url)
            digest_ok = status == 200 and hashlib.sha256(body).hexdigest() == cid_digest(cid)
            if not digest_ok:
                raise HarnessError(f"proxy answered {status} / wrong bytes for cached {name}")
            warm = self.gateway_count(name)
            res = self.wrk_scenario(f"3-cached-{name}", f"cached ipfs media {name}: proxy vs nginx static", [
                ("nginx static", f"http://{self.nginx}/static/{name}.bin", self.nginx_pids),
                # Calibration: hyper serving the same size from memory (the upstream stand-in).
                ("hyper from memory", f"http://{self.upstream}/{name}", [self.upstream_p.pid]),
                ("proxy cached", url, [self.proxy_p.pid])])
            after = self.gateway_count(name)
            res["gateway_fetches"] = {"warm_up": warm - before, "during_load": after - warm}
            res["bytes_verified"] = digest_ok
            notes[name] = res["gateway_fetches"]
        log(f"  gateway fetches (warm-up, during load): {notes}")

    # --- 1 GiB cold -------------------------------------------------------------------------

    def curl_fetch(self, url, sample_pid=None):
        samples = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                v = status_kib(sample_pid, "VmRSS:")
                if v:
                    samples.append(v)
                time.sleep(0.02)

        base = status_kib(sample_pid, "VmRSS:") if sample_pid else None
        t = None
        if sample_pid:
            t = threading.Thread(target=sampler, daemon=True)
            t.start()
        try:
            r = subprocess.run(
                ["curl", "-sS", "-o", "/dev/null", "--max-time", "120", "-w",
                 "%{http_code} %{size_download} %{time_starttransfer} %{time_total} %{speed_download}", url],
                capture_output=True, text=True, timeout=150)
        finally:
            stop.set()
            if t:
                t.join()
        code, size, ttfb, total, speed = r.stdout.split()
        out = {"status": int(code), "bytes": int(size), "ttfb_ms": float(ttfb) * 1000,
               "total_s": float(total), "mib_s": float(speed) / 2**20, "curl_rc": r.returncode}
        if sample_pid:
            out["rss_base_kib"] = base
            out["rss_max_kib"] = max(samples, default=base)
            out["rss_growth_mib"] = (out["rss_max_kib"] - base) / 1024 if base else None
            out["rss_samples"] = len(samples)
        return out

    def scenario4(self):
        log("scenario 4-cold-1g: cold 1 GiB ipfs media, streamed")
        cid = self.objects["1g"]["cid"]
        direct = f"http://{self.gateway}/ipfs/{cid}"
        proxied = f"http://{self.proxy}{MEDIA_PATH.format(cid=cid)}"
        relayed = f"http://{self.nginx}/ipfs/{cid}"
        # The ceiling for any user-space relay here: plain TCP, no HTTP, one copy in, one out.
        tcp_p = self.procs.start("tcp-relay", [self.opts.benchkit, "relay", "--listen", "127.0.0.1:0",
                                               "--to", self.gateway], stdout=subprocess.PIPE)
        tcp_relayed = f"http://{wait_listening(tcp_p, 'tcp-relay')}/ipfs/{cid}"
        runs = {"gateway direct": [], "tcp relay": [], "nginx relay": [], "proxy": []}
        before = self.gateway_count("1g")
        for rnd in range(self.rounds):
            self.check_alive()
            # Drop idle keep-alive connections and let the allocator settle before the baseline.
            time.sleep(0.5)
            for label, url, pid in (("gateway direct", direct, None), ("tcp relay", tcp_relayed, None),
                                    ("nginx relay", relayed, None),
                                    ("proxy", proxied, self.proxy_p.pid)):
                prof = self.perf_start("4-cold-1g", pid, 4) if pid and rnd == 0 else None
                r = self.curl_fetch(url, pid)
                self.perf_finish(prof)
                runs[label].append(r)
                log(f"  {label:>14} round {rnd + 1}: {r['mib_s']:7.0f} MiB/s  ttfb {r['ttfb_ms']:.1f} ms  "
                    f"status {r['status']} bytes {r['bytes']}"
                    + (f"  RSS +{r['rss_growth_mib']:.1f} MiB" if pid else ""))
                if r["status"] != 200 or r["bytes"] != 2**30:
                    self.results["notes"].append(f"4-cold-1g/{label}: status {r['status']}, {r['bytes']} bytes")
        fetches = self.gateway_count("1g") - before

        def agg(rs):
            a = {"rounds": len(rs),
                 "mib_s": statistics.median(r["mib_s"] for r in rs),
                 "ttfb_ms": statistics.median(r["ttfb_ms"] for r in rs),
                 "all_complete": all(r["status"] == 200 and r["bytes"] == 2**30 for r in rs),
                 "runs": rs}
            g = [r["rss_growth_mib"] for r in rs if r.get("rss_growth_mib") is not None]
            if g:
                a["rss_growth_mib_max"] = max(g)
                a["rss_before_mib"] = min(r["rss_base_kib"] for r in rs) / 1024
                a["rss_max_mib"] = max(r["rss_max_kib"] for r in rs) / 1024
            return a

        self.results["scenarios"]["4-cold-1g"] = {
            "title": "cold 1 GiB ipfs media (streamed, not cached), curl", "kind": "curl",
            "variants": {k: agg(v) for k, v in runs.items()},
            "gateway_fetches": fetches, "expected_gateway_fetches": self.rounds * 4}

    # --- 500 concurrent requests, one uncached CID -----------------------------------------

    def scenario5(self):
        log("scenario 5-burst: 500 concurrent requests for one uncached CID")
        rounds = []
        for rnd in range(self.rounds):
            name = f"burst-{rnd}"
            obj = self.objects[name]
            before = self.gateway_count(name)
            url = f"http://{self.proxy}{MEDIA_PATH.format(cid=obj['cid'])}"
            r = subprocess.run(
                [self.opts.benchkit, "burst", "--url", url, "--n", "500", "--timeout-s", "60",
                 "--expect-sha256", cid_digest(obj["cid"])],
                capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise HarnessError(f"benchkit burst failed: {r.stderr}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            res["cid"] = obj["cid"]
            res["size"] = obj["size"]
            res["gateway_fetches"] = self.gateway_count(name) - before
            rounds.append(res)
            log(f"  round {rnd + 1}: gateway fetches {res['gateway_fetches']}, ok {res['ok']}/{res['n']}, "
                f"distinct bodies {res['distinct_bodies']}, match {res['digest_match']}, "
                f"p50 {res['p50_ms']} ms p99 {res['p99_ms']} ms")
        self.results["scenarios"]["5-burst"] = {
            "title": "500 concurrent requests for one uncached CID (gateway answers after 100 ms)",
            "kind": "burst", "rounds": rounds}

    # --- idle keep-alive connections --------------------------------------------------------

    def scenario6(self):
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        cap = max(100, soft - 1000)  # leave fds for the probes and the proxy's upstream pool
        wanted = [200, 1000] if self.smoke else [1000, 5000, 10000, 20000]
        steps = sorted({min(s, cap) for s in wanted})
        log(f"scenario 6-idle: idle keep-alive connections, steps {steps} (ulimit -n {soft})")
        cid = self.objects["64k"]["cid"]
        r = subprocess.run(
            [self.opts.benchkit, "idle", "--addr", self.proxy, "--steps", ",".join(map(str, steps)),
             "--establish-method", "OPTIONS", "--establish-path", MEDIA_PATH.format(cid=cid),
             "--probe-path", SMALL_PATH, "--probe-n", "200", "--hold-ms", "1000",
             "--timeout-s", "60" if self.smoke else "180", "--pid", str(self.proxy_p.pid)],
            capture_output=True, text=True, timeout=240)
        lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
        for s in lines:
            if "step" in s:
                log(f"  step {s['step']}: open {s['open']} (failed {s['open_failed']}) in {s['open_s']} s, "
                    f"idle probes {s['probe_ok']}/{s['probe_total']} (closed {s['probe_closed']}), "
                    f"fresh {s['fresh_ok']}/{s['fresh_total']}, p99 {s['p99_ms']} ms, "
                    f"proxy RSS {s['server_rss_kib']} KiB fds {s['server_fds']}")
        self.results["scenarios"]["6-idle"] = {
            "title": "idle keep-alive connections held open, then probes on old and fresh connections",
            "kind": "idle", "ulimit_n": soft, "steps_requested": wanted, "steps": [l for l in lines if "step" in l],
            "timed_out": any(l.get("timeout") for l in lines), "stderr": r.stderr[-2000:]}
        self.check_alive()

    # --- verified (trustless, CAR) vs trusted (path) retrieval ------------------------------

    def proxy_environment(self, extra=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("IPFS_MEDIA_PROXY_") and k != "RUST_LOG"}
        for kv in self.opts.proxy_env or []:
            k, _, v = kv.partition("=")
            env[k] = v
        env.update(extra or {})
        return env

    def scenario8(self):
        """The pass-through client A/B: one proxy per client (IMP_PASSTHROUGH_CLIENT), same config,
        small JSON at 32 and 1 connection, rounds interleaved across them."""
        variants, started = [], []
        for client in PASSTHROUGH_CLIENTS:
            port = free_port()
            cfg = os.path.join(OUT, f"proxy-8-{client}.toml")
            with open(cfg, "w") as f:
                f.write(PROXY_CONF.format(port=port, upstream=self.upstream, gateway=self.gateway,
                                          max_connections=1000))
            p = self.procs.start(f"proxy-8-{client}", [self.opts.proxy, "--config", cfg],
                                 env=self.proxy_environment({"IMP_PASSTHROUGH_CLIENT": client}))
            started.append(p)
            addr = f"127.0.0.1:{port}"
            wait_http(f"http://{addr}{SMALL_PATH}", p, f"proxy-8-{client}")
            variants.append((client, f"http://{addr}{SMALL_PATH}", [p.pid]))
        try:
            self.wrk_scenario("8-client", "pass-through client A/B, small JSON", variants)
            self.wrk_scenario("8-client-1conn", "pass-through client A/B, small JSON, 1 connection", variants,
                              conns=1, threads=1)
        finally:
            for p in started:
                self.procs.stop(p)

    def scenario7(self):
        dag = self.gateway_stats()["dag"]
        n = 2 if self.smoke else 5
        log(f"scenario 7-verified: {dag['size'] // 2**20} MiB UnixFS file ({dag['leaves']} raw leaves), "
            f"trusted (path) vs trustless (CAR), {n} fetches each")
        env = self.proxy_environment()
        proxies = {}
        try:
            for mode in ("trusted", "trustless"):
                port = free_port()
                cfg = os.path.join(OUT, f"proxy-{mode}.toml")
                with open(cfg, "w") as f:
                    f.write(PROXY7_CONF.format(port=port, upstream=self.upstream, gateway=self.gateway, mode=mode))
                p = self.procs.start(f"proxy-{mode}", [self.opts.proxy, "--config", cfg], env=env)
                addr = f"127.0.0.1:{port}"
                wait_http(f"http://{addr}{SMALL_PATH}", p, f"proxy-{mode}")
                proxies[mode] = (p, f"http://{addr}{MEDIA_PATH.format(cid=dag['root'])}")
            # The bytes, once through each (the trustless proxy also checks the stub's encoding:
            # a wrong CID, link or size is a 502 there).
            for mode, (p, url) in proxies.items():
                h = hashlib.sha256()
                size = 0
                try:
                    with urllib.request.urlopen(url, timeout=120) as r:
                        while True:
                            chunk = r.read(1 << 20)
                            if not chunk:
                                break
                            h.update(chunk)
                            size += len(chunk)
                except urllib.error.HTTPError as e:
                    raise HarnessError(f"proxy-{mode} answered {e.code} for the UnixFS file; "
                                       f"see benches/out/logs/proxy-{mode}.log")
                if size != dag["size"] or h.hexdigest() != dag["sha256"]:
                    raise HarnessError(f"proxy-{mode}: wrong bytes for the UnixFS file ({size} bytes)")
            runs = {"trusted": [], "trustless": []}
            before = self.gateway_stats()["dag"]
            for rnd in range(n):
                for mode, (p, url) in proxies.items():
                    if p.poll() is not None:
                        raise HarnessError(f"proxy-{mode} died (exit {p.returncode})")
                    self.check_alive()
                    prof = self.perf_start(f"7-verified-{mode}", p.pid, 3) if rnd == 0 else None
                    cpu0 = cpu_seconds([p.pid])
                    r = self.curl_fetch(url)
                    r["cpu_s"] = cpu_seconds([p.pid]) - cpu0
                    self.perf_finish(prof)
                    runs[mode].append(r)
                    log(f"  {mode:>10} fetch {rnd + 1}: {r['mib_s']:7.0f} MiB/s  cpu {r['cpu_s']:.3f} s  "
                        f"ttfb {r['ttfb_ms']:.1f} ms  status {r['status']} bytes {r['bytes']}")
                    if r["status"] != 200 or r["bytes"] != dag["size"]:
                        self.results["notes"].append(f"7-verified/{mode}: status {r['status']}, {r['bytes']} bytes")
            after = self.gateway_stats()["dag"]
        finally:
            for p, _ in proxies.values():
                self.procs.stop(p)

        def agg(rs):
            return {"fetches": len(rs),
                    "mib_s": statistics.median(r["mib_s"] for r in rs),
                    "cpu_s": statistics.median(r["cpu_s"] for r in rs),
                    "ttfb_ms": statistics.median(r["ttfb_ms"] for r in rs),
                    "all_complete": all(r["status"] == 200 and r["bytes"] == dag["size"] for r in rs),
                    "runs": rs}

        # The floor under the verified path's extra cost: SHA-256 alone over the same number of
        # bytes, same crate, this machine, this run (the thread's own CPU time).
        hash_runs = []
        for _ in range(3):
            r = subprocess.run([self.opts.benchkit, "hash", "--mib", str(dag["size"] // 2**20)],
                               capture_output=True, text=True, timeout=120)
            line = next((l for l in r.stdout.splitlines() if l.startswith("HASH_CPU_S ")), None)
            if r.returncode != 0 or line is None:
                raise HarnessError(f"benchkit hash failed: {r.stderr.strip()[:300]}")
            hash_runs.append(float(line.split()[1]))

        self.results["scenarios"]["7-verified"] = {
            "title": "verified (trustless gateway, CAR) vs trusted (path gateway) retrieval, uncached", "kind": "verified",
            "sha256_cpu_s": statistics.median(hash_runs), "sha256_runs": hash_runs,
            "size": dag["size"], "leaves": dag["leaves"], "leaf_size": dag["leaf_size"], "root": dag["root"],
            "variants": {k: agg(v) for k, v in runs.items()},
            "gateway_requests": {k: after[k] - before[k] for k in ("path_requests", "car_requests", "raw_requests")},
            "expected_requests": n}

    # --- uploads stored on IPFS: through the proxy vs straight to the store's add ----------

    def start_ipfs_node(self):
        """A real js-ipfs node (the e2e suite's, installed under .e2e/node), offline, loopback."""
        jsipfs = self.opts.jsipfs
        if not os.path.exists(jsipfs):
            raise HarnessError(f"{jsipfs} is missing: benches/run.sh installs it (as tests/e2e/run.sh does)")
        repo = os.path.join(OUT, "ipfs9")
        shutil.rmtree(repo, ignore_errors=True)
        api, gw, rpc = free_port(), free_port(), free_port()
        cfg = os.path.join(OUT, "ipfs9.config.json")
        with open(cfg, "w") as f:
            # As tests/e2e/support/ipfs.py: no peers, no routing, nothing but loopback.
            json.dump({"Addresses": {"Swarm": [], "Announce": [], "NoAnnounce": [],
                                     "API": f"/ip4/127.0.0.1/tcp/{api}", "Gateway": f"/ip4/127.0.0.1/tcp/{gw}",
                                     "RPC": f"/ip4/127.0.0.1/tcp/{rpc}", "Delegates": []},
                       "Bootstrap": [], "Discovery": {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}},
                       "Routing": {"Type": "none"}, "Pubsub": {"Enabled": False}}, f)
        env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
        env.update(IPFS_PATH=repo, NO_UPDATE_NOTIFIER="1",
                   NODE_OPTIONS=f"--require {os.path.join(ROOT, 'tests/e2e/support/polyfill.cjs')}")
        init = self.procs.start("ipfs-init", [jsipfs, "init", "--emptyRepo", "--defaultConfig", cfg], env=env)
        try:
            if init.wait(timeout=120) != 0:
                raise HarnessError("jsipfs init failed; see benches/out/logs/ipfs-init.log")
        except subprocess.TimeoutExpired:
            raise HarnessError("jsipfs init did not finish in 120 s")
        p = self.procs.start("ipfs", [jsipfs, "daemon", "--offline", "--enable-preload=false"], env=env)
        url = f"http://127.0.0.1:{api}"
        deadline = time.time() + 120
        while True:
            if p.poll() is not None:
                raise HarnessError(f"js-ipfs exited with {p.returncode}; see benches/out/logs/ipfs.log")
            try:
                status, _ = http_get(url + "/api/v0/version", timeout=2, method="POST")
                if status == 200:
                    break
            except Exception:  # noqa: BLE001 - still starting
                pass
            if time.time() > deadline:
                raise HarnessError("js-ipfs RPC did not answer in 120 s")
            time.sleep(0.3)
        return p, url, repo

    def pinned(self, api, cid):
        try:
            status, body = http_get(f"{api}/api/v0/pin/ls?arg={cid}&cid-base=base32", timeout=60, method="POST")
        except urllib.error.HTTPError:
            return False
        return status == 200 and cid.encode() in body

    def upload_file(self, mib):
        """`mib` MiB of fresh random bytes (so no upload finds its blocks already on the node)."""
        path = os.path.join(OUT, "upload9.bin")
        with open(path, "wb") as f:
            for _ in range(mib // 16):
                f.write(os.urandom(16 << 20))
            f.write(os.urandom((mib % 16) << 20))
        return path

    def curl_upload(self, argv, sample_pid, cpu_pids):
        """One upload with curl; the proxy's VmRSS sampled every 20 ms against the value just
        before, CPU (utime + stime) of each of `cpu_pids` over it."""
        samples = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                v = status_kib(sample_pid, "VmRSS:")
                if v:
                    samples.append(v)
                time.sleep(0.02)

        base = status_kib(sample_pid, "VmRSS:")
        cpu0 = {k: cpu_seconds(v) for k, v in cpu_pids.items()}
        t = threading.Thread(target=sampler, daemon=True)
        t.start()
        answer = os.path.join(OUT, "upload9.answer")
        try:
            r = subprocess.run(["curl", "-sS", "-o", answer, "--max-time", "900", "-H", "Expect:", "-w",
                                "%{http_code} %{size_upload} %{time_total}", *argv],
                               capture_output=True, text=True, timeout=960)
        finally:
            stop.set()
            t.join()
        cpu = {k: cpu_seconds(v) - cpu0[k] for k, v in cpu_pids.items()}
        try:
            code, size, total = r.stdout.split()
        except ValueError:
            raise HarnessError(f"curl upload failed: {r.stderr.strip()[:300]}")
        with open(answer, "rb") as f:
            body = f.read()
        return {"status": int(code), "bytes_sent": int(size), "total_s": float(total),
                "mib_s": int(size) / 2**20 / float(total) if float(total) else 0.0, "curl_rc": r.returncode,
                "cpu_s": cpu, "answer": body.decode(errors="replace")[-400:],
                "rss_base_kib": base, "rss_max_kib": max(samples, default=base),
                "rss_growth_mib": (max(samples, default=base) - base) / 1024 if base else None,
                "rss_samples": len(samples)}

    def scenario9(self):
        mib = self.opts.upload_mib or (8 if self.smoke else 256)
        big = self.opts.upload_big_mib if self.opts.upload_big_mib is not None else (0 if self.smoke else 1024)
        # The node's own speed swings by 1.5x from one upload to the next here: 5 rounds, not 3.
        n_rounds = self.opts.rounds or (1 if self.smoke else 5)
        log(f"scenario 9-upload: {mib} MiB uploads through the proxy to js-ipfs vs straight to its add, "
            f"{n_rounds} round(s)" + (f", then {big} MiB once each" if big else ""))
        node_p, api, repo = self.start_ipfs_node()
        port = free_port()
        cfg = os.path.join(OUT, "proxy-upload.toml")
        with open(cfg, "w") as f:
            f.write(PROXY9_CONF.format(port=port, upstream=self.upstream, gateway=self.gateway, api=api))
        proxy_p = self.procs.start("proxy-upload", [self.opts.proxy, "--config", cfg], env=self.proxy_environment())
        addr = f"127.0.0.1:{port}"
        try:
            wait_http(f"http://{addr}{SMALL_PATH}", proxy_p, "proxy-upload")
            rss_start = status_kib(proxy_p.pid, "VmRSS:")
            # The add the proxy makes (src/upload/store.rs) for `kubo-v1-256k`, made by curl itself.
            direct_url = (f"{api}/api/v0/add?cid-version=1&raw-leaves=true&hash=sha2-256&chunker=size-262144"
                          "&max-file-links=174&trickle=false&wrap-with-directory=false&pin=true&progress=false"
                          "&cid-base=base32")
            proxy_url = f"http://{addr}{UPLOAD_PATH}?filename=bench.bin"
            node_pids = lambda: [node_p.pid] + proc_children(node_p.pid)  # noqa: E731

            def one(label, size_mib):
                for name, p in (("ipfs", node_p), ("proxy-upload", proxy_p)):
                    if p.poll() is not None:
                        raise HarnessError(f"{name} died (exit {p.returncode}); see benches/out/logs/{name}.log")
                self.check_alive()
                path = self.upload_file(size_mib)
                # Written back now, with the previous upload's blocks: otherwise the kernel
                # flushes them during this upload, whichever variant it is.
                os.sync()
                time.sleep(0.5)  # let the allocator and the node settle before the baseline
                if label == "direct":
                    argv = ["-F", f"file=@{path};type=application/octet-stream;filename=upload", direct_url]
                else:
                    argv = ["-X", "POST", "-T", path, "-H", "Content-Type: application/octet-stream",
                            "-H", "Authorization: Bearer bench", proxy_url]
                r = self.curl_upload(argv, proxy_p.pid, {"proxy": [proxy_p.pid], "node": node_pids()})
                os.unlink(path)
                r["size"] = size_mib << 20
                r["mib_s"] = size_mib / r["total_s"] if r["total_s"] else 0.0
                cid = None
                if r["status"] == 200:
                    if label == "direct":
                        hashes = [json.loads(l).get("Hash") for l in r["answer"].splitlines() if '"Hash"' in l]
                        cid = hashes[-1] if hashes else None
                    else:
                        uri = json.loads(r["answer"]).get("content_uri", "")
                        cid = uri.rsplit("/ipfs_", 1)[-1] if "/ipfs_" in uri else None
                r["cid"] = cid
                r["pinned"] = bool(cid) and self.pinned(api, cid)
                r["ok"] = r["status"] == 200 and r["bytes_sent"] >= r["size"] and r["pinned"]
                log(f"  {label:>7} {size_mib} MiB: {r['mib_s']:6.1f} MiB/s  status {r['status']}  pinned {r['pinned']}  "
                    f"proxy cpu {r['cpu_s']['proxy']:.2f} s  node cpu {r['cpu_s']['node']:.2f} s  "
                    f"proxy RSS +{r['rss_growth_mib']:.1f} MiB")
                if not r["ok"]:
                    raise HarnessError(f"9-upload/{label}: status {r['status']}, pinned {r['pinned']}: {r['answer'][:300]}"
                                       f"; see benches/out/logs/proxy-upload.log and ipfs.log")
                return r

            warm = []
            if not self.smoke:
                # Warm-up, not counted: the node's JIT and the proxy's first store connection.
                # 16 MiB is under cache.max_item_bytes, so this one upload is also cached.
                warm = [one(label, 16) for label in ("direct", "proxy")]
            runs = {"direct": [], "proxy": []}
            for rnd in range(n_rounds):
                # Alternate who goes first: the node's repo grows with every upload.
                order = ("direct", "proxy") if rnd % 2 == 0 else ("proxy", "direct")
                for label in order:
                    prof = self.perf_start("9-upload", proxy_p.pid, 10) if label == "proxy" and rnd == 0 else None
                    runs[label].append(one(label, mib))
                    self.perf_finish(prof)
            big_runs = {}
            if big:
                for label in ("direct", "proxy"):
                    big_runs[label] = one(label, big)
        finally:
            self.procs.stop(proxy_p)
            self.procs.stop(node_p, wait=15)
            for pid in proc_children(node_p.pid):  # node workers that outlived it
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            shutil.rmtree(repo, ignore_errors=True)

        # The floor under the proxy's CPU: SHA-256 alone over as many bytes (same crate, this
        # run, the hashing thread's own CPU time).
        hash_runs = []
        for _ in range(3):
            r = subprocess.run([self.opts.benchkit, "hash", "--mib", str(mib)], capture_output=True, text=True,
                               timeout=300)
            line = next((l for l in r.stdout.splitlines() if l.startswith("HASH_CPU_S ")), None)
            if r.returncode != 0 or line is None:
                raise HarnessError(f"benchkit hash failed: {r.stderr.strip()[:300]}")
            hash_runs.append(float(line.split()[1]))

        def agg(rs):
            return {"uploads": len(rs),
                    "mib_s": statistics.median(r["mib_s"] for r in rs),
                    "proxy_cpu_s_per_gib": statistics.median(r["cpu_s"]["proxy"] * 2**30 / r["size"] for r in rs),
                    "node_cpu_s_per_gib": statistics.median(r["cpu_s"]["node"] * 2**30 / r["size"] for r in rs),
                    "rss_growth_mib_max": max(r["rss_growth_mib"] for r in rs),
                    "rss_before_mib": min(r["rss_base_kib"] for r in rs) / 1024,
                    "rss_max_mib": max(r["rss_max_kib"] for r in rs) / 1024,
                    "runs": rs}

        self.results["scenarios"]["9-upload"] = {
            "title": "uploads stored on IPFS: through the proxy vs straight to the store's add (js-ipfs)",
            "kind": "upload", "size": mib << 20, "big_size": big << 20, "profile": "kubo-v1-256k",
            "variants": {k: agg(v) for k, v in runs.items()},
            "big": {k: agg([v]) for k, v in big_runs.items()},
            "sha256_cpu_s": statistics.median(hash_runs), "sha256_runs": hash_runs,
            "sha256_cpu_s_per_gib": statistics.median(hash_runs) * 1024 / mib,
            "warm_up": warm, "rss_start_mib": rss_start / 1024 if rss_start else None,
            "rss_run_max_mib": max(r["rss_max_kib"] for r in [*warm, *runs["proxy"], *big_runs.values()]) / 1024}


    # --- targets ----------------------------------------------------------------------------

    def targets(self):
        sc = self.results["scenarios"]
        t = self.results["targets"]

        def add(name, measured, ratio, ok, need):
            t.append({"target": name, "measured": measured, "ratio": ratio, "pass": ok, "need": need})

        def paired(a, b, key, op):
            """Per-round comparison of a variant with its reference (same round, seconds apart),
            then the median over rounds: the figure least disturbed by other load."""
            vals = [op(x[key], y[key]) for x, y in zip(a["runs"], b["runs"])]
            return statistics.median(vals), vals

        def rounds(vals, nd=2):
            return "" if len(vals) < 2 else " (rounds: " + ", ".join(f"{v:.{nd}f}" for v in vals) + ")"

        ratio = lambda x, y: x / y  # noqa: E731

        for key, label in (("1-small", "small JSON"), ("2-down-1m", "1 MiB response"), ("2-up-1m", "1 MiB upload")):
            if key in sc:
                px, ng = sc[key]["variants"]["proxy"], sc[key]["variants"]["nginx"]
                r, vals = paired(px, ng, "rps", ratio)
                add(f"pass-through {label}: req/s >= nginx",
                    f"{px['rps']:.0f} vs {ng['rps']:.0f} req/s{rounds(vals)}", r, r >= 1.0, ">= 1.00")
                r, vals = paired(px, ng, "p99_us", ratio)
                add(f"pass-through {label}: p99 <= nginx",
                    f"{px['p99_us'] / 1e3:.2f} vs {ng['p99_us'] / 1e3:.2f} ms{rounds(vals)}", r, r <= 1.0, "<= 1.00")
                hp = sc[key]["variants"].get("hyper proxy")
                if hp:
                    rh, _ = paired(hp, ng, "rps", ratio)
                    rp, pvals = paired(px, hp, "rps", ratio)
                    cpu = lambda v: f"{v['cpu_s_per_10k']:.3f}"  # noqa: E731
                    self.results["notes"].append(
                        f"Pass-through {label} calibration: a bare hyper proxy (`benchkit hyper-proxy`) reaches "
                        f"{rh:.2f} of nginx's req/s; the proxy reaches {rp:.2f} of it{rounds(pvals)}. CPU s per 10k "
                        f"requests: nginx {cpu(ng)}, bare hyper proxy {cpu(hp)}, proxy {cpu(px)}.")
        if "1-small-1conn" in sc:
            v = sc["1-small-1conn"]["variants"]
            d, vals = paired(v["proxy"], v["direct"], "p50_us", lambda x, y: x - y)
            add("proxy adds < 100 us p50 over direct (1 connection)",
                f"+{d:.0f} us ({v['proxy']['p50_us']:.0f} vs {v['direct']['p50_us']:.0f} us){rounds(vals, 0)}",
                None, d < 100, "< 100 us")
            dn, _ = paired(v["nginx"], v["direct"], "p50_us", lambda x, y: x - y)
            self.results["notes"].append(f"With 1 connection nginx adds {dn:+.0f} us p50 over direct.")
        if "1-small" in sc:
            v = sc["1-small"]["variants"]
            d, _ = paired(v["proxy"], v["direct"], "p50_us", lambda x, y: x - y)
            self.results["notes"].append(
                f"At 32 connections (saturated, queueing included) the proxy's p50 is {d:+.0f} us over direct "
                f"({v['proxy']['p50_us']:.0f} vs {v['direct']['p50_us']:.0f} us).")
        for name in ("64k", "1m"):
            key = f"3-cached-{name}"
            if key in sc:
                px, ng = sc[key]["variants"]["proxy cached"], sc[key]["variants"]["nginx static"]
                r, vals = paired(px, ng, "rps", ratio)
                add(f"cached ipfs media {name}: throughput >= nginx static",
                    f"{px['mib_s']:.0f} vs {ng['mib_s']:.0f} MiB/s{rounds(vals)}", r, r >= 1.0, ">= 1.00")
                hm = sc[key]["variants"].get("hyper from memory")
                if hm:
                    rh, _ = paired(hm, ng, "rps", ratio)
                    rp, pvals = paired(px, hm, "rps", ratio)
                    self.results["notes"].append(
                        f"Cached {name} calibration: hyper serving the same bytes from memory (the upstream "
                        f"stand-in) reaches {rh:.2f} of nginx static's req/s; the proxy reaches {rp:.2f} of "
                        f"it{rounds(pvals)}.")
        if "4-cold-1g" in sc:
            v = sc["4-cold-1g"]["variants"]
            r, vals = paired(v["proxy"], v["gateway direct"], "mib_s", ratio)
            add("cold 1 GiB: throughput within 10% of direct gateway",
                f"{v['proxy']['mib_s']:.0f} vs {v['gateway direct']['mib_s']:.0f} MiB/s{rounds(vals)}", r,
                r >= 0.9 and v["proxy"]["all_complete"], ">= 0.90")
            rn, vals = paired(v["proxy"], v["nginx relay"], "mib_s", ratio)
            rd, _ = paired(v["nginx relay"], v["gateway direct"], "mib_s", ratio)
            note = (f"Cold 1 GiB calibration: nginx relaying the same gateway reaches {rd:.2f} of direct; the proxy "
                    f"reaches {rn:.2f} of nginx relay{rounds(vals)}.")
            if "tcp relay" in v:
                rt, _ = paired(v["tcp relay"], v["gateway direct"], "mib_s", ratio)
                rp, tvals = paired(v["proxy"], v["tcp relay"], "mib_s", ratio)
                note += (f" A plain TCP relay (no HTTP) reaches {rt:.2f} of direct; the proxy reaches {rp:.2f} of "
                         f"it{rounds(tvals)}.")
            self.results["notes"].append(note)
            g = v["proxy"].get("rss_growth_mib_max")
            add("cold 1 GiB: proxy RSS growth < 64 MiB",
                f"{g:.1f} MiB (largest of {v['proxy']['rounds']}; VmRSS {v['proxy']['rss_before_mib']:.0f} MiB "
                f"before, {v['proxy']['rss_max_mib']:.0f} MiB at most)", g / 64, g < 64, "< 64 MiB")
        if "5-burst" in sc:
            rs = sc["5-burst"]["rounds"]
            f = [r["gateway_fetches"] for r in rs]
            ok = all(x == 1 for x in f) and all(r["ok"] == r["n"] and r["distinct_bodies"] == 1
                                                 and r["digest_match"] for r in rs)
            add("500 concurrent requests, one uncached CID: exactly 1 gateway fetch",
                f"fetches per round {f}; {sum(r['ok'] for r in rs)}/{sum(r['n'] for r in rs)} ok, right bytes",
                None, ok, "== 1")
        if "6-idle" in sc:
            steps = sc["6-idle"]["steps"]
            good = [s["step"] for s in steps if s["open_failed"] == 0 and s["probe_ok"] == s["probe_total"]
                    and s["fresh_ok"] == s["fresh_total"]]
            add(f"idle keep-alive connections (ulimit -n {sc['6-idle']['ulimit_n']}): all requests succeed",
                f"largest good step {max(good) if good else 0} of {[s['step'] for s in steps]}", None,
                bool(steps) and len(good) == len(steps), "every step")

        if "7-verified" in sc:
            s7 = sc["7-verified"]
            v, tr = s7["variants"]["trustless"], s7["variants"]["trusted"]
            # Paired per fetch (same round, seconds apart), then the median.
            # /proc counts CPU in 10 ms ticks, coarse against one fetch: the ratio is of the totals
            # over all fetches; the per-fetch ratios are shown for the spread.
            vals = [x["cpu_s"] / y["cpu_s"] for x, y in zip(v["runs"], tr["runs"]) if y["cpu_s"] > 0]
            tot = sum(x["cpu_s"] for x in tr["runs"])
            r = sum(x["cpu_s"] for x in v["runs"]) / tot if tot > 0 else None
            # What hashing alone costs, against the trusted path: the lowest ratio any verifying
            # proxy could reach here, and what the walk adds beyond it.
            h = s7["sha256_cpu_s"]
            floor = f"; SHA-256 alone {h:.3f} CPU s, so no verifier can go below {1 + h / tr['cpu_s']:.2f}x here" \
                if tr["cpu_s"] > 0 else ""
            beyond = f"; beyond hashing the walk adds {(v['cpu_s'] - tr['cpu_s'] - h) / tr['cpu_s']:+.2f}x" \
                if tr["cpu_s"] > 0 else ""
            add(f"verified retrieval ({s7['size'] // 2**20} MiB, CAR): proxy CPU < 1.10 x trusted",
                f"{v['cpu_s']:.3f} vs {tr['cpu_s']:.3f} CPU s per fetch, {v['mib_s']:.0f} vs {tr['mib_s']:.0f} MiB/s"
                f"{rounds(vals).replace('rounds', 'per fetch')}{floor}{beyond}", r,
                r is not None and r < 1.10 and v["all_complete"] and tr["all_complete"], "< 1.10")

        if "9-upload" in sc:
            s9 = sc["9-upload"]
            v = s9["variants"]
            r, vals = paired(v["proxy"], v["direct"], "mib_s", ratio)
            mib = s9["size"] >> 20
            add(f"upload {mib} MiB through the proxy: throughput >= 0.90 x straight to the store's add",
                f"{v['proxy']['mib_s']:.1f} vs {v['direct']['mib_s']:.1f} MiB/s{rounds(vals)}", r, r >= 0.9, ">= 0.90")
            g = v["proxy"]["rss_growth_mib_max"]
            add(f"upload {mib} MiB: proxy RSS growth < 64 MiB",
                f"{g:.1f} MiB (largest of {v['proxy']['uploads']}; VmRSS {v['proxy']['rss_before_mib']:.0f} MiB "
                f"before, {v['proxy']['rss_max_mib']:.0f} MiB at most)", g / 64, g < 64, "< 64 MiB")
            big = s9["big"]
            if "proxy" in big:
                bmib = s9["big_size"] >> 20
                g = big["proxy"]["rss_growth_mib_max"]
                add(f"upload {bmib} MiB: proxy RSS growth < 64 MiB",
                    f"{g:.1f} MiB (VmRSS {big['proxy']['rss_before_mib']:.0f} MiB before, "
                    f"{big['proxy']['rss_max_mib']:.0f} MiB at most)", g / 64, g < 64, "< 64 MiB")
                rb = big["proxy"]["mib_s"] / big["direct"]["mib_s"]
                self.results["notes"].append(
                    f"Upload {bmib} MiB (once each): through the proxy {big['proxy']['mib_s']:.1f} MiB/s, straight "
                    f"to the node's add {big['direct']['mib_s']:.1f} MiB/s (ratio {rb:.2f}, one pair, not a target).")
            h = s9["sha256_cpu_s_per_gib"]
            cpu = [x["cpu_s"]["proxy"] / (h * x["size"] / 2**30) for x in v["proxy"]["runs"]]
            self.results["notes"].append(
                f"Upload CPU: the proxy spends {v['proxy']['proxy_cpu_s_per_gib']:.2f} CPU s per GiB uploaded, "
                f"{statistics.median(cpu):.2f}x SHA-256 alone over as many bytes ({h:.2f} s per GiB, `benchkit "
                f"hash`, same crate){rounds(cpu).replace('rounds', 'per upload')}; the node spends "
                f"{v['proxy']['node_cpu_s_per_gib']:.2f} s per GiB taking it from the proxy and "
                f"{v['direct']['node_cpu_s_per_gib']:.2f} s per GiB taking it from curl.")

    # --- output -----------------------------------------------------------------------------

    def write(self):
        self.results["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        # A subset (--only) or a profiled run (--perf) must not pass for the real thing.
        partial = "-partial" if (self.only or self.opts.perf) else ""
        self.results["partial"] = bool(partial)
        base = os.path.join(OUT, f"results-{self.mode}{partial}")
        with open(base + ".json", "w") as f:
            json.dump(self.results, f, indent=2)
        md = render_markdown(self.results)
        with open(base + ".md", "w") as f:
            f.write(md)
        print(md)
        log(f"wrote {base}.md and {base}.json")

    def run(self):
        t0 = time.time()
        self.results["machine"] = self.machine()
        self.results["config"] = {"proxy_env": self.opts.proxy_env or [], "duration_s": self.duration, "rounds": self.rounds, "warmup_s": self.warmup,
                                  "connections": self.conns, "wrk_threads": self.threads}
        self.scripts = write_wrk_scripts()
        try:
            self.start()
            self.results["proxy_config"] = open(os.path.join(OUT, "proxy.toml")).read()
            for n, fn in ((1, self.scenario1), (2, self.scenario2), (3, self.scenario3), (4, self.scenario4),
                          (5, self.scenario5), (6, self.scenario6), (7, self.scenario7), (8, self.scenario8),
                          (9, self.scenario9)):
                if self.want(n):
                    fn()
            self.targets()
        finally:
            self.procs.stop_all()
        self.results["elapsed_s"] = round(time.time() - t0, 1)
        self.write()
        missed = [t for t in self.results["targets"] if not t["pass"]]
        return 1 if (self.opts.strict and missed) else 0


def fmt(x, unit="", nd=0):
    if x is None:
        return "-"
    return f"{x:,.{nd}f}{unit}"


def render_markdown(res):
    m = res["machine"]
    c = res["config"]
    kind = res["mode"] + (" partial (--only/--perf)" if res.get("partial") else "")
    out = [f"# ipfs-media-proxy benchmarks ({kind} run, {m['date']})", ""]
    out += ["| machine | |", "|---|---|",
            f"| CPUs (nproc) | {m['nproc']} x {m['cpu_model']} |",
            f"| memory | {m['mem_total_gib']} GiB |",
            f"| kernel | {m['kernel']} |",
            f"| open files (ulimit -n) | {m['ulimit_n']} (hard {m['ulimit_n_hard']}) |",
            f"| load average start / end | {' '.join(m['loadavg_start'])} / {' '.join(m.get('loadavg_end', []))} |",
            f"| tools | {m['wrk']}; {m['nginx']}; {m['rustc']} |",
            f"| proxy commit | {m['proxy_commit']} |",
            ""]
    out.append(f"wrk: {c['connections']} connections, {c['wrk_threads']} threads, {c['rounds']} round(s) of "
               f"{c['duration_s']} s per variant (interleaved; medians shown; target ratios are the median of "
               f"per-round ratios), {c['warmup_s']} s warm-up. "
               "CPU and peak RSS are the server under test's only (upstream for `direct`, "
               "nginx master+workers, the proxy), not the client's or the upstream's behind it.")
    out.append("")
    if res["targets"]:
        out += ["## Targets", "", "| target | measured | ratio | need | result |", "|---|---|---|---|---|"]
        for t in res["targets"]:
            out.append(f"| {t['target']} | {t['measured']} | {fmt(t['ratio'], nd=2)} | {t['need']} | "
                       f"{'PASS' if t['pass'] else '**MISS**'} |")
        out.append("")
    sc = res["scenarios"]
    wrk = [(k, v) for k, v in sc.items() if v["kind"] == "wrk"]
    if wrk:
        out += ["## Throughput and latency (wrk)", "",
                "| scenario | variant | req/s | MiB/s | p50 | p99 | CPU s / 10k req | run-queue wait / req | preempted / 1k req | threads | peak RSS | errors |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, s in wrk:
            for label, v in s["variants"].items():
                err = f"{v['errors']} + {v['non2xx']} non-2xx" if v["errors"] or v["non2xx"] else "0"
                out.append(f"| {k} ({s['connections']} conn) | {label} | {fmt(v['rps'])} | {fmt(v['mib_s'], nd=1)} | "
                           f"{fmt(v['p50_us'] / 1e3, ' ms', 3)} | {fmt(v['p99_us'] / 1e3, ' ms', 3)} | "
                           f"{fmt(v['cpu_s_per_10k'], ' s', 3)} | {fmt(v.get('runq_us_per_req'), ' us', 1)} | "
                           f"{fmt(v.get('preempted_per_1k'), '', 2)} | {fmt(v.get('threads'))} | "
                           f"{fmt(v['peak_rss_kib'] / 1024, ' MiB', 1)} | {err} |")
        out += ["", "Run-queue wait and preemptions are the server under test's threads only (schedstat and "
                "`nonvoluntary_ctxt_switches` of every thread, summed): how long its threads were ready to "
                "run but had no CPU, per request. On 2 shared cores this is where a p99 far above the p50 "
                "comes from.", ""]
    for key in ("8-client", "8-client-1conn"):
        if key not in sc:
            continue
        s = sc[key]
        vs = s["variants"]
        base = vs.get("bespoke")
        out += [f"## Pass-through client A/B: {key} ({s['connections']} conn, {s['duration_s']} s x "
                f"{len(base['runs']) if base else 0} interleaved rounds)", "",
                "Median [min - max] over the rounds; the ratio is each round's figure over `bespoke`'s in the "
                "same round (median [min - max]).", "",
                "| client | req/s | ratio req/s | p50 | p99 | CPU s / 10k req | ratio CPU |",
                "|---|---|---|---|---|---|---|"]

        def spread(rs, k, scale=1.0, nd=0):
            vals = [r[k] * scale for r in rs if r.get(k) is not None]
            if not vals:
                return "-"
            return f"{statistics.median(vals):.{nd}f} [{min(vals):.{nd}f} - {max(vals):.{nd}f}]"

        def ratio(rs, k):
            if not base:
                return "-"
            vals = [r[k] / b[k] for r, b in zip(rs, base["runs"]) if r.get(k) and b.get(k)]
            if not vals:
                return "-"
            return f"{statistics.median(vals):.3f} [{min(vals):.3f} - {max(vals):.3f}]"

        for label, v in vs.items():
            rs = v["runs"]
            out.append(f"| {label} | {spread(rs, 'rps')} | {ratio(rs, 'rps')} | {spread(rs, 'p50_us', 1e-3, 3)} ms | "
                       f"{spread(rs, 'p99_us', 1e-3, 3)} ms | {spread(rs, 'cpu_s_per_10k', 1.0, 3)} s | "
                       f"{ratio(rs, 'cpu_s_per_10k')} |")
        out.append("")
    if "4-cold-1g" in sc:
        s = sc["4-cold-1g"]
        out += ["## Cold 1 GiB ipfs media (curl, streamed)", "",
                "| variant | MiB/s | time to first byte | RSS growth (max) | VmRSS before / max during | complete |",
                "|---|---|---|---|---|---|"]
        for label, v in s["variants"].items():
            rss = (f"{v['rss_before_mib']:.1f} / {v['rss_max_mib']:.1f} MiB" if "rss_before_mib" in v else "-")
            out.append(f"| {label} | {fmt(v['mib_s'])} | {fmt(v['ttfb_ms'], ' ms', 1)} | "
                       f"{fmt(v.get('rss_growth_mib_max'), ' MiB', 1)} | {rss} | {v['all_complete']} |")
        out += ["", f"Gateway fetches of the 1 GiB CID: {s['gateway_fetches']} "
                    f"(expected {s['expected_gateway_fetches']}: one per curl). `tcp relay` (`benchkit relay`: "
                    "plain TCP, no HTTP, 256 KiB buffers) and `nginx relay` (nginx proxying the stub gateway, "
                    "`proxy_buffering off`, 256 KiB buffer) are not targets: they show what any user-space "
                    "relay costs on this machine (two more copies, one more process); the TCP relay is the "
                    "ceiling for an HTTP one.", ""]
    if "5-burst" in sc:
        out += ["## 500 concurrent requests for one uncached CID", "",
                "| round | size | gateway fetches | ok | distinct bodies / right bytes | TTFB p50 / p99 | "
                "p50 / p99 / max | wall |", "|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(sc["5-burst"]["rounds"]):
            out.append(f"| {i + 1} | {r['size'] // 1024} KiB | {r['gateway_fetches']} | {r['ok']}/{r['n']} | "
                       f"{r['distinct_bodies']} / {r['digest_match']} | {r['ttfb_p50_ms']} / {r['ttfb_p99_ms']} ms | "
                       f"{r['p50_ms']} / {r['p99_ms']} / {r['max_ms']} ms | {r['wall_ms']} ms |")
        out += ["", "The stub gateway answers these CIDs after 100 ms, so all 500 requests arrive while the "
                    "one fetch is in flight.", ""]
    if "6-idle" in sc:
        s = sc["6-idle"]
        out += [f"## Idle keep-alive connections (ulimit -n {s['ulimit_n']})", "",
                "| idle connections | open / failed | time to open | probes on idle conns ok (closed) | "
                "fresh conns ok | probe p50 / p99 | proxy RSS | proxy fds |",
                "|---|---|---|---|---|---|---|---|"]
        for st in s["steps"]:
            out.append(f"| {st['step']} | {st['open']} / {st['open_failed']} | {st['open_s']} s | "
                       f"{st['probe_ok']}/{st['probe_total']} ({st['probe_closed']}) | {st['fresh_ok']}/{st['fresh_total']} | "
                       f"{st['p50_ms']} / {st['p99_ms']} ms | {fmt((st['server_rss_kib'] or 0) / 1024, ' MiB', 1)} | "
                       f"{st['server_fds']} |")
        if s["timed_out"]:
            out.append("\nThe idle test hit its time bound.")
        out.append("")
    if "7-verified" in sc:
        s = sc["7-verified"]
        out += [f"## Verified vs trusted retrieval ({s['size'] // 2**20} MiB UnixFS file, uncached, curl)", "",
                "| gateway mode | fetches | MiB/s | proxy CPU s per fetch | CPU s per GiB | time to first byte | complete |",
                "|---|---|---|---|---|---|---|"]
        for label, v in s["variants"].items():
            what = "trustless (CAR, verified)" if label == "trustless" else "trusted (path gateway)"
            out.append(f"| {what} | {v['fetches']} | {fmt(v['mib_s'])} | {fmt(v['cpu_s'], ' s', 3)} | "
                       f"{fmt(v['cpu_s'] * 2**30 / s['size'], ' s', 3)} | {fmt(v['ttfb_ms'], ' ms', 1)} | "
                       f"{v['all_complete']} |")
        out.append(f"| SHA-256 alone over the same bytes (`benchkit hash`, same `sha2` crate, "
                   f"256 KiB blocks; median of 3) | | | {fmt(s['sha256_cpu_s'], ' s', 3)} | "
                   f"{fmt(s['sha256_cpu_s'] * 2**30 / s['size'], ' s', 3)} | | |")
        g = s["gateway_requests"]
        out += ["", f"{s['leaves']} raw leaves of {s['leaf_size'] // 1024} KiB under one dag-pb root. Gateway "
                    f"requests during the fetches: {g['path_requests']} path, {g['car_requests']} CAR, "
                    f"{g['raw_requests']} raw block (expected {s['expected_requests']} path and "
                    f"{s['expected_requests']} CAR). Medians over fetches; CPU is the proxy's utime + stime.", ""]
    if "9-upload" in sc:
        s = sc["9-upload"]
        out += [f"## Uploads stored on IPFS ({s['size'] // 2**20} MiB, js-ipfs's RPC `add`, profile `{s['profile']}`)", "",
                "| variant | size | uploads | MiB/s | proxy CPU s per GiB | node CPU s per GiB | proxy RSS growth (max) | "
                "VmRSS before / max during |", "|---|---|---|---|---|---|---|---|"]
        rows = [(k, s["size"], v) for k, v in s["variants"].items()] + \
               [(k, s["big_size"], v) for k, v in s["big"].items()]
        for label, size, v in rows:
            what = "through the proxy (`POST /_matrix/media/v3/upload`)" if label == "proxy" else \
                "straight to the node (`curl -F` to `/api/v0/add`)"
            proxy_only = label == "proxy"
            out.append(f"| {what} | {size // 2**20} MiB | {v['uploads']} | {fmt(v['mib_s'], nd=1)} | "
                       f"{fmt(v['proxy_cpu_s_per_gib'] if proxy_only else None, ' s', 2)} | "
                       f"{fmt(v['node_cpu_s_per_gib'], ' s', 2)} | "
                       f"{fmt(v['rss_growth_mib_max'] if proxy_only else None, ' MiB', 1)} | "
                       + (f"{v['rss_before_mib']:.1f} / {v['rss_max_mib']:.1f} MiB |" if proxy_only else "- |"))
        out.append(f"| SHA-256 alone over {s['size'] // 2**20} MiB (`benchkit hash`, same `sha2` crate; median of 3) | | | | "
                   f"{fmt(s['sha256_cpu_s_per_gib'], ' s', 2)} | | | |")
        out += ["", "Every upload is fresh random bytes, checked pinned on the node afterwards (`pin/ls`); the "
                    "proxy answered only once the node reported the CID the proxy computed. Rounds alternate "
                    "which variant goes first. RSS growth is against VmRSS just before each upload; the "
                    f"upload proxy's VmRSS was {fmt(s.get('rss_start_mib'), ' MiB', 1)} once started and at most "
                    f"{fmt(s.get('rss_run_max_mib'), ' MiB', 1)} over the whole scenario (its warm-up upload, "
                    "16 MiB, is small enough to be cached, and stays).", ""]
    if res["notes"]:
        out += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    out.append(f"Elapsed: {res.get('elapsed_s', '?')} s. Raw figures: the `.json` beside this file; "
               "proxy config: `proxy.toml`; logs: `logs/`.")
    return "\n".join(out) + "\n"


NGINX_CONF = """# Written by benches/bench.py: nginx as the reference reverse proxy and static server.
daemon off;
master_process on;
user root;
worker_processes auto;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    upstream gateway {{
        server {gateway};
        keepalive 8;
    }}
    upstream homeserver {{
        server {upstream};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 0;
        location /static/ {{
            root {prefix}/www;
        }}
        # Scenario 4's calibration: nginx relaying the stub gateway (256 KiB reads, like the proxy's).
        location /ipfs/ {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_buffer_size 256k;
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 512k;
        }}
        location / {{
            proxy_pass http://homeserver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"""

PROXY_CONF = """# Written by benches/bench.py for the benchmark run.
[server]
listen = "127.0.0.1:{port}"
# Scenario 6 holds up to (open-file limit - 1000) idle connections plus its probes; the
# default ceiling, (limit - 64) / 2, keeps room for one upstream socket per client, which
# idle clients do not need.
max_connections = {max_connections}

[homeserver]
url = "http://{upstream}"

[[gateways]]
url = "http://{gateway}"

[cache]
# defaults: max_bytes = "512MiB", max_item_bytes = "64MiB" (so the 1 GiB object streams uncached)

[media]
max_bytes = "2GiB"

[log]
level = "warn"
"""


# Scenario 8: the pass-through clients compared (IMP_PASSTHROUGH_CLIENT, src/homeserver/upstream.rs).
# (`bespoke-no-gate` was measured too, before `wake_gate.rs` went: see benches/README.md.)
PASSTHROUGH_CLIENTS = ("bespoke", "hyper-util", "hyper-util-per-worker")


PROXY7_CONF = """# Written by benches/bench.py for scenario 7 (verified vs trusted retrieval).
[server]
listen = "127.0.0.1:{port}"

[homeserver]
url = "http://{upstream}"

[[gateways]]
url = "http://{gateway}"
mode = "{mode}"

[cache]
# nothing of the 100 MiB file is kept: every fetch goes to the gateway
max_item_bytes = "1MiB"

[media]
max_bytes = "2GiB"

[log]
level = "warn"
"""


PROXY9_CONF = """# Written by benches/bench.py for scenario 9 (uploads stored on IPFS).
[server]
listen = "127.0.0.1:{port}"

[homeserver]
url = "http://{upstream}"

[[gateways]]
url = "http://{gateway}"

[media]
max_bytes = "2GiB"

[upload]
enabled = true
# js-ipfs builds every node with at most 174 links: with `unixfs-v1-2025` (1024) any upload
# over 174 MiB would get another CID from it (a 502, rightly).
profile = "kubo-v1-256k"
max_bytes = "2GiB"
store_timeout = "120s"

[upload.rate]
requests = 0
bytes = 0

[upload.store]
kind = "kubo"
url = "{api}"

[log]
level = "warn"
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a few seconds per scenario (CI keeps it working)")
    ap.add_argument("--only", help="comma-separated scenario numbers (1-9; 8, the pass-through client A/B, only when named)")
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 5, smoke 2)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per variant (default 3, smoke 1)")
    ap.add_argument("--perf", action="store_true",
                    help="profile the proxy with perf during its first run of each scenario (out/perf/)")
    ap.add_argument("--proxy-env", action="append", metavar="KEY=VALUE",
                    help="extra environment for the proxy only (experiments: GLIBC_TUNABLES=..., "
                         "IPFS_MEDIA_PROXY_CACHE__MAX_BYTES=...); repeatable")
    ap.add_argument("--upload-mib", type=int, help="scenario 9: MiB per upload (default 256, smoke 8)")
    ap.add_argument("--upload-big-mib", type=int,
                    help="scenario 9: one more upload of this size each way, for the memory bound (default 1024, "
                         "smoke 0: none)")
    ap.add_argument("--jsipfs", default=os.path.join(ROOT, ".e2e/node/node_modules/.bin/jsipfs"),
                    help="scenario 9's store: the js-ipfs CLI the e2e suite installs")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--proxy", default=os.path.join(ROOT, "target/release/ipfs-media-proxy"))
    ap.add_argument("--benchkit", default=os.path.join(OUT, "target/release/benchkit"))
    opts = ap.parse_args()
    for tool in ("wrk", "nginx", "curl"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found (Debian: apt-get install -y nginx wrk curl)")
    os.makedirs(OUT, exist_ok=True)

    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    bench = Bench(opts)
    try:
        sys.exit(bench.run())
    except HarnessError as e:
        log(f"FAILED: {e}")
        sys.exit(2)
    except KeyboardInterrupt as e:
        log(f"interrupted ({e})")
        sys.exit(130)


if __name__ == "__main__":
    main()
