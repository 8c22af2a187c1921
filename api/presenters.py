"""Rows to responses, shared by the JSON routes and the gallery: schemas, images, thumbnails, exports."""
import csv
import io
import itertools
import json
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import HTTPException, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Receive, Scope, Send

from api.deps import own_result
from api.schemas import BatchOut, CaptionOut, ItemOut, spreadsheet_safe
from core import queries
from core.config import Settings, get_settings
from core.db import sessions_for
from core.imageio import decode, encode_png, thumbnail_jpeg
from core.storage import THUMB_SIZE, Storage, input_key, results_prefix, thumbnail_key
from core.submit import limits_of
from core.tables import Batch, Item, Result

EXPORT_PAGE = 500
CONVERSIONS = threading.BoundedSemaphore(2)  # images decoded and encoded at once per API process: a 50 MP upload
CONVERSION_WAIT = 30.0  # takes about 1.4 GiB while it is, so many requests for big images must not run together
EXPORTS_PER_TENANT = 2  # streaming at once, per API process
_exports: Counter[str] = Counter()
_exports_lock = threading.Lock()


def item_out(item: Item, base: str = "") -> ItemOut:
    out = ItemOut.model_validate(item)
    links = {"self": f"/items/{item.id}", "original": f"{base}/items/{item.id}/original"}
    if item.result is not None:
        links |= {"denoised": f"{base}/items/{item.id}/denoised.png", "noisy": f"{base}/items/{item.id}/noisy.png",
                  "thumbnail": f"{base}/items/{item.id}/thumbs/denoised.jpg"}
    out.links = links
    return out


def batches_out(session: Session, batches: list[Batch]) -> list[BatchOut]:
    counts = queries.batch_counts(session, [b.id for b in batches])
    out = []
    for batch in batches:
        total, progress, finished = queries.progress(counts[batch.id])
        sealed = batch.sealed_at is not None
        out.append(BatchOut(id=batch.id, created_at=batch.created_at, options=batch.options, total=total,
                            counts=counts[batch.id], progress=progress, sealed=sealed, finished=finished and sealed))
    return out


def batch_out(session: Session, batch: Batch) -> BatchOut:
    return batches_out(session, [batch])[0]


def caption_out(result: Result, item: Item) -> CaptionOut:
    columns = {k: getattr(result, k) for k in CaptionOut.model_fields if k not in ("batch_id", "filename")}
    return CaptionOut(**columns, batch_id=item.batch_id, filename=item.filename)


def result_png(storage: Storage, item: Item, which: str) -> Response:
    return Response(_png(storage, item, which), media_type="image/png")


def _png(storage: Storage, item: Item, which: str) -> bytes:
    """The stored PNG; a noisy image that is the upload itself (no synthetic noise) is made a PNG on the first
    request, as the worker decoded it, and kept."""
    result = own_result(item)
    key = result.denoised_key if which == "denoised" else result.noisy_key
    if key != input_key(item.id):
        return _stored(storage, key)
    made = f"{results_prefix(item.id, result.denoiser_version)}/noisy.png"
    if (data := storage.find(made)) is None:
        with conversion_slot():
            data = encode_png(decode(_stored(storage, key), limits_of(get_settings())))
        _keep(storage, item, made, data)
    return data


def _keep(storage: Storage, item: Item, key: str, data: bytes) -> None:
    """Stores a file made on request. A deletion of its item meanwhile could not know of it: a fresh transaction
    (the request's may see the row as it was) waits for such a deletion to commit (FOR SHARE on PostgreSQL) and, the
    row gone, the file is removed and the answer is 404."""
    storage.put(key, data)
    with sessions_for(get_settings().database_url)() as session:
        gone = session.scalar(select(Item.id).where(Item.id == item.id).with_for_update(read=True)) is None
    if gone:
        storage.delete([key])
        raise HTTPException(status.HTTP_404_NOT_FOUND, "item not found")


def _stored(storage: Storage, key: str) -> bytes:
    if (data := storage.find(key)) is None:  # the item was deleted after this request read its row
        raise HTTPException(status.HTTP_404_NOT_FOUND, "item not found")
    return data


