"""Submit batches (or one image) and poll them."""
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Form, Header, HTTPException, Query, Request, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import EnqueueDep, SessionDep, SettingsDep, StorageDep, TenantDep
from api.routes.items import item_out
from api.schemas import BatchOut, ItemOut, Offset, Page, SubmitOut
from core import queries, service
from core.config import get_settings
from core.imageio import TooLarge
from core.tables import Batch, ItemState


class UploadRoute(APIRoute):
    """Reads multipart bodies with the service's own file limit (Starlette stops at 1,000 files with a 400);
    a batch over DENOCAP_MAX_FILES_PER_BATCH is then refused by the service with 413."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                most = 2 * get_settings().max_files_per_batch + 2  # files and their references
                await request.form(max_files=most, max_fields=most + 100)  # cached for the handler
            return await handler(request)
        return route


router = APIRouter(prefix="/batches", tags=["batches"], route_class=UploadRoute)


async def read_upload(upload: UploadFile, limit: int) -> service.Upload:
    data = await upload.read(limit + 1)  # one byte more than allowed tells "too large" without reading it all
    return service.Upload(upload.filename or "", data)


def batches_out(session: Session, batches: list[Batch]) -> list[BatchOut]:
    counts = queries.batch_counts(session, [b.id for b in batches])
    out = []
    for batch in batches:
        total, progress, finished = queries.progress(counts[batch.id])
        out.append(BatchOut(id=batch.id, created_at=batch.created_at, options=batch.options, total=total,
                            counts=counts[batch.id], progress=progress, finished=finished))
    return out


def batch_out(session: Session, batch: Batch) -> BatchOut:
    return batches_out(session, [batch])[0]


STATUS = {service.RequestTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
          service.TooManyInFlight: status.HTTP_429_TOO_MANY_REQUESTS,
          service.IdempotencyConflict: status.HTTP_409_CONFLICT}
IdempotencyKey = Annotated[str | None, Header(max_length=255, description="the same key and request give the same batch")]


def submit(session: Session, settings: SettingsDep, storage: StorageDep, enqueue: EnqueueDep, tenant: str,
           uploads: list[service.Upload], refs: dict[str, bytes], options: service.BatchOptions,
           idempotency_key: str | None, response: Response) -> SubmitOut:
    """201 with a new batch; 200 with the earlier batch when an Idempotency-Key is repeated with the same request.
    Blocking (database, storage, broker): the async handlers run it in the thread pool."""
    try:
        batch, created = service.submit(session, storage, settings, tenant, uploads, options, refs, idempotency_key)
        session.commit()
    except service.SubmitError as e:
        code = STATUS.get(type(e), status.HTTP_422_UNPROCESSABLE_CONTENT)
        headers = {"Retry-After": "60"} if code == status.HTTP_429_TOO_MANY_REQUESTS else None
        raise HTTPException(code, str(e), headers=headers) from None
    except IntegrityError:  # the same key submitted at the same moment: the other request made the batch
        session.rollback()
        batch, created = service.submit(session, storage, settings, tenant, uploads, options, refs, idempotency_key)
    if created:
        enqueue([i.id for i in batch.items if i.state == ItemState.queued])
    else:
        response.status_code = status.HTTP_200_OK
    out = batch_out(session, batch)
    return SubmitOut(**out.model_dump(), items=[item_out(i) for i in batch.items])


def _options(add_noise: float | None, seed: int, denoise_sigma: float | None, denoiser: str,
             captioner: str) -> service.BatchOptions:
    return service.BatchOptions(add_noise=add_noise, seed=seed, denoise_sigma=denoise_sigma, denoiser=denoiser,
                                captioner=captioner)


@router.post("", response_model=SubmitOut, status_code=status.HTTP_201_CREATED, operation_id="batches-create")
async def create_batch(
    session: SessionDep, settings: SettingsDep, storage: StorageDep, enqueue: EnqueueDep, tenant: TenantDep,
    response: Response, idempotency_key: IdempotencyKey = None, *,
    files: Annotated[list[UploadFile], Form(description="images")],
    references: Annotated[list[UploadFile], Form(description="clean references, matched by file name")] = [],  # noqa: B006
    add_noise: Annotated[float | None, Form(ge=0, le=255, description="add Gaussian noise of this sigma (0-255)")] = None,
    seed: Annotated[int, Form(ge=0)] = 0,
    denoise_sigma: Annotated[float | None, Form(ge=0, le=255, description="skip the estimate")] = None,
    denoiser: Annotated[str, Form()] = "ffdnet",
    captioner: Annotated[str, Form()] = "attention",
) -> SubmitOut:
    uploads = [await read_upload(f, settings.max_file_bytes) for f in files]
    refs = {r.filename: r.data for r in [await read_upload(f, settings.max_file_bytes) for f in references]}
    return await run_in_threadpool(submit, session, settings, storage, enqueue, tenant, uploads, refs,
                                   _options(add_noise, seed, denoise_sigma, denoiser, captioner), idempotency_key,
                                   response)


@router.get("", response_model=Page[BatchOut], operation_id="batches-list")
def list_batches(session: SessionDep, tenant: TenantDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Offset = 0) -> Page[BatchOut]:
    rows, count = queries.list_batches(session, tenant, limit, offset)
    return Page(data=batches_out(session, rows), count=count)


def _batch(session: Session, tenant: str, batch_id: str) -> Batch:
    batch = queries.tenant_batch(session, tenant, batch_id)
    if batch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "batch not found")
    return batch


@router.get("/{batch_id}", response_model=BatchOut, operation_id="batches-get")
def get_batch(session: SessionDep, tenant: TenantDep, batch_id: str) -> BatchOut:
    return batch_out(session, _batch(session, tenant, batch_id))


@router.get("/{batch_id}/items", response_model=Page[ItemOut], operation_id="batches-items")
def batch_items(session: SessionDep, tenant: TenantDep, batch_id: str, state: ItemState | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Offset = 0) -> Page[ItemOut]:
    _batch(session, tenant, batch_id)
    items, count = queries.batch_items(session, batch_id, state, limit, offset)
    return Page(data=[item_out(i) for i in items], count=count)


images = APIRouter(prefix="/images", tags=["images"], route_class=UploadRoute)


@images.post("", response_model=SubmitOut, status_code=status.HTTP_201_CREATED, operation_id="images-create")
async def create_image(
    session: SessionDep, settings: SettingsDep, storage: StorageDep, enqueue: EnqueueDep, tenant: TenantDep,
    response: Response, idempotency_key: IdempotencyKey = None, *,
    file: Annotated[UploadFile, Form(description="one image")],
    reference: Annotated[UploadFile | None, Form(description="its clean reference")] = None,
    add_noise: Annotated[float | None, Form(ge=0, le=255)] = None,
    seed: Annotated[int, Form(ge=0)] = 0,
    denoise_sigma: Annotated[float | None, Form(ge=0, le=255)] = None,
    denoiser: Annotated[str, Form()] = "ffdnet",
    captioner: Annotated[str, Form()] = "attention",
) -> SubmitOut:
    """One image; unlike a batch, an image over a size limit is refused whole with 413."""
    upload = await read_upload(file, settings.max_file_bytes)
    if isinstance(error := service.precheck(upload.data, service.limits_of(settings)), TooLarge):
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(error))
    refs = {upload.filename: (await read_upload(reference, settings.max_file_bytes)).data} if reference else {}
    return await run_in_threadpool(submit, session, settings, storage, enqueue, tenant, [upload], refs,
                                   _options(add_noise, seed, denoise_sigma, denoiser, captioner), idempotency_key,
                                   response)
