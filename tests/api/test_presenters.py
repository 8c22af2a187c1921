"""Images the API makes itself (a noisy image that is the upload, thumbnails) are made once and a bounded number at
a time: a big upload asked for by many requests must not take the API's memory."""
import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api import presenters
from api.main import create_app
from api.schemas import CaptionOut
from core import submit as service
from core import tenants
from core.config import Settings, get_settings
from core.db import migrate, sessions_for
from core.options import BatchOptions
from core.queries import CaptionFilter
from core.storage import LocalStorage, input_key, results_prefix
from core.tables import ApiKey, GallerySession, Item, Result
from tests.conftest import png, smooth_image, tenant_id


def item_with_upload(storage: LocalStorage) -> Item:
    """A done item without synthetic noise, in the database: its noisy image is the upload (a JPEG)."""
    settings = get_settings()
    migrate(settings.database_url)
    buf = io.BytesIO()
    Image.fromarray(smooth_image(40, 40)).save(buf, format="JPEG")
    with sessions_for(settings.database_url).begin() as s:
        batch, _ = service.submit(s, storage, settings, tenant_id(s), [service.Upload("a.jpg", buf.getvalue())],
                                  BatchOptions())
        item = batch.items[0]
        prefix = results_prefix(item.id, "ffdnet@1")
        item.result = Result(item_id=item.id, noisy_key=input_key(item.id), denoiser_version="ffdnet@1",
                             denoised_key=f"{prefix}/denoised.png", width=40, height=40, sigma_estimate=0.0,
                             caption="", caption_noisy="", captioner_version="attention@1")
    storage.put(f"{prefix}/denoised.png", png(smooth_image(40, 40)))
    return item


def test_the_upload_is_made_a_png_once(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path)
    item = item_with_upload(storage)
    first = presenters.result_png(storage, item, "noisy").body
    assert np.asarray(Image.open(io.BytesIO(first))).shape == (40, 40, 3)

    def again(*_: object) -> None:
        raise AssertionError("decoded a second time")
    monkeypatch.setattr(presenters, "decode", again)
    assert presenters.result_png(storage, item, "noisy").body == first
    assert presenters.thumbnail(storage, item, "noisy").media_type == "image/jpeg"


