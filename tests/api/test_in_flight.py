"""A tenant with as many unfinished batches as allowed gets 429 until one finishes; other tenants are not held up."""
import threading
from concurrent.futures import ThreadPoolExecutor

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


def test_a_slow_submit_does_not_hold_up_other_requests(env: dict[str, str]) -> None:
    """Submitting stores files and talks to the broker: blocking work, kept off the event loop."""
    url = get_settings().database_url
    migrate(url)
    entered, release = threading.Event(), threading.Event()
    waited: list[bool] = []

    def slow_broker(ids: list[str]) -> None:
        entered.set()
        waited.append(release.wait(10))

    body = files(("a.png", png(smooth_image(16, 16))))
    with TestClient(create_app(enqueue=slow_broker), headers={"X-API-Key": api_key(url, "slow")}) as app, \
            ThreadPoolExecutor(1) as pool:  # one client: one event loop for both requests
        submitted = pool.submit(app.post, "/batches", files=body)
        assert entered.wait(10)
        assert app.get("/health").status_code == 200
        release.set()
        assert submitted.result().status_code == 201
    assert waited == [True]  # /health answered while the submit was waiting for the broker


def test_concurrent_submissions_cannot_pass_the_in_flight_limit(env: dict[str, str], postgres_url: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The count and the insert are one step (the tenant row is locked): 12 requests at once make 3 batches."""
    monkeypatch.setenv("DENOCAP_MAX_BATCHES_IN_FLIGHT", "3")
    monkeypatch.setenv("DENOCAP_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    migrate(postgres_url)
    key = {"X-API-Key": api_key(postgres_url, "crowd")}
    with TestClient(create_app(enqueue=lambda ids: None)) as app:
        def post(i: int) -> int:
            return app.post("/batches", files=files((f"{i}.png", png(smooth_image(16, 16, seed=i)))),
                            headers=key).status_code
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(post, range(12)))
    assert codes.count(201) == 3 and codes.count(429) == 9, codes
