"""Issue #8: the CID denylist and SIGHUP, with the real node, Synapse and a real token.

Content added to the real IPFS node is named in a denylist in the forms admins meet: the
legacy double hash of the public bad-bits list (sha256 of "<CIDv1 base32>/") and an
`/ipfs/<cid>` rule written in another multibase than the one requested. Blocked content is
refused with 404 M_NOT_FOUND on the legacy, authenticated and thumbnail routes while other
content is served; an edit of the list on disk applies without a signal; SIGHUP applies a
reloadable setting and reports one that needs a restart; the refusals are counted.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import secrets
import signal

import requests

from support.procs import free_port, wait_until
from support.proxy import ProxyOptions
from test_metrics import Scrape, moved

TIMEOUT = 30
B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def cid_bytes(cid: str) -> bytes:
    assert cid.startswith("b"), cid
    text = cid[1:].upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def base36(cid: str) -> str:
    """The same CIDv1 in base36 ('k' prefix), as `ipfs cid format -b base36` writes it."""
    raw = cid_bytes(cid)
    number = int.from_bytes(raw, "big")
    digits = ""
    while number:
        number, rest = divmod(number, 36)
        digits = B36[rest] + digits
    zeros = len(raw) - len(raw.lstrip(b"\0"))
    return "k" + "0" * zeros + digits


def legacy_double_hash(cid: str) -> str:
    return hashlib.sha256(f"{cid}/".encode()).hexdigest()


def write_atomically(path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def assert_blocked(response: requests.Response) -> None:
    assert response.status_code == 404, (response.status_code, response.text[:200])
    body = response.json()
    assert body["errcode"] == "M_NOT_FOUND" and "blocked" in body["error"], body


def test_denylist_and_sighup(start_proxy, ipfs, synapse, env):
    blocked_a = ipfs.add(random.randbytes(50_000), "a.bin")
    blocked_b = ipfs.add(random.randbytes(50_000), "b.bin")
    allowed = ipfs.add(random.randbytes(50_000), "c.bin")
    allowed_bytes = requests.get(f"{ipfs.gateway}/ipfs/{allowed}", timeout=TIMEOUT).content

    lists = env.state_dir / f"moderation-{secrets.token_hex(4)}"
    lists.mkdir(parents=True)
    deny = lists / "takedowns.deny"
    write_atomically(
        deny,
        "version: 1\nname: e2e takedowns\n---\n"
        f"# bad-bits style\n//{legacy_double_hash(blocked_a)}\n"
        f"/ipfs/{base36(blocked_b)}\n",
    )
    admin_port = free_port()
    extra = (
        f'\n[admin]\nlisten = "127.0.0.1:{admin_port}"\n'
        f'\n[denylist]\npaths = ["{deny}"]\nwatch_interval = "200ms"\n'
    )
    server = start_proxy([ipfs.gateway], ProxyOptions(extra_toml=extra))
    admin = f"http://127.0.0.1:{admin_port}"
    before = Scrape(admin)
    assert before.total("denylist_rules") == 2

    account = synapse.register(f"moderation-{secrets.token_hex(4)}")
    auth = {"Authorization": f"Bearer {account.access_token}"}

    def routes(cid: str) -> list[tuple[str, dict]]:
        return [
            (f"{server.url}/_matrix/media/v3/download/localhost/ipfs:{cid}", {}),
            (f"{server.url}/_matrix/client/v1/media/download/any.server/ipfs:{cid}", auth),
            (f"{server.url}/_matrix/media/v3/thumbnail/localhost/ipfs:{cid}?width=32&height=32", {}),
        ]

    mark = server.log_mark()
    for cid in (blocked_a, blocked_b):
        for url, headers in routes(cid):
            assert_blocked(requests.get(url, headers=headers, timeout=TIMEOUT))
    url, headers = routes(allowed)[0]
    response = requests.get(url, headers=headers, timeout=TIMEOUT)
    assert response.status_code == 200 and response.content == allowed_bytes

    warnings = [r for r in server.log_records(mark) if r.get("message") == "refused: the CID is on a denylist"]
    assert {w.get("cid") for w in warnings} >= {blocked_a, blocked_b}, warnings
    server.wait_access(mark, "/download/", count=5)
    after = Scrape(admin)
    assert moved(before, after, "denylist_refusals_total") == 6

    # An edit on disk, no signal: an exception lifts B, and the allowed CID is now blocked.
    write_atomically(deny, deny.read_text() + f"!/ipfs/{blocked_b}\n{allowed}\n")
    wait_until(lambda: requests.get(url, timeout=TIMEOUT).status_code == 404, 10, "the edit applies")
    assert_blocked(requests.get(url, timeout=TIMEOUT))
    response = requests.get(routes(blocked_b)[0][0], timeout=TIMEOUT)
    assert response.status_code == 200 and len(response.content) == 50_000

    # SIGHUP: a reloadable key applies, one that needs a restart is reported, nothing drops.
    mark = server.log_mark()
    config = server.config_path.read_text()
    server.config_path.write_text(
        config.replace('max_bytes = "512MiB"', 'max_bytes = "256MiB"') + '\n[log]\nlevel = "debug"\n'
    )
    os.kill(server.service.proc.pid, signal.SIGHUP)
    reloaded = wait_until(
        lambda: [r for r in server.log_records(mark) if r.get("message") == "configuration reloaded"],
        10,
        "the reload log line",
    )
    assert reloaded[0]["applied"] == '["log.level"]', reloaded[0]
    pending = [r for r in server.log_records(mark) if "after a restart" in str(r.get("message"))]
    assert pending and pending[0]["keys"] == '["cache"]', pending
    assert server.service.running()
    assert_blocked(requests.get(url, timeout=TIMEOUT))
    final = Scrape(admin)
    assert moved(after, final, "config_reloads_total", outcome="ok") == 1
