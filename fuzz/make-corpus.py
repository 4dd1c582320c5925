#!/usr/bin/env python3
"""Writes the seed corpora, fuzz/corpus/<target>/, from tests/fixtures/ and hand-made seeds.

Run from anywhere: `python3 fuzz/make-corpus.py`. The output is committed (about 0.7 MB);
rerun after changing a fixture or an input layout (see README.md for the layouts).
"""
import hashlib
import pathlib
import shutil
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
FIXTURES = FUZZ.parent / "tests" / "fixtures"
CORPUS = FUZZ / "corpus"


def varint(buf, pos):
    value, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def car_blocks(data):
    """(codec, is_v0, block) of every section of a CARv1."""
    hlen, pos = varint(data, 0)
    pos += hlen
    out = []
    while pos < len(data):
        slen, pos = varint(data, pos)
        section = data[pos : pos + slen]
        pos += slen
        if section[:2] == b"\x12\x20":
            out.append((0x70, True, section[34:]))
            continue
        _, p = varint(section, 0)
        codec, p = varint(section, p)
        _, p = varint(section, p)
        dlen, p = varint(section, p)
        out.append((codec, False, section[p + dlen :]))
    return out


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    cars = sorted((FIXTURES / "ipfs").glob("*.car"))

    # car: the fixture CARs as they are.
    for car in cars:
        write("car", car.name, car.read_bytes())

    # unixfs_node: [codec selector] + block, every dag-pb block and a few raw leaves.
    seen = set()
    for car in cars:
        raw = 0
        for codec, v0, block in car_blocks(car.read_bytes()):
            if codec == 0x55:
                raw += 1
                if raw > 2:
                    continue
            selector = 3 if v0 else (0 if codec == 0x70 else 1)
            seed = bytes([selector]) + block
            if seed not in seen:
                seen.add(seed)
                write("unixfs_node", hashlib.sha256(seed).hexdigest()[:16], seed)
    for name, block in {
        "kubo-empty-dir": b"\x0a\x02\x08\x01",
        "metadata": b"\x0a\x02\x08\x03",
        "symlink": b"\x0a\x02\x08\x04",
        "hamt": b"\x0a\x02\x08\x05",
        "file-ab": b"\x0a\x06\x08\x02\x12\x02ab\x18\x02",
        "raw-type-0": b"\x0a\x04\x08\x00\x12\x00",
    }.items():
        write("unixfs_node", name, b"\x00" + block)
    write("unixfs_node", "dag-cbor", b"\x02\xa1\x61a\x01")

    # walk: [flags, s (u16 LE), e (u16 LE)] + a CAR (flags bit 0 = 0) or a DAG description.
    def prefix(flags, s, e):
        return bytes([flags]) + struct.pack("<HH", s, e)

    # The small CARs, and of the 20 kB ones only the CIDv0/dag-pb-leaves one: a 20 kB CAR
    # costs ~20 ms an exec (the `car` target has them all).
    for car in cars:
        data = car.read_bytes()
        if len(data) > 2048 and car.stem != "cidv0-4k":
            continue
        write("walk", car.stem + "-whole", prefix(0x00, 0, 0) + data)
        write("walk", car.stem + "-range", prefix(0x04, 1000, 4999) + data)
    dags = {
        # A root with 3 bytes of its own and one raw leaf.
        "root-and-leaf": bytes([0x05, 3]) + b"abc" + bytes([0x00, 4]) + b"defg",
        # Seven children: raw, identity raw, repeat, dag-pb, CIDv0 dag-pb, literal, raw.
        "seven": bytes([0x1D, 0])
        + bytes([0x00, 5]) + b"hello"
        + bytes([0x40, 3]) + b"abc"
        + bytes([0x03])
        + bytes([0x05, 2]) + b"xy" + bytes([0x00, 1]) + b"z"
        + bytes([0x85, 1]) + b"q" + bytes([0x00, 2]) + b"rs"
        + bytes([0x00, 0])
        + bytes([0x00, 6]) + b"tail!\n",
        # A parent that lies about its child's size.
        "size-lie": bytes([0x25, 0, 0x00, 4]) + b"four" + bytes([0xFF]),
        # Deeper than MAX_DEPTH (32).
        "too-deep": bytes([0x05, 0]) * 34 + bytes([0x00, 1]) + b"x",
        # A literal dag-pb block (Kubo's empty directory) as the root.
        "literal-dir": bytes([0x02, 1]) + b"\x0a\x02\x08\x01",
    }
    for name, body in dags.items():
        write("walk", "dag-" + name, prefix(0x01, 0, 0) + body)
        write("walk", "dag-" + name + "-suffix", prefix(0x07, 0, 7) + body)
        write("walk", "dag-" + name + "-raw-range", prefix(0x0D, 2, 9) + body)

    # route_and_media_id: request paths.
    v1 = "bafkreia5dfq6qtlauixjgfka6nd7gl6mgtsriqwx2hgi2uyqhqsh3zitxq"
    v0 = "QmQRLwRsSwpxvjpDbdhfBL8eM6pVd97aZdcm5hs9Dmc7SA"
    paths = [
        f"/_matrix/media/v3/download/example.org/ipfs%3A{v1}/cat%20pic.png",
        f"/_matrix/media/r0/download/example.org/ipfs:{v1}",
        f"/_matrix/media/v1/thumbnail/example.org/ipfs_{v0}",
        f"/_matrix/client/v1/media/download/example.org/ipfs_{v1}/a%2Fb.txt",
        f"/_matrix/client/v1/media/thumbnail/example.org/ipfs:{v0}",
        f"/_matrix/client/unstable/org.matrix.msc3916/media/download/s/ipfs:{v1}/",
        f"/_matrix/federation/v1/media/download/ipfs:{v1}",
        f"/_matrix/federation/unstable/org.matrix.msc3916.v2/media/thumbnail/ipfs_{v0}",
        "/_matrix/media/v3/download/s/%FF%FE",
        "/_matrix/media/v3/download//ipfs:x",
        "/_matrix/client/v3/sync",
        "ipfs:bafkqaaa",
        "ipfs_k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8",
    ]
    for i, path in enumerate(paths):
        write("route_and_media_id", f"path-{i:02}", path.encode())

    # denylist: denylist files.
    lists = {
        "plain": f"# blocked\n{v0}\n{v1}\n",
        "compact": "version: 1\nname: test\nhints:\n  gateway_status: 410\n---\n"
        f"/ipfs/{v1} reason=test\n/ipfs/{v0}/*\n/ipfs/{v0}/some/path\n/ipns/domain.example\n"
        f"/ipfs/QmUboz9UsQBDeS6Tug1U8jgoFkgYxyYood9NDyVURAY9pK\n"
        f"!/ipfs/QmUboz9UsQBDeS6Tug1U8jgoFkgYxyYood9NDyVURAY9pK\n",
        "double-modern": "//QmX9dhRcQcKUw3Ws8485T5a9dtjrSCQaUAHnG4iK9i4ceM\n"
        "QmVTF1yEejXd9iMgoRTFDxBv7HAz9kuZcQNBzHrceuK9HR\n",
        "double-legacy": "//d9d295bde21f422d471a90f2a37ec53049fdf3e5fa3ee2e8f20e10003da429e7\n"
        "bafybeiefwqslmf6zyyrxodaxx4vwqircuxpza5ri45ws3y5a62ypxti42e\n",
        "bad-line": f"# ok\n{v1}\nnot-a-cid\n",
        "bad-version": "version: 2\n---\n",
        "bad-yaml": "a: [unclosed\n---\n",
        "crlf": f"---\r\n{v1}\r\n!{v1}\r\n",
    }
    for name, text in lists.items():
        write("denylist", name, text.encode())

    # byte_range: [selector, total (8 bytes LE)] + Range value [+ "\n" + If-Range value].
    def rng(total, value, if_range=None, wide=False):
        data = bytes([1 if wide else 0]) + struct.pack("<Q", total) + value.encode()
        return data + (b"\n" + if_range.encode() if if_range is not None else b"")

    ranges = [
        rng(10, "bytes=2-4"),
        rng(10, "bytes=7-"),
        rng(10, "bytes=-3"),
        rng(10, "bytes=-30"),
        rng(10, "bytes=20-30"),
        rng(10, "bytes=0-1,4-5"),
        rng(10, "bytes=5-3"),
        rng(0, "bytes=0-"),
        rng(10, "bytes=2-4", '"fuzz"'),
        rng(10, "bytes=2-4", '"other"'),
        rng(2**64 - 1, "bytes=18446744073709551614-", wide=True),
        rng(2**40, "bytes=-18446744073709551615", wide=True),
        rng(10, "lines=1-2"),
    ]
    for i, data in enumerate(ranges):
        write("byte_range", f"range-{i:02}", data)

    # thumbnail_probe: [content type selector] + image (see SOURCE_TYPES in src/fuzzing.rs).
    selectors = {".jpg": 0, ".png": 1, ".gif": 2, ".webp": 3, ".bmp": 6}
    for image in sorted((FIXTURES / "images").iterdir()):
        if image.suffix in selectors:
            data = image.read_bytes()
            write("thumbnail_probe", image.name, bytes([selectors[image.suffix]]) + data)
            if len(data) < 4096:
                small = bytes([selectors[image.suffix] | 8]) + data
                write("thumbnail_probe", image.stem + "-small-limits", small)


if __name__ == "__main__":
    main()
