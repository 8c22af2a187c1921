"""Request dependencies: settings, a session per request, storage, the queue."""
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, get_settings
from core.db import make_engine, session_factory
from core.storage import LocalStorage, Storage


@lru_cache
def sessions_for(url: str) -> sessionmaker:
    return session_factory(make_engine(url))


def get_session(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    with sessions_for(settings.database_url)() as session:
        yield session


def get_storage(settings: Annotated[Settings, Depends(get_settings)]) -> Storage:
    return LocalStorage(settings.files)


def get_enqueue(request: Request) -> Callable[[list[str]], None]:
    return request.app.state.enqueue


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
EnqueueDep = Annotated[Callable[[list[str]], None], Depends(get_enqueue)]
