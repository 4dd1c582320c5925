"""A real Synapse on 127.0.0.1: SQLite, one plain-HTTP listener, users via the shared secret."""

from __future__ import annotations

import hashlib
import hmac
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from .procs import Service, free_port, watch_log

SHARED_SECRET = "e2e-registration-secret"
SERVER_NAME = "localhost"

# Generous limits: the suite sends bursts no real user would.
_RATE = "{per_second: 10000, burst_count: 10000}"

_CONFIG = """\
server_name: {server_name}
pid_file: {dir}/homeserver.pid
public_baseurl: http://127.0.0.1:{port}/
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: true
    resources:
      - names: [client, federation]
        compress: false
database:
  name: sqlite3
  args:
    database: {dir}/homeserver.db
log_config: {dir}/log.yaml
media_store_path: {dir}/media_store
signing_key_path: {dir}/signing.key
registration_shared_secret: {secret}
macaroon_secret_key: e2e-macaroon-secret
form_secret: e2e-form-secret
report_stats: false
bcrypt_rounds: 4
trusted_key_servers: []
suppress_key_server_warning: true
enable_authenticated_media: {auth_media}
url_preview_enabled: false
presence:
  enabled: false
rc_message: {rate}
rc_registration: {rate}
rc_login:
  address: {rate}
  account: {rate}
  failed_attempts: {rate}
rc_joins:
  local: {rate}
  remote: {rate}
rc_invites:
  per_room: {rate}
  per_user: {rate}
rc_admin_redaction: {rate}
rc_media_create: {rate}
# Guests exist so that the upload refusal for them can be checked (test_uploads.py).
allow_guest_access: true
"""

_LOG_CONFIG = """\
version: 1
formatters:
  precise:
    format: '%(asctime)s %(levelname)s %(name)s %(request)s - %(message)s'
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
    request: ""
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {log}
    filters: [context]
loggers:
  synapse.storage.SQL:
    level: WARNING
  synapse.access.http:
    level: INFO
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"""


@dataclass
class Registered:
    user_id: str
    localpart: str
    password: str
    access_token: str
    device_id: str


class Synapse:
    """Writes a config for one Synapse instance, starts it and waits until it answers."""

    def __init__(self, state_dir: Path, log_dir: Path, pid_dir: Path, auth_media: bool) -> None:
        self.dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth_media = auth_media
        self.server_name = SERVER_NAME
        self.log_file = log_dir / "synapse.log"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "homeserver.yaml").write_text(
            _CONFIG.format(
                server_name=SERVER_NAME,
                dir=self.dir,
                port=self.port,
                secret=SHARED_SECRET,
                auth_media="true" if auth_media else "false",
                rate=_RATE,
            )
        )
        (self.dir / "log.yaml").write_text(_LOG_CONFIG.format(log=self.log_file))
        self._write_signing_key()
        self.service = Service(
            "synapse",
            [sys.executable, "-m", "synapse.app.homeserver", "--config-path", self.dir / "homeserver.yaml"],
            log_path=log_dir / "synapse.stdout.log",
            pid_dir=pid_dir,
        )

    def _write_signing_key(self) -> None:
        # What `--generate-keys` would do, without a second interpreter start.
        from signedjson.key import generate_signing_key, write_signing_keys

        with open(self.dir / "signing.key", "w") as handle:
            write_signing_keys(handle, [generate_signing_key("a_e2e")])

    def start(self, timeout: float = 90) -> "Synapse":
        watch_log("synapse.log", self.log_file)
        ready = lambda: requests.get(self.url + "/_matrix/client/versions", timeout=2).ok  # noqa: E731
        self.service.start_until(ready, timeout, f"Synapse on {self.url} answering /_matrix/client/versions", 0.3)
        return self

    def stop(self) -> None:
        self.service.stop(grace=15)

    def logs(self) -> list[Path]:
        return [self.log_file, self.service.log_path]

    # -- users ---------------------------------------------------------------------------

    def register_request(self, localpart: str, password: str, admin: bool = False) -> dict:
        """The body for `POST /_synapse/admin/v1/register` (a fresh nonce is fetched here)."""
        nonce = requests.get(self.url + "/_synapse/admin/v1/register", timeout=10).json()["nonce"]
        mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
        for part in (nonce, localpart, password):
            mac.update(part.encode())
            mac.update(b"\x00")
        mac.update(b"admin" if admin else b"notadmin")
        return {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }

    def register(self, localpart: str, base_url: str | None = None) -> Registered:
        """Create a user with the shared secret, through `base_url` (Synapse itself by default)."""
        password = f"pw-{localpart}-e2e"
        body = self.register_request(localpart, password)
        response = requests.post(
            (base_url or self.url) + "/_synapse/admin/v1/register", json=body, timeout=30
        )
        assert response.status_code == 200, f"register {localpart}: {response.status_code} {response.text}"
        data = response.json()
        return Registered(
            user_id=data["user_id"],
            localpart=localpart,
            password=password,
            access_token=data["access_token"],
            device_id=data["device_id"],
        )

    def login(self, user: Registered, base_url: str | None = None) -> str:
        """A new access token (a new device) for `user`."""
        response = requests.post(
            (base_url or self.url) + "/_matrix/client/v3/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user.localpart},
                "password": user.password,
            },
            timeout=30,
        )
        assert response.status_code == 200, f"login {user.localpart}: {response.status_code} {response.text}"
        return response.json()["access_token"]
