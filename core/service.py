"""What the API, the worker and the CLI do with the database and storage: submit, claim, process, store."""
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from pathlib import Path

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core import pipeline
from core.config import Settings
from core.imageio import ImageError, Limits, TooLarge, encode_png, probe, thumbnail_jpeg
from core.storage import Storage
from core.tables import Batch, Item, ItemState, Result
from models.registry import (
    CAPTION_BACKENDS,
    DENOISERS,
    CaptionBackend,
    Denoiser,
    ModelError,
    load_captioner,
    load_denoiser,
)

log = logging.getLogger(__name__)


class SubmitError(ValueError):
    """The batch as a whole is refused (bad options, no files); the API answers 422."""


class RequestTooLarge(SubmitError):
    """More files than a batch may hold, or the one file of a single-image request is over a limit (413)."""


class TooManyInFlight(SubmitError):
    """The tenant has as many unfinished batches as the settings allow (429)."""


class IdempotencyConflict(SubmitError):
    """The Idempotency-Key was used before with a different request (409)."""


@dataclass(frozen=True)
class BatchOptions:
    add_noise: float | None = None
    seed: int = 0
    denoise_sigma: float | None = None
    denoiser: str = "ffdnet"
    captioner: str = "attention"


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


def limits_of(settings: Settings) -> Limits:
    return Limits(settings.max_file_bytes, settings.max_pixels, settings.max_side)


def check_options(options: BatchOptions) -> None:
    for name, value in (("add_noise", options.add_noise), ("denoise_sigma", options.denoise_sigma)):
        if value is not None and not 0 <= value <= 255:
            raise SubmitError(f"{name} must be between 0 and 255, got {value}")
    if options.denoiser not in DENOISERS:
        raise SubmitError(f"unknown denoiser {options.denoiser!r}; known: {', '.join(DENOISERS)}")
    if options.captioner not in CAPTION_BACKENDS:
        raise SubmitError(f"unknown captioner {options.captioner!r}; known: {', '.join(CAPTION_BACKENDS)}")


def failure_kind(error: Exception) -> str:
    return "too_large" if isinstance(error, TooLarge) else "bad_image" if isinstance(error, ImageError) else "model"


def precheck(data: bytes, limits: Limits) -> ImageError | None:
    """Cheap header check at submission; the full decode happens in the worker. Returns the reason to refuse."""
    try:
        probe(data, limits)
    except ImageError as e:
        return e
    return None


def request_digest(uploads: list[Upload], options: BatchOptions, references: dict[str, bytes]) -> str:
    """What makes two submissions the same request: options, file names and contents, references."""
    parts = [asdict(options), [(u.filename, hashlib.sha256(u.data).hexdigest()) for u in uploads],
             sorted((name, hashlib.sha256(data).hexdigest()) for name, data in references.items())]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def earlier_submission(session: Session, tenant_id: str, idempotency_key: str, digest: str) -> Batch | None:
    batch = session.scalar(select(Batch).where(Batch.tenant_id == tenant_id,
                                               Batch.idempotency_key == idempotency_key))
    if batch is not None and batch.request_digest != digest:
        raise IdempotencyConflict("this Idempotency-Key was used with a different request")
    return batch


def batches_in_flight(session: Session, tenant_id: str) -> int:
    unfinished = select(Item.batch_id).join(Batch).where(
        Batch.tenant_id == tenant_id, Item.state.in_([ItemState.queued, ItemState.running])).distinct()
    return session.scalar(select(func.count()).select_from(unfinished.subquery())) or 0


def submit(session: Session, storage: Storage, settings: Settings, tenant_id: str, uploads: list[Upload],
           options: BatchOptions, references: dict[str, bytes] | None = None,
           idempotency_key: str | None = None) -> tuple[Batch, bool]:
    """Stores every file and queues the valid ones; bad files become failed items with the reason.
    Returns the batch and True, or with an idempotency key seen before, the earlier batch and False."""
    check_options(options)
    if not uploads:
        raise SubmitError("no files in the batch")
    if len(uploads) > settings.max_files_per_batch:
        raise RequestTooLarge(f"{len(uploads)} files, the limit is {settings.max_files_per_batch} per batch")
    references = references or {}
    digest = None
    if idempotency_key:
        digest = request_digest(uploads, options, references)
        if earlier := earlier_submission(session, tenant_id, idempotency_key, digest):
            return earlier, False
    if batches_in_flight(session, tenant_id) >= settings.max_batches_in_flight:
        raise TooManyInFlight(f"{settings.max_batches_in_flight} batches are still running for this tenant; "
                              "submit more when one finishes")
    batch = Batch(tenant_id=tenant_id, options=asdict(options), denoiser=options.denoiser,
                  captioner=options.captioner, idempotency_key=idempotency_key, request_digest=digest)
    session.add(batch)
    session.flush()  # the batch row first: a request racing on the same Idempotency-Key fails here, before storing
    limits = limits_of(settings)
    for position, upload in enumerate(uploads):
        error = precheck(upload.data, limits)
        reference = references.get(upload.filename)
        item = Item(batch=batch, position=position, filename=upload.filename[:255] or f"file{position}",
                    state=ItemState.failed if error else ItemState.queued, has_reference=reference is not None)
        session.add(item)
        session.flush()
        if error is None:
            storage.put(input_key(item.id), upload.data)
            if reference is not None:
                storage.put(reference_key(item.id), reference)
        else:
            item.error, item.failure, item.finished_at = str(error), failure_kind(error), _now()
    return batch, True


