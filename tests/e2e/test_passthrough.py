"""Scenario 1: for everything that is not ipfs media the proxy is invisible.

The same request is sent to Synapse directly and through the proxy; both answers must have the
same status, the same headers (less Date and hop-by-hop ones) and the same body (JSON compared
with event/room/media IDs, tokens and timestamps masked where two requests create two things).
"""

from __future__ import annotations

import io
import random
import uuid

import pytest
import requests
from nio import DownloadResponse, RoomSendResponse, UploadResponse

from support.matrix import assert_same_answer, normalize, sync_until, timeline_events

TIMEOUT = 30


def both(synapse, proxy, method: str, path: str, **kwargs) -> tuple[requests.Response, requests.Response]:
    """The same request, first to Synapse, then through the proxy."""
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("allow_redirects", False)
    direct = requests.request(method, synapse.url + path, **kwargs)
    proxied = requests.request(method, proxy.url + path, **kwargs)
    return direct, proxied


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.noauth_too
@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/client/versions",
        "/_matrix/client/v3/login",
        "/_matrix/federation/v1/version",
        "/_matrix/client/v3/capabilities",  # needs a token: the same 401
        "/_matrix/client/v3/no/such/endpoint",  # 404 M_UNRECOGNIZED
        "/_matrix/client/v3/directory/room/%23nowhere%3Alocalhost",  # encoded path kept as sent
        "/_matrix/media/v3/config",
    ],
)
def test_get_answers_are_identical(synapse, proxy, path):
    mark = proxy.log_mark()
    direct, proxied = both(synapse, proxy, "GET", path)
    assert_same_answer(direct, proxied)
    line = proxy.wait_access(mark, path)[-1]
    assert line.get("route") == "passthrough" and line.get("status") == direct.status_code, line


@pytest.mark.noauth_too
def test_cors_preflight_is_identical(synapse, proxy):
    headers = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    direct, proxied = both(synapse, proxy, "OPTIONS", "/_matrix/client/v3/createRoom", headers=headers)
    assert_same_answer(direct, proxied)


def test_register_and_login_through_the_proxy(synapse, proxy):
    """Shared-secret registration and password login answer the same with and without the proxy."""
    tag = uuid.uuid4().hex[:8]
    direct = requests.post(
        synapse.url + "/_synapse/admin/v1/register",
        json=synapse.register_request(f"pt_{tag}", "pw-one"),
        timeout=TIMEOUT,
    )
    proxied = requests.post(
        proxy.url + "/_synapse/admin/v1/register",
        json=synapse.register_request(f"pt_{tag}_p", "pw-one"),
        timeout=TIMEOUT,
    )
    assert (direct.status_code, proxied.status_code) == (200, 200), (direct.text, proxied.text)
    assert proxied.json()["user_id"] == f"@pt_{tag}_p:localhost"
    assert set(proxied.json()) == set(direct.json())

    # a replayed nonce is refused the same way
    body = synapse.register_request(f"pt_{tag}_r", "pw-one")
    assert requests.post(synapse.url + "/_synapse/admin/v1/register", json=body, timeout=TIMEOUT).ok
    replay_direct = requests.post(synapse.url + "/_synapse/admin/v1/register", json=body, timeout=TIMEOUT)
    replay_proxied = requests.post(proxy.url + "/_synapse/admin/v1/register", json=body, timeout=TIMEOUT)
    assert_same_answer(replay_direct, replay_proxied)

    def login(base: str, user: str, password: str) -> requests.Response:
        return requests.post(
            base + "/_matrix/client/v3/login",
            json={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                  "password": password},
            timeout=TIMEOUT,
        )

    ok_direct, ok_proxied = login(synapse.url, f"pt_{tag}", "pw-one"), login(proxy.url, f"pt_{tag}", "pw-one")
    assert_same_answer(ok_direct, ok_proxied, normalize_json=True)
    bad_direct, bad_proxied = login(synapse.url, f"pt_{tag}", "wrong"), login(proxy.url, f"pt_{tag}", "wrong")
    assert bad_proxied.status_code == 403
    assert_same_answer(bad_direct, bad_proxied)


