"""Submit, claim and process against PostgreSQL: the row is the truth and a re-run stores one result."""
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import sessionmaker

from core import process, queries, queue
from core import submit as service
from core.config import get_settings
from core.db import make_engine, migrate, session_factory
from core.options import BatchOptions
from core.storage import LocalStorage, input_key
from core.tables import Batch, Deletion, Item, ItemState, Result
from tests.conftest import many_frames, png, smooth_image, tenant_id
from tests.core.test_imageio import tiff_of_pages


@pytest.fixture
def sessions(env: dict[str, str], postgres_url: str) -> Iterator[sessionmaker]:
    migrate(postgres_url)
    engine = make_engine(postgres_url)
    yield session_factory(engine)
    engine.dispose()


def make_batch(sessions: sessionmaker, storage: LocalStorage, n: int = 2, add_noise: float | None = 15) -> list[str]:
    uploads = [service.Upload(f"{i}.png", png(smooth_image(48, 48, seed=i))) for i in range(n)]
    with sessions.begin() as s:
        batch, _ = service.submit(s, storage, get_settings(), tenant_id(s), uploads, BatchOptions(add_noise=add_noise))
        return [i.id for i in batch.items]


def test_the_noisy_image_is_stored_once(sessions: sessionmaker, tmp_path: Path) -> None:
    """With synthetic noise it is a PNG of its own; without, it is the upload, and no copy is written."""
    storage = LocalStorage(tmp_path / "files")
    noise, upload = make_batch(sessions, storage, 1), make_batch(sessions, storage, 1, add_noise=None)
    process.process_items(sessions, storage, get_settings(), noise + upload)
    with sessions() as s:
        noisy, plain = (s.get_one(Result, i) for i in (*noise, *upload))
    assert noisy.noisy_key.endswith("/noisy.png") and storage.find(noisy.noisy_key) is not None
    assert plain.noisy_key == input_key(upload[0])
    assert sorted(p.name for p in (tmp_path / "files").rglob("*.png")) == ["denoised.png", "denoised.png", "noisy.png"]


def test_running_twice_stores_one_result(sessions: sessionmaker, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    ids = make_batch(sessions, storage)
    process.process_items(sessions, storage, get_settings(), ids)
    process.process_items(sessions, storage, get_settings(), ids)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Result).where(Result.item_id.in_(ids))) == 2
        items = s.scalars(select(Item).where(Item.id.in_(ids)).order_by(Item.position)).all()
        assert [i.deliveries for i in items] == [1, 1] and {i.state for i in items} == {ItemState.done}


def age(sessions: sessionmaker, item_id: str, seconds: float) -> None:
    """Moves the start of the item's current run into the past, as if it had been running that long."""
    with sessions.begin() as s:
        item = s.get_one(Item, item_id)
        item.started_at = item.started_at - timedelta(seconds=seconds)


def test_running_item_is_not_run_again_until_its_lease_ends(sessions: sessionmaker, tmp_path: Path) -> None:
    storage, settings = LocalStorage(tmp_path / "files"), get_settings()
    [item_id] = make_batch(sessions, storage, 1)
    with sessions.begin() as s:  # a worker claimed it and is still working (or died)
        assert process.claim(s, item_id, settings.max_deliveries, settings.lease) is process.Claim.taken
    busy, _ = process.process_items(sessions, storage, settings, [item_id])  # a duplicate message meanwhile
    assert busy == [item_id]  # to be asked again later
    with sessions() as s:
        item = s.get_one(Item, item_id)
        assert item.state == ItemState.running and item.deliveries == 1 and item.result is None
        assert queue.due_for_requeue(s, settings.requeue_after, settings.lease) == []
    age(sessions, item_id, settings.lease + 1)  # the lease ran out: the first worker is taken to be dead
    with sessions() as s:
        assert queue.due_for_requeue(s, settings.requeue_after, settings.lease) == [item_id]
    process.process_items(sessions, storage, settings, [item_id])
    with sessions() as s:
        item = s.get_one(Item, item_id)
        assert item.state == ItemState.done and item.deliveries == 2 and item.result is not None


