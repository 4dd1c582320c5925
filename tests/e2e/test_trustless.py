"""Issue #4: trustless gateways, for real. Between the proxy and the session's js-ipfs node sits
a small trustless gateway (`support/trustless_gateway.py`: raw blocks from the node's
`block/get`, CARs from its `dag/export`) that can flip one byte of one block. The proxy must
serve exactly the added bytes when an honest gateway can repair the lie, never serve (or
cache) a lie when none can, and refuse a directory.
"""

from __future__ import annotations

import random

import pytest
import requests

from support.proxy import Proxy, ProxyOptions
from support.trustless_gateway import TrustlessGateway, add_file, car_blocks

TIMEOUT = 60
#: 1.5 MiB in 64 KiB chunks: a root and 24 raw leaves, so the CAR has many blocks
SIZE = 1_500_000 + 4321
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def chunked(ipfs):
    """A multi-block file on the session's node: (data, root CID, CAR blocks in order)."""
    data = random.Random(4).randbytes(SIZE)
    entries = add_file(ipfs.api, data, "chunked.bin", chunk_size=CHUNK)
    root = entries[-1]["Hash"]
    assert root.startswith("bafybei"), f"a dag-pb root was expected: {entries[-1]}"
    response = requests.post(f"{ipfs.api}/api/v0/dag/export", params={"arg": root}, timeout=TIMEOUT)
    assert response.status_code == 200, f"dag/export: {response.status_code} {response.text[:300]}"
    blocks = car_blocks(response.content)
    assert blocks[0][0] == root, "the CAR must start with the root"
    assert len(blocks) >= 20, f"only {len(blocks)} blocks"
    return data, root, blocks


@pytest.fixture
def gateway(ipfs):
    """Factory: `gateway(name, tamper={cid, ...})`, a trustless gateway in front of `ipfs`."""
    made: list[TrustlessGateway] = []

    def make(name: str, tamper: set[str] | None = None) -> TrustlessGateway:
        server = TrustlessGateway(ipfs.api, name, tamper).start()
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.stop()


def trustless_proxy(start_proxy, gateways: list[TrustlessGateway]) -> Proxy:
    """A proxy whose gateways are exactly `gateways`, in this order, all trustless (loopback
    URLs would default to trusted). No hedging and no probes: each request a test counts
    comes from the download it makes."""
    toml = "".join(
        f'\n[[gateways]]\nurl = "{g.url}"\nmode = "trustless"\ntimeout = "20s"\n' for g in gateways
    )
    toml += '\n[retrieval]\nhedge_delay = "30s"\nprobe_interval = "0s"\n'
    return start_proxy([], ProxyOptions(extra_toml=toml))


def download_url(server: Proxy, cid: str) -> str:
    return f"{server.url}/_matrix/media/v3/download/localhost/ipfs:{cid}"


def test_gateway_stand_in_is_honest(gateway, chunked):
    """The stand-in itself: raw blocks and the CAR are the node's, the probe CID answers."""
    _, root, blocks = chunked
    honest = gateway("honest")
    car = requests.get(f"{honest.url}/ipfs/{root}?format=car&dag-scope=entity&dups=y", timeout=TIMEOUT)
    assert car.status_code == 200 and [b[0] for b in car_blocks(car.content)] == [b[0] for b in blocks]
    leaf_cid, _, length = blocks[1]
    raw = requests.get(f"{honest.url}/ipfs/{leaf_cid}?format=raw", timeout=TIMEOUT)
    assert raw.status_code == 200 and len(raw.content) == length
    probe = requests.get(f"{honest.url}/ipfs/bafkqaaa?format=raw", timeout=TIMEOUT)
    assert probe.status_code == 200 and probe.content == b""


def test_honest_trustless_gateway_serves_exact_bytes(start_proxy, gateway, chunked):
    data, root, blocks = chunked
    honest = gateway("honest")
    server = trustless_proxy(start_proxy, [honest])
    mark = server.log_mark()
    response = requests.get(download_url(server, root), timeout=TIMEOUT)
    assert response.status_code == 200, f"{response.status_code} {response.text[:300]}"
    assert response.content == data
    assert response.headers.get("ETag") == f'"{root}"'
    line = server.wait_access(mark, root)[-1]
    assert line.get("cache") == "miss" and line.get("complete") is True, line
    # one CAR, no block-by-block
    assert honest.count(root, "car") == 1, honest.counts
    assert honest.requests_for({cid for cid, _, _ in blocks}, "raw") == 0, honest.counts


