"""The processing side, for the worker and `denocap run`: claim an item, run it through the pipeline, store its
result. Items are claimed one at a time, so a time-out or a crash holds only the item it struck."""
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import lru_cache
from typing import TypeVar

from psycopg.errors import QueryCanceled
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core import pipeline
from core.config import Settings
from core.imageio import encode_png
from core.options import BatchOptions
from core.storage import (
    Storage,
    StorageUnavailable,
    input_key,
    item_keys,
    reference_key,
    results_folder,
    results_prefix,
)
from core.submit import Gone, limits_of
from core.tables import Deletion, Item, ItemState, Result
from models.registry import CaptionBackend, Denoiser, ModelError, load_captioner, load_denoiser

log = logging.getLogger(__name__)
T = TypeVar("T")
HOST = socket.gethostname()


class Claim(Enum):
    taken = "taken"  # this process runs the item now
    busy = "busy"  # another live process runs it; ask again later
    settled = "settled"  # done, failed, unknown, or just failed for too many deliveries


def _now() -> datetime:
    return datetime.now(UTC)


def _runner() -> str:
    return f"{HOST}:{os.getpid()}"


def _dead_here(runner: str | None) -> bool:
    """The item's runner was a process of this host that no longer exists (a killed pool child)."""
    host, _, pid = (runner or "").rpartition(":")
    if host != HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        pass
    return False


def claim(session: Session, item_id: str, max_deliveries: int, lease: int) -> Claim:
    """Marks a queued item running (one more delivery); also a running one whose lease ran out, or whose runner
    was a process of this host that has died. An item delivered more than max_deliveries times is failed, so a
    poison item cannot loop forever; a duplicate message never runs an item twice at once."""
    current = session.execute(select(Item.state, Item.runner).where(Item.id == item_id)).first()
    if current is None or current.state in (ItemState.done, ItemState.failed):
        return Claim.settled
    expired = and_(Item.state == ItemState.running, Item.started_at < _now() - timedelta(seconds=lease))
    takeover = Item.state == ItemState.running if _dead_here(current.runner) else expired
    row = session.execute(
        update(Item).where(Item.id == item_id, or_(Item.state == ItemState.queued, takeover))
        .values(state=ItemState.running, deliveries=Item.deliveries + 1, started_at=_now(), runner=_runner())
        .returning(Item.deliveries)
    ).first()
    if row is None:
        return Claim.busy
    if row.deliveries > max_deliveries:
        fail(session, item_id, f"gave up after {max_deliveries} deliveries (the worker died on this item each time)",
             "poison")
        return Claim.settled
    return Claim.taken


def fail(session: Session, item_id: str, reason: str, kind: str) -> None:
    """Fails a running item; one already settled stays as it is (a time limit that strikes just after the result's
    commit must not fail a done item)."""
    item = session.get(Item, item_id, with_for_update=True)
    if item is None or item.state != ItemState.running:  # None: its batch was deleted
        return
    log.info("item failed: %s", reason, extra={"item_id": item_id, "batch_id": item.batch_id, "failure": kind})
    item.state, item.error, item.failure, item.finished_at = ItemState.failed, reason, kind, _now()


def stop(session: Session, item_ids: list[str], reason: str) -> int:
    """Fails these items that have not finished: their run was stopped (`denocap run` interrupted), and no worker
    will take them; left queued, their batch would count as in flight for good. Returns how many."""
    return session.execute(update(Item).where(Item.id.in_(item_ids), Item.state.in_([ItemState.queued,
                                                                                       ItemState.running]))
                           .values(state=ItemState.failed, error=reason, failure="interrupted",
                                   finished_at=_now())).rowcount


