"""Smaller holes a hostile client found in the upload routes (issue #19), in-process on the embedded database."""
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.client import sent_name
from core.config import get_settings
from core.db import migrate
from core.submit import label
from tests.conftest import api_key, many_frames, png, smooth_image
from tests.services import files


@pytest.fixture
def app(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("DENOCAP_MAX_FILE_BYTES", "100000")
    get_settings.cache_clear()
    url = get_settings().database_url
    migrate(url)
    return TestClient(create_app(enqueue=lambda ids: None), headers={"X-API-Key": api_key(url, "holes")})


def test_a_reference_over_the_limit_is_413_with_its_true_size(app: TestClient) -> None:
    small = png(smooth_image(16, 16))
    r = app.post("/images", files={"file": ("a.png", small), "reference": ("r.png", b"x" * 177_083)})
    assert r.status_code == 413 and r.json()["detail"] == "reference: file is 177083 bytes, the limit is 100000"
    r = app.post("/images", files={"file": ("a.png", b"y" * 177_083)})
    assert r.status_code == 413 and r.json()["detail"] == "file: file is 177083 bytes, the limit is 100000"


def test_a_batchs_reference_over_the_limit_or_not_an_image_fails_its_item_alone(app: TestClient) -> None:
    """It was cut to the limit and stored, and its item failed in the worker with the size of the cut."""
    small, other = png(smooth_image(16, 16)), png(smooth_image(16, 16, seed=2))
    sent = files(("a.png", small), ("b.png", other), ("c.png", png(smooth_image(16, 16, seed=3))))
    refs = [("references", ("a.png", b"x" * 177_083, "image/png")), ("references", ("b.png", b"not an image", "x/y")),
            ("references", ("c.png", small, "image/png"))]
    items = app.post("/batches", files=sent + refs).json()["items"]
    assert [(i["state"], i["error"]) for i in items] == [
        ("failed", "its reference: file is 177083 bytes, the limit is 100000"),
        ("failed", "its reference: not an image (unknown format)"), ("queued", None)]
    opened = app.post("/batches/open", json={}).json()["id"]
    appended = app.post(f"/batches/{opened}/files", files=files(("a.png", small)) + refs[:1]).json()
    assert appended["files"][0]["item"]["error"] == "its reference: file is 177083 bytes, the limit is 100000"


def test_references_with_added_noise_are_refused_not_ignored(app: TestClient) -> None:
    """With add_noise the upload is its own clean reference: a reference sent too was ignored without a word (a
    black one scored 34.5 dB)."""
    photo, reference = files(("a.png", png(smooth_image(16, 16)))), [("references", ("a.png", png(smooth_image(16, 16)),
                                                                                   "image/png"))]
    message = ("references and add_noise: with add_noise each upload is its own clean reference; send one or the "
               "other")
    r = app.post("/batches", files=photo + reference, data={"add_noise": "25"})
    assert r.status_code == 422 and r.json()["detail"] == message
    opened = app.post("/batches/open", json={"add_noise": 25}).json()["id"]
    r = app.post(f"/batches/{opened}/files", files=photo + reference)
    assert r.status_code == 422 and r.json()["detail"] == message
    assert app.get(f"/batches/{opened}").json()["total"] == 0
    assert app.post("/batches", files=photo, data={"add_noise": "25"}).status_code == 201


def test_repeated_single_fields_are_refused(app: TestClient) -> None:
    small = png(smooth_image(16, 16))
    r = app.post("/images", files=[("file", ("a.png", small)), ("file", ("b.png", small))])
    assert r.status_code == 422 and r.json()["detail"] == "form field 'file' given more than once"
    r = app.post("/batches", files=files(("a.png", small)), data={"add_noise": ["300", "5"]})
    assert r.status_code == 422 and "'add_noise'" in r.json()["detail"]
    assert app.post("/batches", files=files(("a.png", small), ("b.png", small))).status_code == 201


def test_options_the_server_cannot_honour_are_422(app: TestClient) -> None:
    small = png(smooth_image(16, 16))
    r = app.post("/batches", files=files(("a.png", small)), data={"captioner": "blip"})
    assert r.status_code == 422 and "blip captioner is not configured" in r.json()["detail"]
    r = app.post("/batches", files=files(("a.png", small)), data={"denoiser": "nosuch"})
    assert r.status_code == 422 and "unknown denoiser 'nosuch'" in r.text


def test_long_names_keep_their_extension(app: TestClient) -> None:
    r = app.post("/batches", files=files(("x" * 300 + ".jpeg", png(smooth_image(16, 16)))))
    name = r.json()["items"][0]["filename"]
    assert name.endswith(".jpeg") and len(name) == 255


def test_the_client_knows_the_names_the_server_gives_its_files(app: TestClient, tmp_path: Path) -> None:
    """`denocap submit` finds the copy a lost answer left by its name: the name an item is shown under must be the
    one the client expects of the file, for a quote, control characters (sent as %XX: a name can pass 255
    characters so), bytes that are not UTF-8, and a multi-page TIFF's first page."""
    folder = os.fsencode(tmp_path)
    for raw in (b"a\x07b.png", b'q"uo\\te.png', b"tab\there.png", b"caf\xe9.png", b"\x01" * 100 + b".png", b"scan.tif"):
        path = Path(os.fsdecode(os.path.join(folder, raw)))
        path.write_bytes(many_frames("TIFF", 2) if raw.endswith(b".tif") else png(smooth_image(16, 16)))
        name = app.post("/batches", files=files((sent_name(path), path.read_bytes()))).json()["items"][0]["filename"]
        assert name in {label(sent_name(path), 0, page) for page in (None, 1)}, name


def test_the_root_is_not_a_dead_end(app: TestClient) -> None:
    r = app.get("/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/gallery"


def test_parts_beyond_the_open_files_a_request_may_hold_are_400(app: TestClient,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Each part over 1 MiB is an open temporary file until the request ends: past the process's limit the
    request is refused, not left to fail every request of the process with "too many open files"."""
    monkeypatch.setattr("api.routes.batches.open_files", lambda: 256 + 3)
    small = png(smooth_image(16, 16))
    r = app.post("/batches", files=files(*[(f"{i}.png", small) for i in range(4)]))
    assert r.status_code == 400 and "Too many files" in r.json()["detail"]
    assert app.post("/batches", files=files(*[(f"{i}.png", small) for i in range(3)])).status_code == 201


def test_times_read_back_from_the_embedded_database_keep_their_time_zone(app: TestClient) -> None:
    """SQLite keeps no time zone: the answer to a submission said "...Z" and the same batch read again did not."""
    made = app.post("/batches", files=files(("a.png", png(smooth_image(16, 16))))).json()
    again = app.get(f"/batches/{made['id']}").json()
    assert again["created_at"] == made["created_at"] and made["created_at"].endswith("Z")
    item = app.get(f"/items/{made['items'][0]['id']}").json()
    assert item["created_at"].endswith("Z")


def test_the_api_docs_need_no_cdn(app: TestClient) -> None:
    """/docs loaded Swagger UI from cdn.jsdelivr.net: a blank page on a machine without the internet."""
    for page in ("/docs", "/redoc"):
        html = app.get(page).text
        assert "cdn.jsdelivr" not in html and "/static-offline-docs/" in html, html
    assert app.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert app.get("/openapi.json").json()["openapi"].startswith("3.1")  # which the bundled Swagger UI 5 reads
