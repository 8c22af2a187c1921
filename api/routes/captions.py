"""Search stored captions with score filters; export them as CSV or JSON lines."""
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import FilterDep, Offset, SessionDep, SettingsDep, TenantDep
from api.presenters import caption_out, export_captions
from api.schemas import CaptionOut, Page
from core import queries

router = APIRouter(prefix="/captions", tags=["captions"])


@router.get("", response_model=Page[CaptionOut], operation_id="captions-search")
def search(session: SessionDep, tenant: TenantDep, f: FilterDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
           offset: Offset = 0) -> Page[CaptionOut]:
    rows, count = queries.search_captions(session, tenant, f, limit, offset)
    return Page(data=[caption_out(r, i) for r, i in rows], count=count)


@router.get("/export", response_class=StreamingResponse, operation_id="captions-export",
            responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}})
def export(session: SessionDep, settings: SettingsDep, tenant: TenantDep, f: FilterDep,
           format: Literal["csv", "jsonl"] = "csv") -> StreamingResponse:
    return export_captions(session, settings, tenant, f, format)
