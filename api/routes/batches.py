"""Submit batches (or one image) and poll them."""
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query, UploadFile, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.deps import EnqueueDep, SessionDep, SettingsDep, StorageDep
from api.routes.items import item_out
from api.schemas import BatchOut, ItemOut, Page, SubmitOut
from core import queries, service
from core.tables import Batch, Item, ItemState

router = APIRouter(prefix="/batches", tags=["batches"])


async def read_upload(upload: UploadFile, limit: int) -> service.Upload:
    data = await upload.read(limit + 1)  # one byte more than allowed tells "too large" without reading it all
    return service.Upload(upload.filename or "", data)


def batch_out(session: Session, batch: Batch) -> BatchOut:
    counts = queries.batch_counts(session, batch.id)
    total, progress, finished = queries.progress(counts)
    return BatchOut(id=batch.id, created_at=batch.created_at, options=batch.options, total=total, counts=counts,
                    progress=progress, finished=finished)


async def submit(session: SessionDep, settings: SettingsDep, storage: StorageDep, enqueue: EnqueueDep,
                 files: list[UploadFile], references: list[UploadFile], options: service.BatchOptions) -> SubmitOut:
    uploads = [await read_upload(f, settings.max_file_bytes) for f in files]
    refs = {r.filename: r.data for r in [await read_upload(f, settings.max_file_bytes) for f in references]}
    try:
        batch = service.submit(session, storage, settings, uploads, options, refs)
    except service.SubmitError as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from None
    session.commit()
    enqueue([i.id for i in batch.items if i.state == ItemState.queued])
    out = batch_out(session, batch)
    return SubmitOut(**out.model_dump(), items=[item_out(i) for i in batch.items])


def _options(add_noise: float | None, seed: int, denoise_sigma: float | None, denoiser: str,
             captioner: str) -> service.BatchOptions:
    return service.BatchOptions(add_noise=add_noise, seed=seed, denoise_sigma=denoise_sigma, denoiser=denoiser,
                                captioner=captioner)


@router.post("", response_model=SubmitOut, status_code=status.HTTP_201_CREATED, operation_id="batches-create")
async def create_batch(
    session: SessionDep, settings: SettingsDep, storage: StorageDep, enqueue: EnqueueDep,
    files: Annotated[list[UploadFile], Form(description="images")],
    references: Annotated[list[UploadFile], Form(description="clean references, matched by file name")] = [],  # noqa: B006
    add_noise: Annotated[float | None, Form(ge=0, le=255, description="add Gaussian noise of this sigma (0-255)")] = None,
    seed: Annotated[int, Form(ge=0)] = 0,
    denoise_sigma: Annotated[float | None, Form(ge=0, le=255, description="skip the estimate")] = None,
    denoiser: Annotated[str, Form()] = "ffdnet",
    captioner: Annotated[str, Form()] = "attention",
) -> SubmitOut:
    return await submit(session, settings, storage, enqueue, files, references,
                        _options(add_noise, seed, denoise_sigma, denoiser, captioner))


@router.get("", response_model=Page[BatchOut], operation_id="batches-list")
def list_batches(session: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 offset: Annotated[int, Query(ge=0)] = 0) -> Page[BatchOut]:
    rows, count = queries.list_batches(session, limit, offset)
    return Page(data=[batch_out(session, b) for b in rows], count=count)


@router.get("/{batch_id}", response_model=BatchOut, operation_id="batches-get")
def get_batch(session: SessionDep, batch_id: str) -> BatchOut:
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "batch not found")
    return batch_out(session, batch)


@router.get("/{batch_id}/items", response_model=Page[ItemOut], operation_id="batches-items")
def batch_items(session: SessionDep, batch_id: str, state: ItemState | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0)] = 0) -> Page[ItemOut]:
    if session.get(Batch, batch_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "batch not found")
    stmt = select(Item).where(Item.batch_id == batch_id)
    if state is not None:
        stmt = stmt.where(Item.state == state)
    count = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(stmt.order_by(Item.position).limit(limit).offset(offset)).all()
    return Page(data=[item_out(i) for i in items], count=count)


images = APIRouter(prefix="/images", tags=["images"])


@images.post("", response_model=SubmitOut, status_code=status.HTTP_201_CREATED, operation_id="images-create")
async def create_image(
    session: SessionDep, settings: SettingsDep, storage: StorageDep, enqueue: EnqueueDep,
    file: Annotated[UploadFile, Form(description="one image")],
    reference: Annotated[UploadFile | None, Form(description="its clean reference")] = None,
    add_noise: Annotated[float | None, Form(ge=0, le=255)] = None,
    seed: Annotated[int, Form(ge=0)] = 0,
    denoise_sigma: Annotated[float | None, Form(ge=0, le=255)] = None,
    denoiser: Annotated[str, Form()] = "ffdnet",
    captioner: Annotated[str, Form()] = "attention",
) -> SubmitOut:
    if reference is not None:
        reference.filename = file.filename
    return await submit(session, settings, storage, enqueue, [file], [reference] if reference else [],
                        _options(add_noise, seed, denoise_sigma, denoiser, captioner))