def test_conversions_beyond_the_slots_wait_then_get_503(env: dict[str, str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path)
    item = item_with_upload(storage)
    monkeypatch.setattr(presenters, "CONVERSIONS", threading.BoundedSemaphore(1))
    monkeypatch.setattr(presenters, "CONVERSION_WAIT", 0.1)
    with presenters.conversion_slot():  # another request is converting
        with pytest.raises(HTTPException) as busy:
            presenters.result_png(storage, item, "noisy")
        with pytest.raises(HTTPException):
            presenters.thumbnail(storage, item, "denoised")
    assert busy.value.status_code == 503 and busy.value.headers == {"Retry-After": "5"}
    assert presenters.result_png(storage, item, "noisy").media_type == "image/png"  # the slot is free again


def send_through(response: StreamingResponse, disconnect_after: int | None = None) -> str:
    """The response as a server sends it (ASGI 2.3, which uvicorn speaks: Starlette watches for a disconnect
    beside the stream), the client gone after `disconnect_after` body messages when given."""
    body: list[bytes] = []

    async def run() -> None:
        gone = asyncio.Event()

        async def receive() -> dict:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if disconnect_after is not None and len(body) >= disconnect_after:
                    gone.set()
        await response({"type": "http", "asgi": {"spec_version": "2.3"}, "method": "GET", "headers": []},
                       receive, send)
    asyncio.run(run())
    return b"".join(body).decode()


def test_an_export_holds_its_slot_from_its_answer_to_the_end_of_its_stream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two exports a tenant; a third is refused when asked, never cut off mid-stream; a slot comes back when its
    stream has been sent and when it is dropped unsent (the client gone before the response began)."""
    monkeypatch.setattr(presenters, "export_pages", lambda *_: iter([[]]))
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")

    def export(tenant: str = "t") -> StreamingResponse:
        return presenters.export_captions(Session(), settings, tenant, CaptionFilter(), "csv")
    first, second = export(), export()
    with pytest.raises(HTTPException) as busy:
        export()
    assert busy.value.status_code == 429 and "2 exports" in busy.value.detail
    header = send_through(export("another tenant"))
    assert header.startswith("item_id")
    assert send_through(first) == header  # sent: its slot is free
    third = export()
    del second  # dropped unsent
    assert send_through(export()) == send_through(third) == header


def test_a_client_gone_mid_export_gives_its_slot_back_at_once() -> None:
    def rows() -> Iterator[str]:
        while True:
            time.sleep(0.01)
            yield "a row\n"
    streams = [presenters.HeldStream(presenters.export_slot("t"), rows(), "text/csv", "c.csv") for _ in range(2)]
    for stream in streams:
        assert send_through(stream, disconnect_after=3).startswith("a row\n")
    both = [presenters.HeldStream(presenters.export_slot("t"), iter([]), "text/csv", "c.csv") for _ in range(2)]  # both slots are free
    assert len(both) == 2


def test_the_gallery_shows_a_result_whose_scores_are_partly_none(env: dict[str, str]) -> None:
    """A 2x2 photo has a PSNR but no SSIM, a nearly flat one a BRISQUE of the noisy image only: the pages that show
    it must not fail."""
    settings = get_settings()
    item = item_with_upload(LocalStorage(settings.files))
    with sessions_for(settings.database_url).begin() as s:
        s.get_one(Result, item.id).psnr, s.get_one(Result, item.id).psnr_noisy = 30.0, 20.0
        key = tenants.create_key(s, "tests").key
    browser = TestClient(create_app(enqueue=lambda ids: None), headers={"Origin": "http://testserver"})
    assert browser.post("/gallery/login", data={"key": key}).status_code == 200
    pages = [f"/gallery/batches/{item.batch_id}", f"/gallery/items/{item.id}", "/gallery/search"]
    assert [browser.get(p).status_code for p in pages] == [200, 200, 200]
    assert {browser.get(p).headers["Cache-Control"] for p in pages} == {"no-store"}  # Back after signing out
    assert "SSIM –→–" in browser.get(pages[0]).text
    with sessions_for(settings.database_url).begin() as s:
        s.get_one(Result, item.id).psnr, s.get_one(Result, item.id).brisque_noisy = None, 81.9
    assert [browser.get(p).status_code for p in pages] == [200, 200, 200]
    assert "BRISQUE 81.9→–" in browser.get(pages[0]).text


@pytest.mark.parametrize("format", ["csv", "jsonl"])
def test_an_export_is_sent_a_page_a_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, format: str) -> None:
    """A chunk a row cost 200,000 sends and thread hops for a large tenant's export (45 s where writing took 14)."""
    row = CaptionOut(item_id="i", batch_id="b", filename="=a.png", caption="a dog", caption_noisy="a cat",
                     sigma_estimate=25.0, psnr=30.0, ssim=None, psnr_noisy=20.0, brisque=None,
                     denoiser_version="d", captioner_version="c", notes=["x"])
    monkeypatch.setattr(presenters, "export_pages", lambda *_: iter([[row] * 500, [row] * 500, [row] * 3]))
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    response = presenters.export_captions(Session(), settings, "t", CaptionFilter(), format)
    chunks = []

    async def take() -> None:
        chunks.extend([c async for c in response.body_iterator])
    asyncio.run(take())
    response.release()
    lines = "".join(chunks).splitlines()
    assert len(chunks) == 3 and len(lines) == 1003 + (format == "csv")
    if format == "csv":
        assert lines[1].startswith("i,b,'=a.png,a dog,a cat,25.0,30.0,,20.0,,d,c,x")
    else:
        assert json.loads(lines[-1]) == row.model_dump()


def test_an_export_whose_first_page_fails_raises_before_its_answer_and_frees_its_slot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database down when an export starts: the 503 comes before the answer (it was a 200 cut short, a file
    that looked whole), and the slot is given back."""
    def pages(*_: object) -> Iterator[list]:
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))
        yield []
    monkeypatch.setattr(presenters, "export_pages", pages)
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    for _ in range(presenters.EXPORTS_PER_TENANT + 1):
        with pytest.raises(OperationalError):
            presenters.export_captions(Session(), settings, "down", CaptionFilter(), "csv")


def test_signing_in_again_leads_back_to_the_search_and_not_into_a_post(env: dict[str, str]) -> None:
    """A session that ended: signing in from a search page led to the page without its words, and from a delete
    button to a GET of the delete (405)."""
    settings = get_settings()
    migrate(settings.database_url)
    with sessions_for(settings.database_url).begin() as s:
        key = tenants.create_key(s, "tests").key
    browser = TestClient(create_app(enqueue=lambda ids: None), headers={"Origin": "http://testserver"})
    asked = browser.get("/gallery/search", params={"q": "a dog", "min_psnr": "30"})
    assert asked.status_code == 401 and 'value="/gallery/search?q=a+dog&amp;min_psnr=30"' in asked.text
    signed = browser.post("/gallery/login", data={"key": key, "next": "/gallery/search?q=a+dog&min_psnr=30"},
                          follow_redirects=False)
    assert signed.headers["location"] == "/gallery/search?q=a+dog&min_psnr=30"
    browser.cookies.clear()
    posted = browser.post(f"/gallery/items/{'f' * 32}/delete")
    assert posted.status_code == 401 and 'value="/gallery"' in posted.text


def test_a_sign_in_forgets_the_tenants_ended_sessions(env: dict[str, str]) -> None:
    """Every sign-in added a row and nothing deleted them."""
    settings = get_settings()
    migrate(settings.database_url)
    with sessions_for(settings.database_url).begin() as s:
        key = tenants.create_key(s, "tests")
        other = tenants.create_key(s, "others")
    browser = TestClient(create_app(enqueue=lambda ids: None), headers={"Origin": "http://testserver"})
    with sessions_for(settings.database_url).begin() as s:
        ended = tenants.start_session(s, s.get_one(ApiKey, key.id))
        live = tenants.start_session(s, s.get_one(ApiKey, key.id))
        theirs = tenants.start_session(s, s.get_one(ApiKey, other.id))
        tenants.end_session(s, ended)
        tenants.end_session(s, theirs)
    assert browser.post("/gallery/login", data={"key": key.key}).status_code == 200
    with sessions_for(settings.database_url)() as s:
        kept = set(s.scalars(select(GallerySession.id)))
    assert ended.split(".")[0] not in kept and {live.split(".")[0], theirs.split(".")[0]} <= kept and len(kept) == 3
