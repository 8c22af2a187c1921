"""Open batches over HTTP (no worker): appends, duplicates, the seal, the in-flight limit, the same failed items."""
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api.main import create_app
from core import submit as service
from core.config import get_settings
from core.db import make_engine, migrate, session_factory
from core.options import BatchOptions
from core.storage import LocalStorage, make_storage
from core.tables import Batch, Deletion
from tests.conftest import api_key, many_frames, png, smooth_image, tenant_id
from tests.services import files


@pytest.fixture
def app(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, list[list[str]]]:
    monkeypatch.setenv("DENOCAP_MAX_BATCHES_IN_FLIGHT", "2")
    get_settings.cache_clear()
    url = get_settings().database_url
    migrate(url)
    queued: list[list[str]] = []  # no worker: what would be sent to the queue
    return TestClient(create_app(enqueue=queued.append), headers={"X-API-Key": api_key(url, "alpha")}), queued


def test_appends_queue_at_once_and_the_same_content_twice_is_one_item(app: tuple[TestClient, list]) -> None:
    client, queued = app
    r = client.post("/batches/open", json={"add_noise": 10})
    assert r.status_code == 201 and r.json()["sealed"] is False and r.json()["options"]["add_noise"] == 10
    batch = r.json()["id"]
    a, b = png(smooth_image(16, 16, seed=1)), png(smooth_image(16, 16, seed=2))
    first = client.post(f"/batches/{batch}/files", files=files(("a.png", a), ("b.png", b)))
    assert first.status_code == 200, first.text
    assert [f["duplicate"] for f in first.json()["files"]] == [False, False]
    assert queued == [[f["item"]["id"] for f in first.json()["files"]]]
    again = client.post(f"/batches/{batch}/files", files=files(("a-again.png", a), ("c.png", b"not an image")))
    assert [f["duplicate"] for f in again.json()["files"]] == [True, False]
    assert again.json()["files"][0]["item"]["id"] == first.json()["files"][0]["item"]["id"]
    bad = again.json()["files"][1]["item"]
    assert bad["state"] == "failed" and bad["error"] == "not an image (unknown format)" and bad["position"] == 2
    assert len(queued) == 1  # the duplicate is not queued again, the bad file never is
    assert again.json()["batch"]["total"] == 3


