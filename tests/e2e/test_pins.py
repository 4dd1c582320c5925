"""Issue #15: MSC2706's pin endpoint and CAR pins, for real. The store is a fresh js-ipfs node
(its RPC `pin/add`, `pin/ls`, `dag/import`); the proxy finds roots through the suite's trustless
gateway stand-in in front of the same node; Synapse checks the tokens.

The CARs are made by the real node (`dag/export`), the way README's "Pinning" shows with
`ipfs dag export`.
"""

from __future__ import annotations

import json
import random
import time

import requests

from support.proxy import ProxyOptions
from support.trustless_gateway import TrustlessGateway, car_blocks

TIMEOUT = 120


def add_unpinned(node, data: bytes, **params) -> str:
    """Adds `data` to the node without pinning it (CIDv1, raw leaves, base32): the root CID."""
    query = {"cid-version": "1", "raw-leaves": "true", "cid-base": "base32", "pin": "false", **params}
    response = requests.post(
        node.api + "/api/v0/add", params=query, files={"file": ("f.bin", data, "application/octet-stream")},
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    entries = [json.loads(line) for line in response.text.splitlines() if '"Hash"' in line]
    return entries[-1]["Hash"]


def pinned(node, cid: str) -> bool:
    response = requests.post(
        node.api + "/api/v0/pin/ls", params={"arg": cid, "type": "recursive", "cid-base": "base32"}, timeout=30
    )
    return response.ok and cid in response.text


def has_block(node, cid: str) -> bool:
    """Whether the node holds the block (an offline js-ipfs waits for a missing one: its own
    `timeout` option ends the wait with an error)."""
    response = requests.post(node.api + "/api/v0/block/stat", params={"arg": cid, "timeout": "2s"}, timeout=20)
    return response.ok


def pin_proxy(start_proxy, node, gateway: TrustlessGateway, extra: str = ""):
    toml = (
        f'\n[[gateways]]\nurl = "{gateway.url}"\nmode = "trustless"\ntimeout = "5s"\n'
        '\n[retrieval]\nprobe_interval = "0s"\n'
        '\n[upload]\nenabled = true\nmax_bytes = "4MiB"\nstore_timeout = "20s"\npin_find_timeout = "4s"\n'
        + extra
        + f'\n[upload.store]\nkind = "kubo"\nurl = "{node.api}"\n'
    )
    return start_proxy([], ProxyOptions(extra_toml=toml))


def pin(proxy, user, cid: str, data: bytes = b"{}", content_type: str = "application/json") -> requests.Response:
    return requests.post(
        f"{proxy.url}/_matrix/media/v3/pin/{cid}",
        data=data,
        headers={**user.auth(), "Content-Type": content_type},
        timeout=TIMEOUT,
    )


def test_pins_of_what_the_node_holds_and_refusals(start_proxy, start_ipfs, alice, bob):
    node = start_ipfs()
    gateway = TrustlessGateway(node.api, "pins").start()
    try:
        proxy = pin_proxy(start_proxy, node, gateway)
        data = random.Random(15).randbytes(300_000)
        cid = add_unpinned(node, data, chunker="size-65536")
        assert not pinned(node, cid)
        response = pin(proxy, alice, cid)
        assert response.status_code == 200, response.text
        assert response.json() == {"content_uri": f"mxc://localhost/ipfs_{cid}"}
        assert pinned(node, cid), "the node lists it pinned"
        # Another user downloads it through the proxy, byte for byte.
        download = requests.get(
            f"{proxy.url}/_matrix/client/v1/media/download/localhost/ipfs_{cid}", headers=bob.auth(), timeout=TIMEOUT
        )
        assert download.status_code == 200 and download.content == data
        # One no gateway has: 404 within the wait.
        started = time.monotonic()
        missing = "bafkreie7ohywtosou76tasm7j63yigtzxe7d5zqus4zu3j6oltvgtibeom"
        response = pin(proxy, alice, missing)
        assert (response.status_code, response.json()["errcode"]) == (404, "M_NOT_FOUND"), response.text
        assert time.monotonic() - started < 30
        # Over the size limit: 413, not pinned.
        big = random.Random(16).randbytes(5 * 1024 * 1024)
        big_cid = add_unpinned(node, big)
        response = pin(proxy, alice, big_cid)
        assert (response.status_code, response.json()["errcode"]) == (413, "M_TOO_LARGE"), response.text
        assert not pinned(node, big_cid)
        # A directory: 400, saying why.
        dir_cid = add_unpinned(node, b"in a directory\n", **{"wrap-with-directory": "true"})
        response = pin(proxy, alice, dir_cid)
        assert (response.status_code, response.json()["errcode"]) == (400, "M_INVALID_PARAM"), response.text
        assert "directory" in response.json()["error"]
        assert not pinned(node, dir_cid)
    finally:
        gateway.stop()


def test_a_car_pin_is_imported_and_a_flipped_byte_is_refused(start_proxy, start_ipfs, ipfs, alice, bob):
    """The CAR comes from another node (the session's): the store never had these blocks."""
    node = start_ipfs()
    gateway = TrustlessGateway(node.api, "car-pins").start()
    try:
        proxy = pin_proxy(start_proxy, node, gateway)
        data = random.Random(17).randbytes(700_000)
        cid = add_unpinned(ipfs, data, chunker="size-65536")
        car = requests.post(ipfs.api + "/api/v0/dag/export", params={"arg": cid}, timeout=TIMEOUT).content
        assert len(car_blocks(car)) > 5
        # Tampered first (another file's CAR, one byte flipped in a leaf): refused, nothing imported.
        other = random.Random(18).randbytes(200_000)
        other_cid = add_unpinned(ipfs, other, chunker="size-65536")
        other_car = bytearray(
            requests.post(ipfs.api + "/api/v0/dag/export", params={"arg": other_cid}, timeout=TIMEOUT).content
        )
        other_car[-10] ^= 1
        response = pin(proxy, alice, other_cid, bytes(other_car), "application/vnd.ipld.car")
        assert (response.status_code, response.json()["errcode"]) == (400, "M_INVALID_PARAM"), response.text
        assert "does not match" in response.json()["error"]
        assert not pinned(node, other_cid)
        assert not has_block(node, other_cid), "the node does not hold it"
        # The honest CAR: imported and pinned, then served to another user.
        response = pin(proxy, alice, cid, car, "application/vnd.ipld.car")
        assert response.status_code == 200, response.text
        assert response.json() == {"content_uri": f"mxc://localhost/ipfs_{cid}"}
        assert pinned(node, cid)
        download = requests.get(
            f"{proxy.url}/_matrix/client/v1/media/download/localhost/ipfs_{cid}", headers=bob.auth(), timeout=TIMEOUT
        )
        assert download.status_code == 200 and download.content == data
    finally:
        gateway.stop()
