"""Behind a TLS proxy: the gallery believes X-Forwarded-Proto from the addresses DENOCAP_FORWARDED_ALLOW_IPS names
(so its origin check and Secure cookie see https) and from no one else."""
from pathlib import Path

import httpx
import pytest

from core.db import migrate
from tests.conftest import api_key, base_env
from tests.services import free_port, start, stop, wait_http

PROXIED = {"Host": "photos.example", "Origin": "https://photos.example", "X-Forwarded-Proto": "https"}


@pytest.mark.parametrize("trusted, believed", [("127.0.0.1", True), ("10.9.9.9", False)])
def test_a_login_through_a_tls_proxy(trusted: str, believed: bool, weights_dir: Path, postgres_url: str,
                                     tmp_path: Path) -> None:
    migrate(postgres_url)
    env = {**base_env(tmp_path / "data", weights_dir), "DENOCAP_DATABASE_URL": postgres_url,
           "DENOCAP_FORWARDED_ALLOW_IPS": trusted}
    port = free_port()
    server = start(env, tmp_path / "server.log", "serve", "--port", str(port))
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server, tmp_path / "server.log")
        r = httpx.post(f"http://127.0.0.1:{port}/gallery/login", data={"key": api_key(postgres_url, "proxied")},
                       headers=PROXIED)
    finally:
        stop(server)
    if believed:
        assert r.status_code == 303, r.text
        cookie = r.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    else:  # a client that claims https itself: the request is http, so the https origin is another site's
        assert r.status_code == 403 and "cross-site" in r.text