def input_key(item_id: str) -> str:
    return f"items/{item_id}/input"


def reference_key(item_id: str) -> str:
    return f"items/{item_id}/reference"


def _now() -> datetime:
    return datetime.now(UTC)


def claim(session: Session, item_id: str, max_deliveries: int, lease: int) -> Item | None:
    """Marks a queued item, or a running one whose lease (seconds) ran out, running (one more delivery).
    None when the item is done, failed, running under a live lease, or unknown: so a duplicate message never
    runs an item twice at once. An item delivered more than max_deliveries times is failed, so a poison item
    cannot loop forever."""
    expired = and_(Item.state == ItemState.running, Item.started_at < _now() - timedelta(seconds=lease))
    row = session.execute(
        update(Item).where(Item.id == item_id, or_(Item.state == ItemState.queued, expired))
        .values(state=ItemState.running, deliveries=Item.deliveries + 1, started_at=_now())
        .returning(Item.deliveries)
    ).first()
    if row is None:
        return None
    item = session.get(Item, item_id)
    assert item is not None
    if row.deliveries > max_deliveries:
        _fail(item, f"gave up after {max_deliveries} deliveries (the worker died on this item each time)", "poison")
        return None
    return item


def mark_enqueued(session: Session, item_ids: list[str]) -> None:
    session.execute(update(Item).where(Item.id.in_(item_ids)).values(enqueued_at=_now()))


def due_for_requeue(session: Session, requeue_after: int, lease: int) -> list[str]:
    """Items whose message may be lost: queued with no message for `requeue_after` seconds (the broker was
    flushed or restarted empty), or running past their lease (the worker died and its message is gone)."""
    now = _now()
    stale_queue = and_(Item.state == ItemState.queued,
                       or_(Item.enqueued_at.is_(None), Item.enqueued_at < now - timedelta(seconds=requeue_after)))
    expired = and_(Item.state == ItemState.running, Item.started_at < now - timedelta(seconds=lease))
    return list(session.scalars(select(Item.id).where(or_(stale_queue, expired)).order_by(Item.created_at)))


def _fail(item: Item, reason: str, kind: str) -> None:
    log.info("item failed: %s", reason, extra={"item_id": item.id, "batch_id": item.batch_id, "failure": kind})
    item.state, item.error, item.failure, item.finished_at = ItemState.failed, reason, kind, _now()


@lru_cache(maxsize=4)
def cached_denoiser(name: str, weights_dir: Path, device: str, tile: int = 512, ensemble: int = 1) -> Denoiser:
    return load_denoiser(name, weights_dir, device, tile, ensemble=ensemble)


@lru_cache(maxsize=4)
def cached_captioner(name: str, weights_dir: Path, device: str) -> CaptionBackend:
    return load_captioner(name, weights_dir, device)


