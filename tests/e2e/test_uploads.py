"""Uploads stored on IPFS: matrix-nio uploads through a proxy with `[upload]` on, the real
js-ipfs node as the store (its RPC `add`, `pin/ls`, `pin/rm`), the real Synapse checking tokens.

The expected CIDs are the node's own, for the same bytes with the profile's parameters
(`only-hash`, so the node's answer pins nothing): files of one chunk are one raw block under
any profile, and a 20 MiB file is a one-level tree of 1 MiB raw leaves, which js-ipfs builds
the same way under its fixed 174 links as `unixfs-v1-2025` does under 1024.
"""

from __future__ import annotations

import io
import json
import random
import secrets
import socket
import time

import pytest
import requests
from nio import AsyncClient, UploadResponse

from support.fedsign import Origin
from support.media import jpeg_rotated, png, video_like
from support.procs import free_port, wait_until
from support.proxy import ProxyOptions
from test_federation import FED_DOWNLOAD, check_media_parts, parse_multipart, signed_get
from test_metrics import Scrape

TIMEOUT = 120
MIB = 1024 * 1024


def node_cid(ipfs, data: bytes, chunker: str = "size-1048576") -> str:
    """The CID the node computes for `data` (CIDv1, raw leaves), without storing or pinning."""
    response = requests.post(
        ipfs.api + "/api/v0/add",
        params={
            "cid-version": "1",
            "raw-leaves": "true",
            "chunker": chunker,
            "cid-base": "base32",
            "only-hash": "true",
            "pin": "false",
        },
        files={"file": ("f", data, "application/octet-stream")},
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    hashes = [json.loads(l)["Hash"] for l in response.text.splitlines() if '"Hash"' in l]
    return hashes[-1]


def pinned(ipfs, cid: str) -> bool:
    response = requests.post(ipfs.api + "/api/v0/pin/ls", params={"arg": cid, "cid-base": "base32"}, timeout=30)
    return response.ok and cid in response.text


def upload_options(ipfs, extra: str = "", admin_port: int | None = None, top: str = "") -> ProxyOptions:
    """`[upload]` on with `ipfs` as the store; `extra` goes inside `[upload]`, `top` before it;
    `admin_port` turns on the admin listener (for `/metrics`)."""
    admin = f'\n[admin]\nlisten = "127.0.0.1:{admin_port}"\n' if admin_port else ""
    return ProxyOptions(
        extra_toml=(
            admin
            + top
            + "\n[upload]\nenabled = true\nmax_bytes = \"24MiB\"\nstore_timeout = \"20s\"\n"
            + extra
            + f'\n[upload.store]\nkind = "kubo"\nurl = "{ipfs.api}"\n'
        )
    )


def recursive_pins(ipfs) -> set[str]:
    """Every CID the node has pinned recursively (what `add` pins)."""
    response = requests.post(
        ipfs.api + "/api/v0/pin/ls", params={"type": "recursive", "cid-base": "base32"}, timeout=30
    )
    response.raise_for_status()
    keys = response.json().get("Keys")
    if keys is not None:  # Kubo: one JSON object
        return set(keys)
    return {json.loads(line)["Cid"] for line in response.text.splitlines() if line.strip()}  # js-ipfs: NDJSON


def admin_of(port: int) -> str:
    admin = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{admin}/health", timeout=2).status_code == 200, 10, f"admin on {admin}")
    return admin


def assert_nothing_cached(admin: str, entries: int = 0) -> None:
    """The proxy's cache holds `entries` items (0: nothing at all), by its own metrics."""
    scrape = Scrape(admin)
    assert scrape.total("cache_entries") == entries, scrape.text
    if entries == 0:
        assert scrape.total("cache_held_bytes") == 0, scrape.text


def nio_upload(aio, url: str, user, data: bytes, content_type: str, name: str) -> str:
    """Uploads with matrix-nio as the user, to `url`; the `content_uri`."""
    client = AsyncClient(url, user.user_id)
    client.access_token = user.token
    try:
        response, _ = aio(
            client.upload(io.BytesIO(data), content_type=content_type, filename=name, filesize=len(data)),
            timeout=TIMEOUT,
        )
    finally:
        aio(client.close(), timeout=10)
    assert isinstance(response, UploadResponse), response
    return response.content_uri


@pytest.fixture(scope="module")
def files() -> dict[str, tuple[bytes, str]]:
    return {
        "png": (png(), "image/png"),
        "jpeg": (jpeg_rotated(), "image/jpeg"),
        "20mib": (video_like(20 * MIB), "application/octet-stream"),
    }


def test_uploads_are_stored_pinned_and_served_to_others(aio, start_proxy, ipfs, alice, bob, files):
    proxy = start_proxy([ipfs.gateway], upload_options(ipfs))
    for key, (data, content_type) in files.items():
        uri = nio_upload(aio, proxy.url, alice, data, content_type, f"{key}.bin")
        cid = node_cid(ipfs, data)
        assert uri == f"mxc://localhost/ipfs_{cid}", key
        assert pinned(ipfs, cid), f"{key}: {cid} is not pinned on the node"
        # Another user downloads it, byte for byte.
        response = requests.get(
            f"{proxy.url}/_matrix/client/v1/media/download/localhost/ipfs_{cid}",
            headers=bob.auth(),
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, key
        assert response.content == data, key
    png_cid = node_cid(ipfs, files["png"][0])
    thumb = requests.get(
        f"{proxy.url}/_matrix/client/v1/media/thumbnail/localhost/ipfs_{png_cid}",
        params={"width": "32", "height": "32", "method": "crop"},
        headers=bob.auth(),
        timeout=TIMEOUT,
    )
    assert thumb.status_code == 200, thumb.text[:300]
    assert thumb.headers["Content-Type"] == "image/png"
    # The same bytes again: the same answer.
    again = nio_upload(aio, proxy.url, alice, files["png"][0], "image/png", "again.png")
    assert again == f"mxc://localhost/ipfs_{png_cid}"


def upload_raw(proxy, token: str | None, data: bytes, **kwargs) -> requests.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(proxy.url + "/_matrix/media/v3/upload", data=data, headers=headers, timeout=TIMEOUT, **kwargs)


def register_guest(synapse) -> str:
    """A guest's access token, from the homeserver's own guest registration."""
    response = requests.post(
        synapse.url + "/_matrix/client/v3/register", params={"kind": "guest"}, json={}, timeout=TIMEOUT
    )
    assert response.status_code == 200, f"guest registration: {response.status_code} {response.text}"
    return response.json()["access_token"]


def test_refusals_leave_nothing_pinned(start_proxy, start_ipfs, alice, synapse):
    node = start_ipfs()
    port = free_port()
    proxy = start_proxy(
        [node.gateway], upload_options(node, '[upload.rate]\nrequests = 2\nwindow = "1h"\n', admin_port=port)
    )
    admin = admin_of(port)
    data = b"refused bytes " * 100
    cid = node_cid(node, data)
    pins_before = recursive_pins(node)
    # A guest (the homeserver says so in whoami): refused before any byte is stored.
    response = upload_raw(proxy, register_guest(synapse), data)
    assert (response.status_code, response.json()["errcode"]) == (403, "M_FORBIDDEN"), response.text
    # Tokens: Synapse's own answers.
    response = upload_raw(proxy, None, data)
    assert (response.status_code, response.json()["errcode"]) == (401, "M_MISSING_TOKEN")
    response = upload_raw(proxy, "not-a-token", data)
    assert (response.status_code, response.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    # Too large by length, and by stream (chunked, no length).
    big = video_like(25 * MIB, seed=3)
    response = upload_raw(proxy, alice.token, big)
    assert (response.status_code, response.json()["errcode"]) == (413, "M_TOO_LARGE")
    response = upload_raw(proxy, alice.token, (big[i : i + MIB] for i in range(0, len(big), MIB)))
    assert (response.status_code, response.json()["errcode"]) == (413, "M_TOO_LARGE")
    assert not pinned(node, node_cid(node, big))
    # The node stopped: 502, nothing answered as stored.
    node.stop()
    response = upload_raw(proxy, alice.token, data)
    assert (response.status_code, response.json()["errcode"]) == (502, "M_UNKNOWN")
    # Two uploads got past the size check in this window (the streamed one, the one the
    # stopped node failed): the third is rate-limited.
    response = upload_raw(proxy, alice.token, data)
    assert response.status_code == 429, response.text
    assert response.json()["errcode"] == "M_LIMIT_EXCEEDED"
    assert response.json()["retry_after_ms"] > 0
    node.start()
    assert not pinned(node, cid)
    assert recursive_pins(node) == pins_before
    assert_nothing_cached(admin)
    scrape = Scrape(admin)
    outcomes = {o: scrape.total("uploads_total", outcome=o) for o in ("refused", "too_large", "store_error",
                                                                      "rate_limited", "stored")}
    assert outcomes == {"refused": 1, "too_large": 2, "store_error": 1, "rate_limited": 1, "stored": 0}, outcomes


@pytest.fixture(scope="module")
def origin(synapse) -> Origin:
    """A remote server whose key our Synapse holds (as in test_federation.py)."""
    made = Origin.fresh()
    made.register_with(synapse.dir / "homeserver.db")
    return made


def test_federation_download_of_an_upload(start_proxy, ipfs, synapse, origin, alice):
    """Another server asks for an upload over federation: byte-exact, from the uploading proxy
    (its cache) and from a fresh proxy that has only the node's gateway (the bytes live on IPFS)."""
    data = video_like(3 * MIB, seed=random.randrange(1 << 30))
    cid = node_cid(ipfs, data)
    uploader = start_proxy([ipfs.gateway], upload_options(ipfs))
    response = upload_raw(uploader, alice.token, data)
    assert response.status_code == 200, response.text
    assert response.json() == {"content_uri": f"mxc://localhost/ipfs_{cid}"}
    fresh = start_proxy([ipfs.gateway])
    for proxy in (uploader, fresh):
        path = f"{FED_DOWNLOAD}/ipfs_{cid}"
        answer = signed_get(proxy.url, path, origin, synapse, timeout=TIMEOUT)
        _, parts = parse_multipart(answer)
        check_media_parts(parts, "video/mp4", data, f"{proxy.name} {path}")


def test_denylisted_upload_is_refused_and_unpinned(start_proxy, ipfs, alice, env):
    allowed = random.randbytes(40_000)
    blocked = random.randbytes(300_000)
    blocked_cid = node_cid(ipfs, blocked)
    deny = env.state_dir / f"uploads-{secrets.token_hex(4)}.deny"
    deny.write_text(f"{blocked_cid}\n")
    port = free_port()
    proxy = start_proxy([ipfs.gateway], upload_options(ipfs, admin_port=port, top=f'\n[denylist]\npaths = ["{deny}"]\n'))
    admin = admin_of(port)
    # An allowed upload is cached: the metric that must stay put below does see uploads.
    response = upload_raw(proxy, alice.token, allowed)
    assert response.status_code == 200, response.text
    assert_nothing_cached(admin, entries=1)
    pins_before = recursive_pins(ipfs)
    response = upload_raw(proxy, alice.token, blocked)
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["errcode"] == "M_FORBIDDEN" and "blocked" in body["error"], body
    # The bytes reached the node (the CID is known only once they are all hashed); the pin is gone.
    assert not pinned(ipfs, blocked_cid)
    assert recursive_pins(ipfs) == pins_before
    assert_nothing_cached(admin, entries=1)
    assert Scrape(admin).total("uploads_total", outcome="blocked") == 1


def test_client_aborting_mid_body_leaves_nothing(start_proxy, ipfs, alice):
    data = video_like(4 * MIB, seed=random.randrange(1 << 30))
    cid = node_cid(ipfs, data)
    port = free_port()
    proxy = start_proxy([ipfs.gateway], upload_options(ipfs, admin_port=port))
    admin = admin_of(port)
    pins_before = recursive_pins(ipfs)
    # The whole length announced, half the bytes sent, then the connection closed.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as conn:
        conn.sendall(
            (
                "POST /_matrix/media/v3/upload?filename=half.bin HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{proxy.port}\r\n"
                f"Authorization: Bearer {alice.token}\r\n"
                "Content-Type: application/octet-stream\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            ).encode()
        )
        conn.sendall(data[: len(data) // 2])
    wait_until(lambda: Scrape(admin).total("uploads_total", outcome="aborted") == 1, 30,
               "the proxy counting the upload as aborted")
    # The node may still be taking in what it got: nothing may get pinned meanwhile either.
    for _ in range(6):
        assert recursive_pins(ipfs) == pins_before
        assert not pinned(ipfs, cid)
        time.sleep(0.5)
    assert_nothing_cached(admin)
    assert Scrape(admin).total("uploads_total", outcome="stored") == 0
    # The same bytes whole: stored under the CID computed above, so that was the one to look for.
    response = upload_raw(proxy, alice.token, data)
    assert response.json() == {"content_uri": f"mxc://localhost/ipfs_{cid}"}
    assert pinned(ipfs, cid)
    assert_nothing_cached(admin, entries=1)
