"""Request dependencies: settings, a session per request, the caller's tenant (API key from a header for the
JSON API, a server-side session cookie for the gallery), storage, the queue, and the caller's own rows (404
for anything else, exactly as for an id that does not exist)."""
import logging
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator
from sqlalchemy.orm import Session

from core import queries
from core import submit as service
from core.config import Settings, get_settings
from core.db import sessions_for
from core.storage import Storage, make_storage
from core.tables import Batch, Item, Result
from core.tenants import ID, authenticate, session_tenant

log = logging.getLogger(__name__)

Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="rows to skip")]
Score = Annotated[float | None, Query(allow_inf_nan=False, ge=-1e9, le=1e9)]


class Refused(HTTPException):
    """A refusal that clients act on by its `code`, given in the JSON body beside the message (`detail`)."""

    def __init__(self, status_code: int, detail: str, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, detail, headers)
        self.code = code


STATUS = {service.RequestTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
          service.BatchFull: status.HTTP_409_CONFLICT,
          service.TooManyInFlight: status.HTTP_429_TOO_MANY_REQUESTS,
          service.IdempotencyConflict: status.HTTP_409_CONFLICT,
          service.BatchSealed: status.HTTP_409_CONFLICT,
          service.Gone: status.HTTP_404_NOT_FOUND}


@contextmanager
def committed(session: Session) -> Iterator[None]:
    """Commits what the block wrote; a refusal of the write side rolls it back instead, its status and code saying
    which it was."""
    try:
        yield
        session.commit()
    except service.SubmitError as e:
        session.rollback()
        code = STATUS.get(type(e), status.HTTP_422_UNPROCESSABLE_CONTENT)
        headers = {"Retry-After": "60"} if code == status.HTTP_429_TOO_MANY_REQUESTS else None
        raise Refused(code, str(e), e.code, headers) from None


DELETED = {202: {"description": "deleted; the reconciler deletes some of the stored files later (the file storage "
                                "failed, or there were over 20,000 items)"}}


def swept(session: Session, storage: Storage, item_ids: list[str]) -> Response:
    """After a deletion commits: 204 when storage has deleted the items' files, else 202 saying so (the rows are
    gone either way)."""
    if left := sweep_after(session, storage, item_ids):
        return JSONResponse({"detail": f"the stored files of {left} items are deleted later, by the reconciler",
                             "code": "files_pending"}, status.HTTP_202_ACCEPTED)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def sweep_after(session: Session, storage: Storage, item_ids: list[str]) -> int:
    """Sweeps the files of items whose deletion has committed; returns how many are left to the reconciler. Never
    raises: the deletion stands whatever happens to its files."""
    try:
        return service.sweep(session, storage, item_ids)
    except Exception:
        log.exception("sweeping the files of %d deleted items", len(item_ids))
        return len(item_ids)


def get_session(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    with sessions_for(settings.database_url)() as session:
        yield session


def get_storage(settings: Annotated[Settings, Depends(get_settings)]) -> Storage:
    return make_storage(settings)


def get_enqueue(request: Request) -> Callable[[list[str]], None]:
    return request.app.state.enqueue


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
EnqueueDep = Annotated[Callable[[list[str]], None], Depends(get_enqueue)]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="a key from `denocap apikey create`")
bearer = HTTPBearer(auto_error=False, description="the same key as a bearer token")
COOKIE = "denocap_session"
session_cookie = APIKeyCookie(name=COOKIE, auto_error=False,
                              description="set by the gallery's sign-in form (HttpOnly, SameSite=Strict); "
                                          "only the gallery's pages accept it")


def unauthorized(presented: bool) -> HTTPException:
    detail = "invalid or revoked API key" if presented else "an API key is required (X-API-Key header)"
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def get_tenant(request: Request, session: SessionDep, key: Annotated[str | None, Depends(api_key_header)],
               token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The tenant id of the key in the X-API-Key or Authorization header; 401 when none, wrong or revoked.
    An upload route has checked the key before reading the body (routes/batches.UploadRoute): its answer."""
    if tenant_id := getattr(request.state, "tenant_id", None):
        return tenant_id
    presented = key or (token.credentials if token else None)
    found = authenticate(session, presented) if presented else None
    if found is None:
        raise unauthorized(bool(presented))
    return found.tenant_id


def get_gallery_tenant(session: SessionDep, cookie: Annotated[str | None, Depends(session_cookie)]) -> str:
    """The tenant of the gallery session cookie; 401 (the sign-in page) when there is none or it has ended."""
    tenant_id = session_tenant(session, cookie) if cookie else None
    if tenant_id is None:
        raise unauthorized(bool(cookie))
    return tenant_id


TenantDep = Annotated[str, Depends(get_tenant)]
GalleryTenantDep = Annotated[str, Depends(get_gallery_tenant)]


def get_batch(session: SessionDep, tenant: TenantDep, batch_id: str) -> Batch:
    batch = queries.tenant_batch(session, tenant, batch_id) if ID.fullmatch(batch_id) else None
    if batch is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "batch not found")
    return batch


def get_item(session: SessionDep, tenant: TenantDep, item_id: str) -> Item:
    item = queries.tenant_item(session, tenant, item_id) if ID.fullmatch(item_id) else None
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "item not found")
    return item


def own_result(item: Item) -> Result:
    if item.result is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"item is {item.state.value}; no result yet")
    return item.result


def get_gallery_batch(session: SessionDep, tenant: GalleryTenantDep, batch_id: str) -> Batch:
    return get_batch(session, tenant, batch_id)


def get_gallery_item(session: SessionDep, tenant: GalleryTenantDep, item_id: str) -> Item:
    return get_item(session, tenant, item_id)


BatchDep = Annotated[Batch, Depends(get_batch)]
ItemDep = Annotated[Item, Depends(get_item)]
GalleryBatchDep = Annotated[Batch, Depends(get_gallery_batch)]
GalleryItemDep = Annotated[Item, Depends(get_gallery_item)]


MOST_WORDS = 10  # each word is a pattern match over every caption of the tenant


def words(text: str | None) -> str | None:
    """The words once each (a repeated word only repeated the work), without the invisible characters text pasted
    from a web page carries (zero-width and no-break spaces)."""
    if text is None:
        return None
    text = "".join(c for c in text.replace("\u200b", " ") if unicodedata.category(c) != "Cf")  # a zero-width
    # space parts words; the other invisible format characters (a soft hyphen, a word joiner) join them
    if any(unicodedata.category(c) == "Cc" and not c.isspace() for c in text):
        raise ValueError("must not hold control characters")
    words = list({w.casefold(): w for w in text.split()}.values())
    if len(words) > MOST_WORDS:
        raise ValueError(f"at most {MOST_WORDS} different words")
    return " ".join(words)


Words = Annotated[str | None, Query(max_length=200, description="words that must all occur in a caption, as words or their plurals"),
                  AfterValidator(words)]
BatchId = Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$", description="only this batch's captions")]


def caption_filter(
    q: Words = None, batch_id: BatchId = None,
    min_psnr: Score = None, max_psnr: Score = None,
    min_ssim: Score = None, max_ssim: Score = None,
    min_sigma: Score = None, max_sigma: Score = None,
    max_brisque: Score = None,
) -> queries.CaptionFilter:
    return queries.CaptionFilter(q, batch_id, min_psnr, max_psnr, min_ssim, max_ssim, min_sigma, max_sigma, max_brisque)


FilterDep = Annotated[queries.CaptionFilter, Depends(caption_filter)]