def test_poison_item_fails_after_max_deliveries(sessions: sessionmaker, tmp_path: Path) -> None:
    storage, settings = LocalStorage(tmp_path / "files"), get_settings()
    [item_id] = make_batch(sessions, storage, 1)
    for _ in range(settings.max_deliveries):
        with sessions.begin() as s:
            assert process.claim(s, item_id, settings.max_deliveries, settings.lease) is process.Claim.taken
        age(sessions, item_id, settings.lease + 1)
    process.process_items(sessions, storage, settings, [item_id])
    with sessions() as s:
        item = s.get_one(Item, item_id)
        assert item.state == ItemState.failed and "gave up after 3 deliveries" in (item.error or "")
        assert item.result is None


def test_queued_items_without_a_recent_message_are_due(sessions: sessionmaker, tmp_path: Path) -> None:
    storage, settings = LocalStorage(tmp_path / "files"), get_settings()
    ids = make_batch(sessions, storage, 2)
    with sessions.begin() as s:
        assert queue.due_for_requeue(s, settings.requeue_after, settings.lease) == ids  # never enqueued
        queue.mark_enqueued(s, ids)
    with sessions() as s:
        assert queue.due_for_requeue(s, settings.requeue_after, settings.lease) == []
        assert queue.due_for_requeue(s, -1, settings.lease) == ids  # as if requeue_after had passed


def test_items_marked_sent_are_locked_in_id_order_as_a_deletion_locks_them(sessions: sessionmaker,
                                                                            tmp_path: Path) -> None:
    """Else a reconcile and a deletion of the same items can each hold one the other waits for (a deadlock)."""
    storage = LocalStorage(tmp_path / "files")
    while (ids := make_batch(sessions, storage))[0] < ids[1]:  # stored out of id order, so a plain scan is too
        pass
    low, high = sorted(ids)
    errors: list[Exception] = []

    def mark() -> None:
        try:
            with sessions.begin() as s:
                queue.mark_enqueued(s, ids)
        except Exception as e:  # noqa: BLE001 - the deadlock PostgreSQL ends, whichever side it picks
            errors.append(e)

    with sessions.begin() as deleting:
        deleting.execute(select(Item.id).where(Item.id == low).with_for_update())
        marking = threading.Thread(target=mark)
        marking.start()
        time.sleep(0.5)  # it waits for the lowest id
        deleting.execute(select(Item.id).where(Item.id == high).with_for_update())
    marking.join()
    assert errors == []
    with sessions() as s:
        assert None not in s.scalars(select(Item.enqueued_at).where(Item.id.in_(ids))).all()