def thumbnail(storage: Storage, item: Item, which: str) -> Response:
    """Made on first request, then served from storage: a page of thousands of items stays fast."""
    key = thumbnail_key(item.id, own_result(item).denoiser_version, which)
    if (data := storage.find(key)) is None:
        png = _png(storage, item, which)
        with conversion_slot():
            data = thumbnail_jpeg(png, THUMB_SIZE)
        _keep(storage, item, key, data)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@contextmanager
def conversion_slot() -> Iterator[None]:
    """One of CONVERSIONS, waited for up to CONVERSION_WAIT s (503 with Retry-After beyond)."""
    if not CONVERSIONS.acquire(timeout=CONVERSION_WAIT):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the server is busy converting other images; "
                            "try again shortly", headers={"Retry-After": "5"})
    try:
        yield
    finally:
        CONVERSIONS.release()


def original(storage: Storage, item: Item) -> Response:
    if (data := storage.find(input_key(item.upload_id or item.id))) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the upload was refused and not kept")
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{item.id}"'})


def export_slot(tenant: str) -> Callable[[], None]:
    """Takes one of the EXPORTS_PER_TENANT slots of a tenant's exports that may stream at once (429 when none is
    free), so one tenant cannot hold the server's connections and threads. Returns its release (idempotent)."""
    with _exports_lock:
        if _exports[tenant] >= EXPORTS_PER_TENANT:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, f"{EXPORTS_PER_TENANT} exports are already "
                                "running for this tenant; try again when one ends", headers={"Retry-After": "10"})
        _exports[tenant] += 1
    released = threading.Event()

    def release() -> None:
        with _exports_lock:
            if not released.is_set():
                released.set()
                _exports[tenant] -= 1
    return release


def export_pages(sessions: sessionmaker, tenant: str, f: queries.CaptionFilter) -> Iterator[list[CaptionOut]]:
    """Keyset pages, each read in a session of its own: no connection is held between pages."""
    after = None
    while True:
        with sessions() as session:
            rows = queries.caption_page(session, tenant, f, EXPORT_PAGE, after)
            page = [caption_out(r, i) for r, i in rows]
        yield page
        if len(rows) < EXPORT_PAGE:
            return
        after = (rows[-1][0].created_at, rows[-1][0].item_id)


def _csv(pages: Iterator[list[CaptionOut]]) -> Iterator[str]:
    """A chunk a page: one a row cost more than writing it (a send and a thread hop each)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CaptionOut.model_fields))
    writer.writeheader()
    for page in pages:
        writer.writerows(spreadsheet_safe(row.model_dump()) for row in page)
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()


def _jsonl(pages: Iterator[list[CaptionOut]]) -> Iterator[str]:
    for page in pages:
        yield "".join(json.dumps(r.model_dump(), allow_nan=False) + "\n" for r in page)


class HeldStream(StreamingResponse):
    """A streamed export holding one of its tenant's slots (`release`, from export_slot), given back when it has
    been sent, however that ends (a client gone mid-stream cancels the send and leaves the abandoned generator to
    the garbage collector), or when it is freed unsent."""

    def __init__(self, release: Callable[[], None], chunks: Iterator[str], media_type: str, filename: str) -> None:
        self.release = release
        weakref.finalize(self, self.release)
        super().__init__(chunks, media_type=media_type,
                         headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


def export_captions(session: Session, settings: Settings, tenant: str, f: queries.CaptionFilter,
                        format: str) -> StreamingResponse:
    """The JSON API's and the gallery's export (each route authenticates its own way). The slot is taken and the
    first page read before the answer starts: a 429, or the database's 503, rather than an export cut short under
    a 200."""
    session.close()  # the key is checked; the pages open sessions of their own
    release = export_slot(tenant)
    try:
        pages = export_pages(sessions_for(settings.database_url), tenant, f)
        first = next(pages)
    except BaseException:
        release()
        raise
    pages = itertools.chain([first], pages)
    if format == "csv":
        return HeldStream(release, _csv(pages), "text/csv", "captions.csv")
    return HeldStream(release, _jsonl(pages), "application/x-ndjson", "captions.jsonl")
