"""The write side of the API and of `denocap run`: check a submission, store its files, make its rows. No torch."""
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import ColumnElement, and_, delete, event, exists, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from core.config import Settings
from core.imageio import ImageError, Limits, TooLarge, full_pages, full_pages_file, probe, probe_file
from core.options import BatchOptions
from core.storage import Storage, input_key, item_keys, reference_key, results_folder
from core.tables import Batch, Deletion, Item, ItemState, Result, Tenant

log = logging.getLogger(__name__)


class SubmitError(ValueError):
    """The batch as a whole is refused (bad options, no files); the API answers 422. `code` is what a client
    tells refusals apart by (the API's JSON gives it beside the message)."""
    code = "invalid"


class RequestTooLarge(SubmitError):
    """More files in one request than a batch may hold (413): fewer at a time get in."""
    code = "request_too_large"


class BatchFull(SubmitError):
    """The open batch holds as many files as a batch may (409): no request adds more."""
    code = "batch_full"


class TooManyInFlight(SubmitError):
    """The tenant has as many unfinished batches as the settings allow (429)."""
    code = "too_many_batches"


class IdempotencyConflict(SubmitError):
    """The Idempotency-Key was used before with a different request (409)."""
    code = "idempotency_conflict"


class BatchSealed(SubmitError):
    """Files were sent to a batch that is sealed (409)."""
    code = "batch_sealed"


class Gone(SubmitError):
    """The batch or item was deleted while a request or a worker waited for its row (404)."""
    code = "not_found"


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes  # the first max_file_bytes + 1 bytes at most
    size: int | None = None  # the whole file's size, when more was sent than was kept

    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def check(self, limits: Limits) -> ImageError | None:
        """Cheap header check at submission; the full decode happens in the worker. Returns the reason to refuse."""
        size = max(self.size or 0, len(self.data))
        if size > limits.max_bytes:
            return TooLarge(f"file is {size} bytes, the limit is {limits.max_bytes}")
        try:
            probe(self.data, limits)
        except ImageError as e:
            return e
        return None

    def pages(self, limits: Limits) -> tuple[list[int], str]:
        return full_pages(self.data, limits)

    def store(self, storage: Storage, key: str) -> None:
        storage.put(key, self.data)


@dataclass(frozen=True)
class SpooledUpload:
    """A part Starlette spooled to a temporary file: hashed, checked and stored by streaming, never read whole."""
    filename: str
    file: BinaryIO
    size: int

    def digest(self) -> str:
        self.file.seek(0)
        return hashlib.file_digest(self.file, "sha256").hexdigest()  # type: ignore[arg-type]

    def check(self, limits: Limits) -> ImageError | None:
        try:
            probe_file(self.file, self.size, limits)
        except ImageError as e:
            return e
        return None

    def pages(self, limits: Limits) -> tuple[list[int], str]:
        return full_pages_file(self.file, self.size, limits)

    def store(self, storage: Storage, key: str) -> None:
        self.file.seek(0)
        storage.put_file(key, self.file)


@dataclass(frozen=True)
class LocalFile:
    """A file on this machine (`denocap run`): opened only to be hashed, checked and stored, so a folder of
    thousands is never in memory at once. A file that cannot be read becomes a failed item with the reason."""
    filename: str
    path: Path

    def digest(self) -> str:
        try:
            with self.path.open("rb") as file:
                return hashlib.file_digest(file, "sha256").hexdigest()
        except OSError:  # no content to tell it by; check() gives the reason
            return hashlib.sha256(os.fsencode(self.path.absolute())).hexdigest()

    def check(self, limits: Limits) -> ImageError | None:
        try:
            with self.path.open("rb") as file:
                return SpooledUpload(self.filename, file, os.fstat(file.fileno()).st_size).check(limits)
        except OSError as e:
            return ImageError(f"cannot read the file: {e.strerror or e}")

    def pages(self, limits: Limits) -> tuple[list[int], str]:
        with self.path.open("rb") as file:
            return SpooledUpload(self.filename, file, os.fstat(file.fileno()).st_size).pages(limits)

    def store(self, storage: Storage, key: str) -> None:
        with self.path.open("rb") as file:
            storage.put_file(key, file)


