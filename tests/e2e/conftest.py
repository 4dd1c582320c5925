"""Fixtures for the end-to-end suite: a real Synapse, a real js-ipfs node, the proxy's release
binary in front of both, and users alice and bob with matrix-nio clients pointed at the proxy.

Run through tests/e2e/run.sh, which installs the pinned tools and sets E2E_* (see `Env`).
A new scenario is usually one function that takes some of these fixtures:

    def test_something(proxy, synapse, bob, samples): ...

`start_ipfs` and `start_proxy` make extra nodes and proxies (own config, own lifetime) for a
test that must stop or reconfigure them without disturbing the others.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from nio import JoinResponse, RoomCreateResponse, RoomInviteResponse, RoomSendResponse

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import media  # noqa: E402
from support.ipfs import IpfsNode  # noqa: E402
from support.matrix import Loop, User, nio_login, sync_until, timeline_events  # noqa: E402
from support.procs import WATCHED_LOGS, tail  # noqa: E402
from support.proxy import Proxy, ProxyOptions  # noqa: E402
from support.synapse import Synapse  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Env:
    """Where things are, and which Synapse this run is about (set by run.sh)."""

    mode: str
    auth_media: bool
    proxy_bin: Path
    node_dir: Path
    log_dir: Path
    state_dir: Path
    pid_dir: Path

    @classmethod
    def from_environ(cls) -> "Env":
        e2e = Path(os.environ.get("E2E_DIR", REPO / ".e2e"))
        mode = os.environ.get("E2E_MODE", "auth")
        return cls(
            mode=mode,
            auth_media=os.environ.get("E2E_SYNAPSE_AUTH_MEDIA", "true") == "true",
            proxy_bin=Path(os.environ.get("E2E_PROXY_BIN", REPO / "target/release/ipfs-media-proxy")),
            node_dir=Path(os.environ.get("E2E_NODE_DIR", e2e / "node")),
            log_dir=Path(os.environ.get("E2E_LOG_DIR", e2e / "logs" / mode)),
            state_dir=Path(os.environ.get("E2E_STATE_DIR", e2e / "run" / mode)),
            pid_dir=Path(os.environ.get("E2E_PID_DIR", e2e / "run" / "pids")),
        )


ENV = Env.from_environ()


def pytest_configure(config: pytest.Config) -> None:
    for folder in (ENV.log_dir, ENV.state_dir, ENV.pid_dir):
        folder.mkdir(parents=True, exist_ok=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"e2e mode: {ENV.mode} (Synapse enable_authenticated_media: {str(ENV.auth_media).lower()})",
        f"proxy binary: {ENV.proxy_bin}",
        f"logs: {ENV.log_dir}",
    ]


# -- failure reports: the tail of every log that grew during the test -------------------------

_log_marks: dict[str, dict[str, int]] = {}


def _sizes() -> dict[str, int]:
    sizes = {}
    for label, path in WATCHED_LOGS.items():
        try:
            sizes[label] = path.stat().st_size
        except FileNotFoundError:
            sizes[label] = 0
    return sizes


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _log_marks[item.nodeid] = _sizes()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    before = _log_marks.get(item.nodeid, {})
    shown = set()
    for label, size in _sizes().items():
        path = WATCHED_LOGS[label]
        if path in shown or (size == before.get(label, 0) and report.when != "setup"):
            continue
        shown.add(path)
        report.sections.append((f"log tail: {path}", tail(path, 25)))


# -- services ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def env() -> Env:
    return ENV


@pytest.fixture(scope="session")
def synapse(env: Env) -> Iterator[Synapse]:
    server = Synapse(env.state_dir / "synapse", env.log_dir, env.pid_dir, auth_media=env.auth_media)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ipfs(env: Env) -> Iterator[IpfsNode]:
    """The node that holds the samples; it runs for the whole session."""
    node = IpfsNode("ipfs", env.node_dir, env.state_dir, env.log_dir, env.pid_dir)
    try:
        yield node.start()
    finally:
        node.stop()


@pytest.fixture(scope="session")
def proxy(env: Env, synapse: Synapse, ipfs: IpfsNode) -> Iterator[Proxy]:
    """The proxy in front of `synapse`, with `ipfs`'s path gateway as its gateway."""
    server = Proxy("proxy", env.proxy_bin, synapse.url, [ipfs.gateway], env.state_dir, env.log_dir, env.pid_dir)
    try:
        yield server.start()
    finally:
        server.stop()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40]


