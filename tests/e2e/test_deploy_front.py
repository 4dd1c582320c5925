"""Issues #8 and #18: the shipped reverse-proxy configs in front of the real stack, both ways
to route: everything through the proxy, and media only (the rest straight to Synapse).
Debian nginx with `deploy/nginx/ipfs-media-proxy{,-media-only}.conf` and Debian Caddy with
`deploy/caddy/Caddyfile`'s snippets
(plain HTTP on 127.0.0.1, see support/fronts.py) in front of the suite's proxy, which is in
front of Synapse. Through each front a client logs in, makes a room, posts an ipfs media event,
finds it by syncing and downloads it on the legacy and authenticated routes: the exact bytes
and the proxy's media headers. The client connects from 127.0.0.2, and Synapse must log that
address (X-Forwarded-For survives front -> proxy -> Synapse).
"""

from __future__ import annotations

import random
import secrets
import time
from urllib.parse import quote

import pytest

from support import media
from support.fronts import Front, client_session
from support.procs import wait_until

TIMEOUT = 30
CLIENT_ADDRESS = "127.0.0.2"  # loopback too; only the source of the client's connections


@pytest.fixture(params=[("nginx", "all"), ("caddy", "all"), ("nginx", "media-only"), ("caddy", "media-only")],
                ids=lambda param: "-".join(param))
def front(request, proxy, synapse, env):
    kind, mode = request.param
    if Front.binary(kind) is None:
        pytest.skip(f"{kind} is not installed (Debian package `{kind}`)")
    homeserver_port = int(synapse.url.rsplit(":", 1)[1].rstrip("/"))
    server = Front(kind, proxy.port, env.log_dir, env.pid_dir, mode=mode, homeserver_port=homeserver_port)
    try:
        yield server.start()
    finally:
        server.stop()


def check_media(response, data: bytes, cid: str, filename: str | None = None) -> None:
    what = f"{response.request.method} {response.request.path_url.split('?')[0]}"
    assert response.status_code == 200, f"{what}: {response.status_code} {response.text[:300]}"
    assert response.content == data, f"{what}: bytes differ ({len(response.content)} of {len(data)})"
    headers = response.headers
    assert headers.get("Content-Type", "").split(";")[0] == "image/png", what
    assert headers.get("Content-Security-Policy", "").startswith("sandbox;"), what
    assert headers.get("Cross-Origin-Resource-Policy") == "cross-origin", what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Access-Control-Allow-Origin") == "*", what
    assert headers.get("ETag") == f'"{cid}"', what
    assert "immutable" in headers.get("Cache-Control", ""), what
    disposition = headers.get("Content-Disposition", "")
    assert disposition.startswith("inline"), f"{what}: {disposition}"
    if filename:
        assert filename in disposition, f"{what}: {disposition}"


