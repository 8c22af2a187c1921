"""Thin Celery tasks: ids in, the shared service does the work, the database row is the truth."""
import logging
from functools import lru_cache

import torch
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from core import service
from core.config import get_settings
from core.db import make_engine, session_factory
from core.storage import make_storage
from worker.app import app

log = logging.getLogger(__name__)


@lru_cache
def _sessions() -> sessionmaker:
    return session_factory(make_engine(get_settings().database_url))


def reset_process_state() -> None:
    _sessions.cache_clear()
    threads = get_settings().torch_threads
    if threads:
        torch.set_num_threads(threads)


@app.task(name="denocap.process_items", bind=True, autoretry_for=(OperationalError,), retry_backoff=2,
          retry_backoff_max=60, retry_jitter=True, max_retries=None)
def process_items(self, item_ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    settings = get_settings()
    log.info("items %s (delivery %s)", item_ids, self.request.retries)
    service.process_items(_sessions(), make_storage(settings), settings, item_ids)


@app.task(name="denocap.reconcile")
def reconcile() -> int:
    """The broker is not a database: re-send items whose message may be lost (see service.due_for_requeue)."""
    settings = get_settings()
    with _sessions()() as session:
        ids = service.due_for_requeue(session, settings.requeue_after, settings.lease)
    if ids:
        log.warning("reconciler re-enqueues %d items", len(ids))
        enqueue(ids, settings.micro_batch)
    return len(ids)


def enqueue(item_ids: list[str], micro_batch: int) -> None:
    for start in range(0, len(item_ids), micro_batch):
        process_items.delay(item_ids[start:start + micro_batch])
    with _sessions().begin() as session:
        service.mark_enqueued(session, item_ids)