def test_submit_refuses_bad_batches(sessions: sessionmaker, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    with sessions() as s:
        with pytest.raises(service.SubmitError, match="no files"):
            service.submit(s, storage, get_settings(), tenant_id(s), [], BatchOptions())
        with pytest.raises(service.SubmitError, match="blip captioner is not configured"):
            service.submit(s, storage, get_settings(), tenant_id(s), [service.Upload("a", b"x")],
                           BatchOptions(captioner="blip"))


def test_batch_counts_of_many_batches_in_one_query(sessions: sessionmaker, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    first, second = make_batch(sessions, storage, 3), make_batch(sessions, storage, 1)
    process.process_items(sessions, storage, get_settings(), first[:1])
    with sessions() as s:
        batch_ids = [s.get_one(Item, first[0]).batch_id, s.get_one(Item, second[0]).batch_id]
        statements: list[str] = []
        event.listen(s.connection(), "before_cursor_execute", lambda *args: statements.append(args[2]))
        counts = queries.batch_counts(s, batch_ids)
    assert len(statements) == 1
    assert counts[batch_ids[0]][ItemState.done] == 1 and counts[batch_ids[0]][ItemState.queued] == 2
    assert counts[batch_ids[1]][ItemState.queued] == 1 and sum(counts[batch_ids[1]].values()) == 1


def test_an_item_whose_runner_died_on_this_host_is_taken_over_at_once(sessions: sessionmaker, tmp_path: Path) -> None:
    """A killed pool child: Celery redelivers its message, and the item must run now, not after the lease."""
    import subprocess
    storage, settings = LocalStorage(tmp_path / "files"), get_settings()
    [item_id] = make_batch(sessions, storage, 1)
    child = subprocess.Popen(["true"])
    child.wait()  # a pid that no longer exists
    with sessions.begin() as s:
        assert process.claim(s, item_id, settings.max_deliveries, settings.lease) is process.Claim.taken
        s.get_one(Item, item_id).runner = f"{process.HOST}:{child.pid}"
    busy, unreached = process.process_items(sessions, storage, settings, [item_id])
    assert busy == [] and unreached == []
    with sessions() as s:
        item = s.get_one(Item, item_id)
        assert item.state == ItemState.done and item.deliveries == 2


def test_a_time_limit_fails_its_item_only_when_it_ran_first(sessions: sessionmaker, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The task's time limit covers its items together: an item it strikes after others ran is handed back, to run
    first in another task (its delivery not counted); one it strikes while running first is failed."""
    class Limit(Exception):
        pass
    storage, settings = LocalStorage(tmp_path / "files"), get_settings()
    ids = make_batch(sessions, storage, 3)
    real = process.pipeline.process

    def second_is_slow(data, reference, options, models, runtime, page):  # type: ignore[no-untyped-def]
        if data == storage.get(f"items/{ids[1]}/input"):
            raise Limit
        return real(data, reference, options, models, runtime, page)
    monkeypatch.setattr(process.pipeline, "process", second_is_slow)
    busy, unreached = process.process_items(sessions, storage, settings, ids, time_limit=(Limit,))
    assert busy == [] and unreached == ids[1:]
    with sessions() as s:
        states = [s.get_one(Item, i) for i in ids]
        assert [i.state for i in states] == [ItemState.done, ItemState.queued, ItemState.queued]
        assert states[1].deliveries == 0 and states[1].error is None
    busy, unreached = process.process_items(sessions, storage, settings, unreached, time_limit=(Limit,))
    assert busy == [] and unreached == ids[2:]
    with sessions() as s:
        states = [s.get_one(Item, i) for i in ids]
        assert [i.state for i in states] == [ItemState.done, ItemState.failed, ItemState.queued]
        assert states[1].error.startswith("time limit") and states[1].failure == "time_limit"


def test_a_failure_after_the_result_is_stored_leaves_the_item_done(sessions: sessionmaker, tmp_path: Path) -> None:
    """A time limit that strikes just after the result's commit must not fail a done item."""
    storage, settings = LocalStorage(tmp_path / "files"), get_settings()
    [item_id] = make_batch(sessions, storage, 1)
    process.process_items(sessions, storage, settings, [item_id])
    process.DatabaseSink(sessions, storage, settings).failed(item_id, "time limit: late", "time_limit")
    with sessions() as s:
        item = s.get_one(Item, item_id)
        assert item.state == ItemState.done and item.error is None and item.result is not None

def test_sqlite_contention_is_retried_at_once_and_an_outage_with_backoff(monkeypatch, env: dict[str, str]) -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError
    pauses: list[float] = []
    monkeypatch.setattr(process.time, "sleep", pauses.append)

    def failing(*reasons: str):  # type: ignore[no-untyped-def]
        left = list(reasons)

        def work() -> int:
            if left:
                raise OperationalError("COMMIT", {}, sqlite3.OperationalError(left.pop(0)))
            return 7
        return work
    assert process.with_database(get_settings(), failing("database is locked", "database is locked")) == 7
    assert len(pauses) == 2 and max(pauses) <= 0.05  # another process committed first: no outage
    pauses.clear()
    assert process.with_database(get_settings(), failing("connection refused", "connection refused")) == 7
    assert pauses == [0.5, 1.0]


def test_a_statement_time_out_is_logged_as_one_not_as_an_outage(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    from psycopg.errors import QueryCanceled
    from sqlalchemy.exc import OperationalError
    monkeypatch.setattr(process.time, "sleep", lambda _: None)
    left = [QueryCanceled("canceling statement due to statement timeout")]

    def work() -> int:
        if left:
            raise OperationalError("UPDATE items", {}, left.pop())
        return 7
    assert process.with_database(get_settings(), work) == 7
    assert "database statement cancelled (time-out), retrying in 0.5 s" in caplog.text


def test_a_local_file_gone_before_it_is_read_fails_alone_with_the_reason(sessions: sessionmaker,
                                                                       tmp_path: Path) -> None:
    """`denocap run` reads each file when it is stored, not all at first: one may vanish in between."""
    storage = LocalStorage(tmp_path / "files")
    (tmp_path / "a.png").write_bytes(png(smooth_image(48, 48)))
    files = [service.LocalFile("a.png", tmp_path / "a.png"), service.LocalFile("gone.png", tmp_path / "gone.png")]
    with sessions.begin() as s:
        batch, _ = service.submit(s, storage, get_settings(), tenant_id(s), files, BatchOptions())
        kept, gone = batch.items
        assert kept.state == ItemState.queued and storage.get(input_key(kept.id)) == (tmp_path / "a.png").read_bytes()
        assert gone.state == ItemState.failed and gone.error == "cannot read the file: No such file or directory"


def test_a_file_refused_by_its_header_is_not_read_to_be_hashed(sessions: sessionmaker, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path / "files")
    (tmp_path / "a.png").write_bytes(png(smooth_image(48, 48)))
    with (tmp_path / "huge.tif").open("wb") as sparse:
        sparse.truncate(2 * 1024**3)
    hashed: list[str] = []
    digest = service.LocalFile.digest
    monkeypatch.setattr(service.LocalFile, "digest", lambda self: hashed.append(self.filename) or digest(self))
    files = [service.LocalFile("a.png", tmp_path / "a.png"), service.LocalFile("huge.tif", tmp_path / "huge.tif")]
    with sessions.begin() as s:
        batch, _ = service.submit(s, storage, get_settings(), tenant_id(s), files, BatchOptions())
        assert [i.state for i in batch.items] == [ItemState.queued, ItemState.failed]
    assert hashed == ["a.png"]


def test_a_multi_page_tiff_is_an_item_a_page_reading_one_stored_upload(sessions: sessionmaker, tmp_path: Path) -> None:
    """A document feeder's scans: each page is processed as its own image, the file is stored once; a TIFF whose
    later pages cannot be read stays one item with a note saying so."""
    from core.imageio import decode, full_pages
    scans, broken = many_frames("TIFF", 3, 48, 40), tiff_of_pages(3)[:12 + 2 * 66 + 4]
    storage = LocalStorage(tmp_path / "files")
    long = "x" * 251 + ".tif"  # the page number is kept in a name cut to 255 characters
    uploads = [service.Upload(name, data) for name, data in
               (("scan.tif", scans), ("cut.tif", broken), ("a.png", png(smooth_image(8, 8))), (long, scans))]
    with sessions.begin() as s:
        batch, _ = service.submit(s, storage, get_settings(), tenant_id(s), uploads, BatchOptions())
        ids = [i.id for i in batch.items]
        rows = [(i.position, i.filename, i.page, i.upload_id) for i in batch.items]
    assert rows[:5] == [(0, "scan page 1.tif", 0, None), (1, "scan page 2.tif", 1, ids[0]),
                        (2, "scan page 3.tif", 2, ids[0]), (3, "cut.tif", None, None), (4, "a.png", None, None)]
    assert [r[1] for r in rows[5:]] == ["x" * 244 + f" page {n}.tif" for n in (1, 2, 3)]
    assert sorted(p.parent.name for p in (tmp_path / "files").rglob("input")) == sorted([ids[0], ids[3], ids[4], ids[5]])
    reads: list[str] = []
    get = storage.get
    storage.get = lambda key: reads.append(key) or get(key)  # type: ignore[method-assign]
    process.process_items(sessions, storage, get_settings(), ids[:5])
    assert reads.count(f"items/{ids[0]}/input") == 1  # the pages, one after another, read the file once
    limits = service.limits_of(get_settings())
    with sessions() as s:
        results = [s.get_one(Result, i) for i in ids[:5]]
    for page, result in zip(full_pages(scans, limits)[0], results, strict=False):  # each page's own pixels
        noisy = decode(storage.get(result.noisy_key), limits).pixels
        assert abs(noisy - decode(scans, limits, page).pixels).max() < 1e-6 and result.notes == []
    assert results[3].notes[0].startswith("a TIFF of 2 readable pages and more that could not be read")


def test_a_page_keeps_its_number_and_extension_in_a_name_of_at_most_255() -> None:
    assert service.label("box 7/scan.tif", 0, 2) == "box 7/scan page 2.tif"
    assert service.label("a." + "x" * 250, 0, 1) == "a page 1." + "x" * 15  # an extension of 251 characters
    assert service.label("x" * 300 + ".tif", 0, 12) == "x" * 243 + " page 12.tif"
    assert service.label("x" * 300 + ".png", 0) == "x" * 251 + ".png" and service.label("", 3) == "file3"
    assert service.label("a.tif/", 0, 1) == "a.tif/ page 1" and service.label(".tif", 0, 1) == ".tif page 1"


def test_an_item_whose_batch_is_deleted_while_it_runs_leaves_no_row_and_no_file(sessions: sessionmaker, tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path / "files")
    ids = make_batch(sessions, storage)
    store = process.DatabaseSink._store

    def deleted_first(sink: process.DatabaseSink, item_id: str, *args: object) -> str | None:
        """The user deletes the batch after the worker wrote the item's images, before it stores the row."""
        assert (tmp_path / "files" / "results" / item_id).is_dir()
        with sessions.begin() as s:
            service.delete_batch(s, s.get_one(Item, item_id).batch)
        with sessions() as s:
            assert service.sweep(s, storage, [item_id, ids[1]]) == 0
        return store(sink, item_id, *args)

    monkeypatch.setattr(process.DatabaseSink, "_store", deleted_first)
    assert process.process_items(sessions, storage, get_settings(), ids) == ([], [])  # the second: nothing to claim
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Item).where(Item.id.in_(ids))) == 0
        process.fail(s, ids[1], "too late", "internal")  # a failure of a deleted item changes nothing
    assert not any(p.is_file() for p in (tmp_path / "files").rglob("*"))


def test_deleting_finds_the_images_of_a_run_that_wrote_them_and_failed(sessions: sessionmaker, tmp_path: Path) -> None:
    """A run wrote its images, then the item failed (time limit, too many deliveries): no result row names them."""
    storage = LocalStorage(tmp_path / "files")
    ids = make_batch(sessions, storage, 1)
    process.process_items(sessions, storage, get_settings(), ids)
    with sessions.begin() as s:
        s.delete(s.get_one(Result, ids[0]))
        s.get_one(Item, ids[0]).state = ItemState.failed
    assert any((tmp_path / "files" / "results" / ids[0]).rglob("*.png"))
    with sessions.begin() as s:
        batch = s.get_one(Item, ids[0]).batch
        deleted = service.delete_batch(s, batch)
    with sessions() as s:
        assert service.sweep(s, storage, deleted) == 0
    assert not any(p.is_file() for p in (tmp_path / "files").rglob("*"))
    with sessions() as s, pytest.raises(service.Gone):  # a seal that waited for a batch deleted meanwhile
        service.seal(s, batch)


class FailsOnce(LocalStorage):
    """Object storage that fails the first deletion asked of it."""
    failed = False

    def delete(self, keys: list[str]) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("the bucket's server is down")
        super().delete(keys)


def test_expire_deletes_finished_batches_sealed_long_ago_one_at_a_time(sessions: sessionmaker, tmp_path: Path) -> None:
    storage = FailsOnce(tmp_path / "files")
    old_done, old_done_too, old_queued, new_done = (make_batch(sessions, storage, 1) for _ in range(4))
    process.process_items(sessions, storage, get_settings(), old_done + old_done_too + new_done)
    with sessions.begin() as s:
        opened, _ = service.open_batch(s, get_settings(), tenant_id(s), BatchOptions(), sealed=False)
        batch_of = {i: s.get_one(Item, i).batch_id for i in (*old_done, *old_done_too, *old_queued, *new_done)}
        for ids, days in ((old_done, 33), (old_done_too, 32), (old_queued, 31)):
            s.execute(update(Batch).where(Batch.id == batch_of[ids[0]])
                      .values(sealed_at=datetime.now(UTC) - timedelta(days=days)))
        s.execute(update(Batch).where(Batch.id == opened.id).values(created_at=datetime.now(UTC) - timedelta(days=40)))
    with sessions() as s:
        assert service.expired(s, 30) == [batch_of[old_done[0]], batch_of[old_done_too[0]]]
        with pytest.raises(ValueError, match="at least 1"):  # 0 is "kept", never "everything"
            service.expired(s, 0)
    assert service.expire(sessions, storage, 30, most=1) == [batch_of[old_done[0]]]  # its files: storage failed
    assert (tmp_path / "files" / "items" / old_done[0]).exists()
    assert service.expire(sessions, storage, 30) == [batch_of[old_done_too[0]]]
    assert not (tmp_path / "files" / "items" / old_done_too[0]).exists()
    with sessions.begin() as s:
        s.execute(update(Deletion).values(due_at=datetime.now(UTC)))  # as if RETRY_SWEEP_AFTER had passed
    with sessions() as s:
        assert service.sweep(s, storage) == 0  # what the reconciler does
    assert not (tmp_path / "files" / "items" / old_done[0]).exists()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Item).where(Item.id.in_(old_queued + new_done))) == 2
        assert service.expired(s, 30) == [] and s.get(Batch, opened.id) is not None