Sendable = Upload | SpooledUpload | LocalFile


def limits_of(settings: Settings) -> Limits:
    return Limits(settings.max_file_bytes, settings.max_pixels, settings.max_side)


def label(filename: str, position: int, page: int | None = None, most: int = 255) -> str:
    """A file name as shown to the user: printable, at most `most` characters, the extension and the page of a
    multi-page file kept (`scan page 2.tif`)."""
    name = "".join(c for c in filename if c.isprintable()).strip() or f"file{position}"
    last = name.rpartition("/")[2]
    dot = last.rfind(".")
    suffix = last[dot:] if 0 < dot < len(last) - 1 else ""  # as PurePosixPath's, of the name as given (`a.tif/`)
    head, tail = name[:len(name) - len(suffix)], f" page {page}" if page else ""
    if len(head) + len(tail) + len(suffix) > most:
        suffix = suffix[:16]
        head = head[:most - len(tail) - len(suffix)]
    return head + tail + suffix


def request_digest(uploads: list[Sendable], options: BatchOptions, references: dict[str, Sendable]) -> str:
    """What makes two submissions the same request: options, file names and contents, references."""
    parts = [options.model_dump(), [(u.filename, u.digest()) for u in uploads],
             sorted((name, ref.digest()) for name, ref in references.items())]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def earlier_submission(session: Session, tenant_id: str, idempotency_key: str, digest: str) -> Batch | None:
    batch = session.scalar(select(Batch).where(Batch.tenant_id == tenant_id,
                                               Batch.idempotency_key == idempotency_key))
    if batch is not None and batch.request_digest != digest:
        raise IdempotencyConflict("this Idempotency-Key was used with a different request")
    return batch


def batches_in_flight(session: Session, tenant_id: str) -> int:
    """Batches with an unfinished item, and open batches (more files may come): both hold the tenant's capacity."""
    unfinished = select(Item.batch_id).where(Item.state.in_([ItemState.queued, ItemState.running]))
    return session.scalar(select(func.count()).select_from(Batch).where(
        Batch.tenant_id == tenant_id, or_(Batch.sealed_at.is_(None), Batch.id.in_(unfinished)))) or 0


def check_options(options: BatchOptions, settings: Settings) -> None:
    if options.captioner == "blip" and settings.blip_weights is None:
        raise SubmitError("the blip captioner is not configured on this server (DENOCAP_BLIP_WEIGHTS)")


def open_batch(session: Session, settings: Settings, tenant_id: str, options: BatchOptions,
               idempotency_key: str | None = None, digest: str | None = None,
               sealed: bool = True) -> tuple[Batch, bool]:
    """A new batch, or with an idempotency key seen before, the earlier batch and False.
    The tenant's row is locked for the transaction, so the in-flight limit and the key hold under concurrency."""
    check_options(options, settings)
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    if idempotency_key:
        assert digest is not None
        if earlier := earlier_submission(session, tenant_id, idempotency_key, digest):
            return earlier, False
    if batches_in_flight(session, tenant_id) >= settings.max_batches_in_flight:
        most = settings.max_batches_in_flight
        raise TooManyInFlight(f"{most} batch{'es are' if most != 1 else ' is'} still running for this tenant; "
                              "submit more when one finishes")
    batch = Batch(tenant_id=tenant_id, options=options.model_dump(), denoiser=options.denoiser,
                  captioner=options.captioner, idempotency_key=idempotency_key,
                  request_digest=digest if idempotency_key else None,
                  sealed_at=datetime.now(UTC) if sealed else None)
    try:
        with session.begin_nested():  # a racing request on the same key (SQLite has no row lock) ends here
            session.add(batch)
    except IntegrityError:
        assert idempotency_key and digest
        earlier = earlier_submission(session, tenant_id, idempotency_key, digest)
        assert earlier is not None
        return earlier, False
    return batch, True


