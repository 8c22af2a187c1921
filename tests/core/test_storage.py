"""Both storage backends, the local folder and S3 (a real rclone S3 server), behave the same, and the whole
pipeline runs on S3 with nothing written to the local disk."""
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.main import create_app
from core import process
from core import submit as service
from core.config import get_settings
from core.db import make_engine, migrate, session_factory
from core.options import BatchOptions
from core.storage import LocalStorage, S3Storage, Storage, StorageUnavailable, make_storage
from core.tables import Item, ItemState
from tests.conftest import api_key, png, smooth_image, tenant_id
from tests.services import files, free_port
from tests.throwaway import ThrowawayS3
from worker import tasks


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayS3]:
    server = ThrowawayS3(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "files")
    s3: ThrowawayS3 = request.getfixturevalue("s3")
    return S3Storage(s3.endpoint, f"b{tmp_path.name[-8:].lower().replace('_', '-')}x", s3.ACCESS, s3.SECRET, "us-east-1")


def test_put_get_find_overwrite(storage: Storage) -> None:
    assert storage.find("items/abc/input") is None
    storage.put("items/abc/input", b"one")
    assert storage.find("items/abc/input") == b"one" and storage.get("items/abc/input") == b"one"
    storage.put("items/abc/input", b"two")
    assert storage.get("items/abc/input") == b"two"
    with pytest.raises(FileNotFoundError):
        storage.get("items/missing/input")


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a//b", "a/../b", "a b", "", "items/é"])
def test_keys_made_from_user_input_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="bad storage key"):
        storage.put(key, b"x")