def test_a_multi_page_tiff_appended_is_an_item_a_page_all_queued(app: tuple[TestClient, list],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    client, queued = app
    scans = many_frames("TIFF", 3)
    batch = client.post("/batches/open", json={}).json()["id"]
    sent = client.post(f"/batches/{batch}/files", files=files(("scan.tif", scans), ("a.png", png(smooth_image(8, 8)))))
    items = client.get(f"/batches/{batch}/items").json()["data"]
    assert [i["filename"] for i in items] == ["scan page 1.tif", "scan page 2.tif", "scan page 3.tif", "a.png"]
    assert [f["item"]["id"] for f in sent.json()["files"]] == [items[0]["id"], items[3]["id"]]
    assert queued == [[i["id"] for i in items]]
    assert client.get(f"/items/{items[2]['id']}/original").content == scans  # the one stored upload
    again = client.post(f"/batches/{batch}/files", files=files(("scan.tif", scans)))
    assert again.json()["files"][0]["duplicate"] is True and len(queued) == 1 and again.json()["batch"]["total"] == 4
    monkeypatch.setenv("DENOCAP_MAX_FILES_PER_BATCH", "4")  # a request's limit counts the items its files make
    get_settings.cache_clear()
    many = client.post(f"/batches/{batch}/files", files=files(("other.tif", many_frames("TIFF", 3, 32, 40)),
                                                              ("b.png", png(smooth_image(8, 8, seed=2))),
                                                              ("c.png", png(smooth_image(8, 8, seed=3)))))
    assert many.status_code == 413 and many.json()["code"] == "request_too_large"
    monkeypatch.setenv("DENOCAP_MAX_BATCH_ITEMS", "6")
    get_settings.cache_clear()
    full = client.post(f"/batches/{batch}/files", files=files(("other.tif", many_frames("TIFF", 3, 32, 40))))
    assert full.status_code == 409 and full.json()["code"] == "batch_full"
    assert "this TIFF's 3 pages do not fit" in full.json()["detail"]
    sealed_at_once = client.post("/batches", files=files(("scan.tif", scans), *[(f"{n}.png", png(smooth_image(
        8, 8, seed=n))) for n in range(3)]))  # 3 pages and 3 files: over the 4 a request may make
    assert sealed_at_once.status_code == 413 and sealed_at_once.json()["code"] == "request_too_large"
    assert client.get(f"/batches/{batch}").json()["total"] == 4


def test_an_open_batch_is_unfinished_until_sealed_and_refuses_appends_after(app: tuple[TestClient, list]) -> None:
    client, _ = app
    batch = client.post("/batches/open", json={}).json()["id"]
    client.post(f"/batches/{batch}/files", files=files(("bad.png", b"")))  # failed at once: all items finished
    assert client.get(f"/batches/{batch}").json()["finished"] is False
    sealed = client.post(f"/batches/{batch}/seal")
    assert sealed.status_code == 200 and sealed.json()["finished"] is True and sealed.json()["sealed"] is True
    assert client.post(f"/batches/{batch}/seal").status_code == 200  # a retried seal changes nothing
    late = client.post(f"/batches/{batch}/files", files=files(("late.png", png(smooth_image(16, 16)))))
    assert late.status_code == 409 and "sealed" in late.json()["detail"] and late.json()["code"] == "batch_sealed"
    assert client.get(f"/batches/{batch}").json()["total"] == 1


def test_a_full_batch_is_409_batch_full_and_a_request_over_the_file_limit_413(
        app: tuple[TestClient, list], monkeypatch: pytest.MonkeyPatch) -> None:
    """A client halves a 413 request and stops at a full batch: the two are told apart by status and code."""
    client, _ = app
    monkeypatch.setenv("DENOCAP_MAX_BATCH_ITEMS", "2")
    monkeypatch.setenv("DENOCAP_MAX_FILES_PER_BATCH", "2")
    get_settings.cache_clear()
    batch = client.post("/batches/open", json={}).json()["id"]
    photos = [(f"{i}.png", png(np.full((8, 8, 3), i, np.uint8))) for i in range(3)]
    r = client.post(f"/batches/{batch}/files", files=files(*photos))
    assert r.status_code == 413 and r.json() == {"detail": "3 files, the limit is 2 per request",
                                                 "code": "request_too_large"}
    assert client.post(f"/batches/{batch}/files", files=files(*photos[:2])).status_code == 200
    r = client.post(f"/batches/{batch}/files", files=files(photos[2]))
    assert r.status_code == 409 and r.json() == {"detail": "a batch holds at most 2 files", "code": "batch_full"}
    first = client.post(f"/batches/{batch}/files", files=files(photos[0])).json()["files"][0]
    assert first["duplicate"] is True and client.get(f"/batches/{batch}").json()["total"] == 2
    assert client.delete(f"/items/{first['item']['id']}").status_code == 204  # a replaced photo: room for one more
    uploads = get_settings().files / "items"
    assert len(list(uploads.iterdir())) == 1
    another = ("3.png", png(np.full((8, 8, 3), 3, np.uint8)))
    r = client.post(f"/batches/{batch}/files", files=files(photos[2], another))  # the first fits, the second not
    assert r.status_code == 409 and len(list(uploads.iterdir())) == 1  # the first's file went with its row
    assert client.post(f"/batches/{batch}/files", files=files(photos[2])).status_code == 200
    assert client.get(f"/batches/{batch}").json()["total"] == 2


def test_open_batches_count_in_flight_and_the_key_gives_the_same_batch(app: tuple[TestClient, list]) -> None:
    client, _ = app
    first = client.post("/batches/open", json={}, headers={"Idempotency-Key": "k1"})
    same = client.post("/batches/open", json={}, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, same.status_code) == (201, 200) and first.json()["id"] == same.json()["id"]
    assert client.post("/batches/open", json={"seed": 3}, headers={"Idempotency-Key": "k1"}).status_code == 409
    client.post("/batches/open", json={})
    assert client.post("/batches/open", json={}).status_code == 429  # two open, empty batches hold the limit
    client.post(f"/batches/{first.json()['id']}/seal")  # sealed and empty: finished
    assert client.post("/batches/open", json={}).status_code == 201


def test_bad_options_and_foreign_batches(app: tuple[TestClient, list]) -> None:
    client, _ = app
    assert client.post("/batches/open", json={"add_noise": -1}).status_code == 422
    batch = client.post("/batches/open", json={}).json()["id"]
    other = {"X-API-Key": api_key(get_settings().database_url, "beta")}
    body = files(("a.png", png(smooth_image(16, 16))))
    assert client.post(f"/batches/{batch}/files", files=body, headers=other).status_code == 404
    assert client.post(f"/batches/{batch}/seal", headers=other).status_code == 404
    assert client.post(f"/batches/{batch}/files", files=body, headers={"X-API-Key": "wrong"}).status_code == 401


def test_a_file_spooled_to_disk_is_stored_whole(app: tuple[TestClient, list]) -> None:
    """Parts over 1 MiB are on disk when the route runs; they are hashed, checked and stored by streaming."""
    client, _ = app
    big = png(np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8))
    assert len(big) > 1024**2
    batch = client.post("/batches/open", json={}).json()["id"]
    sent = client.post(f"/batches/{batch}/files", files=files(("big.png", big), ("big-again.png", big)))
    first, again = sent.json()["files"]
    assert first["item"]["state"] == "queued" and again["duplicate"] is True
    assert client.get(f"/items/{first['item']['id']}/original").content == big


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_an_append_that_loaded_the_batch_before_the_seal_is_refused(env: dict[str, str], database: str,
                                                                     postgres_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The route loads the batch (404 check) before it locks the row; the append must not land after a seal made
    in between. PostgreSQL: the lock sees the seal. SQLite, which has no row locks: the append's transaction read
    before the seal, so its write fails as locked (the API answers 503) and the retry sees the seal."""
    if database == "postgresql":
        monkeypatch.setenv("DENOCAP_DATABASE_URL", postgres_url)
        get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.database_url)
    sessions = session_factory(make_engine(settings.database_url))
    storage = make_storage(settings)
    upload = [service.Upload("a.png", png(smooth_image(16, 16)))]
    with sessions.begin() as s:
        batch_id = service.open_batch(s, settings, tenant_id(s), BatchOptions(), sealed=False)[0].id
    with sessions() as appending:
        batch = appending.get_one(Batch, batch_id)
        assert batch.sealed_at is None
        with sessions.begin() as sealing:
            service.seal(sealing, sealing.get_one(Batch, batch_id))
        with pytest.raises(service.BatchSealed if database == "postgresql" else OperationalError):
            service.append(appending, storage, settings, batch, upload)
    with sessions() as again, pytest.raises(service.BatchSealed):
        service.append(again, storage, settings, again.get_one(Batch, batch_id), upload)
    with sessions() as s:
        assert s.get_one(Batch, batch_id).items == []


@pytest.mark.parametrize("request_kind", ["batch", "append"])
def test_the_files_of_a_request_whose_commit_fails_are_deleted(env: dict[str, str], request_kind: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that dies at the commit takes the request's rows with it, so its stored files go too; a
    request that commits keeps them, also when the commit's answer is lost."""
    settings = get_settings()
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions, storage = session_factory(engine), make_storage(settings)

    def send(s: Session) -> None:
        photo, reference = service.Upload("a.png", png(smooth_image(16, 16))), service.Upload("a.png", png(smooth_image()))
        if request_kind == "batch":
            service.submit(s, storage, settings, tenant_id(s), [photo], BatchOptions(), {"a.png": reference})
        else:
            batch = service.open_batch(s, settings, tenant_id(s), BatchOptions(), sealed=False)[0]
            service.append(s, storage, settings, batch, [photo], {"a.png": reference})

    def dies(*_: object) -> None:
        raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    stored = settings.files / "items"
    with sessions() as s:
        send(s)
        assert sorted(f.name for f in stored.rglob("*") if f.is_file()) == ["input", "reference"]
        event.listen(s, "before_commit", dies)
        with pytest.raises(OperationalError):
            s.commit()
    assert not stored.exists()
    commit = engine.dialect.do_commit

    def answer_lost(connection: object) -> None:
        commit(connection)
        dies()

    with sessions() as s:
        send(s)
        monkeypatch.setattr(engine.dialect, "do_commit", answer_lost)
        with pytest.raises(OperationalError):
            s.commit()
    assert sorted(f.name for f in stored.rglob("*") if f.is_file()) == ["input", "reference"]


def test_the_files_of_a_failed_request_that_storage_keeps_are_left_to_the_sweep(env: dict[str, str]) -> None:
    """Storage that fails to delete them (down, say) left them for good: they are recorded for the reconciler."""
    settings = get_settings()
    migrate(settings.database_url)
    sessions, storage = session_factory(make_engine(settings.database_url)), make_storage(settings)
    refusing = LocalStorage(settings.files)

    def refuses(keys: list[str]) -> None:
        raise OSError("object storage: unreachable")
    refusing.delete = refuses  # type: ignore[method-assign]
    with sessions() as s, pytest.raises(service.BatchFull):
        batch = service.open_batch(s, settings, tenant_id(s), BatchOptions(), sealed=False)[0]
        service.append(s, refusing, settings.model_copy(update={"max_batch_items": 1}), batch,
                       [service.Upload(f"{n}.png", png(smooth_image(16, 16, seed=n))) for n in range(2)])
    stored = settings.files / "items"
    assert len(list(stored.iterdir())) == 1
    with sessions() as s:
        assert len(s.scalars(select(Deletion)).all()) == 1
        assert service.sweep(s, storage) == 0
    assert not stored.exists()
