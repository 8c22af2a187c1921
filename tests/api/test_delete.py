"""Deleting a batch on real parts (PostgreSQL, Redis, a worker process, the HTTP server), by the API, the gallery
and `denocap delete`: its rows and every file stored for it go, another batch's stay."""
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import sessionmaker

from api.deps import get_storage
from api.main import create_app
from core import process
from core import submit as service
from core.config import get_settings
from core.db import migrate, sessions_for
from core.storage import LocalStorage
from core.tables import Deletion, Item
from tests.api.conftest import running_stack
from tests.api.test_security import signed_in
from tests.conftest import api_key, many_frames, png, smooth_image
from tests.services import files, wait_batch
from worker.tasks import reconcile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(weights_dir: Path, postgres_url: str, redis_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The server's URL and its storage folder."""
    folder = tmp_path_factory.mktemp("delete")
    with running_stack(folder, weights_dir, postgres_url, redis_url) as url:
        yield url, folder / "data" / "files"


def stored(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def denocap(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """No terminal on stdin: `delete` cannot ask."""
    return subprocess.run([sys.executable, "-m", "core.cli", *args], env={**os.environ, **env}, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=120, check=False)


def test_a_deleted_batch_leaves_no_row_and_no_file_and_others_keep_theirs(
        stack: tuple[str, Path], postgres_url: str) -> None:
    url, root = stack
    alpha, beta = (httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": api_key(postgres_url, t)})
                   for t in ("alpha", "beta"))
    clean = png(smooth_image(40, 48, seed=1))
    gone = alpha.post("/batches", data={"add_noise": "20", "seed": "1"},
                      files=files(("a.png", png(smooth_image(32, 32, seed=2))), ("b.png", clean), ("bad.png", b"no")))
    kept = alpha.post("/batches", files=files(("c.png", png(smooth_image(32, 40, seed=3)))))
    with_ref = alpha.post("/images", files={"file": ("d.png", png(smooth_image(24, 24, seed=4))), "reference": (
        "d.png", png(smooth_image(24, 24, seed=4)))})
    gone_id, kept_id = gone.json()["id"], kept.json()["id"]
    for batch in (gone_id, kept_id, with_ref.json()["id"]):
        assert wait_batch(alpha, batch)["counts"]["done"] >= 1
    items = {b: [i["id"] for i in alpha.get(f"/batches/{b}/items").json()["data"]]
             for b in (gone_id, kept_id, with_ref.json()["id"])}
    for item in items[gone_id][:2] + items[kept_id]:  # thumbnails, and the noisy PNG made from an upload
        for which in ("noisy", "denoised"):
            assert alpha.get(f"/items/{item}/thumbs/{which}.jpg").status_code == 200
        assert alpha.get(f"/items/{item}/noisy.png").status_code == 200
    before = stored(root)
    assert {f.split("/")[0] for f in before} == {"items", "results", "thumbs"}
    assert any(f.endswith("/reference") for f in before)

    assert beta.delete(f"/batches/{gone_id}").status_code == 404  # another tenant's
    assert stored(root) == before
    browser = signed_in(url, alpha)  # the gallery's button, from the gallery's own page only
    page = browser.get(f"/gallery/batches/{with_ref.json()['id']}").text
    assert f'action="/gallery/batches/{with_ref.json()["id"]}/delete"' in page
    forged = browser.post(f"/gallery/batches/{with_ref.json()['id']}/delete", headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403 and stored(root) == before
    r = browser.post(f"/gallery/batches/{with_ref.json()['id']}/delete")
    assert r.status_code == 303 and r.headers["location"] == "/gallery"
    r = alpha.delete(f"/batches/{gone_id}")
    assert r.status_code == 204 and r.content == b""
    ours = [*items[gone_id], *items[with_ref.json()["id"]]]
    assert stored(root) == {f for f in before if f.split("/")[1] not in ours}
    assert not any(p.name in ours for p in root.rglob("*"))  # no empty folder left behind either
    assert alpha.get(f"/batches/{gone_id}").status_code == 404
    assert alpha.get(f"/items/{items[gone_id][0]}").status_code == 404
    assert alpha.get("/captions", params={"batch_id": gone_id}).json()["count"] == 0
    assert [b["id"] for b in alpha.get("/batches").json()["data"]] == [kept_id]
    assert alpha.get(f"/items/{items[kept_id][0]}/denoised.png").status_code == 200
    assert alpha.delete(f"/batches/{gone_id}").json()["detail"] == "batch not found"

    opened = alpha.post("/batches/open", json={}).json()["id"]
    alpha.post(f"/batches/{opened}/files", files=files(("e.png", png(smooth_image(16, 16, seed=5)))))
    assert alpha.delete(f"/batches/{opened}").status_code == 204  # open, its item perhaps running
    assert alpha.post(f"/batches/{opened}/files", files=files(("f.png", clean))).status_code == 404

    kept_png = next(root.glob(f"results/{items[kept_id][0]}/*/denoised.png"))
    kept_png.unlink()  # as when the item is deleted after a request read its row
    missing_file = alpha.get(f"/items/{items[kept_id][0]}/denoised.png")
    assert missing_file.status_code == 404 and missing_file.json()["detail"] == "item not found"

    env = {"DENOCAP_URL": url, "DENOCAP_API_KEY": api_key(postgres_url, "alpha")}
    asked = denocap(env, "delete", kept_id)
    assert asked.returncode == 2 and asked.stderr.strip() == "error: add --yes to delete without being asked"
    missing = denocap(env, "delete", kept_id, "0" * 32, "--yes")
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: batch {'0' * 32} not found; nothing deleted"
    assert alpha.get(f"/batches/{kept_id}").status_code == 200
    done = denocap(env, "delete", kept_id, "--yes")
    assert done.returncode == 0 and done.stderr.strip() == f"deleted batch {kept_id}", done.stderr
    assert alpha.get(f"/batches/{kept_id}").status_code == 404
    assert not any(p.is_file() for p in root.rglob("*"))


class BrokenDeletes(LocalStorage):
    def delete(self, keys: list[str]) -> None:
        raise OSError("the bucket's server is down")


def test_when_storage_fails_the_batch_is_gone_and_the_reconciler_deletes_its_files(env: dict[str, str]) -> None:
    migrate(get_settings().database_url)
    app = create_app(enqueue=lambda ids: None)
    client = TestClient(app, headers={"X-API-Key": api_key(get_settings().database_url, "alpha")})
    batch = client.post("/batches", files=files(("a.png", png(smooth_image(16, 16, seed=1))))).json()
    app.dependency_overrides[get_storage] = lambda: BrokenDeletes(get_settings().files)
    later = client.delete(f"/batches/{batch['id']}")
    assert later.status_code == 202 and later.json() == {
        "detail": "the stored files of 1 items are deleted later, by the reconciler", "code": "files_pending"}
    assert client.get(f"/batches/{batch['id']}").status_code == 404
    assert client.get(f"/items/{batch['items'][0]['id']}/original").status_code == 404
    assert any(p.is_file() for p in get_settings().files.rglob("*"))
    reconcile()  # as the beat worker, or a worker's start, or `denocap reconcile`, does: not due yet
    assert any(p.is_file() for p in get_settings().files.rglob("*"))
    with sessions_for(get_settings().database_url).begin() as s:  # as if RETRY_SWEEP_AFTER had passed
        s.execute(update(Deletion).values(due_at=datetime.now(UTC)))
    reconcile()
    assert not any(p.is_file() for p in get_settings().files.rglob("*"))


def test_an_item_is_deleted_alone_and_a_files_first_page_takes_its_other_pages(env: dict[str, str]) -> None:
    migrate(get_settings().database_url)
    client = TestClient(create_app(enqueue=lambda ids: None),
                        headers={"X-API-Key": api_key(get_settings().database_url, "alpha")})
    other = TestClient(create_app(enqueue=lambda ids: None),
                       headers={"X-API-Key": api_key(get_settings().database_url, "beta")})
    scans, single = many_frames("TIFF", 3), png(smooth_image(16, 16, seed=1))
    batch = client.post("/batches/open", json={}).json()["id"]
    client.post(f"/batches/{batch}/files", files=files(("scan.tif", scans), ("a.png", single)))
    page1, page2, page3, a = (i["id"] for i in client.get(f"/batches/{batch}/items").json()["data"])
    root = get_settings().files
    assert stored(root) == {f"items/{page1}/input", f"items/{a}/input"}
    assert other.delete(f"/items/{page2}").status_code == 404
    assert client.delete(f"/items/{page2}").status_code == 204  # a later page: only itself
    assert [i["id"] for i in client.get(f"/batches/{batch}/items").json()["data"]] == [page1, page3, a]
    assert client.get(f"/items/{page3}/original").content == scans
    assert client.delete(f"/items/{page1}").status_code == 204  # the file's first page: the file and its pages
    assert [i["id"] for i in client.get(f"/batches/{batch}/items").json()["data"]] == [a]
    assert stored(root) == {f"items/{a}/input"} and client.get(f"/items/{page3}").status_code == 404
    assert client.delete(f"/items/{page1}").status_code == 404
    browser = TestClient(client.app, headers={"Origin": "http://testserver"})  # the gallery's button
    assert browser.post("/gallery/login", data={"key": client.headers["X-API-Key"]}).status_code == 200
    assert 'action="/gallery/items/' + a + '/delete"' in browser.get(f"/gallery/items/{a}").text
    assert browser.post(f"/gallery/items/{a}/delete", headers={"Origin": "https://evil.example"}).status_code == 403
    gone = browser.post(f"/gallery/items/{a}/delete", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == f"/gallery/batches/{batch}"
    assert stored(root) == set() and client.get(f"/items/{a}").status_code == 404
    again = client.post(f"/batches/{batch}/files", files=files(("scan.tif", scans), ("a.png", single))).json()
    assert [f["duplicate"] for f in again["files"]] == [False, False]  # deleted content is content no more
    assert again["batch"]["total"] == 4


class DeletedWhileMade(LocalStorage):
    """Storage under which the item is deleted just before a thumbnail made on request is stored."""
    sessions: sessionmaker

    def put(self, key: str, data: bytes) -> None:
        if key.startswith("thumbs/"):
            with self.sessions.begin() as s:
                deleted = service.delete_item(s, s.get_one(Item, key.split("/")[1]))
            with self.sessions() as s:
                service.sweep(s, self, deleted)
        super().put(key, data)


def test_a_thumbnail_made_while_its_item_is_deleted_is_not_left_behind(env: dict[str, str]) -> None:
    settings = get_settings()
    migrate(settings.database_url)
    app = create_app(enqueue=lambda ids: None)
    client = TestClient(app, headers={"X-API-Key": api_key(settings.database_url, "alpha")})
    item = client.post("/batches", files=files(("a.png", png(smooth_image(24, 24, seed=1))))).json()["items"][0]["id"]
    storage = DeletedWhileMade(settings.files)
    storage.sessions = sessions_for(settings.database_url)
    process.process_items(storage.sessions, storage, settings, [item])
    app.dependency_overrides[get_storage] = lambda: storage
    r = client.get(f"/items/{item}/thumbs/denoised.jpg")
    assert r.status_code == 404 and r.json()["detail"] == "item not found"
    assert stored(settings.files) == set()  # the deletion took the rest; the thumbnail made after it went too