def test_a_lying_gateway_is_repaired_by_an_honest_one(start_proxy, gateway, chunked):
    data, root, blocks = chunked
    bad_index = len(blocks) // 2  # a leaf in the middle: the root and some bytes came first
    bad = blocks[bad_index][0]
    liar = gateway("liar", tamper={bad})
    honest = gateway("honest")
    server = trustless_proxy(start_proxy, [liar, honest])

    mark = server.log_mark()
    response = requests.get(download_url(server, root), timeout=TIMEOUT)
    assert response.status_code == 200, f"{response.status_code} {response.text[:300]}"
    assert len(response.content) == len(data) and response.content == data, "bytes differ"
    line = server.wait_access(mark, root)[-1]
    assert line.get("status") == 200 and line.get("complete") is True, line

    # the liar was asked for the CAR (first in order) and did lie
    assert liar.count(root, "car") == 1, liar.counts
    assert liar.tampered >= 1, "the tampering gateway never served its bad block"
    # the honest one was never asked for the CAR, but served the bad block and the rest raw
    assert honest.count(root, "car") == 0, honest.counts
    assert honest.count(bad, "raw") == 1, honest.counts
    after = {cid for cid, _, _ in blocks[bad_index + 1:]}
    assert honest.requests_for(after, "raw") == len(after), honest.counts
    before = {cid for cid, _, _ in blocks[:bad_index]}
    assert honest.requests_for(before, "raw") == 0, "blocks the liar delivered intact were fetched again"
    # and nobody asked the liar for blocks once it was caught
    assert liar.requests_for({cid for cid, _, _ in blocks}, "raw") == 0, liar.counts

    # now cached: no gateway is asked again
    mark = server.log_mark()
    again = requests.get(download_url(server, root), timeout=TIMEOUT)
    assert again.status_code == 200 and again.content == data
    assert server.wait_access(mark, root)[-1].get("cache") == "hit"
    assert liar.count(root) == 1 and honest.count(root) == 0


def _download_fails(url: str, data: bytes) -> str:
    """Downloads `url`; returns how it failed, and fails the test if it completed cleanly."""
    try:
        response = requests.get(url, timeout=TIMEOUT)
    except requests.exceptions.RequestException as error:  # aborted mid-body: the intended end
        return f"aborted: {type(error).__name__}"
    if response.status_code == 200:
        assert response.content != data, "a tampered download completed with the right bytes?"
        pytest.fail(f"a tampered download ended cleanly: 200 with {len(response.content)} bytes")
    assert response.status_code == 502, f"{response.status_code} {response.text[:300]}"
    assert response.json().get("errcode") == "M_UNKNOWN", response.text
    return "502 M_UNKNOWN"


def test_a_lie_nobody_can_repair_is_never_served_nor_cached(start_proxy, gateway, chunked):
    data, root, blocks = chunked
    bad = blocks[len(blocks) // 2][0]
    liar = gateway("liar", tamper={bad})
    server = trustless_proxy(start_proxy, [liar])
    url = download_url(server, root)

    for attempt in (1, 2):
        mark = server.log_mark()
        how = _download_fails(url, data)
        line = server.wait_access(mark, root)[-1]
        assert line.get("cache") != "hit", f"attempt {attempt} ({how}): {line}"
        assert not (line.get("status") == 200 and line.get("complete") is True), line
        # each attempt went to the gateway again: nothing of the lie was kept
        assert liar.count(root, "car") == attempt, liar.counts
    assert liar.tampered >= 2


def test_directory_through_a_trustless_gateway_is_not_found(start_proxy, gateway, ipfs):
    entries = add_file(ipfs.api, b"inside a directory\n", "inner.txt", wrap=True)
    directory = entries[-1]["Hash"]
    assert entries[-1].get("Name", "") == "", f"the last entry should be the wrapping directory: {entries}"
    honest = gateway("honest")
    server = trustless_proxy(start_proxy, [honest])
    response = requests.get(download_url(server, directory), timeout=TIMEOUT)
    assert response.status_code == 404, f"{response.status_code} {response.text[:300]}"
    body = response.json()
    assert body.get("errcode") == "M_NOT_FOUND", body
    assert "directory" in body.get("error", ""), body
    assert honest.count(directory) >= 1, "the gateway was never asked"