@dataclass
class Room:
    """Where the next item goes, and how many more a request may make: within the batch's limit and the request's
    own, counted in items, since a multi-page TIFF makes an item a page (a 66 KB file can hold 1,000 pages)."""
    settings: Settings
    position: int  # the batch's next position
    held: int  # the items it holds: fewer than `position` when some were deleted
    made: int = 0  # by this request

    def take(self, items: int) -> None:
        if self.made + items > self.settings.max_files_per_batch:
            raise RequestTooLarge(f"the files of this request make more than {self.settings.max_files_per_batch} "
                                  "items, the limit per request (a multi-page TIFF makes an item a page)")
        if self.held + items > self.settings.max_batch_items:
            raise BatchFull(f"a batch holds at most {self.settings.max_batch_items} files"
                            + (f"; this TIFF's {items} pages do not fit" if items > 1 else ""))
        self.position, self.held, self.made = self.position + items, self.held + items, self.made + items


def add_item(session: Session, storage: Storage, limits: Limits, batch: Batch, room: Room, upload: Sendable,
             reference: Sendable | None = None, digest: str | None = None) -> list[Item]:
    """One file: stored and queued, or a failed item with the reason (a bad file never refuses the batch). A
    multi-page TIFF (a document feeder's scans) is an item a page, `scan page 2.tif`, all reading the one stored
    upload. A refused file is not hashed here: a 2 GiB one over the limit would be read whole for nothing.
    Its files are deleted again unless the session's transaction commits."""
    error = upload.check(limits)
    if error is None and reference is not None and (bad := reference.check(limits)) is not None:
        error = type(bad)(f"its reference: {bad}")
    frames = _pages(upload, limits) if error is None and reference is None else []
    position = room.position
    room.take(max(1, len(frames)))
    item = Item(batch_id=batch.id, position=position, filename=label(upload.filename, position, 1 if frames else None),
                state=ItemState.failed if error else ItemState.queued, has_reference=reference is not None,
                digest=digest or (None if error else upload.digest()), page=frames[0] if frames else None)
    session.add(item)
    session.flush()
    if error is None:
        upload.store(storage, _unless_committed(session, storage, item.id, input_key(item.id)))
        if reference is not None:
            reference.store(storage, _unless_committed(session, storage, item.id, reference_key(item.id)))
    else:
        item.error, item.failure, item.finished_at = str(error), error.kind, datetime.now(UTC)
    pages = [Item(batch_id=batch.id, position=position + n, filename=label(upload.filename, position, n + 1), page=frame,
                  upload_id=item.id) for n, frame in enumerate(frames[1:], 1)]
    session.add_all(pages)
    return [item, *pages]


def _pages(upload: Sendable, limits: Limits) -> list[int]:
    """A multi-page TIFF's full-size pages, when every one could be read; [] for any other file (one item, whose
    note says when a TIFF's later pages could not be read or were too many to count)."""
    try:
        frames, ended = upload.pages(limits)
    except (ImageError, OSError):  # the worker's decode gives the reason
        return []
    return frames if len(frames) > 1 and ended == "all" else []


def submit(session: Session, storage: Storage, settings: Settings, tenant_id: str, uploads: list[Sendable],
           options: BatchOptions, references: dict[str, Sendable] | None = None,
           idempotency_key: str | None = None) -> tuple[Batch, bool]:
    """A sealed batch of these files at once; bad files become failed items with the reason.
    Returns the batch and True, or with an idempotency key seen before, the earlier batch and False."""
    check_options(options, settings)
    if not uploads:
        raise SubmitError("no files in the batch")
    if len(uploads) > settings.max_files_per_batch:
        raise RequestTooLarge(f"{len(uploads)} files, the limit is {settings.max_files_per_batch} per batch")
    references = references or {}
    _one_reference(options, references)
    digest = request_digest(uploads, options, references) if idempotency_key else None
    batch, created = open_batch(session, settings, tenant_id, options, idempotency_key, digest)
    if created:
        limits, room = limits_of(settings), Room(settings, 0, 0)
        for upload in uploads:
            add_item(session, storage, limits, batch, room, upload, references.get(upload.filename))
    return batch, created


