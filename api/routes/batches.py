"""Submit batches (or one image) and poll them."""
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Form, Header, Query, Request, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

from api import presenters
from api.deps import (
    DELETED,
    BatchDep,
    EnqueueDep,
    Offset,
    Refused,
    SessionDep,
    SettingsDep,
    StorageDep,
    TenantDep,
    committed,
    swept,
    unauthorized,
)
from api.schemas import AppendedOut, AppendOut, BatchOut, ItemOut, Page, SubmitOut
from core import queries
from core import submit as service
from core.config import Settings, get_settings, open_files
from core.db import sessions_for
from core.imageio import TooLarge
from core.options import BatchOptions
from core.storage import Storage
from core.tables import Batch, ItemState
from core.tenants import authenticate

log = logging.getLogger(__name__)
LISTS = {"files", "references"}  # the only form fields that may repeat


def _key_of(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return request.headers.get("x-api-key") or (auth[7:].strip() if auth.lower().startswith("bearer ") else None)


def _tenant_of(key: str | None) -> str | None:
    if not key:
        return None
    with sessions_for(get_settings().database_url)() as session:
        found = authenticate(session, key)
        return found.tenant_id if found else None


class UploadRoute(APIRoute):
    """Checks the key before a byte of the body is read (a keyless request cannot make the server read 2 GiB;
    TenantDep then takes the tenant found here rather than asking the database again), then parses the
    multipart body with the service's own file limit (Starlette stops at 1,000 files) and refuses a repeated
    form field other than `files`/`references` (422) rather than keeping one silently."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            key = _key_of(request)
            request.state.tenant_id = await run_in_threadpool(_tenant_of, key)
            if request.state.tenant_id is None:
                e = unauthorized(bool(key))
                return JSONResponse({"detail": e.detail}, e.status_code, headers=e.headers)
            try:
                if request.headers.get("content-type", "").startswith("multipart/form-data"):
                    most = min(2 * get_settings().max_files_per_batch + 2,  # files and their references,
                               open_files() - 256)  # each over 1 MiB an open file until the request ends (400 beyond)
                    form = await request.form(max_files=most, max_fields=most + 100)  # cached for the handler
                    repeated = sorted(k for k in set(form.keys()) if k not in LISTS and len(form.getlist(k)) > 1)
                    if repeated:
                        return JSONResponse({"detail": f"form field {repeated[0]!r} given more than once"}, 422)
                return await handler(request)
            except ClientDisconnect:
                log.info("client went away during the upload")
                return Response(status_code=499)
        return route


router = APIRouter(prefix="/batches", tags=["batches"], route_class=UploadRoute)
list_router = APIRouter(prefix="/batches", tags=["batches"])


async def read_upload(upload: UploadFile, limit: int) -> service.Upload:
    """At most limit + 1 bytes are read: one more than allowed tells "too large"; the size is Starlette's count."""
    data = await upload.read(limit + 1)
    return service.Upload(upload.filename or "", data, upload.size or len(data))


def spooled(upload: UploadFile) -> service.SpooledUpload:
    """A part as Starlette left it: in memory up to 1 MiB, on disk beyond; hashed and stored by streaming."""
    return service.SpooledUpload(upload.filename or "", upload.file, upload.size or 0)


IdempotencyKey = Annotated[str | None, Header(max_length=255, pattern=r"^[\x21-\x7e]+$",
                                              description="the same key and request give the same batch")]
OptionsForm = Annotated[BatchOptions, Form()]


def submit(session: Session, settings: SettingsDep, storage: StorageDep, enqueue: EnqueueDep, tenant: str,
           uploads: list[service.Sendable], refs: dict[str, service.Sendable], options: BatchOptions,
           idempotency_key: str | None, response: Response) -> SubmitOut:
    """201 with a new batch; 200 with the earlier batch when an Idempotency-Key is repeated with the same request.
    Blocking (database, storage, broker): the async handlers run it in the thread pool."""
    with committed(session):
        batch, created = service.submit(session, storage, settings, tenant, uploads, options, refs, idempotency_key)
    if created:
        enqueue([i.id for i in batch.items if i.state == ItemState.queued])
    else:
        response.status_code = status.HTTP_200_OK
    out = presenters.batch_out(session, batch)
    return SubmitOut(**out.model_dump(), items=[presenters.item_out(i) for i in batch.items])


@router.post("", response_model=SubmitOut, status_code=status.HTTP_201_CREATED, operation_id="batches-create")
async def create_batch(
    session: SessionDep, settings: SettingsDep, storage: StorageDep, enqueue: EnqueueDep, tenant: TenantDep,
    response: Response, options: OptionsForm, idempotency_key: IdempotencyKey = None, *,
    files: Annotated[list[UploadFile], File(description="images")],
    references: Annotated[list[UploadFile], File(description="clean references, matched by file name")] = [],  # noqa: B006
) -> SubmitOut:
    uploads = [spooled(f) for f in files]  # streamed from Starlette's temporary files, one at a time
    refs = {ref.filename: ref for ref in map(spooled, references)}
    return await run_in_threadpool(submit, session, settings, storage, enqueue, tenant, uploads, refs, options,
                                   idempotency_key, response)


@router.post("/open", response_model=BatchOut, status_code=status.HTTP_201_CREATED, operation_id="batches-open")
def open_batch(session: SessionDep, settings: SettingsDep, tenant: TenantDep, response: Response,
               options: Annotated[BatchOptions, Body()] = BatchOptions(), idempotency_key: IdempotencyKey = None,  # noqa: B008
               ) -> BatchOut:
    """An open batch: append files with POST /batches/{id}/files in as many requests as needed, then seal it.
    201 with a new batch; 200 with the earlier one when the Idempotency-Key and the options are repeated."""
    with committed(session):
        batch, created = service.open_batch(session, settings, tenant, options, idempotency_key,
                                            service.open_digest(options), sealed=False)
    if not created:
        response.status_code = status.HTTP_200_OK
    return presenters.batch_out(session, batch)


def append(session: Session, settings: Settings, storage: Storage, enqueue: Callable[[list[str]], None], batch: Batch,
           files: list[UploadFile], refs: dict[str, service.Sendable]) -> AppendOut:
    """Stores the files one by one, commits, then queues the new valid items (they start before the seal)."""
    if len(files) > settings.max_files_per_batch:
        raise Refused(status.HTTP_413_CONTENT_TOO_LARGE,
                      f"{len(files)} files, the limit is {settings.max_files_per_batch} per request", "request_too_large")
    with committed(session):
        added = service.append(session, storage, settings, batch, (spooled(f) for f in files), refs)
    if new := [i.id for a in added if not a.duplicate for i in (a.item, *a.pages) if i.state == ItemState.queued]:
        enqueue(new)
    return AppendOut(batch=presenters.batch_out(session, batch),
                     files=[AppendedOut(filename=f.filename or "", duplicate=a.duplicate, item=presenters.item_out(a.item))
                            for f, a in zip(files, added, strict=True)])


@router.post("/{batch_id}/files", response_model=AppendOut, operation_id="batches-append")
async def append_files(
    session: SessionDep, settings: SettingsDep, storage: StorageDep, enqueue: EnqueueDep, batch: BatchDep, *,
    files: Annotated[list[UploadFile], File(description="images")],
    references: Annotated[list[UploadFile], File(description="clean references, matched by file name")] = [],  # noqa: B006
) -> AppendOut:
    """Adds files to an open batch (409 once sealed or full). A file whose content the batch holds already is not added
    again (`duplicate`), so a client may resend a request whose answer it did not get."""
    refs = {ref.filename: ref for ref in map(spooled, references)}
    return await run_in_threadpool(append, session, settings, storage, enqueue, batch, files, refs)


@list_router.post("/{batch_id}/seal", response_model=BatchOut, operation_id="batches-seal")
def seal_batch(session: SessionDep, batch: BatchDep) -> BatchOut:
    """No more files; the batch finishes when its items do. Sealing a sealed batch changes nothing."""
    with committed(session):
        service.seal(session, batch)
    return presenters.batch_out(session, batch)


@list_router.delete("/{batch_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
                    responses=DELETED, operation_id="batches-delete")
def delete_batch(session: SessionDep, storage: StorageDep, batch: BatchDep) -> Response:
    """Deletes the batch, open or sealed, finished or not, with its items, results and every stored file: uploads,
    references, result images, thumbnails. An item a worker is running is dropped when it finishes. 202 when the
    file storage failed: the batch is gone, and the reconciler deletes its files later."""
    with committed(session):
        ids = service.delete_batch(session, batch)
    return swept(session, storage, ids)


@list_router.get("", response_model=Page[BatchOut], operation_id="batches-list")
def list_batches(session: SessionDep, tenant: TenantDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Offset = 0) -> Page[BatchOut]:
    rows, count = queries.list_batches(session, tenant, limit, offset)
    return Page(data=presenters.batches_out(session, rows), count=count)


@list_router.get("/{batch_id}", response_model=BatchOut, operation_id="batches-get")
def get_batch(session: SessionDep, batch: BatchDep) -> BatchOut:
    return presenters.batch_out(session, batch)


Noted = Annotated[bool, Query(description="only items whose result has a note (only a file's first page was "
                                          "processed; the denoiser gave nothing usable)")]


@list_router.get("/{batch_id}/items", response_model=Page[ItemOut], operation_id="batches-items")
def batch_items(session: SessionDep, batch: BatchDep, state: ItemState | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Offset = 0,
                noted: Noted = False) -> Page[ItemOut]:
    items, count = queries.batch_items(session, batch.id, state, limit, offset, noted)
    return Page(data=[presenters.item_out(i) for i in items], count=count)


images = APIRouter(prefix="/images", tags=["images"], route_class=UploadRoute)


@images.post("", response_model=SubmitOut, status_code=status.HTTP_201_CREATED, operation_id="images-create")
async def create_image(
    session: SessionDep, settings: SettingsDep, storage: StorageDep, enqueue: EnqueueDep, tenant: TenantDep,
    response: Response, options: OptionsForm, idempotency_key: IdempotencyKey = None, *,
    file: Annotated[UploadFile, File(description="one image")],
    reference: Annotated[UploadFile | None, File(description="its clean reference")] = None,
) -> SubmitOut:
    """One image (a multi-page TIFF: an item a page); unlike a batch, an image or reference over a size limit is
    refused whole with 413."""
    limits = service.limits_of(settings)
    upload = await read_upload(file, settings.max_file_bytes)
    ref = await read_upload(reference, settings.max_file_bytes) if reference else None
    for part, what in ((upload, "file"), (ref, "reference")):
        if part is not None and isinstance(error := part.check(limits), TooLarge):
            raise Refused(status.HTTP_413_CONTENT_TOO_LARGE, f"{what}: {error}", "file_too_large")
    refs = {upload.filename: ref} if ref else {}
    return await run_in_threadpool(submit, session, settings, storage, enqueue, tenant, [upload], refs, options,
                                   idempotency_key, response)
