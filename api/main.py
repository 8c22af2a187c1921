"""The FastAPI app factory."""
import logging
from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg.errors import QueryCanceled
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import Refused, SessionDep, SettingsDep
from api.metrics import scrape
from api.routes import batches, captions, gallery, items
from api.schemas import Health
from core import queue
from core.config import get_settings
from core.db import STATEMENT_TIMEOUT_S, sessions_for
from core.storage import StorageUnavailable

log = logging.getLogger(__name__)


def celery_enqueue(item_ids: list[str]) -> None:
    """The rows are committed before this runs: if the broker is down, the reconciler sends them later."""
    from kombu.exceptions import OperationalError as BrokerError

    from worker.app import enqueue
    settings = get_settings()
    try:
        enqueue(item_ids, settings.micro_batch)
    except BrokerError as e:
        log.error("broker unavailable, %d items wait for the reconciler: %s", len(item_ids), e)
        return
    with sessions_for(settings.database_url).begin() as session:
        queue.mark_enqueued(session, item_ids)


class BodyLimit:
    """413 for a request body over DENOCAP_MAX_REQUEST_BYTES: at once from Content-Length, and counted as it
    arrives for chunked uploads, which have none (the handler reading the body gets an HTTPException)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = get_settings().max_request_bytes
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > limit:
            too_large = JSONResponse({"detail": f"request body is {length} bytes, the limit is {limit}",
                                      "code": "request_too_large"}, 413)
            return await too_large(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise Refused(413, f"request body is larger than the limit of {limit} bytes", "request_too_large")
            return message
        await self.app(scope, counted, send)


def create_app(enqueue: Callable[[list[str]], None] = celery_enqueue) -> FastAPI:
    app = FastAPIOffline(title="denocap", version="0.1.0", generate_unique_id_function=_operation_id)  # /docs
    # and /redoc from the package's own copies of their scripts: a CDN's would leave them blank offline
    app.state.enqueue = enqueue
    for router in (batches.router, batches.list_router, batches.images, items.router, captions.router, gallery.router):
        app.include_router(router)
    app.add_exception_handler(HTTPException, gallery.login_page_on_401)  # type: ignore[arg-type]

    app.add_middleware(BodyLimit)
    app.add_middleware(gallery.EmptyBoxes)

    @app.exception_handler(Refused)
    async def refusal(_: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "code": exc.code}, exc.status_code, headers=exc.headers)

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, exc: OperationalError) -> JSONResponse:
        if isinstance(exc.orig, QueryCanceled):
            log.warning("query cancelled: %s", exc.orig)
            return JSONResponse({"detail": f"the query ran past {STATEMENT_TIMEOUT_S} s; narrow it (more words, a "
                                 "batch, score bounds) or try again shortly"}, status_code=503,
                                headers={"Retry-After": "30"})
        log.warning("database unavailable: %s", exc.orig)
        return JSONResponse({"detail": "database unavailable, try again shortly"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.exception_handler(StorageUnavailable)
    async def storage_down(_: Request, exc: StorageUnavailable) -> JSONResponse:
        log.warning("file storage unavailable: %s", exc)
        return JSONResponse({"detail": "file storage unavailable, try again shortly"}, status_code=503,
                            headers={"Retry-After": "30"})

    @app.exception_handler(PoolTimeout)
    async def database_busy(_: Request, exc: PoolTimeout) -> JSONResponse:
        log.warning("no database connection free: %s", exc)
        return JSONResponse({"detail": "the server is busy, try again shortly"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.get("/", include_in_schema=False, operation_id="ops-root")
    def root() -> RedirectResponse:
        return RedirectResponse("/gallery")

    @app.get("/health", response_model=Health, tags=["ops"], operation_id="ops-health")
    def health(session: SessionDep) -> Health:
        session.execute(text("SELECT 1"))
        return Health(status="ok", database=True)

    @app.get("/metrics", tags=["ops"], operation_id="ops-metrics", response_class=Response)
    def metrics(settings: SettingsDep) -> Response:
        text = scrape(settings.database_url, sessions_for(settings.database_url), settings.broker_url)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return app


def _operation_id(route: APIRoute) -> str:
    return route.operation_id or "-".join([*route.tags[:1], route.name])  # the docs' own routes have no tag
