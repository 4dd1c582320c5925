"""The shipped reverse-proxy configs, run for real in front of the suite's proxy: Debian nginx
with `deploy/nginx/ipfs-media-proxy.conf` included in a plain-HTTP server block, and Debian
Caddy with the `(ipfs_media_proxy)` snippet of `deploy/caddy/Caddyfile` in a plain-HTTP site
(the same adaptation deploy/test-snippets.sh makes: the upstream 127.0.0.1:8009 becomes the
proxy's port). Each is a `Service` (own process group, pid file), so it is always stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from .procs import Service, free_port, wait_until

REPO = Path(__file__).resolve().parents[3]
NGINX_SNIPPETS = {
    "all": REPO / "deploy" / "nginx" / "ipfs-media-proxy.conf",
    "media-only": REPO / "deploy" / "nginx" / "ipfs-media-proxy-media-only.conf",
}
CADDYFILE = REPO / "deploy" / "caddy" / "Caddyfile"
CADDY_SNIPPETS = {"all": "ipfs_media_proxy", "media-only": "ipfs_media_proxy_media_only"}
SHIPPED_UPSTREAM = "127.0.0.1:8009"
#: Synapse, in the media-only snippets (everything but media goes straight there)
SHIPPED_HOMESERVER = "127.0.0.1:8008"
SERVER_NAME = "matrix.example.org"


class Front:
    """A running nginx or Caddy on 127.0.0.1:`port` whose upstream is `upstream_port`.

    `mode` picks the shipped routing: "all" (everything through the proxy) or "media-only"
    (media routes through the proxy, the rest straight to `homeserver_port`)."""

    def __init__(
        self,
        kind: str,
        upstream_port: int,
        log_dir: Path,
        pid_dir: Path,
        mode: str = "all",
        homeserver_port: int | None = None,
    ) -> None:
        self.kind = kind
        self.mode = mode
        self.homeserver_port = homeserver_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # nginx's workers run as `nobody` when the suite runs as root: a world-readable folder
        self.dir = Path(tempfile.mkdtemp(prefix=f"e2e-{kind}-"))
        os.chmod(self.dir, 0o755)
        self.log_path = log_dir / f"{kind}-front.log"
        if kind == "nginx":
            argv, env = self._nginx(upstream_port, log_dir)
        elif kind == "caddy":
            argv, env = self._caddy(upstream_port)
        else:
            raise ValueError(kind)
        self.service = Service(f"{kind}-front", argv, log_path=self.log_path, pid_dir=pid_dir, env=env)

    @staticmethod
    def binary(kind: str) -> str | None:
        return shutil.which(kind) or (f"/usr/sbin/{kind}" if os.path.exists(f"/usr/sbin/{kind}") else None)

    def _adapt(self, snippet: str, where: Path, upstream_port: int) -> str:
        """The shipped addresses replaced by the suite's ports."""
        assert SHIPPED_UPSTREAM in snippet, f"{where}: no upstream {SHIPPED_UPSTREAM}"
        snippet = snippet.replace(SHIPPED_UPSTREAM, f"127.0.0.1:{upstream_port}")
        if self.mode == "media-only":
            assert SHIPPED_HOMESERVER in snippet, f"{where}: no homeserver {SHIPPED_HOMESERVER}"
            assert self.homeserver_port, "media-only needs the homeserver's port"
            snippet = snippet.replace(SHIPPED_HOMESERVER, f"127.0.0.1:{self.homeserver_port}")
        return snippet

    def _nginx(self, upstream_port: int, log_dir: Path) -> tuple[list, dict]:
        path = NGINX_SNIPPETS[self.mode]
        (self.dir / "ipfs-media-proxy.conf").write_text(self._adapt(path.read_text(), path, upstream_port))
        error_log = log_dir / "nginx-front.error.log"
        (self.dir / "nginx.conf").write_text(f"""\
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 64; }}
http {{
    access_log {log_dir}/nginx-front.access.log;
    client_body_temp_path {self.dir}/client_body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        server_name {SERVER_NAME};
        include {self.dir}/ipfs-media-proxy.conf;
        location / {{ return 404; }}
    }}
}}
""")
        argv = [self.binary("nginx"), "-e", error_log, "-p", self.dir, "-c", self.dir / "nginx.conf",
                "-g", "daemon off;"]
        return argv, dict(os.environ)

    def _caddy(self, upstream_port: int) -> tuple[list, dict]:
        text = CADDYFILE.read_text()
        name = CADDY_SNIPPETS[self.mode]
        found = re.search(rf"^\({name}\) *\{{.*?^\}}", text, re.S | re.M)
        assert found, f"{CADDYFILE}: no ({name}) snippet"
        snippet = self._adapt(found.group(0), CADDYFILE, upstream_port)
        config = self.dir / "Caddyfile"
        config.write_text(
            "{\n\tadmin off\n\tauto_https off\n}\n\n"
            f"{snippet}\n\n"
            f"http://127.0.0.1:{self.port} {{\n\tbind 127.0.0.1\n\timport {name}\n}}\n"
        )
        env = dict(os.environ, HOME=str(self.dir), XDG_DATA_HOME=str(self.dir / "data"),
                   XDG_CONFIG_HOME=str(self.dir / "config"))
        argv = [self.binary("caddy"), "run", "--adapter", "caddyfile", "--config", config]
        return argv, env

    def start(self, timeout: float = 20) -> "Front":
        self.service.start()

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True

        wait_until(listening, timeout, f"{self.kind} on {self.url}", interval=0.1, abort=self.service.exited)
        return self

    def stop(self) -> None:
        self.service.stop(grace=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class SourceAddressAdapter(HTTPAdapter):
    """Connections from another loopback address (e.g. 127.0.0.2), so that the client's address
    is told apart from the front's and the proxy's (127.0.0.1) in X-Forwarded-For."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        return super().init_poolmanager(*args, **kwargs)


def client_session(source: str | None = None) -> requests.Session:
    session = requests.Session()
    if source:
        adapter = SourceAddressAdapter(source)
        session.mount("http://", adapter)
    return session
