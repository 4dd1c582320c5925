"""Scenario 2: ipfs media, added to a real IPFS node, posted by alice, downloaded by bob.

Bob finds the `mxc://<server>/ipfs:<cid>` URLs by syncing through the proxy and downloads each
on the legacy routes, the authenticated route (header and query token) and with nio; the
bytes must be exactly what was added, with Synapse's security headers and the extra caching
headers content addressing allows.
"""

from __future__ import annotations

import random
import time
from urllib.parse import quote, unquote

import pytest
import requests
from nio import DownloadResponse

from support import media
from support.media import MEDIA_SERVERS, SAMPLE_KEYS, Sample

TIMEOUT = 60


def parse_mxc(url: str) -> tuple[str, str]:
    assert url.startswith("mxc://"), url
    server, media_id = url[len("mxc://"):].split("/", 1)
    return server, media_id


def disposition_filename(header: str) -> str | None:
    """The file name in a Content-Disposition header (`filename*=` preferred)."""
    params = [part.strip() for part in header.split(";")[1:]]
    for param in params:
        if param.lower().startswith("filename*="):
            value = param.split("=", 1)[1]
            charset, _, encoded = value.partition("''")
            assert charset.lower() == "utf-8", header
            return unquote(encoded, encoding="utf-8", errors="strict")
    for param in params:
        if param.lower().startswith("filename="):
            return param.split("=", 1)[1].strip('"')
    return None


def check_ipfs_response(response: requests.Response, sample: Sample, filename: str | None = None,
                        body: bool = True) -> None:
    """Everything an ipfs media download must say."""
    what = f"{sample.key} {response.request.method} {response.request.path_url.split('?')[0]}"
    assert response.status_code == 200, f"{what}: {response.status_code} {response.text[:300]}"
    if body:
        assert len(response.content) == len(sample.data), f"{what}: {len(response.content)} bytes"
        assert response.content == sample.data, f"{what}: bytes differ"
    headers = response.headers
    # Synapse's security headers
    assert headers.get("Content-Security-Policy", "").startswith("sandbox;"), what
    assert headers.get("Cross-Origin-Resource-Policy") == "cross-origin", what
    assert headers.get("Access-Control-Allow-Origin") == "*", what
    assert headers.get("Referrer-Policy") == "no-referrer", what
    assert "noindex" in headers.get("X-Robots-Tag", ""), what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    # content addressing: never changes
    cache_control = {part.strip() for part in headers.get("Cache-Control", "").split(",")}
    assert {"public", "max-age=31536000", "immutable"} <= cache_control, f"{what}: {cache_control}"
    assert headers.get("ETag") == f'"{sample.cid}"', what
    assert headers.get("Accept-Ranges") == "bytes", what
    assert headers.get("Content-Length") == str(len(sample.data)), what
    content_type = headers.get("Content-Type", "")
    if sample.mime:
        assert content_type.split(";")[0].strip() == sample.mime, f"{what}: Content-Type {content_type}"
    disposition = headers.get("Content-Disposition", "")
    kind = disposition.split(";")[0].strip().lower()
    assert kind in ("inline", "attachment"), f"{what}: Content-Disposition {disposition!r}"
    if sample.disposition:
        assert kind == sample.disposition, f"{what}: Content-Disposition {disposition!r}"
    if kind == "inline":
        assert content_type.split(";")[0].strip() in media.INLINE_TYPES, f"{what}: inline {content_type}"
    if filename is not None:
        assert disposition_filename(disposition) == filename, f"{what}: Content-Disposition {disposition!r}"
        if not filename.isascii():
            assert "filename*=utf-8''" in disposition.lower(), f"{what}: {disposition!r}"


# -- finding the media ---------------------------------------------------------------------------

def test_bob_finds_every_ipfs_event_in_sync(media_events, samples):
    assert len(media_events) == len(samples) * len(MEDIA_SERVERS)
    for (key, server), content in media_events.items():
        assert content["url"] == f"mxc://{server}/ipfs:{samples[key].cid}"


