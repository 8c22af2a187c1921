"""A tenant with as many unfinished batches as allowed gets 429 until one finishes; other tenants are not held up."""
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.config import get_settings
from core.db import migrate
from tests.conftest import api_key, png, smooth_image
from tests.services import files


def test_batches_in_flight_per_tenant_are_limited(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DENOCAP_MAX_BATCHES_IN_FLIGHT", "2")
    get_settings.cache_clear()
    url = get_settings().database_url
    migrate(url)
    queued: list[list[str]] = []  # no worker: the batches stay queued
    app = TestClient(create_app(enqueue=queued.append))
    body = files(("a.png", png(smooth_image(16, 16))))
    alpha, beta = {"X-API-Key": api_key(url, "alpha")}, {"X-API-Key": api_key(url, "beta")}
    assert [app.post("/batches", files=body, headers=alpha).status_code for _ in range(2)] == [201, 201]
    r = app.post("/batches", files=body, headers=alpha)
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
    assert r.json()["detail"].startswith("2 batches are still running for this tenant")
    assert app.post("/batches", files=files(("bad.png", b"")), headers=alpha).status_code == 429
    assert app.post("/batches", files=body, headers=beta).status_code == 201
    assert len(queued) == 3
