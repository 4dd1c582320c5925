"""Matrix clients for the scenarios: matrix-nio (async, run on one loop) and plain requests."""

from __future__ import annotations

import asyncio
import difflib
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import requests
from nio import AsyncClient, AsyncClientConfig, LoginResponse, SyncResponse

from .synapse import Registered

T = TypeVar("T")

#: a sync filter that never truncates the timeline of the few rooms the suite makes
SYNC_FILTER = {"room": {"timeline": {"limit": 200}}, "presence": {"types": []}}


class Loop:
    """Runs coroutines to completion on one event loop, each under a timeout.

    nio clients keep an aiohttp session bound to the loop that created it, so all of them
    live on this one loop; tests stay plain functions: `aio(alice.nio.room_send(...))`.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __call__(self, awaitable: Awaitable[T], timeout: float = 60) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(awaitable, timeout))

    def close(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


@dataclass
class User:
    """A registered user with a logged-in nio client pointed at `nio.homeserver`."""

    account: Registered
    nio: AsyncClient
    #: the access token of the nio client's device
    token: str

    @property
    def user_id(self) -> str:
        return self.account.user_id

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def nio_login(aio: Loop, homeserver: str, account: Registered, store_dir: str) -> User:
    config = AsyncClientConfig(
        encryption_enabled=False,
        store_sync_tokens=False,
        request_timeout=30,
        max_timeouts=2,
        max_limit_exceeded=0,
    )
    client = AsyncClient(homeserver, account.user_id, store_path=store_dir, config=config)
    response = aio(client.login(account.password, device_name="e2e"))
    assert isinstance(response, LoginResponse), f"nio login {account.user_id}: {response}"
    return User(account=account, nio=client, token=response.access_token)


def sync_until(
    aio: Loop,
    client: AsyncClient,
    found: Callable[[SyncResponse], bool],
    timeout: float = 30,
    since: str | None = None,
) -> SyncResponse:
    """Sync (long-polling 2 s at a time) until `found(response)`; at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    token = since
    while True:
        response = aio(
            client.sync(timeout=2000, sync_filter=SYNC_FILTER, since=token, full_state=token is None),
            timeout=30,
        )
        assert isinstance(response, SyncResponse), f"sync failed: {response}"
        if found(response):
            return response
        token = response.next_batch
        if time.monotonic() >= deadline:
            raise TimeoutError(f"sync: not found within {timeout:g}s")


def timeline_events(response: SyncResponse, room_id: str) -> list[dict]:
    """The raw timeline events of `room_id` in a sync response."""
    room = response.rooms.join.get(room_id)
    if room is None:
        return []
    return [event.source for event in room.timeline.events]


# -- comparing a direct answer with a proxied one ----------------------------------------------

#: response headers that legitimately differ between two answers, or belong to one hop
VOLATILE_HEADERS = {"date", "connection", "keep-alive", "transfer-encoding"}

_ID_PATTERNS = [
    (re.compile(r"^\$[A-Za-z0-9_\-+/=]+$"), "$EVENT_ID"),
    # room version 12 room IDs have no server part
    (re.compile(r"^![A-Za-z0-9_\-+/=.]+(:localhost)?$"), "!ROOM_ID"),
    (re.compile(r"^mxc://localhost/[A-Za-z]+$"), "mxc://localhost/MEDIA_ID"),
    (re.compile(r"^syt_[A-Za-z0-9_]+$"), "ACCESS_TOKEN"),
]
_VOLATILE_KEYS = {"origin_server_ts", "age", "next_batch", "prev_batch", "device_id", "ts",
                  "last_active_ago", "org.matrix.msc4115.membership"}


def normalize(value: Any) -> Any:
    """JSON with the parts that differ between two equivalent requests replaced by placeholders:
    event/room/media IDs, tokens, timestamps, ages and sync positions."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in _VOLATILE_KEYS:
                out[key] = f"<{key}>"
            elif key == "transaction_id":
                out[key] = "<transaction_id>"
            else:
                out[normalize(key)] = normalize(item)
        return out
    if isinstance(value, list):
        return [normalize(item) for item in value]
    if isinstance(value, str):
        for pattern, placeholder in _ID_PATTERNS:
            if pattern.match(value):
                return placeholder
    return value


def comparable_headers(response: requests.Response, ignore: set[str] = frozenset()) -> dict[str, str]:
    skip = VOLATILE_HEADERS | {name.lower() for name in ignore}
    return {name.lower(): value for name, value in response.headers.items() if name.lower() not in skip}


def assert_same_answer(
    direct: requests.Response,
    proxied: requests.Response,
    normalize_json: bool = False,
    ignore_headers: set[str] = frozenset(),
) -> None:
    """The proxy answered like Synapse: status, headers (less VOLATILE_HEADERS), body."""
    what = f"{proxied.request.method} {proxied.request.path_url.split('?')[0]}"
    if normalize_json:
        # two equivalent JSON bodies differ in IDs and ages, and so can their lengths
        ignore_headers = set(ignore_headers) | {"content-length"}
    if direct.status_code in (204, 304):
        # Synapse sends `Content-Length: 0` on its 204s, which RFC 9110 (8.6) forbids;
        # hyper drops it, rightly
        ignore_headers = set(ignore_headers) | {"content-length"}
    assert proxied.status_code == direct.status_code, (
        f"{what}: status {proxied.status_code} through the proxy, {direct.status_code} direct"
        f"\nproxy: {proxied.text[:500]}\ndirect: {direct.text[:500]}"
    )
    ours, theirs = comparable_headers(proxied, ignore_headers), comparable_headers(direct, ignore_headers)
    assert ours == theirs, f"{what}: headers differ (- direct, + proxied):\n{diff(theirs, ours)}"
    if normalize_json:
        ours, theirs = normalize(proxied.json()), normalize(direct.json())
        assert ours == theirs, f"{what}: JSON differs (- direct, + proxied):\n{diff(theirs, ours)}"
    else:
        assert proxied.content == direct.content, (
            f"{what}: body differs\nproxy: {proxied.content[:300]!r}\ndirect: {direct.content[:300]!r}"
        )


def diff(expected: Any, got: Any) -> str:
    """A unified diff of two JSON-able values, for assertion messages."""
    def lines(value: Any) -> list[str]:
        return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False).splitlines()

    return "\n".join(difflib.unified_diff(lines(expected), lines(got), lineterm="", n=1))
