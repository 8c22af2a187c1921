"""One item: status, result, and its images."""
from typing import Literal

from fastapi import APIRouter, HTTPException, Response, status

from api.deps import SessionDep, StorageDep, TenantDep
from api.schemas import ItemOut
from core import queries, service
from core.tables import Item, Result

router = APIRouter(prefix="/items", tags=["items"])
PNG = {"content": {"image/png": {}}}


def item_out(item: Item) -> ItemOut:
    out = ItemOut.model_validate(item)
    links = {"self": f"/items/{item.id}", "original": f"/items/{item.id}/original"}
    if item.result is not None:
        links |= {"denoised": f"/items/{item.id}/denoised.png", "noisy": f"/items/{item.id}/noisy.png",
                  "thumbnail": f"/items/{item.id}/thumbs/denoised.jpg"}
    out.links = links
    return out


def _item(session: SessionDep, tenant: str, item_id: str) -> Item:
    item = queries.tenant_item(session, tenant, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "item not found")
    return item


@router.get("/{item_id}", response_model=ItemOut, operation_id="items-get")
def get_item(session: SessionDep, tenant: TenantDep, item_id: str) -> ItemOut:
    return item_out(_item(session, tenant, item_id))


def _result(session: SessionDep, tenant: str, item_id: str, which: str) -> Result:
    item = _item(session, tenant, item_id)
    if item.result is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"item is {item.state.value}; no {which} image yet")
    return item.result


def _result_image(session: SessionDep, storage: StorageDep, tenant: str, item_id: str, which: str) -> Response:
    result = _result(session, tenant, item_id, which)
    key = result.denoised_key if which == "denoised" else result.noisy_key
    return Response(storage.get(key), media_type="image/png")


@router.get("/{item_id}/denoised.png", response_class=Response, responses={200: PNG}, operation_id="items-denoised")
def denoised_image(session: SessionDep, storage: StorageDep, tenant: TenantDep, item_id: str) -> Response:
    return _result_image(session, storage, tenant, item_id, "denoised")


@router.get("/{item_id}/noisy.png", response_class=Response, responses={200: PNG}, operation_id="items-noisy")
def noisy_image(session: SessionDep, storage: StorageDep, tenant: TenantDep, item_id: str) -> Response:
    """The image the denoiser saw (with the synthetic noise, if the batch asked for it)."""
    return _result_image(session, storage, tenant, item_id, "noisy")


@router.get("/{item_id}/thumbs/{which}.jpg", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}}, operation_id="items-thumbnail")
def thumbnail(session: SessionDep, storage: StorageDep, tenant: TenantDep, item_id: str,
              which: Literal["noisy", "denoised"]) -> Response:
    """A small JPEG of the noisy or the denoised image, made once and cached."""
    return Response(service.thumbnail(storage, _result(session, tenant, item_id, which), which), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=86400"})


@router.get("/{item_id}/original", response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}},
            operation_id="items-original")
def original_file(session: SessionDep, storage: StorageDep, tenant: TenantDep, item_id: str) -> Response:
    item = _item(session, tenant, item_id)
    key = service.input_key(item.id)
    if (data := storage.find(key)) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the upload was refused and not kept")
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{item.id}"'})
