"""Issue #5: federation media requests, signed with a key the suite controls.

A remote origin (`support.fedsign.Origin`: a fresh server name and ed25519 key) signs
`GET /_matrix/federation/v1/media/download/...` with X-Matrix; its verify key is placed in the
suite's Synapse's key store as a federation key fetch would (see fedsign.py for why), so
Synapse checks these signatures for real. The proxy forwards each federation request to
Synapse first and serves ipfs media only when Synapse, having authenticated it, says 404.

Checked: ipfs media comes back as `multipart/mixed` that Python's `email` parser reads as
`{}` + the exact bytes; Synapse's own answer for ordinary media has the same layout; a forged
signature or wrong destination gets Synapse's 401 through the proxy and no media; the
`ipfs_<cid>` alias works on the legacy, authenticated and federation routes.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import time

import pytest
import requests

from support.fedsign import Origin, forge

TIMEOUT = 30
FED_DOWNLOAD = "/_matrix/federation/v1/media/download"
FED_THUMBNAIL = "/_matrix/federation/v1/media/thumbnail"
#: what Synapse and the proxy put in the Content-Type of a federation media answer
MULTIPART = re.compile(r"^multipart/mixed; boundary=([0-9A-Za-z'()+_,\-./:=?]+)$")
IMAGE_KEYS = ("png", "jpeg", "gif")


@pytest.fixture(scope="module")
def origin(synapse) -> Origin:
    """A remote server whose key our Synapse holds (fresh for each pass's Synapse)."""
    made = Origin.fresh()
    made.register_with(synapse.dir / "homeserver.db")
    return made


@pytest.fixture(scope="module")
def ordinary_png(synapse, alice, samples) -> str:
    """The PNG sample uploaded to Synapse the ordinary way by alice; its media ID."""
    response = requests.post(
        synapse.url + "/_matrix/media/v3/upload",
        params={"filename": "ordinary.png"},
        data=samples["png"].data,
        headers={"Authorization": f"Bearer {alice.token}", "Content-Type": "image/png"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()["content_uri"].rsplit("/", 1)[1]


def signed_get(base: str, path: str, origin: Origin, synapse, authorization: str | None = None,
               **kwargs) -> requests.Response:
    """GET `path` (raw path and query, exactly as signed) from `base`, signed by `origin`."""
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("allow_redirects", False)
    if authorization is None:
        authorization = origin.authorization("GET", path, synapse.server_name)
    return requests.get(base + path, headers={"Authorization": authorization}, **kwargs)


def parse_multipart(response: requests.Response) -> tuple[str, list]:
    """The boundary and the parts of a federation media answer, read by a real MIME parser."""
    what = f"{response.request.method} {response.request.path_url.split('?')[0]}"
    assert response.status_code == 200, f"{what}: {response.status_code} {response.text[:300]}"
    content_type = response.headers.get("Content-Type", "")
    match = MULTIPART.match(content_type)
    assert match, f"{what}: Content-Type {content_type!r} (multipart/mixed, unquoted boundary last)"
    assert response.headers.get("Content-Length") == str(len(response.content)), what
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + response.content
    )
    assert message.is_multipart(), what
    assert not message.defects, f"{what}: {message.defects}"
    parts = message.get_payload()
    assert len(parts) == 2, f"{what}: {len(parts)} parts"
    return match.group(1), parts


def check_media_parts(parts: list, mime: str, data: bytes, what: str) -> None:
    metadata, media = parts
    assert metadata.get_content_type() == "application/json", what
    assert json.loads(metadata.get_payload(decode=True)) == {}, what
    assert media.get_content_type() == mime, f"{what}: part 2 is {media.get('Content-Type')}"
    body = media.get_payload(decode=True)
    assert len(body) == len(data), f"{what}: {len(body)} bytes, not {len(data)}"
    assert body == data, f"{what}: bytes differ"


def skeleton(response: requests.Response, boundary: str, data: bytes) -> bytes:
    """The answer's body with the boundary, the media bytes and the file name masked."""
    body = response.content
    assert body.count(data) == 1, "the media appears exactly once"
    body = body.replace(data, b"<MEDIA>").replace(boundary.encode(), b"<BOUNDARY>")
    # Synapse names the file it was given at upload; ipfs media has no name
    return re.sub(rb"(Content-Disposition: [a-z]+)[^\r\n]*", rb"\1", body)


@pytest.mark.noauth_too
@pytest.mark.parametrize("key", IMAGE_KEYS + ("text",))
def test_signed_download_of_ipfs_media_is_multipart(proxy, synapse, origin, samples, key):
    sample = samples[key]
    path = f"{FED_DOWNLOAD}/ipfs:{sample.cid}"
    mark = proxy.log_mark()
    response = signed_get(proxy.url, path, origin, synapse)
    boundary, parts = parse_multipart(response)
    mime = sample.mime or "text/plain"
    check_media_parts(parts, mime, sample.data, f"{key} {path}")
    assert boundary not in sample.data.decode("latin-1")
    # the proxy answered it (Synapse has no such media), after Synapse authenticated it
    [line] = proxy.wait_access(mark, f"ipfs:{sample.cid}")
    assert line.get("route") == "federation", line
    assert str(line.get("status")) == "200", line


@pytest.mark.noauth_too
def test_synapse_answers_ordinary_media_with_the_same_layout(proxy, synapse, origin, samples, ordinary_png):
    sample = samples["png"]
    # Synapse itself, for media alice uploaded to it
    direct = signed_get(synapse.url, f"{FED_DOWNLOAD}/{ordinary_png}", origin, synapse)
    direct_boundary, direct_parts = parse_multipart(direct)
    check_media_parts(direct_parts, "image/png", sample.data, "Synapse, ordinary media")
    # the same ordinary request through the proxy: passed through (Synapse's own answer)
    passed = signed_get(proxy.url, f"{FED_DOWNLOAD}/{ordinary_png}", origin, synapse)
    passed_boundary, passed_parts = parse_multipart(passed)
    check_media_parts(passed_parts, "image/png", sample.data, "through the proxy, ordinary media")
    # the proxy's own answer for the same bytes on IPFS
    ours = signed_get(proxy.url, f"{FED_DOWNLOAD}/ipfs:{sample.cid}", origin, synapse)
    ours_boundary, ours_parts = parse_multipart(ours)
    check_media_parts(ours_parts, "image/png", sample.data, "through the proxy, ipfs media")

    # part headers: the same names in the same order, the same media type and disposition type
    for theirs, mine in zip(direct_parts, ours_parts):
        assert [name.lower() for name in mine.keys()] == [name.lower() for name in theirs.keys()], (
            f"part headers: proxy {mine.items()}, Synapse {theirs.items()}"
        )
        assert mine.get_content_type() == theirs.get_content_type()
        assert (mine.get_content_disposition() or "") == (theirs.get_content_disposition() or "")
    # byte layout: preamble, CRLFs, closing delimiter and epilogue as Synapse writes them
    theirs = skeleton(direct, direct_boundary, sample.data)
    mine = skeleton(ours, ours_boundary, sample.data)
    assert mine == theirs, f"layout differs:\nproxy:   {mine!r}\nSynapse: {theirs!r}"
    assert skeleton(passed, passed_boundary, sample.data) == theirs
    # boundaries: fresh for each answer
    assert len({direct_boundary, passed_boundary, ours_boundary}) == 3


@pytest.mark.noauth_too
def test_forged_signature_gets_synapses_401_and_no_media(proxy, synapse, origin, samples, ordinary_png):
    sample = samples["png"]
    path = f"{FED_DOWNLOAD}/ipfs:{sample.cid}"
    forged = forge(origin.authorization("GET", path, synapse.server_name))
    # Synapse's answer to this exact forged request, and to a forged one for its own media
    reference = signed_get(synapse.url, path, origin, synapse, authorization=forged)
    own_path = f"{FED_DOWNLOAD}/{ordinary_png}"
    own = signed_get(synapse.url, own_path, origin, synapse,
                     authorization=forge(origin.authorization("GET", own_path, synapse.server_name)))
    assert reference.status_code == 401, f"Synapse: {reference.status_code} {reference.text[:300]}"
    assert own.status_code == 401 and own.json()["errcode"] == reference.json()["errcode"], own.text

    mark = proxy.log_mark()
    ours = signed_get(proxy.url, path, origin, synapse, authorization=forged)
    assert ours.status_code == 401, f"proxy: {ours.status_code} {ours.headers} {ours.content[:300]!r}"
    assert ours.headers.get("Content-Type", "").startswith("application/json"), ours.headers
    assert ours.json() == reference.json(), (ours.text, reference.text)
    assert sample.data not in ours.content
    [line] = proxy.wait_access(mark, f"ipfs:{sample.cid}")
    assert str(line.get("status")) == "401", line
    assert int(line.get("bytes", 0)) == len(ours.content), line


@pytest.mark.noauth_too
@pytest.mark.parametrize("case", ["unsigned", "wrong-destination", "other-path"])
def test_other_bad_federation_requests_are_refused_like_synapse(proxy, synapse, origin, samples, case):
    """No signature, a signature for another destination, a signature for another request."""
    sample = samples["png"]
    path = f"{FED_DOWNLOAD}/ipfs:{sample.cid}"
    headers: dict[str, str] = {}
    if case == "wrong-destination":
        headers["Authorization"] = origin.authorization("GET", path, "other.example")
    elif case == "other-path":
        headers["Authorization"] = origin.authorization("GET", f"{FED_DOWNLOAD}/ipfs:{samples['gif'].cid}",
                                                        synapse.server_name)
    reference = requests.get(synapse.url + path, headers=headers, timeout=TIMEOUT)
    ours = requests.get(proxy.url + path, headers=headers, timeout=TIMEOUT)
    assert reference.status_code in (400, 401, 403), f"Synapse: {reference.status_code} {reference.text}"
    assert ours.status_code == reference.status_code, f"proxy {ours.status_code} {ours.content[:300]!r}"
    assert ours.json()["errcode"] == reference.json()["errcode"], (ours.text, reference.text)
    assert sample.data not in ours.content


@pytest.mark.noauth_too
def test_alias_form_on_legacy_authenticated_and_federation_routes(proxy, synapse, origin, bob, samples):
    sample = samples["jpeg"]
    alias = f"ipfs_{sample.cid}"
    legacy = requests.get(f"{proxy.url}/_matrix/media/v3/download/localhost/{alias}", timeout=TIMEOUT)
    authenticated = requests.get(f"{proxy.url}/_matrix/client/v1/media/download/localhost/{alias}",
                                 headers=bob.auth(), timeout=TIMEOUT)
    colon = requests.get(f"{proxy.url}/_matrix/client/v1/media/download/localhost/ipfs:{sample.cid}",
                         headers=bob.auth(), timeout=TIMEOUT)
    for response in (legacy, authenticated, colon):
        what = response.request.path_url
        assert response.status_code == 200, f"{what}: {response.status_code} {response.text[:300]}"
        assert response.content == sample.data, f"{what}: bytes differ"
        assert response.headers.get("Content-Type", "").split(";")[0] == "image/jpeg", what
        # one content, one ETag, whichever form names it
        assert response.headers.get("ETag") == f'"{sample.cid}"', what

    # on federation: the alias, and the colon raw and percent-encoded
    for media_id in (alias, f"ipfs:{sample.cid}", f"ipfs%3A{sample.cid}"):
        federation = signed_get(proxy.url, f"{FED_DOWNLOAD}/{media_id}", origin, synapse)
        _, parts = parse_multipart(federation)
        check_media_parts(parts, "image/jpeg", sample.data, f"{FED_DOWNLOAD}/{media_id}")


@pytest.mark.noauth_too
def test_federation_thumbnail_of_ipfs_media_is_multipart(proxy, synapse, origin, samples, ordinary_png):
    """Thumbnails over federation: multipart too, the same image size Synapse gives for the
    same PNG it holds."""
    from io import BytesIO

    from PIL import Image

    sample = samples["png"]
    query = "?width=32&height=32&method=crop"
    direct = signed_get(synapse.url, f"{FED_THUMBNAIL}/{ordinary_png}{query}", origin, synapse)
    ours = signed_get(proxy.url, f"{FED_THUMBNAIL}/ipfs:{sample.cid}{query}", origin, synapse)
    sizes = []
    for response in (direct, ours):
        _, parts = parse_multipart(response)
        metadata, media = parts
        assert json.loads(metadata.get_payload(decode=True)) == {}
        image = Image.open(BytesIO(media.get_payload(decode=True)))
        assert media.get_content_type() == Image.MIME[image.format], media.items()
        sizes.append((media.get_content_type(), image.size))
    assert sizes[1] == sizes[0], f"proxy {sizes[1]}, Synapse {sizes[0]}"



@pytest.mark.noauth_too
def test_federation_errors_for_ipfs_ids(proxy, synapse, origin, samples):
    """Signed and accepted by Synapse (which has no such media), then the proxy's own errors."""
    from support.media import unknown_cid

    cases = [
        (f"{FED_DOWNLOAD}/ipfs:notacid", 404, "M_NOT_FOUND"),
        (f"{FED_DOWNLOAD}/ipfs:{unknown_cid()}?timeout_ms=1500", 504, "M_NOT_YET_UPLOADED"),
        (f"{FED_THUMBNAIL}/ipfs:{samples['png'].cid}", 400, "M_MISSING_PARAM"),
        (f"{FED_THUMBNAIL}/ipfs:{samples['html'].cid}?width=96&height=96&method=crop", 400, "M_UNKNOWN"),
    ]
    for path, status, errcode in cases:
        started = time.monotonic()
        response = signed_get(proxy.url, path, origin, synapse)
        took = time.monotonic() - started
        assert response.status_code == status, f"{path}: {response.status_code} {response.text[:300]}"
        assert response.json()["errcode"] == errcode, f"{path}: {response.text[:300]}"
        assert "immutable" not in response.headers.get("Cache-Control", ""), path
        assert took < 15, f"{path}: {took:.1f}s"


@pytest.mark.noauth_too
def test_unstable_federation_route_answered_as_synapse_answers(proxy, synapse, origin, samples):
    """Synapse 1.163 has no `org.matrix.msc3916.v2` federation media route: its answer
    (404 M_UNRECOGNIZED) comes back unchanged, and no media is served."""
    path = f"/_matrix/federation/unstable/org.matrix.msc3916.v2/media/download/ipfs:{samples['png'].cid}"
    direct = signed_get(synapse.url, path, origin, synapse)
    ours = signed_get(proxy.url, path, origin, synapse)
    assert ours.status_code == direct.status_code, f"proxy {ours.status_code}, Synapse {direct.status_code}"
    assert ours.json() == direct.json(), (ours.text, direct.text)
    assert samples["png"].data not in ours.content
