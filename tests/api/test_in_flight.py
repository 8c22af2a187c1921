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


def test_a_batch_may_hold_more_than_a_thousand_files(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Starlette's multipart parser stops at 1,000 files; the service's own limit applies instead."""
    monkeypatch.setenv("DENOCAP_MAX_FILES_PER_BATCH", "1200")
    get_settings.cache_clear()
    url = get_settings().database_url
    migrate(url)
    app = TestClient(create_app(enqueue=lambda ids: None), headers={"X-API-Key": api_key(url, "many")})
    tiny = png(smooth_image(8, 8))
    r = app.post("/batches", files=files(*[(f"{i}.png", tiny) for i in range(1200)]))
    assert r.status_code == 201 and r.json()["total"] == 1200
    r = app.post("/batches", files=files(*[(f"{i}.png", tiny) for i in range(1201)]))
    assert r.status_code == 413 and r.json()["detail"] == "1201 files, the limit is 1200 per batch"