def test_node_gateway_serves_what_was_added(ipfs, samples):
    """Sanity check of the fixture itself: the node has every sample."""
    for sample in samples.values():
        assert ipfs.cat_via_gateway(sample.cid) == sample.data, sample.key
    assert samples["video"].cid.startswith("bafybei"), "the big file must be a multi-block dag-pb file"


# -- downloads -------------------------------------------------------------------------------------

@pytest.mark.noauth_too
@pytest.mark.parametrize("server", MEDIA_SERVERS)
@pytest.mark.parametrize("key", SAMPLE_KEYS)
def test_legacy_download(proxy, media_events, samples, key, server):
    sample = samples[key]
    _, media_id = parse_mxc(media_events[(key, server)]["url"])
    with requests.Session() as session:
        for version in ("v3", "r0", "v1"):
            base = f"{proxy.url}/_matrix/media/{version}/download/{server}"
            check_ipfs_response(session.get(f"{base}/{media_id}", timeout=TIMEOUT), sample)
            check_ipfs_response(
                session.get(f"{base}/{media_id}/{quote(sample.filename)}", timeout=TIMEOUT), sample, sample.filename
            )
        # the colon percent-encoded, as clients that encode path segments send it
        encoded = f"{proxy.url}/_matrix/media/v3/download/{server}/{quote(media_id, safe='')}"
        assert "%3A" in encoded
        check_ipfs_response(session.get(encoded, timeout=TIMEOUT), sample)


@pytest.mark.noauth_too
@pytest.mark.parametrize("server", MEDIA_SERVERS)
@pytest.mark.parametrize("key", SAMPLE_KEYS)
def test_authenticated_download(proxy, bob, media_events, samples, key, server):
    sample = samples[key]
    _, media_id = parse_mxc(media_events[(key, server)]["url"])
    base = f"{proxy.url}/_matrix/client/v1/media/download/{server}"
    with requests.Session() as session:
        check_ipfs_response(session.get(f"{base}/{media_id}", headers=bob.auth(), timeout=TIMEOUT), sample)
        check_ipfs_response(
            session.get(f"{base}/{quote(media_id, safe='')}/{quote(sample.filename)}", headers=bob.auth(),
                        timeout=TIMEOUT),
            sample,
            sample.filename,
        )
        # the deprecated query-parameter token
        check_ipfs_response(
            session.get(f"{base}/{media_id}", params={"access_token": bob.token}, timeout=TIMEOUT), sample
        )


@pytest.mark.parametrize("server", MEDIA_SERVERS)
@pytest.mark.parametrize("key", SAMPLE_KEYS)
def test_nio_download(aio, bob, media_events, samples, key, server):
    """matrix-nio 0.26 downloads from /_matrix/client/v1/media/download with a Bearer header and
    the media ID percent-encoded (`ipfs%3A<cid>`)."""
    sample = samples[key]
    url = media_events[(key, server)]["url"]
    plain = aio(bob.nio.download(mxc=url))
    assert isinstance(plain, DownloadResponse), f"{key}: {plain}"
    assert plain.body == sample.data, key
    if sample.mime:
        assert plain.content_type.split(";")[0] == sample.mime
    named = aio(bob.nio.download(mxc=url, filename=sample.filename))
    assert isinstance(named, DownloadResponse), f"{key}: {named}"
    assert named.body == sample.data, key
    assert named.filename == sample.filename



def both_download_routes(proxy, sample, bob):
    """The legacy download URL with no credentials, and the authenticated one with bob's."""
    return (
        (f"{proxy.url}/_matrix/media/v3/download/localhost/ipfs:{sample.cid}", {}),
        (f"{proxy.url}/_matrix/client/v1/media/download/localhost/ipfs:{sample.cid}", bob.auth()),
    )

