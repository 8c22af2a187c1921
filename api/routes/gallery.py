"""The gallery: server-rendered pages over the same queries as the API. The key is entered once in a form and
kept in an HttpOnly, SameSite=Strict session cookie (never in a URL); images load through the API's routes."""
import math
from dataclasses import asdict
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.deps import COOKIE, SessionDep, TenantDep
from api.routes.batches import batches_out
from api.routes.captions import FilterDep
from core import queries
from core.tables import ItemState
from core.tenants import authenticate

router = APIRouter(prefix="/gallery", tags=["gallery"], default_response_class=HTMLResponse)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
PAGE = 48
Page = Annotated[int, Query(ge=1, le=2**31 // PAGE)]


INVALID = "That key is not valid (or revoked)."


def render(request: Request, name: str, **context: object) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"signed_in": True, **context})


def login_page(request: Request, next: str, message: str = "", code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"signed_in": False, "next": next, "message": message},
                                      status_code=code)


def paging(request: Request, page: int, count: int) -> dict[str, object]:
    def query(**changes: object) -> str:
        return urlencode({**request.query_params, **changes})
    return {"page": page, "pages": max(1, math.ceil(count / PAGE)), "count": count, "query": query}


async def login_page_on_401(request: Request, exc: HTTPException) -> Response:
    """A gallery page asked for without a valid key shows the sign-in form (still a 401)."""
    if exc.status_code == status.HTTP_401_UNAUTHORIZED and request.url.path.startswith("/gallery"):
        message = "" if exc.detail.startswith("an API key is required") else INVALID
        return login_page(request, request.url.path, message, 401)
    return await http_exception_handler(request, exc)


@router.get("", operation_id="gallery-batches")
def batches_page(request: Request, session: SessionDep, tenant: TenantDep) -> HTMLResponse:
    rows, _ = queries.list_batches(session, tenant, 500, 0)
    return render(request, "batches.html", batches=batches_out(session, rows))


@router.get("/login", operation_id="gallery-login-form")
def login_form(request: Request, next: str = "/gallery") -> HTMLResponse:
    return login_page(request, next)


@router.post("/login", operation_id="gallery-login", response_model=None)
def login(request: Request, session: SessionDep, key: Annotated[str, Form(max_length=200)],
          next: Annotated[str, Form(max_length=300)] = "/gallery") -> Response:
    if authenticate(session, key.strip()) is None:
        return login_page(request, next, INVALID, 401)
    target = next if next.startswith("/gallery") and "//" not in next else "/gallery"  # no open redirect
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(COOKIE, key.strip(), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


@router.post("/logout", operation_id="gallery-logout")
def logout() -> RedirectResponse:
    response = RedirectResponse("/gallery/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/batches/{batch_id}", operation_id="gallery-batch")
def batch_page(request: Request, session: SessionDep, tenant: TenantDep, batch_id: str,
               state: ItemState | None = None, page: Page = 1) -> HTMLResponse:
    batch = queries.tenant_batch(session, tenant, batch_id)
    if batch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "batch not found")
    items, count = queries.batch_items(session, batch_id, state, PAGE, (page - 1) * PAGE)
    counts = queries.batch_counts(session, [batch_id])[batch_id]
    _, progress, _ = queries.progress(counts)
    return render(request, "batch.html", batch=batch, items=items, counts=counts, progress=progress,
                  states=list(ItemState), state=state, **paging(request, page, count))


@router.get("/items/{item_id}", operation_id="gallery-item")
def item_page(request: Request, session: SessionDep, tenant: TenantDep, item_id: str) -> HTMLResponse:
    item = queries.tenant_item(session, tenant, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "item not found")
    return render(request, "item.html", item=item, r=item.result)


@router.get("/search", operation_id="gallery-search")
def search_page(request: Request, session: SessionDep, tenant: TenantDep, f: FilterDep,
                page: Page = 1) -> HTMLResponse:
    rows, count = queries.search_captions(session, tenant, f, PAGE, (page - 1) * PAGE)
    export = urlencode({k: v for k, v in asdict(f).items() if v is not None})
    return render(request, "search.html", f=f, items=[item for _, item in rows], export=export,
                  **paging(request, page, count))

