"""A real js-ipfs node (npm `ipfs`, pinned in package.json), offline, on 127.0.0.1.

What this machine taught us about js-ipfs 0.66 on Node 20:
- its dependencies call `Promise.withResolvers` (Node 22+), so `polyfill.cjs` is preloaded
  with `NODE_OPTIONS=--require`;
- the CLI wants `--api http://127.0.0.1:PORT`; the multiaddr form fails (we use HTTP directly);
- offline, a gateway request for a CID the node lacks never answers: every call here has a
  timeout;
- RPC `add` answers CIDv1 in base58btc unless `cid-base=base32` is passed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import requests

from .procs import Service, free_port

HERE = Path(__file__).resolve().parent
POLYFILL = HERE / "polyfill.cjs"


def offline_config(api: int, gateway: int, grpc: int) -> dict:
    """Node config merged over js-ipfs defaults: loopback only, no peers, no routing."""
    return {
        "Addresses": {
            "Swarm": [],
            "Announce": [],
            "NoAnnounce": [],
            "API": f"/ip4/127.0.0.1/tcp/{api}",
            "Gateway": f"/ip4/127.0.0.1/tcp/{gateway}",
            "RPC": f"/ip4/127.0.0.1/tcp/{grpc}",
            "Delegates": [],
        },
        "Bootstrap": [],
        "Discovery": {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}},
        "Routing": {"Type": "none"},
        "Pubsub": {"Enabled": False},
    }


class IpfsNode:
    def __init__(self, name: str, node_dir: Path, state_dir: Path, log_dir: Path, pid_dir: Path) -> None:
        self.name = name
        self.repo = state_dir / name
        self.jsipfs = node_dir / "node_modules" / ".bin" / "jsipfs"
        if not self.jsipfs.exists():
            raise RuntimeError(f"{self.jsipfs} is missing: run tests/e2e/run.sh (it installs js-ipfs)")
        self.api_port, self.gateway_port, grpc = free_port(), free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.gateway = f"http://127.0.0.1:{self.gateway_port}"
        self.log_path = log_dir / f"{name}.log"
        self.env = dict(os.environ)
        self.env["IPFS_PATH"] = str(self.repo)
        self.env["NODE_OPTIONS"] = f"--require {POLYFILL}"
        self.env["NO_UPDATE_NOTIFIER"] = "1"  # js-ipfs would ask the npm registry for news
        self.env.pop("DEBUG", None)
        self.pid_dir = pid_dir
        self.config = offline_config(self.api_port, self.gateway_port, grpc)
        self.service = Service(
            name,
            [self.jsipfs, "daemon", "--offline", "--enable-preload=false"],
            log_path=self.log_path,
            pid_dir=pid_dir,
            env=self.env,
        )

    def init(self, timeout: float = 60) -> None:
        self.repo.parent.mkdir(parents=True, exist_ok=True)
        config_file = self.repo.parent / f"{self.name}.config.json"
        config_file.write_text(json.dumps(self.config))
        init = Service(
            f"{self.name}-init",
            [self.jsipfs, "init", "--emptyRepo", "--defaultConfig", config_file],
            log_path=self.log_path,
            pid_dir=self.pid_dir,
            env=self.env,
        ).start()
        try:
            code = init.proc.wait(timeout=timeout)
        finally:
            init.stop()
        if code != 0:
            raise RuntimeError(f"jsipfs init failed ({code}):\n{init.tail()}")

    def start(self, timeout: float = 60) -> "IpfsNode":
        if not (self.repo / "config").exists():
            self.init()
        ready = lambda: requests.post(self.api + "/api/v0/version", timeout=2).ok  # noqa: E731
        self.service.start_until(ready, timeout, f"js-ipfs {self.name} RPC on {self.api}", 0.3)
        return self

    def stop(self) -> None:
        self.service.stop(grace=10)

    def logs(self) -> list[Path]:
        return [self.log_path]

    def add(self, data: bytes, filename: str = "file") -> str:
        """Add bytes (CIDv1, raw leaves, pinned); returns the root CID in base32."""
        response = requests.post(
            self.api + "/api/v0/add",
            params={"cid-version": "1", "raw-leaves": "true", "cid-base": "base32", "pin": "true"},
            files={"file": (filename, data, "application/octet-stream")},
            timeout=120,
        )
        response.raise_for_status()
        # NDJSON, one object per added entry (progress lines have no Hash); the last is the root.
        entries = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        hashes = [entry["Hash"] for entry in entries if "Hash" in entry]
        assert hashes, f"add answered no Hash: {response.text[:500]}"
        return hashes[-1]

    def cat_via_gateway(self, cid: str, timeout: float = 30) -> bytes:
        """What the node's own path gateway serves for `cid` (hangs on a missing CID: timeout)."""
        response = requests.get(f"{self.gateway}/ipfs/{cid}", timeout=timeout)
        response.raise_for_status()
        return response.content
