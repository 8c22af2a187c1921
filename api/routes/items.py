"""One item: status, result, and its images."""
from typing import Literal

from fastapi import APIRouter, Response, status

from api import presenters
from api.deps import DELETED, ItemDep, SessionDep, StorageDep, committed, swept
from api.schemas import ItemOut
from core import submit as service

router = APIRouter(prefix="/items", tags=["items"])
PNG = {"content": {"image/png": {}}}


@router.get("/{item_id}", response_model=ItemOut, operation_id="items-get")
def get_item(item: ItemDep) -> ItemOut:
    return presenters.item_out(item)


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=DELETED,
               operation_id="items-delete")
def delete_item(session: SessionDep, storage: StorageDep, item: ItemDep) -> Response:
    """Deletes the item, its result and its stored files, from an open or a sealed batch; the first page of a
    multi-page file takes the file's other pages with it. 202 when the file storage failed: the item is gone, and
    the reconciler deletes its files later."""
    with committed(session):
        ids = service.delete_item(session, item)
    return swept(session, storage, ids)


@router.get("/{item_id}/denoised.png", response_class=Response, responses={200: PNG}, operation_id="items-denoised")
def denoised_image(item: ItemDep, storage: StorageDep) -> Response:
    return presenters.result_png(storage, item, "denoised")


@router.get("/{item_id}/noisy.png", response_class=Response, responses={200: PNG}, operation_id="items-noisy")
def noisy_image(item: ItemDep, storage: StorageDep) -> Response:
    """The image the denoiser saw (with the synthetic noise, if the batch asked for it)."""
    return presenters.result_png(storage, item, "noisy")


@router.get("/{item_id}/thumbs/{which}.jpg", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}}, operation_id="items-thumbnail")
def thumbnail(item: ItemDep, storage: StorageDep, which: Literal["noisy", "denoised"]) -> Response:
    """A small JPEG of the noisy or the denoised image, made once and cached."""
    return presenters.thumbnail(storage, item, which)


@router.get("/{item_id}/original", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}}, operation_id="items-original")
def original_file(item: ItemDep, storage: StorageDep) -> Response:
    return presenters.original(storage, item)