def test_the_pipeline_on_s3_writes_nothing_locally(s3: ThrowawayS3, env: dict[str, str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3.env("pipeline").items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    settings = get_settings()
    storage = make_storage(settings)
    assert isinstance(storage, S3Storage)
    migrate(settings.database_url)
    sessions = session_factory(make_engine(settings.database_url))
    uploads = [service.Upload(f"{i}.png", png(smooth_image(40, 40, seed=i))) for i in range(3)]
    with sessions.begin() as s:
        batch, _ = service.submit(s, storage, settings, tenant_id(s), uploads, BatchOptions(add_noise=10))
        ids = [i.id for i in batch.items]
    process.process_items(sessions, storage, settings, ids)
    with sessions() as s:
        items = s.scalars(select(Item).where(Item.id.in_(ids))).all()
        assert {i.state for i in items} == {ItemState.done}
        for item in items:
            assert storage.get(item.result.denoised_key).startswith(b"\x89PNG")
            assert (s3.folder / "pipeline" / item.result.denoised_key).is_file()
    assert not (Path(env["DENOCAP_DATA_DIR"]) / "files").exists()


def test_put_file_streams_a_file_from_its_position(storage: Storage, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024**2 + 7)  # several copy buffers
    spooled = tmp_path / "part"
    spooled.write_bytes(b"skip" + data)
    with spooled.open("rb") as f:
        f.seek(4)
        storage.put_file("items/big/input", f)
    assert storage.get("items/big/input") == data


def test_delete_removes_the_keys_given_and_nothing_else(storage: Storage, tmp_path: Path) -> None:
    kept = ["items/b/input", "results/a/v1/other.png"]
    for key in ["items/a/input", "items/a/reference", "results/a/v1/denoised.png", *kept]:
        storage.put(key, key.encode())
    storage.delete(["items/a/input", "items/a/reference", "results/a/v1/denoised.png", "thumbs/a/never-made.jpg"])
    assert storage.find("items/a/input") is None and storage.find("results/a/v1/denoised.png") is None
    assert [storage.get(k) for k in kept] == [k.encode() for k in kept]
    storage.delete([])
    if isinstance(storage, LocalStorage):  # the folders left empty go too; the root stays
        assert sorted(p.relative_to(storage.root).as_posix() for p in storage.root.rglob("*")) == [
            "items", "items/b", "items/b/input", "results", "results/a", "results/a/v1", "results/a/v1/other.png"]
        storage.delete(kept)
        assert storage.root.is_dir() and not any(storage.root.iterdir())


def test_delete_under_removes_a_folder_whatever_its_keys(storage: Storage) -> None:
    for key in ("results/a/v1/denoised.png", "results/a/v2/noisy.png", "results/ab/v1/denoised.png"):
        storage.put(key, b"x")
    storage.delete_under("results/a")
    storage.delete_under("results/never")
    assert storage.find("results/a/v1/denoised.png") is None and storage.find("results/a/v2/noisy.png") is None
    assert storage.get("results/ab/v1/denoised.png") == b"x"  # a folder, not a prefix of names
    if isinstance(storage, LocalStorage):
        assert not (storage.root / "results" / "a").exists()


def test_delete_takes_more_keys_than_one_s3_request_holds(storage: Storage) -> None:
    keys = [f"items/n{i}/input" for i in range(1003)]
    for key in keys[:3] + keys[-3:]:
        storage.put(key, b"x")
    storage.delete(keys)
    assert all(storage.find(k) is None for k in keys[:3] + keys[-3:])


def test_a_storage_that_fails_to_delete_says_so_as_an_oserror(s3: ThrowawayS3) -> None:
    storage = S3Storage(s3.endpoint, "gone-bucket", s3.ACCESS, s3.SECRET, "us-east-1")
    storage.client.delete_bucket(Bucket="gone-bucket")
    with pytest.raises(OSError, match="object storage"):
        storage.delete(["items/a/input"])


def test_a_server_that_wants_content_md5_for_bulk_deletes_gets_them_key_by_key(s3: ThrowawayS3) -> None:
    """boto3 sends no Content-MD5 since 1.36, and some S3 servers refuse DeleteObjects without it."""
    storage = S3Storage(s3.endpoint, "md5-bucket", s3.ACCESS, s3.SECRET, "us-east-1")
    for key in ("items/a/input", "items/b/input"):
        storage.put(key, b"x")

    def refuse(params: dict, **_: object) -> None:
        raise ClientError({"Error": {"Code": "MissingContentMD5", "Message": "Missing required header"}},
                          "DeleteObjects")
    storage.client.meta.events.register("before-call.s3.DeleteObjects", refuse)
    storage.delete(["items/a/input", "items/b/input", "items/never/input"])
    assert storage.find("items/a/input") is None and storage.find("items/b/input") is None


def test_uploads_carry_no_checksum_that_older_s3_servers_refuse(s3: ThrowawayS3, tmp_path: Path) -> None:
    """boto3 since 1.36 adds CRC32 checksums (as trailers on streamed uploads) to every upload by default."""
    storage = S3Storage(s3.endpoint, "plain-bucket", s3.ACCESS, s3.SECRET, "us-east-1")
    sent: list[dict[str, str]] = []
    storage.client.meta.events.register("before-send.s3.*", lambda request, **_: sent.append(dict(request.headers)))
    storage.put("items/a/input", b"x")
    (tmp_path / "f").write_bytes(b"y" * 1000)
    with (tmp_path / "f").open("rb") as f:
        storage.put_file("items/b/input", f)
    assert sent and not [h for headers in sent for h in headers if h.lower().startswith(("x-amz-checksum", "x-amz-trailer"))]
    assert storage.get("items/b/input") == b"y" * 1000


def test_storage_down_is_503_to_a_client_and_no_items_fault_to_a_worker(tmp_path: Path, env: dict[str, str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An S3 outage answered a submission with a bare 500, and failed every item a worker took meanwhile ("internal
    error"), for good: the submission is 503 with Retry-After, and the items are asked for again later, no delivery
    counted."""
    server = ThrowawayS3(tmp_path / "s3")
    for k, v in server.env("outage").items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.database_url)
    sessions, storage = session_factory(make_engine(settings.database_url)), make_storage(settings)
    with sessions.begin() as s:
        batch, _ = service.submit(s, storage, settings, tenant_id(s), [service.Upload("a.png", png(smooth_image()))],
                                  BatchOptions())
        ids = [i.id for i in batch.items]
    client = TestClient(create_app(enqueue=lambda ids: None),
                        headers={"X-API-Key": api_key(settings.database_url, "outage")})
    server.stop()
    storage.client = boto3.client(  # the outage at once, not after 8 tries
        "s3", endpoint_url=server.endpoint, aws_access_key_id=server.ACCESS, aws_secret_access_key=server.SECRET,
        region_name="us-east-1", config=storage.client.meta.config.merge(Config(retries={"max_attempts": 1})))
    r = client.post("/batches", files=files(("b.png", png(smooth_image()))))
    assert r.status_code == 503 and r.headers["Retry-After"] == "30", r.text
    assert r.json()["detail"] == "file storage unavailable, try again shortly"
    assert process.process_items(sessions, storage, settings, ids) == (ids, [])
    with sessions() as s:
        item = s.get_one(Item, ids[0])
        assert (item.state, item.deliveries, item.error) == (ItemState.queued, 0, None)
    sent: list[tuple[list[str], float | None]] = []  # a new worker process: its first S3 client fails too
    monkeypatch.setattr(tasks, "enqueue", lambda ids, _, countdown=None: sent.append((ids, countdown)))
    monkeypatch.setattr(tasks, "make_storage", lambda _: (_ for _ in ()).throw(StorageUnavailable("down")))
    tasks.process_items(ids)
    with sessions() as s:  # marked sent: the reconciler does not send them again on top
        assert sent == [(ids, tasks.BUSY_RETRY)] and s.get_one(Item, ids[0]).enqueued_at is not None


def test_items_sent_again_while_the_database_is_down_are_sent(env: dict[str, str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Marking them sent failed after the message went: the task ended in a traceback."""
    monkeypatch.setenv("DENOCAP_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/gone")
    get_settings.cache_clear()
    sent: list[tuple[list[str], float | None]] = []
    monkeypatch.setattr(tasks, "enqueue", lambda ids, _, countdown=None: sent.append((ids, countdown)))
    tasks.send(["a" * 32], tasks.BUSY_RETRY)
    assert sent == [(["a" * 32], tasks.BUSY_RETRY)]
