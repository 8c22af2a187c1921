"""The gallery: server-rendered pages over the same queries as the API. Signing in with an API key starts a
server-side session (random id and secret, only its hash stored, expiring, ended on sign-out) held in an
HttpOnly, SameSite=Strict cookie; only the gallery's routes accept that cookie, and every state-changing
gallery request must come from the gallery's own origin (CSRF)."""
import math
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from api import presenters
from api.deps import (
    COOKIE,
    FilterDep,
    GalleryBatchDep,
    GalleryItemDep,
    GalleryTenantDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    committed,
    session_cookie,
    sweep_after,
)
from api.schemas import BatchOut, Page
from core import queries, tenants
from core import submit as service
from core.tables import ItemState

router = APIRouter(prefix="/gallery", tags=["gallery"], default_response_class=HTMLResponse)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
templates.env.filters["score"] = lambda value, form: "–" if value is None else form % value  # SSIM of a 2x2 image: none
PAGE = 48
PageNo = Annotated[int, Query(ge=1, le=2**31 // PAGE)]
INVALID = "That key is not valid (or revoked)."


class EmptyBoxes:
    """A gallery form sent without JavaScript carries its empty boxes (`min_psnr=`; `state=`, the "all" state):
    they are dropped before validation, so an empty box means no filter. The JSON API keeps its 422 for them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] + "/").startswith(router.prefix + "/"):
            pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)  # as Starlette reads it
            if any(v == "" for _, v in pairs):
                scope = {**scope, "query_string": urlencode([(k, v) for k, v in pairs if v != ""]).encode("latin-1")}
        await self.app(scope, receive, send)


def same_origin(request: Request) -> None:
    """CSRF: a state-changing request must carry our own Origin (or, without one, a Referer from here)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    ours = f"{request.url.scheme}://{request.url.netloc}"
    if source is None or f"{urlsplit(source).scheme}://{urlsplit(source).netloc}" != ours:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site request refused")


SameOrigin = Depends(same_origin)
NEXT_MOST = 300  # characters of the page a sign-in leads back to


def render(request: Request, name: str, **context: object) -> HTMLResponse:
    """A signed-in page, never kept by the browser: after signing out, Back must not show the captions again."""
    return templates.TemplateResponse(request, name, {"signed_in": True, **context},
                                      headers={"Cache-Control": "no-store"})


def login_page(request: Request, next: str, message: str = "", code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"signed_in": False, "next": next, "message": message},
                                      status_code=code)


def paging(request: Request, page: int, count: int) -> dict[str, object]:
    def query(**changes: object) -> str:
        return urlencode({**request.query_params, **changes})
    return {"page": page, "pages": max(1, math.ceil(count / PAGE)), "count": count, "query": query}


async def login_page_on_401(request: Request, exc: HTTPException) -> Response:
    """A gallery page asked for without a live session shows the sign-in form (still a 401)."""
    if exc.status_code == status.HTTP_401_UNAUTHORIZED and request.url.path.startswith("/gallery"):
        message = "" if exc.detail.startswith("an API key is required") else "Your session has ended; sign in again."
        return login_page(request, _back_to(request), message, 401)
    return await http_exception_handler(request, exc)


def _back_to(request: Request) -> str:
    """Where signing in leads: the page asked for, with its query (a search's words); the gallery after a form's
    POST (a deletion), which a redirect cannot repeat (it was a 405) and should not repeat unseen."""
    if request.method != "GET":
        return "/gallery"
    back = f"{request.url.path}?{request.url.query}" if request.url.query else request.url.path
    return back if len(back) <= NEXT_MOST else request.url.path


@router.get("", operation_id="gallery-batches")
def batches_page(request: Request, session: SessionDep, tenant: GalleryTenantDep, page: PageNo = 1) -> HTMLResponse:
    rows, count = queries.list_batches(session, tenant, PAGE, (page - 1) * PAGE)
    return render(request, "batches.html", batches=presenters.batches_out(session, rows), noun="batches",
                  **paging(request, page, count))


@router.get("/batches.json", response_class=JSONResponse, response_model=Page[BatchOut],
            operation_id="gallery-batches-json")
def batches_json(session: SessionDep, tenant: GalleryTenantDep,
                 id: Annotated[list[str], Query(max_length=PAGE)]) -> Page[BatchOut]:
    """The batches page's progress bars poll this for the batches they show (by id: new batches move the rows
    of a page onto the next one)."""
    rows, count = queries.list_batches(session, tenant, PAGE, 0, id)
    return Page(data=presenters.batches_out(session, rows), count=count)


@router.get("/login", operation_id="gallery-login-form")
def login_form(request: Request, next: str = "/gallery") -> HTMLResponse:
    return login_page(request, next)


@router.post("/login", operation_id="gallery-login", response_model=None, dependencies=[SameOrigin])
def login(request: Request, session: SessionDep, key: Annotated[str, Form(max_length=200)],
          next: Annotated[str, Form(max_length=NEXT_MOST)] = "/gallery") -> Response:
    found = tenants.authenticate(session, key.strip())
    if found is None:
        return login_page(request, next, INVALID, 401)
    cookie = tenants.start_session(session, found)
    session.commit()
    target = next if next.startswith("/gallery") and "//" not in next else "/gallery"  # no open redirect
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/gallery")  # a browser-session cookie, as the page says; the server ends it too
    return response


@router.post("/logout", operation_id="gallery-logout", dependencies=[SameOrigin])
def logout(session: SessionDep, cookie: Annotated[str | None, Depends(session_cookie)]) -> RedirectResponse:
    if cookie:
        tenants.end_session(session, cookie)
        session.commit()
    response = RedirectResponse("/gallery/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/gallery")
    return response


@router.get("/batches/{batch_id}", operation_id="gallery-batch")
def batch_page(request: Request, session: SessionDep, batch: GalleryBatchDep,
               state: ItemState | None = None, page: PageNo = 1) -> HTMLResponse:
    items, count = queries.batch_items(session, batch.id, state, PAGE, (page - 1) * PAGE)
    counts = queries.batch_counts(session, [batch.id])[batch.id]
    _, progress, _ = queries.progress(counts)
    return render(request, "batch.html", batch=batch, items=items, counts=counts, progress=progress,
                  states=list(ItemState), state=state, **paging(request, page, count))


@router.post("/batches/{batch_id}/delete", operation_id="gallery-delete")
def delete_batch(session: SessionDep, storage: StorageDep, batch: GalleryBatchDep,
                 _: Annotated[None, SameOrigin]) -> RedirectResponse:  # signed in first: 401 before 403
    """The batch, its results and its files, for good (the page asks first); back to the batches."""
    with committed(session):
        ids = service.delete_batch(session, batch)
    sweep_after(session, storage, ids)
    return RedirectResponse("/gallery", status_code=status.HTTP_303_SEE_OTHER)


@router.post("/items/{item_id}/delete", operation_id="gallery-delete-item")
def delete_item(session: SessionDep, storage: StorageDep, item: GalleryItemDep,
                _: Annotated[None, SameOrigin]) -> RedirectResponse:
    """The item (a multi-page file's first page: the file), its result and files; back to its batch."""
    batch_id = item.batch_id
    with committed(session):
        ids = service.delete_item(session, item)
    sweep_after(session, storage, ids)
    return RedirectResponse(f"/gallery/batches/{batch_id}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/items/{item_id}", operation_id="gallery-item")
def item_page(request: Request, item: GalleryItemDep) -> HTMLResponse:
    return render(request, "item.html", item=item, r=item.result)


@router.get("/items/{item_id}/thumbs/{which}.jpg", response_class=Response, operation_id="gallery-thumbnail")
def thumbnail(item: GalleryItemDep, storage: StorageDep, which: Literal["noisy", "denoised"]) -> Response:
    return presenters.thumbnail(storage, item, which)


@router.get("/items/{item_id}/{which}.png", response_class=Response, operation_id="gallery-image")
def image(item: GalleryItemDep, storage: StorageDep, which: Literal["noisy", "denoised"]) -> Response:
    return presenters.result_png(storage, item, which)


@router.get("/items/{item_id}/original", response_class=Response, operation_id="gallery-original")
def original(item: GalleryItemDep, storage: StorageDep) -> Response:
    return presenters.original(storage, item)


@router.get("/search", operation_id="gallery-search")
def search_page(request: Request, session: SessionDep, tenant: GalleryTenantDep, f: FilterDep,
                page: PageNo = 1) -> HTMLResponse:
    rows, count = queries.search_captions(session, tenant, f, PAGE, (page - 1) * PAGE)
    export = urlencode({k: v for k, v in asdict(f).items() if v is not None})
    return render(request, "search.html", f=f, items=[item for _, item in rows], export=export,
                  **paging(request, page, count))


@router.get("/export", response_class=Response, operation_id="gallery-export")
def export(session: SessionDep, settings: SettingsDep, tenant: GalleryTenantDep, f: FilterDep,
           format: Literal["csv", "jsonl"] = "csv") -> Response:
    return presenters.export_captions(session, settings, tenant, f, format)
