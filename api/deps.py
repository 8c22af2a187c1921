"""Request dependencies: settings, a session per request, the caller's tenant, storage, the queue."""
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, get_settings
from core.db import make_engine, session_factory
from core.storage import Storage, make_storage
from core.tenants import authenticate


@lru_cache
def sessions_for(url: str) -> sessionmaker:
    return session_factory(make_engine(url))


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
COOKIE = "denocap_key"
key_cookie = APIKeyCookie(name=COOKIE, auto_error=False,
                          description="set by the gallery's sign-in form (HttpOnly, SameSite=Strict, session only)")


def get_tenant(session: SessionDep, key: Annotated[str | None, Depends(api_key_header)],
               token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
               cookie: Annotated[str | None, Depends(key_cookie)]) -> str:
    """The tenant id of the presented key; 401 when there is none or it is wrong or revoked."""
    presented = key or (token.credentials if token else None) or cookie
    tenant_id = authenticate(session, presented) if presented else None
    if tenant_id is None:
        detail = "invalid or revoked API key" if presented else "an API key is required (X-API-Key header)"
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})
    return tenant_id


TenantDep = Annotated[str, Depends(get_tenant)]
