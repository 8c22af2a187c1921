"""The gallery's batches page pages through every batch of a tenant, newest first (ties broken by id), and its
progress poll reads the batches shown, by id, the tenant's only."""
import re
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from api.routes.gallery import PAGE
from core.db import make_engine, session_factory
from core.tables import Batch, Tenant
from tests.conftest import api_key

BATCHES = PAGE + 2


def test_every_batch_is_on_some_page(stack: str, postgres_url: str) -> None:
    key = api_key(postgres_url, "many batches")
    engine = make_engine(postgres_url)
    start = datetime.now(UTC)
    with session_factory(engine).begin() as session:
        tenant = session.scalar(select(Tenant.id).where(Tenant.name == "many batches"))
        ids = [f"{n:032x}" for n in range(BATCHES)]  # the oldest first
        session.add_all(Batch(id=i, tenant_id=tenant, options={}, denoiser="ffdnet", captioner="attention",
                              created_at=start + timedelta(seconds=n // 2), sealed_at=start)  # pairs tie
                        for n, i in enumerate(ids))
    engine.dispose()
    with httpx.Client(base_url=stack, timeout=60, headers={"Origin": stack}) as browser:
        assert browser.post("/gallery/login", data={"key": key}).status_code == 303
        pages = [browser.get("/gallery", params={"page": p}) for p in (1, 2)]
        polled = browser.get("/gallery/batches.json", params={"id": [ids[0], ids[-1], "f" * 32]}).json()
        past_the_end = browser.get("/gallery", params={"page": 3})
    shown = [re.findall(r'data-batch="([0-9a-f]{32})"', r.text) for r in pages]
    assert shown[0] + shown[1] == ids[::-1]  # newest first, each once
    assert f"page 2 of 2 ({BATCHES} batches)" in pages[1].text and 'href="?page=1"' in pages[1].text
    assert [b["id"] for b in polled["data"]] == [ids[-1], ids[0]] and polled["count"] == 2  # not another's id
    assert past_the_end.status_code == 200 and "data-batch=" not in past_the_end.text
    assert "No batches yet" not in past_the_end.text


def test_the_all_state_lists_all_and_the_cookie_ends_with_the_browser(stack: str, postgres_url: str) -> None:
    key = api_key(postgres_url, "filters")
    engine = make_engine(postgres_url)
    with session_factory(engine).begin() as session:
        tenant = session.scalar(select(Tenant.id).where(Tenant.name == "filters"))
        session.add(Batch(id="e" * 32, tenant_id=tenant, options={}, denoiser="ffdnet", captioner="attention"))
    engine.dispose()
    with httpx.Client(base_url=stack, timeout=60, headers={"Origin": stack}) as browser:
        signed = browser.post("/gallery/login", data={"key": key})
        assert signed.status_code == 303
        assert not {"max-age", "expires"} & set(re.split(r"[=;]\s*", signed.headers["set-cookie"].lower()))
        assert browser.get(f"/gallery/batches/{'e' * 32}", params={"state": ""}).status_code == 200  # "all"
        assert browser.get(f"/gallery/batches/{'e' * 32}", params={"state": "lost"}).status_code == 422
        boxes = {"q": "", "min_psnr": "", "max_psnr": "30", "min_ssim": "", "max_brisque": ""}  # a form without JS
        searched = browser.get("/gallery/search", params=boxes)
        assert searched.status_code == 200 and 'name="max_psnr" placeholder="max psnr" value="30.0"' in searched.text
        assert browser.get("/gallery/search", params={"min_psnr": "x"}).status_code == 422
    r = httpx.get(f"{stack}/captions", params={"min_psnr": ""}, headers={"X-API-Key": key})
    assert r.status_code == 422  # the JSON API takes no empty number for "no filter": a script's unset variable
