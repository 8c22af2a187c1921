"""Search stored captions with score filters; export them as CSV or JSON lines."""
import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api.deps import SessionDep, TenantDep
from api.schemas import CaptionOut, Offset, Page, Score
from core import queries
from core.tables import Item, Result

router = APIRouter(prefix="/captions", tags=["captions"])
EXPORT_PAGE = 500


def caption_filter(
    q: Annotated[str | None, Query(max_length=200, description="words that must all occur in a caption")] = None,
    batch_id: Annotated[str | None, Query(max_length=64)] = None,
    min_psnr: Score = None, max_psnr: Score = None,
    min_ssim: Score = None, max_ssim: Score = None,
    min_sigma: Score = None, max_sigma: Score = None,
    max_brisque: Score = None,
) -> queries.CaptionFilter:
    return queries.CaptionFilter(q, batch_id, min_psnr, max_psnr, min_ssim, max_ssim, min_sigma, max_sigma, max_brisque)


FilterDep = Annotated[queries.CaptionFilter, Depends(caption_filter)]


def caption_out(result: Result, item: Item) -> CaptionOut:
    return CaptionOut(item_id=item.id, batch_id=item.batch_id, filename=item.filename, caption=result.caption,
                      caption_noisy=result.caption_noisy, sigma_estimate=result.sigma_estimate, psnr=result.psnr,
                      ssim=result.ssim, psnr_noisy=result.psnr_noisy, brisque=result.brisque,
                      denoiser_version=result.denoiser_version, captioner_version=result.captioner_version)


@router.get("", response_model=Page[CaptionOut], operation_id="captions-search")
def search(session: SessionDep, tenant: TenantDep, f: FilterDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
           offset: Offset = 0) -> Page[CaptionOut]:
    rows, count = queries.search_captions(session, tenant, f, limit, offset)
    return Page(data=[caption_out(r, i) for r, i in rows], count=count)


def _rows(session: Session, tenant: str, f: queries.CaptionFilter) -> Iterator[CaptionOut]:
    offset = 0
    while True:
        rows, _ = queries.search_captions(session, tenant, f, EXPORT_PAGE, offset)
        yield from (caption_out(r, i) for r, i in rows)
        if len(rows) < EXPORT_PAGE:
            return
        offset += EXPORT_PAGE


def _csv(rows: Iterator[CaptionOut]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CaptionOut.model_fields))
    writer.writeheader()
    for row in rows:
        writer.writerow(row.model_dump())
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


@router.get("/export", response_class=StreamingResponse, operation_id="captions-export",
            responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}})
def export(session: SessionDep, tenant: TenantDep, f: FilterDep,
           format: Literal["csv", "jsonl"] = "csv") -> StreamingResponse:
    rows = _rows(session, tenant, f)
    if format == "csv":
        return StreamingResponse(_csv(rows), media_type="text/csv",
                                 headers={"Content-Disposition": 'attachment; filename="captions.csv"'})
    lines = (json.dumps(r.model_dump()) + "\n" for r in rows)
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             headers={"Content-Disposition": 'attachment; filename="captions.jsonl"'})
