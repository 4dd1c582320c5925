"""Processes the suite starts: free ports, bounded waits, and a Service that always stops.

Every service runs in its own session (process group), logs to a file under the run's log
folder, and leaves a pid file in the run's pid folder, so that run.sh can still end it if
pytest itself is killed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")

#: log files worth showing when a test fails (label -> path); services add theirs on start
WATCHED_LOGS: dict[str, Path] = {}


def watch_log(label: str, path: Path) -> None:
    WATCHED_LOGS[label] = path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.2,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Call `probe` until it returns something truthy; give up after `timeout` seconds.

    `abort` is asked between tries and ends the wait early with its message (a process that
    died will never become ready). Exceptions from `probe` count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - "not ready yet" comes in many shapes
            last_error = error
        if abort is not None:
            reason = abort()
            if reason:
                raise RuntimeError(f"{what}: {reason}")
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"{what}: not within {timeout:g}s{detail}")
        time.sleep(interval)


def tail(path: Path, lines: int = 40, max_line: int = 400) -> str:
    """The last `lines` lines of a text file, each cut to `max_line` characters."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    out = []
    for line in text.splitlines()[-lines:]:
        line = _compact_json_line(line)
        out.append(line if len(line) <= max_line else line[:max_line] + " [...]")
    return "\n".join(out)


def _compact_json_line(line: str) -> str:
    """A JSON log line (the proxy's `--log-format json`) as `time LEVEL message key=value ...`."""
    if not line.startswith("{"):
        return line
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    stamp = str(record.pop("timestamp", ""))[11:23]
    level = record.pop("level", "")
    message = record.pop("message", "")
    record.pop("target", None)
    fields = " ".join(f"{key}={value}" for key, value in record.items())
    return f"{stamp} {level} {message} {fields}"


class Service:
    """One child process with a log file; `stop()` is safe to call any number of times."""

    #: every Service ever started in this pytest process, for failure reports and cleanup
    started: list["Service"] = []

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        pid_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.pid_dir = pid_dir
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.pid_dir / f"{self.name}.pid"

    def start(self) -> "Service":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self.proc.pid}\n")
        Service.started.append(self)
        watch_log(self.name, self.log_path)
        return self

    def start_until(self, ready, timeout: float, what: str, interval: float) -> "Service":
        """Starts the process and waits until `ready()` holds (or the process exits)."""
        self.start()
        wait_until(ready, timeout, what, interval=interval, abort=self.exited)
        return self

    def exited(self) -> str | None:
        """Why the process is gone, or None while it runs (for `wait_until(abort=...)`)."""
        if self.proc is None:
            return "not started"
        code = self.proc.poll()
        if code is None:
            return None
        return f"{self.name} exited with status {code}; log {self.log_path}:\n{self.tail()}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait(timeout=10)
        # children that outlived the leader (node workers, ...)
        self._signal_group(signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """Stop at once, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.pid_file.unlink(missing_ok=True)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0
