"""A federation origin the suite controls: an ed25519 key, X-Matrix signed requests, and the
key made known to the suite's Synapse.

Synapse verifies an X-Matrix signature with the origin's verify key, which its keyring looks up
first in its own store (table `server_keys_json`, where keys fetched over federation land),
then from `trusted_key_servers` (the suite sets none), then from the origin itself over HTTPS,
which the suite's Synapse cannot do: federation is TLS only and its default `ip_range_blacklist`
covers 127.0.0.0/8. So the origin's key is written into Synapse's SQLite store, in the row
Synapse would write after fetching `/_matrix/key/v2/server` from the origin (the signed key
response itself). Synapse then treats requests signed by this origin like those of any server
whose key it already holds: it still checks the signature, `destination` and everything else.

Two things keep this honest:
- the origin's name is fresh for each `Origin` (Synapse caches key lookups, misses included);
- the row is written before Synapse is ever asked about this origin.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from canonicaljson import encode_canonical_json
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from unpaddedbase64 import encode_base64

#: how long the stored key stays valid for Synapse
KEY_VALIDITY_MS = 24 * 3600 * 1000


@dataclass
class Origin:
    """A remote homeserver name and its signing key."""

    server_name: str
    signing_key: object  # nacl SigningKey with .alg and .version (signedjson)

    @classmethod
    def fresh(cls) -> "Origin":
        name = f"e2e-origin-{secrets.token_hex(4)}.example"
        return cls(name, generate_signing_key("e2e" + secrets.token_hex(2)))

    @property
    def key_id(self) -> str:
        return f"{self.signing_key.alg}:{self.signing_key.version}"

    def key_response(self, valid_until_ms: int) -> dict:
        """What the origin's `GET /_matrix/key/v2/server` answers, signed."""
        verify_key = get_verify_key(self.signing_key)
        body = {
            "server_name": self.server_name,
            "valid_until_ts": valid_until_ms,
            "verify_keys": {self.key_id: {"key": encode_base64(verify_key.encode())}},
            "old_verify_keys": {},
        }
        return sign_json(body, self.server_name, self.signing_key)

    def register_with(self, synapse_db: Path, timeout: float = 10) -> None:
        """Store this origin's key in Synapse's database as a federation key fetch would."""
        now = int(time.time() * 1000)
        valid_until = now + KEY_VALIDITY_MS
        key_json = encode_canonical_json(self.key_response(valid_until))
        connection = sqlite3.connect(str(synapse_db), timeout=timeout)
        try:
            with connection:
                connection.execute(
                    "INSERT OR REPLACE INTO server_keys_json"
                    " (server_name, key_id, from_server, ts_added_ms, ts_valid_until_ms, key_json)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (self.server_name, self.key_id, self.server_name, now, valid_until, key_json),
                )
        finally:
            connection.close()

    def authorization(self, method: str, uri: str, destination: str, content: object = None) -> str:
        """The `Authorization: X-Matrix ...` value for one request (`uri`: raw path and query)."""
        request = {"method": method, "uri": uri, "origin": self.server_name, "destination": destination}
        if content is not None:
            request["content"] = content
        signed = sign_json(request, self.server_name, self.signing_key)
        sig = signed["signatures"][self.server_name][self.key_id]
        return (
            f'X-Matrix origin="{self.server_name}",destination="{destination}",'
            f'key="{self.key_id}",sig="{sig}"'
        )


def forge(authorization: str) -> str:
    """The same header with one character of the signature changed (still valid base64)."""
    head, sig = authorization.rsplit('sig="', 1)
    sig = sig.rstrip('"')
    # change a character in the middle; 'A' <-> 'B' keeps the length and the alphabet
    middle = len(sig) // 2
    flipped = "B" if sig[middle] == "A" else "A"
    return f'{head}sig="{sig[:middle]}{flipped}{sig[middle + 1:]}"'
