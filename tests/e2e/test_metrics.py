"""Issue #8: the admin listener. A proxy with `[admin] listen` serves `/metrics` in the
OpenMetrics text format (parsed here by prometheus_client's own OpenMetrics parser, which
rejects malformed exposition), `/health` and `/ready`. After a pass-through request, an ipfs
download twice (miss, then hit) and authenticated downloads, the counters must have moved, and
no label may carry a CID.
"""

from __future__ import annotations

import random
import re
import secrets

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from support.procs import free_port, wait_until
from support.proxy import ProxyOptions

TIMEOUT = 30
PREFIX = "ipfs_media_proxy_"
#: anything that looks like a CID in text (CIDv1 base32/base36, CIDv0)
CID_LIKE = re.compile(r"\b(baf[a-z2-7]{20,}|k51[a-z0-9]{20,}|Qm[1-9A-HJ-NP-Za-km-z]{44})")


def admin_options(port: int) -> ProxyOptions:
    return ProxyOptions(extra_toml=f'\n[admin]\nlisten = "127.0.0.1:{port}"\n')


class Scrape:
    """One /metrics answer, parsed: sample values by (sample name, labels)."""

    def __init__(self, admin: str) -> None:
        response = requests.get(f"{admin}/metrics", timeout=TIMEOUT)
        assert response.status_code == 200, f"/metrics: {response.status_code} {response.text[:300]}"
        kind = response.headers.get("Content-Type", "")
        assert kind.startswith("application/openmetrics-text"), kind
        self.text = response.text
        # raises on anything that is not valid OpenMetrics (including a missing `# EOF`)
        self.families = {family.name: family for family in text_string_to_metric_families(self.text)}
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in self.families.values():
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def family(self, name: str):
        assert PREFIX + name in self.families, f"no family {PREFIX + name}; have {sorted(self.families)}"
        return self.families[PREFIX + name]

    def total(self, sample: str, **labels: str) -> float:
        """Sum of the values of `ipfs_media_proxy_<sample>` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(
            value for (name, have), value in self.samples.items()
            if name == PREFIX + sample and wanted <= set(have)
        )

    def label_values(self) -> set[str]:
        return {value for (_, labels) in self.samples for _, value in labels}


def moved(before: Scrape, after: Scrape, sample: str, **labels: str) -> float:
    return after.total(sample, **labels) - before.total(sample, **labels)


def test_metrics_health_and_ready(start_proxy, ipfs, synapse):
    port = free_port()
    server = start_proxy([ipfs.gateway], admin_options(port))
    admin = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{admin}/health", timeout=2).status_code == 200, 10,
               f"admin listener on {admin}")

    health = requests.get(f"{admin}/health", timeout=TIMEOUT)
    assert health.status_code == 200 and health.json().get("status") == "ok", health.text
    ready = requests.get(f"{admin}/ready", timeout=TIMEOUT)
    assert ready.status_code == 200, f"/ready: {ready.status_code} {ready.text}"

    before = Scrape(admin)

    # a pass-through request
    assert requests.get(f"{server.url}/_matrix/client/versions", timeout=TIMEOUT).status_code == 200
    # an ipfs download twice: a miss, then a hit
    data = random.randbytes(200_000)
    cid = ipfs.add(data, "metrics.bin")
    url = f"{server.url}/_matrix/media/v3/download/localhost/ipfs:{cid}"
    for attempt in range(2):
        response = requests.get(url, timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == data, attempt
    # authenticated downloads (whoami once, then the remembered token)
    account = synapse.register(f"metrics-{secrets.token_hex(4)}")
    auth = {"Authorization": f"Bearer {account.access_token}"}
    authed = f"{server.url}/_matrix/client/v1/media/download/localhost/ipfs:{cid}"
    for attempt in range(2):
        response = requests.get(authed, headers=auth, timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == data, attempt
    # a refused token
    response = requests.get(authed, headers={"Authorization": "Bearer not-a-token"}, timeout=TIMEOUT)
    assert response.status_code == 401, response.status_code

    # the access log line (written when the body is done) goes with the counters; wait for it
    server.wait_access(0, "/_matrix/client/v1/media/download", count=3)
    after = Scrape(admin)

    # documented families, with their types
    assert after.family("requests").type == "counter"
    assert after.family("request_duration_seconds").type == "histogram"
    assert after.family("cache_lookups").type == "counter"
    assert after.family("gateway_requests").type == "counter"
    assert after.family("token_checks").type == "counter"
    assert after.family("in_flight_requests").type == "gauge"

    assert moved(before, after, "requests_total", route="passthrough", status_class="2xx") >= 1
    assert moved(before, after, "requests_total", route="download", status_class="2xx") >= 4
    assert moved(before, after, "requests_total", route="download", status_class="4xx") >= 1
    assert moved(before, after, "response_bytes_total", route="download") >= 4 * len(data)
    assert moved(before, after, "request_duration_seconds_count", route="download") >= 5
    assert moved(before, after, "cache_lookups_total", outcome="miss") >= 1
    assert moved(before, after, "cache_lookups_total", outcome="hit") >= 1
    assert moved(before, after, "token_checks_total", outcome="accepted") >= 1
    assert moved(before, after, "token_checks_total", outcome="refused") >= 1
    assert moved(before, after, "token_cache_hits_total") >= 1
    gateway = ipfs.gateway.rstrip("/")
    assert moved(before, after, "gateway_requests_total", gateway=gateway, outcome="ok") >= 1, (
        f"gateway labels: {sorted(v for v in after.label_values() if v.startswith('http'))}"
    )
    assert after.total("cache_entries") >= 1 and after.total("cache_held_bytes") >= len(data)

    # labels are bounded: never a CID (nor a path or user)
    assert cid not in after.text
    offending = {value for value in after.label_values() if CID_LIKE.search(value) or "/_matrix" in value
                 or "@" in value}
    assert not offending, f"label values that name content, paths or users: {offending}"


def test_ready_is_503_when_no_gateway_answers(start_proxy):
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"
    start_proxy([dead], admin_options(port))
    admin = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{admin}/health", timeout=2).status_code == 200, 10,
               f"admin listener on {admin}")
    assert requests.get(f"{admin}/health", timeout=TIMEOUT).status_code == 200
    ready = requests.get(f"{admin}/ready", timeout=TIMEOUT)
    assert ready.status_code == 503, f"/ready: {ready.status_code} {ready.text}"
    assert ready.headers.get("Content-Type", "").startswith("application/json"), ready.headers
    body = ready.json()
    assert body.get("status") == "not ready" and "gateway" in body.get("reason", ""), body
    assert requests.get(f"{admin}/nothing", timeout=TIMEOUT).status_code == 404
