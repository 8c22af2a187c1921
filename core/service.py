"""What the API, the worker and the CLI do with the database and storage: submit, claim, process, store."""
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core import pipeline
from core.config import Settings
from core.imageio import ImageError, Limits, encode_png, probe
from core.storage import Storage
from core.tables import Batch, Item, ItemState, Result
from models.registry import (CAPTION_BACKENDS, DENOISERS, CaptionBackend, Denoiser, ModelError, load_captioner,
                             load_denoiser)

log = logging.getLogger(__name__)


class SubmitError(ValueError):
    """The batch as a whole is refused (bad options, no files, too many files)."""


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


def precheck(data: bytes, limits: Limits) -> str | None:
    """Cheap header check at submission; the full decode happens in the worker. Returns the reason to refuse."""
    try:
        probe(data, limits)
    except ImageError as e:
        return str(e)
    return None


def submit(session: Session, storage: Storage, settings: Settings, uploads: list[Upload],
           options: BatchOptions, references: dict[str, bytes] | None = None) -> Batch:
    """Stores every file and queues the valid ones; bad files become failed items with the reason."""
    check_options(options)
    if not uploads:
        raise SubmitError("no files in the batch")
    if len(uploads) > settings.max_files_per_batch:
        raise SubmitError(f"{len(uploads)} files, the limit is {settings.max_files_per_batch} per batch")
    references = references or {}
    batch = Batch(options=asdict(options), denoiser=options.denoiser, captioner=options.captioner)
    session.add(batch)
    limits = limits_of(settings)
    for position, upload in enumerate(uploads):
        reason = precheck(upload.data, limits)
        reference = references.get(upload.filename)
        item = Item(batch=batch, position=position, filename=upload.filename[:255] or f"file{position}",
                    state=ItemState.failed if reason else ItemState.queued, error=reason,
                    has_reference=reference is not None)
        session.add(item)
        session.flush()
        if reason is None:
            storage.put(input_key(item.id), upload.data)
            if reference is not None:
                storage.put(reference_key(item.id), reference)
        else:
            item.finished_at = _now()
    return batch


def input_key(item_id: str) -> str:
    return f"items/{item_id}/input"


def reference_key(item_id: str) -> str:
    return f"items/{item_id}/reference"


def _now() -> datetime:
    return datetime.now(timezone.utc)


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
        _fail(item, f"gave up after {max_deliveries} deliveries (the worker died on this item each time)")
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


def _fail(item: Item, reason: str) -> None:
    log.info("item %s of batch %s failed: %s", item.id, item.batch_id, reason)
    item.state, item.error, item.finished_at = ItemState.failed, reason, _now()


@lru_cache(maxsize=4)
def cached_denoiser(name: str, weights_dir: Path, device: str) -> Denoiser:
    return load_denoiser(name, weights_dir, device)


@lru_cache(maxsize=4)
def cached_captioner(name: str, weights_dir: Path, device: str) -> CaptionBackend:
    return load_captioner(name, weights_dir, device)


def process_items(sessions: sessionmaker, storage: Storage, settings: Settings, item_ids: Iterable[str]) -> None:
    """Runs claimed items through the pipeline; captions of the whole micro-batch are encoded together.
    Safe to run again on the same ids: done items are skipped and a result is stored once."""
    with sessions.begin() as session:
        claimed = [item for i in item_ids if (item := claim(session, i, settings.max_deliveries, settings.lease))]
        work = [(item.id, BatchOptions(**item.batch.options), item.has_reference) for item in claimed]
    restored: dict[str, list[tuple[str, pipeline.Restored]]] = {}
    for item_id, options, has_reference in work:
        try:
            r = _restore_one(storage, settings, item_id, options, has_reference)
            restored.setdefault(options.captioner, []).append((item_id, r))
        except (ImageError, ModelError) as e:
            with sessions.begin() as session:
                _fail(session.get_one(Item, item_id), str(e))
    for captioner_name, group in restored.items():
        folder = settings.blip_weights if captioner_name == "blip" else settings.weights_dir
        try:
            if folder is None:
                raise ModelError("the blip captioner is not configured on this worker (DENOCAP_BLIP_WEIGHTS)")
            captioner = cached_captioner(captioner_name, folder, settings.device)
        except ModelError as e:
            with sessions.begin() as session:
                for item_id, _ in group:
                    _fail(session.get_one(Item, item_id), str(e))
            continue
        for (item_id, _), result in zip(group, pipeline.describe([r for _, r in group], captioner)):
            _store(sessions, storage, item_id, result)


def _restore_one(storage: Storage, settings: Settings, item_id: str, options: BatchOptions,
                 has_reference: bool) -> pipeline.Restored:
    reference = storage.get(reference_key(item_id)) if has_reference else None
    denoiser = cached_denoiser(options.denoiser, settings.weights_dir, settings.device)
    run = pipeline.Options(options.add_noise, options.seed, options.denoise_sigma, settings.tile_size,
                           settings.tile_overlap)
    return pipeline.restore_bytes(storage.get(input_key(item_id)), reference, run, limits_of(settings), denoiser)


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
        log.info("item %s of batch %s done in %.2f s", item_id, item.batch_id, sum(r.timings.values()))


def _safe(version: str) -> str:
    return version.replace("@", "-").replace("+", "-")