def _one_reference(options: BatchOptions, references: dict[str, Sendable]) -> None:
    if references and options.add_noise is not None:  # it would be ignored: the scores were not against it
        raise SubmitError("references and add_noise: with add_noise each upload is its own clean reference; "
                          "send one or the other")


_STORED = "denocap.stored"


def _unless_committed(session: Session, storage: Storage, item_id: str, key: str) -> str:
    """Records `key`, about to be stored, in the session's transaction: when that ends without its commit (the
    request or the batch full after some files, storage or the database down, the commit itself failing) its rows
    are gone, so the files are deleted too, or they would be kept for nothing."""
    session.info.setdefault(_STORED, (storage, []))[1].append((item_id, key))
    return key


@event.listens_for(Session, "after_commit")
def _keep_stored(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_STORED, None)


@event.listens_for(Session, "after_transaction_end")
def _delete_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    """Only the files of items the database does not hold: a commit whose answer was lost may have landed. When
    storage fails, they are recorded for the reconciler's sweep."""
    if transaction.parent is None and (stored := session.info.pop(_STORED, None)):
        storage, keys = stored
        try:
            with Session(session.get_bind()) as fresh:
                held = set(fresh.scalars(select(Item.id).where(Item.id.in_({item for item, _ in keys}))))
            left = [(item, key) for item, key in keys if item not in held]
            try:
                storage.delete([key for _, key in left])
            except OSError as e:
                log.warning("%d files of a failed request are left for the reconciler: %s", len(left), e)
                with Session(session.get_bind()) as fresh, fresh.begin():
                    fresh.add_all(Deletion(item_id=item) for item in dict.fromkeys(item for item, _ in left))
        except SQLAlchemyError as e:
            log.warning("%d files of a failed request are left in storage: %s", len(keys), e)