@pytest.mark.noauth_too
def test_token_checks_are_identical(synapse, proxy, alice):
    whoami = "/_matrix/client/v3/account/whoami"
    assert_same_answer(*both(synapse, proxy, "GET", whoami, headers=bearer(alice.token)))
    assert_same_answer(*both(synapse, proxy, "GET", whoami, params={"access_token": alice.token}))
    assert_same_answer(*both(synapse, proxy, "GET", whoami, headers=bearer("syt_not_a_token")))
    assert_same_answer(*both(synapse, proxy, "GET", whoami))


def test_room_calls_are_identical(synapse, proxy, alice):
    """createRoom, send, messages, state and sync: direct and proxied answers match."""
    auth = bearer(alice.token)
    created = {}
    for name, base in (("direct", synapse.url), ("proxied", proxy.url)):
        created[name] = requests.post(
            base + "/_matrix/client/v3/createRoom", json={"name": f"pt-{name}"}, headers=auth, timeout=TIMEOUT
        )
    assert_same_answer(created["direct"], created["proxied"], normalize_json=True)
    room_id = created["proxied"].json()["room_id"]

    sends = []
    for index, base in enumerate((synapse.url, proxy.url)):
        sends.append(requests.put(
            f"{base}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/txn-{uuid.uuid4().hex}",
            json={"msgtype": "m.text", "body": f"hello {index} ünïcödé"},
            headers=auth,
            timeout=TIMEOUT,
        ))
    assert_same_answer(sends[0], sends[1], normalize_json=True)

    # Reads of the same state give the same answer byte for byte, up to event ages.
    for path, params in (
        (f"/_matrix/client/v3/rooms/{room_id}/messages", {"dir": "b", "limit": "20"}),
        (f"/_matrix/client/v3/rooms/{room_id}/state", {}),
        (f"/_matrix/client/v3/rooms/{room_id}/joined_members", {}),
        ("/_matrix/client/v3/sync", {"filter": '{"room":{"rooms":["%s"]}}' % room_id}),
    ):
        direct, proxied = both(synapse, proxy, "GET", path, params=params, headers=auth)
        assert direct.status_code == 200, direct.text
        assert_same_answer(direct, proxied, normalize_json=True)
    messages = requests.get(
        f"{proxy.url}/_matrix/client/v3/rooms/{room_id}/messages", params={"dir": "b"}, headers=auth, timeout=TIMEOUT
    ).json()
    bodies = [event["content"].get("body") for event in messages["chunk"]]
    assert "hello 1 ünïcödé" in bodies and "hello 0 ünïcödé" in bodies, messages


def test_nio_chat_and_ordinary_media_through_the_proxy(aio, alice, bob, room):
    """Alice and bob, both on nio through the proxy: messages and ordinary (Synapse) media."""
    start = sync_until(aio, bob.nio, lambda response: True)
    text = f"plain message {uuid.uuid4().hex}"
    sent = aio(alice.nio.room_send(room, "m.room.message", {"msgtype": "m.text", "body": text}))
    assert isinstance(sent, RoomSendResponse), sent

    data = b"ordinary media bytes \x00\x01\x02" * 1000
    uploaded, _keys = aio(alice.nio.upload(io.BytesIO(data), content_type="application/octet-stream",
                                           filename="ordinary.bin", filesize=len(data)))
    assert isinstance(uploaded, UploadResponse), uploaded
    assert uploaded.content_uri.startswith("mxc://localhost/")
    assert ":" not in uploaded.content_uri.rsplit("/", 1)[1]  # an ordinary Synapse media ID
    media_event = aio(alice.nio.room_send(room, "m.room.message", {
        "msgtype": "m.file", "body": "ordinary.bin", "url": uploaded.content_uri, "info": {"size": len(data)},
    }))
    assert isinstance(media_event, RoomSendResponse), media_event

    seen = {}

    def found(response) -> bool:
        for event in timeline_events(response, room):
            if event.get("event_id") in (sent.event_id, media_event.event_id):
                seen[event["event_id"]] = event["content"]
        return len(seen) == 2

    sync_until(aio, bob.nio, found, since=start.next_batch)
    assert seen[sent.event_id]["body"] == text
    url = seen[media_event.event_id]["url"]
    assert url == uploaded.content_uri

    downloaded = aio(bob.nio.download(mxc=url))
    assert isinstance(downloaded, DownloadResponse), downloaded
    assert downloaded.body == data
    assert downloaded.filename == "ordinary.bin"


