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

import pytest
import requests
from nio import AsyncClient, UploadResponse

from support.media import jpeg_rotated, png, video_like
from support.proxy import ProxyOptions

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


def upload_options(ipfs, extra: str = "") -> ProxyOptions:
    return ProxyOptions(
        extra_toml=(
            "\n[upload]\nenabled = true\nmax_bytes = \"24MiB\"\nstore_timeout = \"20s\"\n"
            + extra
            + f'\n[upload.store]\nkind = "kubo"\nurl = "{ipfs.api}"\n'
        )
    )


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


def test_refusals_leave_nothing_pinned(start_proxy, start_ipfs, alice):
    node = start_ipfs()
    proxy = start_proxy([node.gateway], upload_options(node, '[upload.rate]\nrequests = 2\nwindow = "1h"\n'))
    data = b"refused bytes " * 100
    cid = node_cid(node, data)
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