class RefusesOne(LocalStorage):
    """Storage that will not delete one item's upload (an S3 object lock, say)."""
    refused = ""

    def delete(self, keys: list[str]) -> None:
        if input_key(self.refused) in keys:
            raise OSError("AccessDenied")
        super().delete(keys)


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_a_file_storage_refuses_fails_its_item_alone_and_waits(database: str, env: dict[str, str],
                                                               request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    """The others' files go; the refused item is retried later, not first in every sweep (it held up every item
    after it)."""
    sessions = request.getfixturevalue("sessions") if database == "postgresql" else sqlite_sessions(tmp_path)
    storage = RefusesOne(tmp_path / "files")
    ids = make_batch(sessions, storage, 3)
    storage.refused = ids[1]
    with sessions.begin() as s:
        deleted = service.delete_batch(s, s.get_one(Item, ids[0]).batch)
    with sessions() as s:
        assert service.sweep(s, storage, deleted) == 1
        assert s.scalars(select(Deletion.item_id).where(Deletion.item_id.in_(ids))).all() == [ids[1]]
        storage.refused = ""
        service.sweep(s, storage)  # not due yet: not tried
    assert sorted(p.parent.name for p in (tmp_path / "files").rglob("input")) == [ids[1]]


def sqlite_sessions(tmp_path: Path) -> sessionmaker:
    url = f"sqlite:///{tmp_path / 'denocap.db'}"
    migrate(url)
    return session_factory(make_engine(url))


class NoDeletes(LocalStorage):
    def delete(self, keys: list[str]) -> None:
        raise OSError("the bucket's server is down")


def test_an_item_deleted_while_it_ran_records_its_images_when_storage_cannot_delete_them(
        sessions: sessionmaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = NoDeletes(tmp_path / "files")
    ids = make_batch(sessions, storage, 1)
    store = process.DatabaseSink._store

    def deleted_first(sink: process.DatabaseSink, item_id: str, *args: object) -> str | None:
        with sessions.begin() as s:
            service.delete_batch(s, s.get_one(Item, item_id).batch)
        return store(sink, item_id, *args)

    monkeypatch.setattr(process.DatabaseSink, "_store", deleted_first)
    process.process_items(sessions, storage, get_settings(), ids)
    with sessions() as s:
        left = s.get_one(Deletion, ids[0])
    assert left.ran and left.denoiser_version is not None  # the sweep finds the images this run wrote
