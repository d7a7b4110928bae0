"""A token never reaches the server log, however the client encodes the query parameter carrying it."""

from __future__ import annotations

import signal

import httpx2 as httpx
import pytest

from tests.conftest import LiveServer, create_token

pytestmark = [pytest.mark.sqlite_only]

# Every way a client can spell a credential parameter's name that the server decodes to the name
# itself: percent-encoding of any character, lower- or upper-case hex, all of it, mixed case, plus
# double encoding and `;` separators (not decoded by the server, redacted all the same).
NAME_SPELLINGS = [
    "auth_token", "auth%5Ftoken", "auth%5ftoken", "%61uth_token", "%61%75%74%68%5F%74%6F%6B%65%6E",
    "AUTH_TOKEN", "Auth_Token", "auth%255Ftoken", "token", "%74oken", "api_key", "api%5Fkey", "integrationKey",
    "integration%4Bey", "x-api-key", "x%2Dapi%2Dkey",
]


def test_every_encoding_of_a_credential_parameter_is_redacted_in_the_log(tmp_path):
    db = tmp_path / "deploytrack.db"
    secret = create_token(db, "pipeline", "ingest", "read")
    server = LiveServer(db, "--log-level", "debug").start()
    accepted = []
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for name in NAME_SPELLINGS:
                for separator in ("&", ";"):
                    url = f"/api/events/push?type=comment&content=hello{separator}{name}={secret}"
                    resp = http.get(url)
                    accepted.append((name, separator, resp.status_code))
                # the value percent-encoded too, and the secret in the path
                http.get(f"/api/events/push?type=comment&{name}=" + "".join(f"%{b:02X}" for b in secret.encode()))
            http.get(f"/api/v1/events/{secret}")
    finally:
        server.stop(signal.SIGTERM)
    # The encoded names are real credentials: the server took the token from them.
    assert ("auth%5Ftoken", "&", 200) in accepted and ("%61uth_token", "&", 200) in accepted
    log = server.log.read_text()
    assert log.count("GET /api/events/push") >= 3 * len(NAME_SPELLINGS)  # the access log was on
    assert secret not in log
    assert secret[3:20] not in log
    assert "".join(f"%{b:02X}" for b in secret.encode())[:60] not in log
    assert "[redacted]" in log
    assert "content=hello" in log  # other parameters stay readable