def test_matrix_and_ipfs_media_through_the_front(front, proxy, synapse, ipfs):
    base = front.url
    # a PNG with a random tail (PNG decoders ignore what follows IEND): a CID of its own
    data = media.png() + random.randbytes(64)
    cid = ipfs.add(data, "front.png")
    account = synapse.register(f"front-{front.kind}-{secrets.token_hex(3)}")
    start = proxy.log_mark()

    with client_session(CLIENT_ADDRESS) as http:
        versions = http.get(f"{base}/_matrix/client/versions", timeout=TIMEOUT)
        assert versions.status_code == 200 and "versions" in versions.json(), versions.text[:300]

        login = http.post(f"{base}/_matrix/client/v3/login", json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": account.localpart},
            "password": account.password,
        }, timeout=TIMEOUT)
        assert login.status_code == 200, f"login: {login.status_code} {login.text[:300]}"
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}

        # X-Forwarded-For: the front puts the client's address first, the proxy keeps it
        marker = secrets.token_hex(6)
        whoami = http.get(f"{base}/_matrix/client/v3/account/whoami", params={"e2e": marker},
                          headers=auth, timeout=TIMEOUT)
        assert whoami.status_code == 200 and whoami.json()["user_id"] == account.user_id, whoami.text

        def synapse_line() -> str | None:
            for line in synapse.log_file.read_text(errors="replace").splitlines():
                if marker in line and "Processed request" in line:
                    return line
            return None

        line = wait_until(synapse_line, 10, f"Synapse's access log line for whoami?e2e={marker}")
        assert f"- {CLIENT_ADDRESS} - " in line, f"Synapse did not see the client's address: {line}"

        # a room, an ipfs media event, found again by syncing through the front
        room = http.post(f"{base}/_matrix/client/v3/createRoom", json={"name": f"via {front.kind}"},
                         headers=auth, timeout=TIMEOUT)
        assert room.status_code == 200, room.text[:300]
        room_id = room.json()["room_id"]
        sync = http.get(f"{base}/_matrix/client/v3/sync", params={"timeout": "0"}, headers=auth,
                        timeout=TIMEOUT)
        assert sync.status_code == 200, sync.text[:300]
        since = sync.json()["next_batch"]
        mxc = f"mxc://localhost/ipfs:{cid}"
        sent = http.put(
            f"{base}/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/{marker}",
            json={"msgtype": "m.image", "body": "front.png", "url": mxc,
                  "info": {"mimetype": "image/png", "size": len(data)}},
            headers=auth, timeout=TIMEOUT,
        )
        assert sent.status_code == 200, sent.text[:300]
        event_id = sent.json()["event_id"]

        found = None
        deadline = time.monotonic() + 30
        while found is None and time.monotonic() < deadline:
            response = http.get(f"{base}/_matrix/client/v3/sync",
                                params={"since": since, "timeout": "2000"}, headers=auth, timeout=TIMEOUT)
            assert response.status_code == 200, response.text[:300]
            body = response.json()
            since = body["next_batch"]
            events = body.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {}).get("events", [])
            found = next((event for event in events if event.get("event_id") == event_id), None)
        assert found is not None, "the ipfs media event did not come back in sync through the front"
        server_name, media_id = found["content"]["url"][len("mxc://"):].split("/", 1)
        assert media_id == f"ipfs:{cid}"

        # The capabilities answer is the proxy's in both modes (it edits it when advertising).
        capabilities = http.get(f"{base}/_matrix/client/v3/capabilities", headers=auth, timeout=TIMEOUT)
        assert capabilities.status_code == 200, capabilities.text[:300]
        proxy.wait_access(start, "/_matrix/client/v3/capabilities")
        # Which of the earlier requests went through the proxy: all, or (media-only) none.
        passed = [line.get("path", "") for line in proxy.access_lines(start)]
        for path in ("/_matrix/client/v3/login", "/_matrix/client/v3/createRoom", "/_matrix/client/v3/sync"):
            if front.mode == "all":
                assert path in passed, f"{path} did not pass through the proxy: {passed}"
            else:
                assert path not in passed, f"media-only: {path} went through the proxy"

        # downloads: legacy (plain and with the colon encoded), authenticated, a range
        mark = proxy.log_mark()
        legacy = f"{base}/_matrix/media/v3/download/{server_name}"
        check_media(http.get(f"{legacy}/{media_id}", timeout=TIMEOUT), data, cid)
        check_media(http.get(f"{legacy}/{quote(media_id, safe='')}/front.png", timeout=TIMEOUT), data, cid,
                    "front.png")
        authed = f"{base}/_matrix/client/v1/media/download/{server_name}/{media_id}"
        check_media(http.get(authed, headers=auth, timeout=TIMEOUT), data, cid)
        ranged = http.get(authed, headers={**auth, "Range": "bytes=1-8"}, timeout=TIMEOUT)
        assert ranged.status_code == 206 and ranged.content == data[1:9], ranged.status_code
        unauthenticated = http.get(authed, timeout=TIMEOUT)
        assert unauthenticated.status_code == 401, unauthenticated.status_code
        assert unauthenticated.json().get("errcode") == "M_MISSING_TOKEN", unauthenticated.text

        # the proxy served them (not Synapse), the first from the node, the rest from its cache
        lines = proxy.wait_access(mark, cid, count=5)
        assert [line.get("route") for line in lines] == ["download"] * 5, lines
        assert lines[0].get("cache") == "miss" and {line.get("cache") for line in lines[1:4]} == {"hit"}, lines
        # nginx forwards the raw path: the encoded colon reaches the proxy as sent
        assert any("ipfs%3A" in line.get("path", "") for line in lines), [line.get("path") for line in lines]
