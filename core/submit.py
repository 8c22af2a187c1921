"""The write side of the API and of `denocap run`: check a submission, store its files, make its rows. No torch."""
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.config import Settings
from core.imageio import ImageError, Limits, TooLarge, probe
from core.options import BatchOptions
from core.storage import Storage, input_key, reference_key
from core.tables import Batch, Item, ItemState, Tenant


class SubmitError(ValueError):
    """The batch as a whole is refused (bad options, no files); the API answers 422."""


class RequestTooLarge(SubmitError):
    """More files than a batch may hold, or the one file of a single-image request is over a limit (413)."""


class TooManyInFlight(SubmitError):
    """The tenant has as many unfinished batches as the settings allow (429)."""


class IdempotencyConflict(SubmitError):
    """The Idempotency-Key was used before with a different request (409)."""


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes  # the first max_file_bytes + 1 bytes at most
    size: int | None = None  # the whole file's size, when more was sent than was kept



def limits_of(settings: Settings) -> Limits:
    return Limits(settings.max_file_bytes, settings.max_pixels, settings.max_side)


def precheck(upload: Upload, limits: Limits) -> ImageError | None:
    """Cheap header check at submission; the full decode happens in the worker. Returns the reason to refuse."""
    size = max(upload.size or 0, len(upload.data))
    if size > limits.max_bytes:
        return TooLarge(f"file is {size} bytes, the limit is {limits.max_bytes}")
    try:
        probe(upload.data, limits)
    except ImageError as e:
        return e
    return None


def label(filename: str, position: int, most: int = 255) -> str:
    """A file name as shown to the user: printable, at most `most` characters, the extension kept."""
    name = "".join(c for c in filename if c.isprintable()).strip() or f"file{position}"
    if len(name) <= most:
        return name
    suffix = PurePosixPath(name).suffix[:16]
    return name[:most - len(suffix)] + suffix


def request_digest(uploads: list[Upload], options: BatchOptions, references: dict[str, bytes]) -> str:
    """What makes two submissions the same request: options, file names and contents, references."""
    parts = [options.model_dump(), [(u.filename, hashlib.sha256(u.data).hexdigest()) for u in uploads],
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


def check_options(options: BatchOptions, settings: Settings) -> None:
    if options.captioner == "blip" and settings.blip_weights is None:
        raise SubmitError("the blip captioner is not configured on this server (DENOCAP_BLIP_WEIGHTS)")


def submit(session: Session, storage: Storage, settings: Settings, tenant_id: str, uploads: list[Upload],
           options: BatchOptions, references: dict[str, bytes] | None = None,
           idempotency_key: str | None = None) -> tuple[Batch, bool]:
    """Stores every file and queues the valid ones; bad files become failed items with the reason.
    Returns the batch and True, or with an idempotency key seen before, the earlier batch and False.
    The tenant's row is locked for the transaction, so the in-flight limit and the key hold under concurrency."""
    check_options(options, settings)
    if not uploads:
        raise SubmitError("no files in the batch")
    if len(uploads) > settings.max_files_per_batch:
        raise RequestTooLarge(f"{len(uploads)} files, the limit is {settings.max_files_per_batch} per batch")
    references = references or {}
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    digest = None
    if idempotency_key:
        digest = request_digest(uploads, options, references)
        if earlier := earlier_submission(session, tenant_id, idempotency_key, digest):
            return earlier, False
    if batches_in_flight(session, tenant_id) >= settings.max_batches_in_flight:
        raise TooManyInFlight(f"{settings.max_batches_in_flight} batches are still running for this tenant; "
                              "submit more when one finishes")
    batch = Batch(tenant_id=tenant_id, options=options.model_dump(), denoiser=options.denoiser,
                  captioner=options.captioner, idempotency_key=idempotency_key, request_digest=digest)
    try:
        with session.begin_nested():  # a racing request on the same key (SQLite has no row lock) ends here
            session.add(batch)
    except IntegrityError:
        assert idempotency_key and digest
        earlier = earlier_submission(session, tenant_id, idempotency_key, digest)
        assert earlier is not None
        return earlier, False
    limits = limits_of(settings)
    for position, upload in enumerate(uploads):
        error = precheck(upload, limits)
        reference = references.get(upload.filename)
        item = Item(batch=batch, position=position, filename=label(upload.filename, position),
                    state=ItemState.failed if error else ItemState.queued, has_reference=reference is not None)
        session.add(item)
        session.flush()
        if error is None:
            storage.put(input_key(item.id), upload.data)
            if reference is not None:
                storage.put(reference_key(item.id), reference)
        else:
            item.error, item.failure, item.finished_at = str(error), error.kind, datetime.now(UTC)
    return batch, True
