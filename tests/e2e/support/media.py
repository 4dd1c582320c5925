"""Sample media made on the spot (Pillow for images), and CID helpers."""

from __future__ import annotations

import base64
import hashlib
import io
import random
from dataclasses import dataclass, field

from PIL import Image

#: the server names alice's mxc:// URLs carry: ours, and one that does not exist
MEDIA_SERVERS = ("localhost", "elsewhere.example")

#: the only types a homeserver may serve `inline` (spec "Serving inline content", Synapse's
#: INLINE_CONTENT_TYPES); everything else must be an attachment
INLINE_TYPES = frozenset({
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave", "audio/wav",
    "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
})


@dataclass
class Sample:
    """One file the suite adds to IPFS, and what a download of it must look like."""

    key: str
    data: bytes = field(repr=False)
    filename: str
    #: the Content-Type the proxy should sniff (compared before any `;`), None to not check
    mime: str | None
    #: Content-Disposition type that must be sent ("inline"/"attachment"), None to not check
    disposition: str | None
    msgtype: str
    cid: str = ""


def png() -> bytes:
    image = Image.new("RGB", (64, 48))
    image.putdata([(x * 4, y * 5, (x + y) % 256) for y in range(48) for x in range(64)])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg_rotated() -> bytes:
    """A JPEG whose EXIF says 'rotate 90 degrees clockwise to display' (Orientation 6)."""
    image = Image.new("RGB", (80, 40), (200, 30, 30))
    for x in range(40):
        for y in range(40):
            image.putpixel((x, y), (30, 30, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85, exif=exif.tobytes())
    return out.getvalue()


def animated_gif() -> bytes:
    # RGB frames of distinct colours: palette images without a palette all come out black and
    # Pillow would merge them into one still frame.
    colours = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 200, 40)]
    frames = [Image.new("RGB", (32, 32), colour) for colour in colours]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def video_like(size: int, seed: int = 2706) -> bytes:
    """`size` bytes that start like an MP4 (an `ftyp` box) and go on pseudo-randomly."""
    ftyp = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
    return ftyp + random.Random(seed).randbytes(size - len(ftyp))


HTML = b"""<!DOCTYPE html>
<html><head><title>not for inline</title></head>
<body><script>document.title = 'ran'</script><p>hello</p></body></html>
"""

SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" viewBox="0 0 10 10">
  <script>document.title = 'ran'</script>
  <rect width="10" height="10" fill="red"/>
</svg>
"""

TEXT = "Grüße aus dem IPFS — ipfs-media-proxy e2e\n".encode("utf-8")

#: size of the big file: several UnixFS blocks (256 KiB chunks), not a multiple of a block
BIG_SIZE = 20 * 1024 * 1024 + 12345


#: the keys of `samples()`, for test ids (without making 20 MiB at collection time)
SAMPLE_KEYS = ("png", "jpeg", "gif", "video", "html", "svg", "text")


def samples() -> dict[str, Sample]:
    """The files of scenario 2, keyed by a short name used in test ids."""
    items = [
        Sample("png", png(), "pixels.png", "image/png", "inline", "m.image"),
        Sample("jpeg", jpeg_rotated(), "rotated.jpg", "image/jpeg", "inline", "m.image"),
        Sample("gif", animated_gif(), "animated.gif", "image/gif", "inline", "m.image"),
        Sample("video", video_like(BIG_SIZE), "clip.mp4", "video/mp4", "inline", "m.video"),
        Sample("html", HTML, "page.html", None, "attachment", "m.file"),
        Sample("svg", SVG, "drawing.svg", None, "attachment", "m.file"),
        Sample("text", TEXT, "Grüße – ünïcode.txt", None, None, "m.file"),
    ]
    assert tuple(item.key for item in items) == SAMPLE_KEYS
    return {item.key: item for item in items}


def cid_v1_raw(data: bytes) -> str:
    """The CIDv1 (raw codec, sha2-256, base32) of one raw block holding `data`."""
    digest = hashlib.sha256(data).digest()
    binary = bytes([0x01, 0x55, 0x12, 0x20]) + digest
    return "b" + base64.b32encode(binary).decode("ascii").lower().rstrip("=")


def unknown_cid() -> str:
    """A well-formed CID of random bytes that no node has."""
    return cid_v1_raw(random.randbytes(64))