@dataclass
class CachedModels:
    """The models a worker process has loaded, by name (lazily, once; see pipeline.Models)."""
    settings: Settings

    def denoiser(self, name: str) -> Denoiser:
        s = self.settings
        return _denoiser(name, s.weights_dir, s.device, s.tile_size, s.precision, s.denoise_ensemble, s.gpu_processes)

    def captioner(self, name: str) -> CaptionBackend:
        folder = self.settings.blip_weights if name == "blip" else self.settings.weights_dir
        if folder is None:
            raise ModelError("the blip captioner is not configured on this worker (DENOCAP_BLIP_WEIGHTS)")
        return _captioner(name, folder, self.settings.device, precision=self.settings.precision)


_denoiser = lru_cache(maxsize=4)(load_denoiser)
_captioner = lru_cache(maxsize=4)(load_captioner)


@dataclass
class DatabaseSink:
    """Stores a result (images under keys from the item id and model version, then the row and the state in one
    transaction) or a failure; a second run of the same item overwrites the same keys and finds it settled.
    Without synthetic noise the noisy image is the upload: its key is the upload's, and no copy is written."""
    sessions: sessionmaker
    storage: Storage
    settings: Settings

    def done(self, item_id: str, result: pipeline.Result) -> None:
        prefix = results_prefix(item_id, result.denoiser_version)
        noisy_key = input_key(item_id) if result.noisy_is_upload else f"{prefix}/noisy.png"
        self.storage.put(f"{prefix}/denoised.png", encode_png(result.denoised))
        if not result.noisy_is_upload:
            self.storage.put(noisy_key, encode_png(result.noisy))
        try:
            batch_id = with_database(self.settings, lambda: self._store(item_id, result, prefix, noisy_key))
        except Gone:  # deleted while it ran: the deletion could not know the files written above
            self._drop(item_id, result.denoiser_version)
            log.info("item dropped: it was deleted while it ran", extra={"item_id": item_id})
            return
        if batch_id is not None:  # logged once committed: a commit that failed and was retried is not a second "done"
            log.info("item done in %.2f s", sum(result.timings.values()),
                     extra={"item_id": item_id, "batch_id": batch_id, "timings": result.timings})

    def _drop(self, item_id: str, denoiser_version: str) -> None:
        """Deletes what this run wrote for an item deleted meanwhile; when storage fails, records it for the
        reconciler's sweep."""
        try:
            self.storage.delete(item_keys(item_id, denoiser_version))
            self.storage.delete_under(results_folder(item_id))
        except OSError as e:
            log.warning("the files of an item deleted while it ran are left for the reconciler: %s", e,
                        extra={"item_id": item_id})

            def record() -> None:
                with self.sessions.begin() as session:
                    session.execute(delete(Deletion).where(Deletion.item_id == item_id))
                    session.add(Deletion(item_id=item_id, denoiser_version=denoiser_version, ran=True))
            with_database(self.settings, record)

    def _store(self, item_id: str, r: pipeline.Result, prefix: str, noisy_key: str) -> str | None:
        """The batch id once stored; None when the item was no longer running (another run settled it)."""
        with self.sessions.begin() as session:
            item = session.get(Item, item_id, with_for_update=True)
            if item is None:
                raise Gone("item not found")
            if item.state != ItemState.running:
                return None
            h, w = r.denoised.shape
            session.merge(Result(
                item_id=item_id, width=w, height=h, sigma_estimate=r.sigma_estimate,
                psnr_noisy=r.metrics.get("psnr_noisy"), ssim_noisy=r.metrics.get("ssim_noisy"),
                psnr=r.metrics.get("psnr"), ssim=r.metrics.get("ssim"),
                brisque_noisy=r.metrics.get("brisque_noisy"), brisque=r.metrics.get("brisque"),
                caption=r.caption, caption_noisy=r.caption_noisy,
                denoiser_version=r.denoiser_version, captioner_version=r.captioner_version,
                denoised_key=f"{prefix}/denoised.png", noisy_key=noisy_key, timings=r.timings,
                notes=list(r.denoised.notes)))
            item.state, item.error, item.finished_at = ItemState.done, None, _now()
            return item.batch_id

    def failed(self, item_id: str, reason: str, kind: str) -> None:
        def write() -> None:
            with self.sessions.begin() as session:
                fail(session, item_id, reason, kind)
        with_database(self.settings, write)

    def handed_back(self, item_id: str) -> None:
        """Queued again, the delivery not counted: the time limit struck it, but the items before it took the time."""
        def write() -> None:
            with self.sessions.begin() as session:
                session.execute(update(Item).where(Item.id == item_id, Item.state == ItemState.running)
                                .values(state=ItemState.queued, deliveries=Item.deliveries - 1, runner=None))
        with_database(self.settings, write)


