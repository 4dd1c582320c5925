"""A trustless gateway (raw blocks and CARs only) in front of a real js-ipfs node's RPC, that can
be told to lie about one block; for the proxy's verified retrieval (issue #4).

    GET /ipfs/{cid}?format=raw      -> the node's `POST /api/v0/block/get?arg={cid}`
    GET /ipfs/{cid}?format=car...   -> the node's `POST /api/v0/dag/export?arg={cid}` (js-ipfs
                                       walks depth-first and in link order: what the proxy needs)
    GET /ipfs/bafkqaaa?format=raw   -> 200, empty (the proxy's probe)

With `tamper` set to some block CIDs (base32 CIDv1 strings), one byte in the data of each of
those blocks is flipped, both inside a CAR and when the block is asked for raw. Every request
is counted by (cid, format), so a test can tell who served what. Runs in a thread of the test
process on 127.0.0.1; `stop()` ends it.
"""

from __future__ import annotations

import base64
import collections
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

PROBE_CID = "bafkqaaa"


# -- CIDs and CARs -------------------------------------------------------------------------------

def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 varint at `pos`: (value, position after it)."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def cid_length(data: bytes, pos: int) -> int:
    """The length in bytes of the binary CID starting at `pos` (v0 or v1)."""
    if data[pos] == 0x12 and data[pos + 1] == 0x20:  # CIDv0: a bare sha2-256 multihash
        return 34
    start = pos
    _version, pos = read_varint(data, pos)
    _codec, pos = read_varint(data, pos)
    _hash_code, pos = read_varint(data, pos)
    digest_len, pos = read_varint(data, pos)
    return pos + digest_len - start


def cid_string(binary: bytes) -> str:
    """A binary CIDv1 as the base32 multibase string the proxy and js-ipfs use."""
    assert binary[0] == 0x01, "only CIDv1 is written as base32 here"
    return "b" + base64.b32encode(binary).decode("ascii").lower().rstrip("=")


def car_blocks(car: bytes) -> list[tuple[str, int, int]]:
    """The blocks of a CARv1 in order: (cid, offset of its data, length of its data)."""
    header_len, pos = read_varint(car, 0)
    pos += header_len
    blocks = []
    while pos < len(car):
        section_len, pos = read_varint(car, pos)
        end = pos + section_len
        cid_len = cid_length(car, pos)
        blocks.append((cid_string(car[pos:pos + cid_len]), pos + cid_len, end - pos - cid_len))
        pos = end
    assert pos == len(car), "CAR sections overrun the data"
    return blocks


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


# -- the server ----------------------------------------------------------------------------------

class TrustlessGateway:
    def __init__(self, node_api: str, name: str = "gateway", tamper: set[str] | None = None,
                 node_timeout: float = 20) -> None:
        self.node_api = node_api
        self.name = name
        self.tamper = set(tamper or ())
        self.node_timeout = node_timeout
        self.lock = threading.Lock()
        #: (cid, "raw" | "car" | other format) -> number of requests
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        #: how many times a block in `tamper` was actually served with a flipped byte
        self.tampered = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"gw-{name}", daemon=True)

    def start(self) -> "TrustlessGateway":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def count(self, cid: str, fmt: str | None = None) -> int:
        with self.lock:
            return sum(n for (c, f), n in self.counts.items() if c == cid and (fmt is None or f == fmt))

    def requests_for(self, cids: set[str], fmt: str) -> int:
        with self.lock:
            return sum(n for (c, f), n in self.counts.items() if c in cids and f == fmt)

    # -- what the node says, with the lie applied -------------------------------------------

    def _rpc(self, command: str, cid: str) -> requests.Response:
        return requests.post(f"{self.node_api}/api/v0/{command}", params={"arg": cid}, timeout=self.node_timeout)

    def raw_block(self, cid: str) -> bytes | None:
        response = self._rpc("block/get", cid)
        if response.status_code != 200:
            return None
        data = response.content
        if cid in self.tamper and data:
            data = flip(data, len(data) // 2)
            with self.lock:
                self.tampered += 1
        return data

    def car(self, cid: str) -> bytes | None:
        response = self._rpc("dag/export", cid)
        if response.status_code != 200:
            return None
        data = response.content
        if self.tamper:
            for block_cid, offset, length in car_blocks(data):
                if block_cid in self.tamper and length:
                    data = flip(data, offset + length // 2)
                    with self.lock:
                        self.tampered += 1
        return data

    def _handler(self):
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                fmt = (query.get("format") or [""])[0]
                parts = url.path.split("/")
                if len(parts) != 3 or parts[1] != "ipfs" or not parts[2]:
                    return self._answer(400, b"trustless gateway: /ipfs/{cid}?format=raw|car only\n")
                cid = parts[2]
                with gateway.lock:
                    gateway.counts[(cid, fmt)] += 1
                if cid == PROBE_CID and fmt == "raw":
                    return self._answer(200, b"", "application/vnd.ipld.raw")
                try:
                    if fmt == "raw":
                        data = gateway.raw_block(cid)
                        kind = "application/vnd.ipld.raw"
                    elif fmt == "car":
                        data = gateway.car(cid)
                        kind = "application/vnd.ipld.car; version=1; order=dfs; dups=y"
                    else:
                        return self._answer(406, b"only format=raw and format=car\n")
                except requests.Timeout:
                    return self._answer(504, b"the node did not answer in time\n")
                if data is None:
                    return self._answer(404, b"not found\n")
                return self._answer(200, data, kind)

            def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        return Handler


def add_file(node_api: str, data: bytes, filename: str, chunk_size: int | None = None,
             wrap: bool = False) -> list[dict]:
    """`POST /api/v0/add` (CIDv1, raw leaves, base32): every entry the node answered, the root
    last. `chunk_size` picks a size chunker (more, smaller blocks); `wrap` wraps the file in a
    directory (the last entry is then the directory)."""
    import json

    params = {"cid-version": "1", "raw-leaves": "true", "cid-base": "base32", "pin": "true"}
    if chunk_size:
        params["chunker"] = f"size-{chunk_size}"
    if wrap:
        params["wrap-with-directory"] = "true"
    response = requests.post(
        f"{node_api}/api/v0/add",
        params=params,
        files={"file": (filename, data, "application/octet-stream")},
        timeout=120,
    )
    response.raise_for_status()
    entries = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    return [entry for entry in entries if "Hash" in entry]
