"""Issue #18: more than one replica, measured. Three proxies behind real nginx with the shipped
`deploy/nginx/replicas/` config (consistent hashing on the CID), against the same nginx with
the `hash` line taken out (round-robin) as the reference, in the same run.

Each CID is asked for in every form a client uses (`ipfs:`, `ipfs%3A`, `ipfs_`, legacy and
authenticated routes, a thumbnail), twice over. Hashed, the fleet fetches each CID from the
gateway once (not once per replica); the figures for both are printed. Then one replica is
taken out of the upstream group: only the CIDs it held move, every other CID stays where it was.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
import requests

from support import media
from support.fronts import Front
from support.procs import Service, free_port, wait_until
from support.proxy import ProxyOptions
from test_metrics import Scrape

REPO = Path(__file__).resolve().parents[2]
REPLICAS = REPO / "deploy" / "nginx" / "replicas"
SHIPPED_SERVERS = ["127.0.0.1:8009", "127.0.0.1:8010", "127.0.0.1:8011"]
TIMEOUT = 30
CIDS = 24


class FleetFront:
    """nginx with the shipped replicas config, its upstream group pointed at `ports`."""

    def __init__(self, name: str, ports: list[int], env, hashed: bool = True) -> None:
        upstream = (REPLICAS / "upstream.conf").read_text()
        for shipped in SHIPPED_SERVERS:
            assert f"server {shipped};" in upstream, f"upstream.conf: no server {shipped}"
        servers = "\n".join(f"    server 127.0.0.1:{port};" for port in ports)
        upstream = re.sub(r"(    server 127\.0\.0\.1:80\d\d;\n)+", servers + "\n", upstream)
        if not hashed:
            upstream, count = re.subn(r"\n    hash [^\n]*;", "", upstream)
            assert count == 1, "upstream.conf: no hash line to take out"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"e2e-{name}-"))
        os.chmod(self.dir, 0o755)
        (self.dir / "upstream.conf").write_text(upstream)
        shutil.copy(REPLICAS / "location.conf", self.dir / "location.conf")
        error_log = env.log_dir / f"{name}.error.log"
        (self.dir / "nginx.conf").write_text(f"""\
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/client_body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    include {self.dir}/upstream.conf;
    server {{
        listen 127.0.0.1:{self.port};
        include {self.dir}/location.conf;
        location / {{ return 404; }}
    }}
}}
""")
        argv = [Front.binary("nginx"), "-e", error_log, "-p", self.dir, "-c", self.dir / "nginx.conf",
                "-g", "daemon off;"]
        self.service = Service(name, argv, log_path=env.log_dir / f"{name}.log", pid_dir=env.pid_dir)

    def __enter__(self) -> "FleetFront":
        self.service.start()

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True

        wait_until(listening, 20, f"nginx on {self.url}", interval=0.1, abort=self.service.exited)
        return self

    def __exit__(self, *exc) -> None:
        self.service.stop(grace=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fleet(start_proxy, ipfs):
    """Three replicas with their own caches and admin listeners, before the session's node."""
    if Front.binary("nginx") is None:
        pytest.skip("nginx is not installed (Debian package `nginx`)")
    replicas = []
    for _ in range(3):
        admin = free_port()
        proxy = start_proxy([ipfs.gateway], ProxyOptions(extra_toml=f'\n[admin]\nlisten = "127.0.0.1:{admin}"\n'))
        proxy.admin = f"http://127.0.0.1:{admin}"
        replicas.append(proxy)
    return replicas


def paths(cid: str) -> list[tuple[str, bool]]:
    """Every form of one CID a client asks for: (path, needs a token)."""
    return [
        (f"/_matrix/media/v3/download/localhost/ipfs:{cid}", False),
        (f"/_matrix/media/v3/download/localhost/ipfs%3A{cid}/picture.png", False),
        (f"/_matrix/media/r0/download/elsewhere.example/ipfs_{cid}", False),
        (f"/_matrix/client/v1/media/download/localhost/ipfs_{cid}", True),
        (f"/_matrix/client/v1/media/thumbnail/localhost/ipfs_{cid}?width=32&height=32&method=crop", True),
        (f"/_matrix/media/v3/thumbnail/localhost/ipfs:{cid}?width=96&height=96&method=crop", False),
    ]