def open_digest(options: BatchOptions) -> str:
    """What makes two requests to open a batch the same: the options (the files come later)."""
    return hashlib.sha256(json.dumps(["open", options.model_dump()], sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Appended:
    item: Item
    duplicate: bool  # the batch held this content already: nothing was stored, the earlier item is given
    pages: tuple[Item, ...] = ()  # a multi-page TIFF's other pages, each an item


def append(session: Session, storage: Storage, settings: Settings, batch: Batch, uploads: Iterable[Sendable],
           references: dict[str, Sendable] | None = None) -> list[Appended]:
    """Adds files to an open batch, taking `uploads` one at a time (each is stored before the next is read).
    Content the batch holds already is not added again, so a client may resend a chunk it is unsure of.
    The batch row is locked: appends to one batch take turns, and none lands after the seal."""
    locked = session.scalar(select(Batch).where(Batch.id == batch.id).with_for_update()
                            .execution_options(populate_existing=True))  # the row as of the lock, not as loaded
    if locked is None:
        raise Gone("batch not found")
    if locked.sealed_at is not None:
        raise BatchSealed("the batch is sealed; open a new batch to add files")
    _one_reference(BatchOptions.model_validate(locked.options), references or {})
    room = Room(settings, *session.execute(select(func.coalesce(func.max(Item.position) + 1, 0), func.count())
                                           .where(Item.batch_id == batch.id)).one())
    limits, references, out = limits_of(settings), references or {}, []
    for upload in uploads:
        digest = upload.digest()
        earlier = session.scalar(select(Item).where(Item.batch_id == batch.id, Item.digest == digest).limit(1))
        if earlier is not None:
            out.append(Appended(earlier, True))
            continue
        items = add_item(session, storage, limits, locked, room, upload, references.get(upload.filename), digest)
        out.append(Appended(items[0], False, tuple(items[1:])))
    if not out:
        raise SubmitError("no files in the request")
    return out


def seal(session: Session, batch: Batch) -> None:
    """No more appends; the batch finishes when its items do. Sealing twice is harmless (a client may retry)."""
    session.execute(update(Batch).where(Batch.id == batch.id, Batch.sealed_at.is_(None))
                    .values(sealed_at=datetime.now(UTC)))
    if session.get(Batch, batch.id, populate_existing=True) is None:  # deleted while the seal waited for it
        raise Gone("batch not found")


def delete_batch(session: Session, batch: Batch) -> list[str]:
    """Deletes the batch, its items and results (the caller commits, then sweeps its files); returns the items' ids."""
    if session.scalar(select(Batch.id).where(Batch.id == batch.id).with_for_update()) is None:
        raise Gone("batch not found")
    ids = _delete_items(session, Item.batch_id == batch.id)
    session.execute(delete(Batch).where(Batch.id == batch.id))
    log.info("batch deleted with its %d items", len(ids), extra={"batch_id": batch.id})
    return ids


EXPIRE_AT_ONCE = 100  # batches one run deletes at most: a backlog takes several runs, none holding a worker long


def expired(session: Session, days: int, most: int | None = None) -> list[str]:
    """The batches sealed over `days` days ago whose items have all finished, oldest first (open batches never
    expire). ValueError under a day: 0 means "kept", never "everything"."""
    if days < 1:
        raise ValueError(f"a retention of {days} days: at least 1")
    cutoff = datetime.now(UTC) - timedelta(days=days)
    unfinished = exists().where(Item.batch_id == Batch.id, Item.state.in_([ItemState.queued, ItemState.running]))
    return list(session.scalars(select(Batch.id).where(Batch.sealed_at < cutoff, ~unfinished)
                                .order_by(Batch.sealed_at, Batch.id).limit(most)))


def expire(sessions: sessionmaker, storage: Storage, days: int, most: int = EXPIRE_AT_ONCE) -> list[str]:
    """Deletes up to `most` expired batches, a transaction each, and sweeps each one's files; returns their ids."""
    with sessions() as session:
        ids = expired(session, days, most)
    deleted = []
    for batch_id in ids:
        with sessions() as session:
            try:
                with session.begin():
                    if (batch := session.get(Batch, batch_id)) is None:
                        continue
                    items = delete_batch(session, batch)
            except Gone:  # deleted by its owner meanwhile
                continue
            deleted.append(batch_id)
            sweep(session, storage, items)
    return deleted


def delete_item(session: Session, item: Item) -> list[str]:
    """Deletes the item and its result (the caller commits, then sweeps); the first page of a multi-page upload takes
    the other pages with it (they read its stored file). Under the batch's lock, so an append cannot answer with it
    as a duplicate. Returns the ids deleted."""
    item_id, batch_id = item.id, item.batch_id
    session.execute(select(Batch.id).where(Batch.id == batch_id).with_for_update())
    pages = and_(Item.batch_id == batch_id, or_(Item.id == item_id, Item.upload_id == item_id))  # by the batch's index
    if not (ids := _delete_items(session, pages)):
        raise Gone("item not found")
    log.info("item deleted (%d items with its pages)", len(ids), extra={"batch_id": batch_id, "item_id": item_id})
    return ids


def _delete_items(session: Session, which: ColumnElement[bool]) -> list[str]:
    """Deletes the items `which` selects with their results, and records their stored files in `deletions`, in the
    same transaction, for sweep() once it commits; returns their ids. The rows are locked in id order first.
    A worker that finishes an item meanwhile waits for its row, then finds it gone and removes what it wrote
    (process.DatabaseSink)."""
    session.execute(select(Item.id).where(which).order_by(Item.id).with_for_update())
    rows = session.execute(select(Item.id, Item.started_at, Result.denoiser_version).outerjoin(Result)
                           .where(which).order_by(Item.id)).all()  # after the lock: results stored before it
    session.execute(delete(Item).where(which))  # results by ON DELETE CASCADE
    if rows:
        session.execute(insert(Deletion), [{"item_id": r.id, "denoiser_version": r.denoiser_version,
                                            "ran": r.denoiser_version is None and r.started_at is not None}
                                           for r in rows])
    return [r.id for r in rows]


SWEEP_AT_ONCE = 1000  # items a storage round and a commit
SWEEP_MOST = 20_000  # items one sweep takes at most: a deletion's request before it answers, a reconcile
RETRY_SWEEP_AFTER = timedelta(minutes=10)  # an item whose files storage refused: so it does not hold up the others


def sweep(session: Session, storage: Storage, item_ids: list[str] | None = None, most: int = SWEEP_MOST) -> int:
    """Deletes the stored files of deleted items (these, else those due, oldest first), at most `most`, and forgets
    them. No transaction is held while storage works. Returns how many of them are left for the reconciler (storage
    failed, or more than `most`); an item whose files storage refuses waits RETRY_SWEEP_AFTER."""
    seen = swept = visited = 0
    for rows, ids in _waiting(session, item_ids, most):
        session.rollback()  # the read's transaction: on SQLite a stale one could not delete the rows after
        done = _delete_files(storage, rows)
        seen, swept, visited = seen + len(rows), swept + len(done), visited + len(ids)
        try:
            refused = [r.item_id for r in rows if r.item_id not in done]
            session.execute(delete(Deletion).where(Deletion.item_id.in_(done)))
            session.execute(update(Deletion).where(Deletion.item_id.in_(refused))
                            .values(due_at=datetime.now(UTC) + RETRY_SWEEP_AFTER))
            session.commit()
        except SQLAlchemyError as e:  # the files are gone; a later sweep forgets the rows
            session.rollback()
            log.warning("deleted items' files were deleted but their rows are kept: %s", e)
            break
        if rows and not done:  # storage down
            break
    left = (seen - swept + len(item_ids) - visited if item_ids is not None
            else session.scalar(select(func.count()).select_from(Deletion)) or 0)
    session.rollback()
    if left:
        log.warning("the stored files of %d deleted items are left for the reconciler", left)
    return left


def _waiting(session: Session, item_ids: list[str] | None, most: int) -> Iterator[tuple[list[Row], list[str]]]:
    """Deleted items whose files are to go, a round at a time, with the ids the round looked up."""
    columns = select(Deletion.item_id, Deletion.denoiser_version, Deletion.ran).limit(SWEEP_AT_ONCE)
    for start in range(0, most, SWEEP_AT_ONCE):
        if item_ids is None:
            due = columns.where(Deletion.due_at <= datetime.now(UTC)).order_by(Deletion.due_at)
            if not (rows := list(session.execute(due).all())):
                return
            yield rows, []
        elif ids := item_ids[start:start + SWEEP_AT_ONCE]:  # a bind parameter an id: 65,535 at most
            yield list(session.execute(columns.where(Deletion.item_id.in_(ids))).all()), ids
        else:
            return


def _delete_files(storage: Storage, rows: list[Row]) -> set[str]:
    """The items whose files storage deleted: all at once, else one by one (a key storage refuses fails its item
    alone), giving up after three failures in a row (storage down)."""
    def delete_files(these: list[Row]) -> None:
        storage.delete([key for r in these for key in item_keys(r.item_id, r.denoiser_version)])
        for r in these:
            if r.ran:
                storage.delete_under(results_folder(r.item_id))
    try:
        delete_files(rows)
        return {r.item_id for r in rows}
    except OSError as e:
        log.warning("deleting the files of %d deleted items: %s", len(rows), e)
    done, failures = set(), 0
    for r in rows if len(rows) > 1 else []:
        try:
            delete_files([r])
            done.add(r.item_id)
            failures = 0
        except OSError:
            if (failures := failures + 1) == 3:
                break
    return done