def process_items(sessions: sessionmaker, storage: Storage, settings: Settings, item_ids: Iterable[str]) -> None:
    """Runs claimed items through the pipeline; the micro-batch is denoised together (same-size tiles share
    forward passes on a GPU) and its captions are encoded together. Safe to run again on the same ids: done
    items are skipped and a result is stored once."""
    with sessions.begin() as session:
        claimed = [item for i in item_ids if (item := claim(session, i, settings.max_deliveries, settings.lease))]
        work = [(item.id, BatchOptions(**item.batch.options), item.has_reference) for item in claimed]
    prepared: dict[str, list[tuple[str, BatchOptions, pipeline.Prepared]]] = {}
    for item_id, options, has_reference in work:
        try:
            p = _prepare_one(storage, settings, item_id, options, has_reference)
            prepared.setdefault(options.denoiser, []).append((item_id, options, p))
        except ImageError as e:
            _with_database(settings, partial(_fail_in, sessions, [item_id], str(e), failure_kind(e)))
    restored: dict[str, list[tuple[str, pipeline.Restored]]] = {}
    for denoiser_name, items in prepared.items():
        try:
            denoiser = cached_denoiser(denoiser_name, settings.weights_dir, settings.device, settings.tile_size,
                                       settings.denoise_ensemble)
        except ModelError as e:
            _with_database(settings, partial(_fail_in, sessions, [i for i, _, _ in items], str(e), "model"))
            continue
        outs = pipeline.restore_many([p for _, _, p in items], denoiser, settings.tile_size, settings.tile_overlap)
        for (item_id, options, _), r in zip(items, outs, strict=True):
            restored.setdefault(options.captioner, []).append((item_id, r))
    for captioner_name, group in restored.items():
        folder = settings.blip_weights if captioner_name == "blip" else settings.weights_dir
        try:
            if folder is None:
                raise ModelError("the blip captioner is not configured on this worker (DENOCAP_BLIP_WEIGHTS)")
            captioner = cached_captioner(captioner_name, folder, settings.device)
        except ModelError as e:
            _with_database(settings, partial(_fail_in, sessions, [i for i, _ in group], str(e), "model"))
            continue
        for (item_id, _), result in zip(group, pipeline.describe([r for _, r in group], captioner), strict=True):
            _with_database(settings, partial(_store, sessions, storage, item_id, result))


def _fail_in(sessions: sessionmaker, item_ids: list[str], reason: str, kind: str) -> None:
    with sessions.begin() as session:
        for item_id in item_ids:
            _fail(session.get_one(Item, item_id), reason, kind)


def _with_database(settings: Settings, write: Callable[[], None]) -> None:
    """Retries a write with backoff while the database is unreachable, so finished work is not thrown away."""
    deadline, pause = time.monotonic() + settings.database_retry_seconds, 0.5
    while True:
        try:
            return write()
        except OperationalError as e:
            if time.monotonic() > deadline:
                raise
            log.warning("database unavailable, retrying in %.1f s: %s", pause, e.orig)
            time.sleep(pause)
            pause = min(pause * 2, 15.0)


def _prepare_one(storage: Storage, settings: Settings, item_id: str, options: BatchOptions,
                 has_reference: bool) -> pipeline.Prepared:
    reference = storage.get(reference_key(item_id)) if has_reference else None
    run = pipeline.Options(options.add_noise, options.seed, options.denoise_sigma, settings.tile_size,
                           settings.tile_overlap)
    return pipeline.prepare_bytes(storage.get(input_key(item_id)), reference, run, limits_of(settings))


def _store(sessions: sessionmaker, storage: Storage, item_id: str, result: pipeline.Result) -> None:
    """Writes the images under keys made from the item id and model version, then the row and the state in
    one transaction; a second run of the same item overwrites the same keys and finds the item done."""
    r = result.restored
    prefix = f"results/{item_id}/{_safe(r.denoiser_version)}"
    storage.put(f"{prefix}/denoised.png", encode_png(r.denoised))
    storage.put(f"{prefix}/noisy.png", encode_png(r.noisy))
    with sessions.begin() as session:
        item = session.get_one(Item, item_id, with_for_update=True)
        if item.state != ItemState.running:
            return
        h, w = r.denoised.shape
        session.merge(Result(
            item_id=item_id, width=w, height=h, sigma_estimate=r.sigma_estimate,
            psnr_noisy=r.metrics.get("psnr_noisy"), ssim_noisy=r.metrics.get("ssim_noisy"),
            psnr=r.metrics.get("psnr"), ssim=r.metrics.get("ssim"),
            brisque_noisy=r.metrics.get("brisque_noisy"), brisque=r.metrics.get("brisque"),
            caption=result.caption, caption_noisy=result.caption_noisy,
            denoiser_version=r.denoiser_version, captioner_version=result.captioner_version,
            denoised_key=f"{prefix}/denoised.png", noisy_key=f"{prefix}/noisy.png", timings=r.timings))
        item.state, item.error, item.finished_at = ItemState.done, None, _now()
        log.info("item done in %.2f s", sum(r.timings.values()),
                 extra={"item_id": item_id, "batch_id": item.batch_id, "timings": r.timings})


def thumbnail(storage: Storage, result: Result, which: str, size: int = 320) -> bytes:
    """Made on first request, then served from storage: a page of thousands of items stays fast."""
    key = f"thumbs/{result.item_id}/{_safe(result.denoiser_version)}/{which}-{size}.jpg"
    if (cached := storage.find(key)) is not None:
        return cached
    data = thumbnail_jpeg(storage.get(result.denoised_key if which == "denoised" else result.noisy_key), size)
    storage.put(key, data)
    return data


def _safe(version: str) -> str:
    return version.replace("@", "-").replace("+", "-")