def fetches(replicas) -> list[float]:
    return [Scrape(proxy.admin).total("gateway_requests_total") for proxy in replicas]


def owner(replicas, marks, cid: str) -> int:
    """Which replica answered the request for `cid` since `marks`."""
    found = [i for i, proxy in enumerate(replicas) if proxy.access_lines(marks[i], cid)]
    assert len(found) == 1, f"{cid}: answered by replicas {found}"
    return found[0]


def run_round(front: FleetFront, replicas, cids: list[str], bob) -> dict:
    before = fetches(replicas)
    requests_made = 0
    with requests.Session() as http:
        for _ in range(2):
            for cid in cids:
                for path, authed in paths(cid):
                    headers = bob.auth() if authed else {}
                    response = http.get(front.url + path, headers=headers, timeout=TIMEOUT)
                    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:200]}"
                    requests_made += 1
    after = fetches(replicas)
    per_replica = [a - b for a, b in zip(after, before)]
    total = sum(per_replica)
    return {
        "requests": requests_made,
        "gateway_fetches": total,
        "per_replica": per_replica,
        "hit_rate": 1 - total / requests_made,
    }


def new_cids(ipfs, count: int) -> list[str]:
    # PNGs with random tails (decoders ignore what follows IEND): a CID each, thumbnailable
    return [ipfs.add(media.png() + random.randbytes(32), "picture.png") for _ in range(count)]


def test_three_replicas_fetch_each_cid_once_and_losing_one_moves_only_its_share(fleet, ipfs, bob, env):
    ports = [proxy.port for proxy in fleet]
    hashed_cids, round_robin_cids = new_cids(ipfs, CIDS), new_cids(ipfs, CIDS)

    with FleetFront("nginx-replicas-rr", ports, env, hashed=False) as front:
        round_robin = run_round(front, fleet, round_robin_cids, bob)
    with FleetFront("nginx-replicas-hash", ports, env) as front:
        marks = [proxy.log_mark() for proxy in fleet]
        hashed = run_round(front, fleet, hashed_cids, bob)
        # where each CID lives: every form of it went to one replica
        owners = {cid: owner(fleet, marks, cid) for cid in hashed_cids}

    print(f"\nreplicas: {CIDS} CIDs x {len(paths('x'))} forms x 2, three replicas behind nginx")
    for name, figures in (("round-robin", round_robin), ("hash on CID", hashed)):
        print(
            f"  {name:12s} requests {figures['requests']}, gateway fetches {figures['gateway_fetches']:.0f} "
            f"(per replica {[int(n) for n in figures['per_replica']]}), hit rate {figures['hit_rate']:.3f}"
        )
    # Hashed: one gateway fetch per CID for the whole fleet.
    assert hashed["gateway_fetches"] == CIDS, hashed
    # Round-robin, the reference: the same CID is fetched by more than one replica.
    assert round_robin["gateway_fetches"] > 1.5 * CIDS, round_robin
    # Every replica holds a share.
    assert all(count > 0 for count in hashed["per_replica"]), hashed

    # Replica 2 is taken out of the group: its CIDs move, no other CID does.
    lost = 2
    survivors = fleet[:lost]
    with FleetFront("nginx-replicas-lost", [proxy.port for proxy in survivors], env) as front:
        marks = [proxy.log_mark() for proxy in survivors]
        with requests.Session() as http:
            for cid in hashed_cids:
                response = http.get(f"{front.url}/_matrix/media/v3/download/localhost/ipfs_{cid}", timeout=TIMEOUT)
                assert response.status_code == 200, response.status_code
        after = {cid: owner(survivors, marks, cid) for cid in hashed_cids}
    moved = [cid for cid in hashed_cids if after[cid] != owners[cid]]
    held_by_lost = [cid for cid in hashed_cids if owners[cid] == lost]
    print(f"  losing replica {lost}: {len(moved)} of {CIDS} CIDs moved; it held {len(held_by_lost)}")
    assert sorted(moved) == sorted(held_by_lost), (moved, held_by_lost)
