"""The proxy under test: its release binary, a config written here, its JSON access log."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import requests

from .procs import Service, free_port, wait_until


@dataclass
class ProxyOptions:
    """What a test may change in the proxy's config; the defaults are the suite's usual setup."""

    cache_max_bytes: str = "512MiB"
    media_max_bytes: str = "100MiB"
    legacy_unauthenticated: bool = True
    #: extra TOML appended verbatim, for keys a new scenario needs
    extra_toml: str = ""
    #: extra environment variables (e.g. RUST_LOG)
    env: dict[str, str] = field(default_factory=dict)


def _toml_config(listen: str, homeserver: str, gateways: list[str], options: ProxyOptions) -> str:
    lines = [
        "[server]",
        f'listen = "{listen}"',
        'shutdown_grace = "2s"',
        "",
        "[homeserver]",
        f'url = "{homeserver}"',
        "",
    ]
    for gateway in gateways:
        lines += ["[[gateways]]", f'url = "{gateway}"', ""]
    lines += [
        "[cache]",
        f'max_bytes = "{options.cache_max_bytes}"',
        "",
        "[media]",
        f'max_bytes = "{options.media_max_bytes}"',
        f"legacy_unauthenticated = {'true' if options.legacy_unauthenticated else 'false'}",
        "",
    ]
    return "\n".join(lines) + options.extra_toml


class Proxy:
    def __init__(
        self,
        name: str,
        binary: Path,
        homeserver: str,
        gateways: list[str],
        state_dir: Path,
        log_dir: Path,
        pid_dir: Path,
        options: ProxyOptions | None = None,
    ) -> None:
        if not binary.exists():
            raise RuntimeError(f"proxy binary {binary} is missing: `cargo build --release` first")
        self.name = name
        self.options = options or ProxyOptions()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = state_dir / f"{name}.toml"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            _toml_config(f"127.0.0.1:{self.port}", homeserver, gateways, self.options)
        )
        env = None
        if self.options.env:
            import os

            env = dict(os.environ, **self.options.env)
        self.service = Service(
            name,
            [binary, "--config", self.config_path, "--log-format", "json"],
            log_path=log_dir / f"{name}.log",
            pid_dir=pid_dir,
            env=env,
        )

    def start(self, timeout: float = 30) -> "Proxy":
        # Ready when it answers; /_matrix/client/versions passes through to the homeserver.
        ready = lambda: requests.get(self.url + "/_matrix/client/versions", timeout=2).status_code == 200  # noqa: E731
        self.service.start_until(ready, timeout, f"proxy {self.name} on {self.url}", 0.1)
        return self

    def stop(self) -> None:
        self.service.stop(grace=10)

    def logs(self) -> list[Path]:
        return [self.service.log_path]

    # -- access log ------------------------------------------------------------------------

    def log_mark(self) -> int:
        """A position in the log; `access_lines(since=mark)` reads only what came after it."""
        return self.service.log_size()

    def log_records(self, since: int = 0) -> Iterator[dict]:
        """Every JSON line of the log after byte `since` (non-JSON lines are skipped)."""
        with open(self.service.log_path, "rb") as handle:
            handle.seek(since)
            for raw in handle.read().splitlines():
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record

    def access_lines(self, since: int = 0, path_contains: str = "") -> list[dict]:
        """The per-request log lines (those with a `route` field) after `since`."""
        return [
            record
            for record in self.log_records(since)
            if "route" in record and path_contains in str(record.get("path", ""))
        ]

    def wait_access(self, since: int, path_contains: str, count: int = 1, timeout: float = 10) -> list[dict]:
        """Wait until `count` access lines for paths containing `path_contains` appeared.

        The proxy writes a request's line when the response body is finished, which can be
        a moment after the client has read the last byte.
        """
        return wait_until(
            lambda: (lines := self.access_lines(since, path_contains)) and len(lines) >= count and lines,
            timeout,
            f"{count} access log line(s) for {path_contains!r} in {self.service.log_path}",
            interval=0.05,
        )


def timed_get(url: str, **kwargs) -> tuple[requests.Response, float]:
    """GET with a timeout (default 30 s), and how long it took."""
    kwargs.setdefault("timeout", 30)
    started = time.monotonic()
    response = requests.get(url, **kwargs)
    return response, time.monotonic() - started
