"""Thin Celery tasks: ids in, core.process does the work, the database row is the truth."""
import logging

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_init, worker_ready
from sqlalchemy.exc import SQLAlchemyError

from core import logs, process, queue, submit
from core.config import get_settings
from core.db import sessions_for
from core.storage import StorageUnavailable, make_storage
from worker.app import EXPIRE, PROCESS, RECONCILE, app, enqueue

log = logging.getLogger(__name__)
BUSY_RETRY = 60  # seconds before asking again for an item another live process holds, or with storage down


@app.task(name=PROCESS, bind=True)
def process_items(self, item_ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    settings = get_settings()
    log.info("items %s (redelivered: %s)", item_ids, (self.request.delivery_info or {}).get("redelivered"))
    try:
        storage = make_storage(settings)  # a new process's first S3 client asks for the bucket
    except StorageUnavailable as e:
        log.warning("file storage unavailable, %d items asked again later: %s", len(item_ids), e)
        send(item_ids, BUSY_RETRY)
        return
    busy, unreached = process.process_items(sessions_for(settings.database_url), storage, settings, item_ids,
                                            time_limit=(SoftTimeLimitExceeded,))
    if unreached:
        send(unreached)
    if busy:
        send(busy, BUSY_RETRY)


@app.task(name=RECONCILE)
def reconcile() -> int:
    """The broker is not a database: re-send items whose message may be lost (see core.queue.due_for_requeue);
    and delete the files deletions left (the file storage failed, or a batch was large). Returns how many were
    sent."""
    settings = get_settings()
    with sessions_for(settings.database_url)() as session:
        ids = queue.due_for_requeue(session, settings.requeue_after, settings.lease)
    if ids:
        log.warning("reconciler re-enqueues %d items", len(ids))
        send(ids)
    try:
        with sessions_for(settings.database_url)() as session:
            submit.sweep(session, make_storage(settings))
    except Exception:  # storage unreachable, say: the next reconcile tries again
        log.exception("sweeping the files of deleted items")
    return len(ids)


@app.task(name=EXPIRE)
def expire(days: int) -> int:
    """Deletes up to submit.EXPIRE_AT_ONCE finished batches sealed more than `days` days ago (the retention beat
    read), with their files; a message without a retention of a day or more deletes nothing."""
    if days < 1:
        log.warning("expire asked with a retention of %s days: nothing deleted", days)
        return 0
    settings = get_settings()
    deleted = submit.expire(sessions_for(settings.database_url), make_storage(settings), days)
    if deleted:
        log.info("deleted %d finished batches sealed over %d days ago", len(deleted), days)
    return len(deleted)


def send(item_ids: list[str], countdown: float | None = None) -> None:
    """Sent, and marked so: the reconciler sends again only what got no message for DENOCAP_REQUEUE_AFTER. Sent
    unmarked when the database is down: a second message later is harmless, a lost one is not."""
    enqueue(item_ids, get_settings().micro_batch, countdown)
    try:
        with sessions_for(get_settings().database_url).begin() as session:
            queue.mark_enqueued(session, item_ids)
    except SQLAlchemyError as e:
        log.warning("%d items sent but not marked so (the reconciler may send them again): %s", len(item_ids), e)


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    """Engines inherited from the parent must not be shared with the child; models load lazily later."""
    sessions_for.cache_clear()
    if threads := get_settings().torch_threads:
        import torch
        torch.set_num_threads(threads)


@worker_ready.connect
def _reconcile_on_start(**_: object) -> None:
    """A plain `denocap worker` (no beat) still finishes what a dead worker left: one reconcile at start."""
    reconcile.delay()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: object, **_: object) -> None:
    logs.use_format(logger, get_settings().log_format)  # type: ignore[arg-type]