def with_database(settings: Settings, work: Callable[[], T]) -> T:
    """The one retry layer for database outages: retries with backoff for database_retry_seconds, so a finished
    result is not thrown away while PostgreSQL restarts. SQLite's "database is locked" (another process
    committed since this transaction began: db._sqlite_begin) is no outage: retried at once, after a few ms."""
    deadline, pause = time.monotonic() + settings.database_retry_seconds, 0.5
    while True:
        try:
            return work()
        except OperationalError as e:
            if time.monotonic() > deadline:
                raise
            if "database is locked" in str(e.orig):
                time.sleep(random.uniform(0.005, 0.05))  # jittered, so the processes that collided do not again
                continue
            what = "statement cancelled (time-out)" if isinstance(e.orig, QueryCanceled) else "unavailable"
            log.warning("database %s, retrying in %.1f s: %s", what, pause, e.orig)
            time.sleep(pause)
            pause = min(pause * 2, 15.0)


def _job(sessions: sessionmaker, storage: Storage, settings: Settings, item_id: str,
         last: dict[str, bytes]) -> pipeline.Job | Claim:
    """The claimed item's job, or why not. `last` keeps the last page's upload: a multi-page TIFF's pages mostly
    come one after another, and each would read the whole file again."""
    with sessions.begin() as session:
        outcome = claim(session, item_id, settings.max_deliveries, settings.lease)
        if outcome is not Claim.taken:
            return outcome
        item = session.get_one(Item, item_id)
        options, has_reference = BatchOptions.model_validate(item.batch.options), item.has_reference
        upload, page = item.upload_id or item_id, item.page

    def load() -> tuple[bytes, bytes | None]:
        data = last.pop(upload, None)
        last.clear()  # before the next read: one upload held at a time
        data = data or storage.get(input_key(upload))
        if page is not None:
            last[upload] = data
        return data, storage.get(reference_key(item_id)) if has_reference else None
    return pipeline.Job(item_id, options, load, page)


def process_items(sessions: sessionmaker, storage: Storage, settings: Settings, item_ids: Iterable[str],
                  time_limit: tuple[type[BaseException], ...] = ()) -> tuple[list[str], list[str]]:
    """Claims and runs the items one by one. Returns the ids to send again: those to ask for later (another live
    process holds them, or the file storage is down: busy), and those not reached or handed back because the time
    limit struck."""
    ids, busy = list(item_ids), []
    sink = DatabaseSink(sessions, storage, settings)
    models = CachedModels(settings)
    runtime = pipeline.Runtime(limits_of(settings), settings.tile_size, settings.tile_overlap)
    first, last = True, dict[str, bytes]()
    for n, item_id in enumerate(ids):
        job = with_database(settings, lambda i=item_id: _job(sessions, storage, settings, i, last))
        if job is Claim.busy:
            busy.append(item_id)
        if not isinstance(job, pipeline.Job):
            continue
        try:
            if not pipeline.run_item(job, models, runtime, sink, time_limit, first):
                return busy, ids[n + 1 if first else n:]
        except StorageUnavailable as e:  # for every item alike: asked again later, no delivery counted
            log.warning("file storage unavailable, %d items asked again later: %s", len(ids) - n, e)
            return busy + ids[n:], []
        first = False
    return busy, []
