"""Images the API makes itself (a noisy image that is the upload, thumbnails) are made once and a bounded number at
a time: a big upload asked for by many requests must not take the API's memory."""
import asyncio
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi import HTTPException
from fastapi.responses import StreamingResponse
from PIL import Image
from sqlalchemy.orm import Session

from api import presenters
from core.config import Settings
from core.queries import CaptionFilter
from core.storage import LocalStorage, input_key, results_prefix
from core.tables import Item, Result
from tests.conftest import png, smooth_image


def item_with_upload(storage: LocalStorage) -> Item:
    """A done item without synthetic noise: its noisy image is the upload (a JPEG)."""
    item_id = "a" * 32
    buf = io.BytesIO()
    Image.fromarray(smooth_image(40, 40)).save(buf, format="JPEG")
    storage.put(input_key(item_id), buf.getvalue())
    prefix = results_prefix(item_id, "ffdnet@1")
    storage.put(f"{prefix}/denoised.png", png(smooth_image(40, 40)))
    return Item(id=item_id, result=Result(item_id=item_id, noisy_key=input_key(item_id), denoiser_version="ffdnet@1",
                                          denoised_key=f"{prefix}/denoised.png"))


def test_the_upload_is_made_a_png_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path)
    item = item_with_upload(storage)
    first = presenters.result_png(storage, item, "noisy").body
    assert np.asarray(Image.open(io.BytesIO(first))).shape == (40, 40, 3)

    def again(*_: object) -> None:
        raise AssertionError("decoded a second time")
    monkeypatch.setattr(presenters, "decode", again)
    assert presenters.result_png(storage, item, "noisy").body == first
    assert presenters.thumbnail(storage, item, "noisy").media_type == "image/jpeg"


def test_conversions_beyond_the_slots_wait_then_get_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_an_export_holds_its_slot_from_its_answer_to_the_end_of_its_stream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two exports a tenant; a third is refused when asked, never cut off mid-stream; a slot comes back when its
    stream ends and when it is dropped unread (the client gone before the first chunk)."""
    monkeypatch.setattr(presenters, "export_rows", lambda *_: iter([]))
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")

    def export(tenant: str = "t") -> StreamingResponse:
        return presenters.export_captions(Session(), settings, tenant, CaptionFilter(), "csv")

    def read(response: StreamingResponse) -> str:
        async def chunks() -> str:
            return "".join([str(c) async for c in response.body_iterator])
        return asyncio.run(chunks())
    first, second = export(), export()
    with pytest.raises(HTTPException) as busy:
        export()
    assert busy.value.status_code == 429 and "2 exports" in busy.value.detail
    header = read(export("another tenant"))
    assert header.startswith("item_id")
    assert read(first) == header  # read to its end: its slot is free
    third = export()
    del second  # dropped unread
    assert read(export()) == read(third) == header