@pytest.mark.noauth_too
def test_head_has_headers_and_no_body(proxy, samples, bob):
    sample = samples["png"]
    for url, headers in both_download_routes(proxy, sample, bob):
        response = requests.head(url, headers=headers, timeout=TIMEOUT)
        check_ipfs_response(response, sample, body=False)
        assert response.content == b""


@pytest.mark.noauth_too
def test_cors_preflight_like_synapse(proxy, synapse, samples, bob):
    """Browsers preflight the authenticated route (it carries Authorization): the proxy's own
    answer for ipfs media must allow what Synapse's answer for its own media allows."""
    upload = requests.post(synapse.url + "/_matrix/media/v3/upload", data=b"x" * 10,
                           headers={**bob.auth(), "Content-Type": "text/plain"}, timeout=TIMEOUT)
    assert upload.status_code == 200, upload.text
    ordinary = upload.json()["content_uri"].rsplit("/", 1)[1]
    headers = {
        "Origin": "https://app.element.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    route = "/_matrix/client/v1/media/download/localhost"
    reference = requests.options(f"{synapse.url}{route}/{ordinary}", headers=headers, timeout=TIMEOUT)
    ours = requests.options(f"{proxy.url}{route}/ipfs:{samples['png'].cid}", headers=headers, timeout=TIMEOUT)
    assert ours.status_code == reference.status_code == 204, (reference.status_code, ours.status_code)
    for name in ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"):
        assert ours.headers.get(name) == reference.headers.get(name), name


# -- ranges and revalidation -------------------------------------------------------------------------

@pytest.mark.noauth_too
def test_range_on_the_big_file(proxy, bob, samples):
    sample = samples["video"]
    size = len(sample.data)
    urls = [
        (f"{proxy.url}/_matrix/media/v3/download/localhost/ipfs:{sample.cid}", {}),
        (f"{proxy.url}/_matrix/client/v1/media/download/elsewhere.example/ipfs:{sample.cid}", bob.auth()),
    ]
    block = 256 * 1024
    for url, auth in urls:
        for first, last in ((1000, 1999), (block - 10, block + 9), (size - 100, size - 1), (0, 0)):
            response = requests.get(url, headers={**auth, "Range": f"bytes={first}-{last}"}, timeout=TIMEOUT)
            assert response.status_code == 206, f"bytes={first}-{last}: {response.status_code} {response.text[:200]}"
            assert response.headers.get("Content-Range") == f"bytes {first}-{last}/{size}"
            assert response.headers.get("Content-Length") == str(last - first + 1)
            assert response.content == sample.data[first:last + 1], f"bytes={first}-{last}"
            assert response.headers.get("ETag") == f'"{sample.cid}"'
        # open-ended and suffix ranges
        tail = requests.get(url, headers={**auth, "Range": f"bytes={size - 5000}-"}, timeout=TIMEOUT)
        assert tail.status_code == 206 and tail.content == sample.data[-5000:]
        suffix = requests.get(url, headers={**auth, "Range": "bytes=-777"}, timeout=TIMEOUT)
        assert suffix.status_code == 206 and suffix.content == sample.data[-777:]
        assert suffix.headers.get("Content-Range") == f"bytes {size - 777}-{size - 1}/{size}"
        # a range that starts past the end: 416 (or, as RFC 9110 allows, the Range ignored)
        past = requests.get(url, headers={**auth, "Range": f"bytes={size + 10}-"}, timeout=TIMEOUT)
        assert past.status_code in (416, 200), past.status_code
        if past.status_code == 416:
            assert past.headers.get("Content-Range") == f"bytes */{size}"
        else:
            assert past.content == sample.data


@pytest.mark.noauth_too
def test_if_none_match_gives_304(proxy, bob, samples):
    sample = samples["jpeg"]
    for url, auth in both_download_routes(proxy, sample, bob):
        response = requests.get(url, headers={**auth, "If-None-Match": f'"{sample.cid}"'}, timeout=TIMEOUT)
        assert response.status_code == 304, response.status_code
        assert response.content == b""
        assert response.headers.get("ETag") == f'"{sample.cid}"'
        other = requests.get(url, headers={**auth, "If-None-Match": '"somethingelse"'}, timeout=TIMEOUT)
        check_ipfs_response(other, sample)


# -- the cache -----------------------------------------------------------------------------------------

@pytest.mark.noauth_too
def test_repeated_download_is_a_cache_hit(proxy, ipfs):
    """The first download of a CID is a miss, the next ones hits: the proxy's access log says so."""
    data = random.randbytes(300_000)  # two UnixFS blocks
    cid = ipfs.add(data, "cache-me.bin")
    url = f"{proxy.url}/_matrix/media/v3/download/localhost/ipfs:{cid}"
    lines = []
    for attempt in range(3):
        mark = proxy.log_mark()
        response = requests.get(url, timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == data, attempt
        line = proxy.wait_access(mark, cid)[-1]
        lines.append(line)
    assert [line.get("cache") for line in lines] == ["miss", "hit", "hit"], lines
    for line in lines:
        assert line.get("route") == "download", line
        assert line.get("status") == 200, line
        # the client read every byte, and the line says so
        assert line.get("bytes") == len(data) and line.get("complete") is True, line


def test_cached_media_is_served_after_the_node_stops(start_ipfs, start_proxy):
    """With its own node and proxy: fetch, stop the node, fetch again from the cache."""
    node = start_ipfs()
    server = start_proxy([node.gateway])
    small = random.randbytes(5_000)
    multi = random.randbytes(1_500_000)  # six blocks
    never_fetched = random.randbytes(7_000)
    cids = {"small": node.add(small, "s.bin"), "multi": node.add(multi, "m.bin"),
            "never": node.add(never_fetched, "n.bin")}
    wanted = {"small": small, "multi": multi}
    for name, data in wanted.items():
        response = requests.get(f"{server.url}/_matrix/media/v3/download/localhost/ipfs:{cids[name]}",
                                timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == data, name

    node.stop()

    for name, data in wanted.items():
        mark = server.log_mark()
        response = requests.get(f"{server.url}/_matrix/media/v3/download/elsewhere.example/ipfs:{cids[name]}",
                                headers={"Range": "bytes=10-19"}, timeout=TIMEOUT)
        assert response.status_code == 206 and response.content == data[10:20], name
        response = requests.get(f"{server.url}/_matrix/media/v3/download/localhost/ipfs:{cids[name]}",
                                timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == data, name
        assert [line.get("cache") for line in server.wait_access(mark, cids[name], count=2)] == ["hit", "hit"]

    # what was never fetched is gone with the node: a prompt Matrix error, not a hang
    response = requests.get(
        f"{server.url}/_matrix/media/v3/download/localhost/ipfs:{cids['never']}",
        params={"timeout_ms": "2000"},
        timeout=TIMEOUT,
    )
    assert response.status_code in (502, 504), response.status_code
    assert response.json().get("errcode", "").startswith("M_"), response.text


def test_gateway_down_gives_a_prompt_matrix_error(start_proxy, samples):
    """No gateway listening at all: a prompt 502/504 Matrix error that does not tell the
    client where the operator's gateway is."""
    from support.procs import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    server = start_proxy([dead])
    started = time.monotonic()
    response = requests.get(f"{server.url}/_matrix/media/v3/download/localhost/ipfs:{samples['gif'].cid}",
                            params={"timeout_ms": "3000"}, timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    assert response.status_code in (502, 504), f"{response.status_code} {response.text[:300]}"
    assert response.json().get("errcode", "").startswith("M_"), response.text
    assert elapsed < 5, f"answered after {elapsed:.1f}s"
    assert dead.split("//")[1] not in response.text, f"the gateway's address reached the client: {response.text}"