@pytest.fixture(scope="module")
def ordinary_media(synapse, alice):
    """A small PNG uploaded to Synapse in the ordinary way: (media ID, bytes)."""
    from support.media import png

    data = png()
    response = requests.post(
        synapse.url + "/_matrix/media/v3/upload",
        params={"filename": "ordinary.png"},
        data=data,
        headers={**bearer(alice.token), "Content-Type": "image/png"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()["content_uri"].rsplit("/", 1)[1], data


@pytest.mark.noauth_too
def test_ordinary_media_downloads_are_identical(synapse, proxy, bob, ordinary_media):
    media_id, data = ordinary_media
    auth = bearer(bob.token)
    cases = [
        (f"/_matrix/client/v1/media/download/localhost/{media_id}", auth),
        (f"/_matrix/client/v1/media/download/localhost/{media_id}/other-name.png", auth),
        (f"/_matrix/client/v1/media/download/localhost/{media_id}", {}),  # 401
        (f"/_matrix/client/v1/media/thumbnail/localhost/{media_id}?width=32&height=32&method=crop", auth),
        (f"/_matrix/media/v3/download/localhost/{media_id}", {}),
        (f"/_matrix/media/v3/download/localhost/{media_id}/other-name.png", {}),
        (f"/_matrix/media/r0/download/localhost/{media_id}", {}),
        (f"/_matrix/media/v3/thumbnail/localhost/{media_id}?width=32&height=32", {}),
        ("/_matrix/client/v1/media/download/localhost/NoSuchMediaIdHere", auth),
    ]
    for path, headers in cases:
        direct, proxied = both(synapse, proxy, "GET", path, headers=headers)
        assert_same_answer(direct, proxied)
        # Synapse has no Range support: the proxy must not add any to Synapse's media either
        ranged = both(synapse, proxy, "GET", path, headers={**headers, "Range": "bytes=0-9"})
        assert_same_answer(*ranged)

    authenticated = requests.get(
        proxy.url + f"/_matrix/client/v1/media/download/localhost/{media_id}", headers=auth, timeout=TIMEOUT
    )
    assert authenticated.status_code == 200 and authenticated.content == data
    legacy = requests.get(proxy.url + f"/_matrix/media/v3/download/localhost/{media_id}", timeout=TIMEOUT)
    if synapse.auth_media:
        # media uploaded while authenticated media is on is not served on the legacy routes
        assert legacy.status_code == 404, legacy.text
    else:
        assert legacy.status_code == 200 and legacy.content == data


@pytest.mark.noauth_too
def test_large_upload_through_the_proxy(synapse, proxy, alice):
    """A request body of several MiB reaches Synapse intact through the proxy."""
    data = random.randbytes(8 * 1024 * 1024 + 3)
    uploaded = requests.post(
        proxy.url + "/_matrix/media/v3/upload",
        params={"filename": "big.bin"},
        data=data,
        headers={**bearer(alice.token), "Content-Type": "application/octet-stream"},
        timeout=120,
    )
    assert uploaded.status_code == 200, uploaded.text
    media_id = uploaded.json()["content_uri"].rsplit("/", 1)[1]
    direct = requests.get(f"{synapse.url}/_matrix/client/v1/media/download/localhost/{media_id}",
                          headers=bearer(alice.token), timeout=120)
    assert direct.status_code == 200
    assert len(direct.content) == len(data) and direct.content == data


def test_json_masking_is_not_too_lenient():
    """The masking used above keeps what matters: bodies and keys still count."""
    assert normalize({"event_id": "$abc"}) == normalize({"event_id": "$xyz"})
    assert normalize({"body": "a"}) != normalize({"body": "b"})
    assert normalize({"room_id": "!a:localhost"}) != normalize({"room": "!a:localhost"})
