"""Scenario 3: what the proxy refuses, and that it refuses it the way Synapse does.

For tokens the reference is Synapse's own answer on the same route for an ordinary media ID:
the proxy must hand back the same status and errcode for ipfs media.
"""

from __future__ import annotations

import time

import pytest
import requests

from support.media import png, unknown_cid

TIMEOUT = 30
AUTH_ROUTE = "/_matrix/client/v1/media/download/localhost"


@pytest.fixture(scope="module")
def ordinary_media_id(synapse, alice) -> str:
    response = requests.post(
        synapse.url + "/_matrix/media/v3/upload",
        params={"filename": "ordinary.png"},
        data=png(),
        headers={"Authorization": f"Bearer {alice.token}", "Content-Type": "image/png"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()["content_uri"].rsplit("/", 1)[1]


def describe(response: requests.Response) -> str:
    kind = response.headers.get("Content-Type", "")
    if kind.startswith("application/json"):
        return f"{response.status_code} {response.text[:300]}"
    return f"{response.status_code} with {len(response.content)} bytes of {kind or 'no Content-Type'}"


def assert_not_cacheable(response: requests.Response) -> None:
    """An error must not be cached the way content-addressed bytes are."""
    cache_control = response.headers.get("Cache-Control", "")
    assert "immutable" not in cache_control and "public" not in cache_control, cache_control
    assert "ETag" not in response.headers, response.headers.get("ETag")


def assert_refused_like_synapse(synapse, proxy, ordinary_media_id, cid, expected_errcode, **kwargs):
    """Synapse's answer for its own media and the proxy's for ipfs media: same status and errcode."""
    kwargs.setdefault("timeout", TIMEOUT)
    reference = requests.get(f"{synapse.url}{AUTH_ROUTE}/{ordinary_media_id}", **kwargs)
    ours = requests.get(f"{proxy.url}{AUTH_ROUTE}/ipfs:{cid}", **kwargs)
    assert reference.status_code == 401, f"Synapse: {reference.status_code} {reference.text}"
    assert reference.json()["errcode"] == expected_errcode, reference.text
    assert ours.status_code == reference.status_code, (
        f"proxy answered {describe(ours)}; Synapse answered {describe(reference)}"
    )
    assert ours.json()["errcode"] == reference.json()["errcode"], ours.text
    assert ours.headers.get("Content-Type", "").startswith("application/json")
    return reference, ours


@pytest.mark.noauth_too
def test_missing_token(synapse, proxy, ordinary_media_id, samples):
    assert_refused_like_synapse(synapse, proxy, ordinary_media_id, samples["png"].cid, "M_MISSING_TOKEN")


@pytest.mark.noauth_too
def test_unknown_token(synapse, proxy, ordinary_media_id, samples):
    cid = samples["png"].cid
    assert_refused_like_synapse(synapse, proxy, ordinary_media_id, cid, "M_UNKNOWN_TOKEN",
                                headers={"Authorization": "Bearer syt_not_a_real_token"})
    assert_refused_like_synapse(synapse, proxy, ordinary_media_id, cid, "M_UNKNOWN_TOKEN",
                                params={"access_token": "syt_not_a_real_token"})


def test_token_of_a_logged_out_device(synapse, proxy, ordinary_media_id, samples, bob):
    """A device logged out (through the proxy) can no longer download ipfs media."""
    token = synapse.login(bob.account, base_url=proxy.url)
    logout = requests.post(f"{proxy.url}/_matrix/client/v3/logout",
                           headers={"Authorization": f"Bearer {token}"}, json={}, timeout=TIMEOUT)
    assert logout.status_code == 200, logout.text
    assert_refused_like_synapse(synapse, proxy, ordinary_media_id, samples["png"].cid, "M_UNKNOWN_TOKEN",
                                headers={"Authorization": f"Bearer {token}"})


def test_logout_revokes_a_token_the_proxy_has_seen(synapse, proxy, ordinary_media_id, samples, bob):
    """A token that downloaded ipfs media a moment ago, then logged out through the proxy, is
    refused at once: the proxy must not keep honouring it from its memory of accepted tokens."""
    cid = samples["png"].cid
    token = synapse.login(bob.account, base_url=proxy.url)
    headers = {"Authorization": f"Bearer {token}"}
    before = requests.get(f"{proxy.url}{AUTH_ROUTE}/ipfs:{cid}", headers=headers, timeout=TIMEOUT)
    assert before.status_code == 200, before.text
    logout = requests.post(f"{proxy.url}/_matrix/client/v3/logout", headers=headers, json={}, timeout=TIMEOUT)
    assert logout.status_code == 200, logout.text
    assert_refused_like_synapse(synapse, proxy, ordinary_media_id, cid, "M_UNKNOWN_TOKEN", headers=headers)


@pytest.mark.noauth_too
@pytest.mark.parametrize("media_id", ["ipfs:notacid", "ipfs%3Anotacid", "ipfs:", "ipfs:bafy%20broken",
                                      "ipfs:QmTooShort"])
def test_invalid_cid_is_not_found(proxy, bob, media_id):
    for url, headers in (
        (f"{proxy.url}/_matrix/media/v3/download/localhost/{media_id}", {}),
        (f"{proxy.url}/_matrix/media/v3/download/elsewhere.example/{media_id}/name.png", {}),
        (f"{proxy.url}{AUTH_ROUTE}/{media_id}", bob.auth()),
    ):
        response = requests.get(url, headers=headers, timeout=TIMEOUT)
        assert response.status_code == 404, f"{url}: {response.status_code} {response.text[:300]}"
        assert response.json().get("errcode") == "M_NOT_FOUND", f"{url}: {response.text[:300]}"
        assert_not_cacheable(response)


@pytest.mark.noauth_too
def test_unknown_cid_times_out_promptly(proxy, bob):
    """A valid CID nobody has: the gateway would wait forever; the proxy gives up after
    `timeout_ms` with 504 M_NOT_YET_UPLOADED."""
    for url, headers in (
        (f"{proxy.url}/_matrix/media/v3/download/localhost/ipfs:{unknown_cid()}", {}),
        (f"{proxy.url}{AUTH_ROUTE}/ipfs:{unknown_cid()}", bob.auth()),
    ):
        started = time.monotonic()
        response = requests.get(url, params={"timeout_ms": "1500"}, headers=headers, timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        assert response.status_code == 504, f"{response.status_code} {response.text[:300]}"
        assert response.json().get("errcode") == "M_NOT_YET_UPLOADED", response.text
        assert elapsed < 5, f"answered after {elapsed:.1f}s, timeout_ms was 1500"
        # the CID may arrive later: this answer must not be kept like the content itself
        assert_not_cacheable(response)