@pytest.fixture
def start_ipfs(env: Env, request: pytest.FixtureRequest) -> Iterator[Callable[[], IpfsNode]]:
    """Factory: a fresh, empty node of the test's own; stopped when the test ends."""
    nodes: list[IpfsNode] = []

    def start() -> IpfsNode:
        name = f"ipfs-{_slug(request.node.name)}-{len(nodes)}"
        node = IpfsNode(name, env.node_dir, env.state_dir, env.log_dir, env.pid_dir)
        nodes.append(node)
        return node.start()

    try:
        yield start
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def start_proxy(env: Env, synapse: Synapse, request: pytest.FixtureRequest) -> Iterator[Callable[..., Proxy]]:
    """Factory: `start_proxy(gateways=[...], options=ProxyOptions(...))`, a proxy of the test's
    own in front of the session's Synapse; stopped when the test ends."""
    proxies: list[Proxy] = []

    def start(gateways: list[str], options: ProxyOptions | None = None) -> Proxy:
        name = f"proxy-{_slug(request.node.name)}-{len(proxies)}"
        server = Proxy(name, env.proxy_bin, synapse.url, gateways, env.state_dir, env.log_dir, env.pid_dir, options)
        proxies.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in proxies:
            server.stop()


# -- clients -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def aio() -> Iterator[Loop]:
    loop = Loop()
    yield loop
    loop.close()


def _user(name: str, aio: Loop, synapse: Synapse, proxy: Proxy, env: Env) -> Iterator[User]:
    account = synapse.register(name)
    store = env.state_dir / "nio" / name
    store.mkdir(parents=True, exist_ok=True)
    user = nio_login(aio, proxy.url, account, str(store))
    try:
        yield user
    finally:
        aio(user.nio.close(), timeout=10)


@pytest.fixture(scope="session")
def alice(aio: Loop, synapse: Synapse, proxy: Proxy, env: Env) -> Iterator[User]:
    """@alice:localhost, her nio client talking to the proxy."""
    yield from _user("alice", aio, synapse, proxy, env)


@pytest.fixture(scope="session")
def bob(aio: Loop, synapse: Synapse, proxy: Proxy, env: Env) -> Iterator[User]:
    """@bob:localhost, his nio client talking to the proxy."""
    yield from _user("bob", aio, synapse, proxy, env)


@pytest.fixture(scope="session")
def room(aio: Loop, alice: User, bob: User) -> str:
    """A room alice made and bob joined (all through the proxy)."""
    created = aio(alice.nio.room_create(name="e2e", topic="ipfs-media-proxy end to end"))
    assert isinstance(created, RoomCreateResponse), created
    invited = aio(alice.nio.room_invite(created.room_id, bob.user_id))
    assert isinstance(invited, RoomInviteResponse), invited
    joined = aio(bob.nio.join(created.room_id))
    assert isinstance(joined, JoinResponse), joined
    return created.room_id


# -- ipfs media --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def samples(ipfs: IpfsNode) -> dict[str, media.Sample]:
    """Scenario 2's files, added to the session's node; `.cid` is set on each."""
    made = media.samples()
    for sample in made.values():
        sample.cid = ipfs.add(sample.data, sample.filename)
    return made


@pytest.fixture(scope="session")
def media_events(
    aio: Loop, alice: User, bob: User, room: str, samples: dict[str, media.Sample]
) -> dict[tuple[str, str], dict]:
    """Alice posts every sample twice, as `mxc://localhost/ipfs:<cid>` and as
    `mxc://elsewhere.example/ipfs:<cid>`; bob syncs through the proxy until he has seen all of
    them. Returns the event contents as bob received them, keyed by (sample key, server)."""
    start = sync_until(aio, bob.nio, lambda response: True)
    sent: dict[str, tuple[str, str]] = {}
    for sample in samples.values():
        for server in media.MEDIA_SERVERS:
            content = {
                "msgtype": sample.msgtype,
                "body": sample.filename,
                "filename": sample.filename,
                "url": f"mxc://{server}/ipfs:{sample.cid}",
                "info": {"size": len(sample.data)},
            }
            if sample.mime:
                content["info"]["mimetype"] = sample.mime
            response = aio(alice.nio.room_send(room, "m.room.message", content))
            assert isinstance(response, RoomSendResponse), response
            sent[response.event_id] = (sample.key, server)

    received: dict[tuple[str, str], dict] = {}

    def collect(response) -> bool:
        for event in timeline_events(response, room):
            if event.get("event_id") in sent:
                received[sent[event["event_id"]]] = event["content"]
        return len(received) == len(sent)

    sync_until(aio, bob.nio, collect, timeout=60, since=start.next_batch)
    return received
