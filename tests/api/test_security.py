"""API keys, tenant isolation, limits and idempotent submission, against the real server and worker."""
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from core.db import make_engine, session_factory
from core.tables import ApiKey, Batch
from tests.conftest import png, smooth_image
from tests.services import files, wait_batch

pytestmark = pytest.mark.slow
OPS = {"/health", "/metrics"}


def cli(postgres_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DENOCAP_DATABASE_URL": postgres_url}
    return subprocess.run([sys.executable, "-m", "core.cli", *args], env=env, check=False, capture_output=True, text=True,
                          timeout=120)


def routes(stack: str) -> list[tuple[str, str]]:
    """Every (method, path template) the server publishes."""
    spec = httpx.get(f"{stack}/openapi.json").json()
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]


@pytest.fixture(scope="module")
def alpha_batch(client: httpx.Client) -> dict:
    """A finished batch of tenant alpha: one done item and one failed."""
    r = client.post("/batches", files=files(("mine.png", png(smooth_image(40, 48))), ("bad.png", b"nope")))
    assert r.status_code == 201, r.text
    wait_batch(client, r.json()["id"])
    return r.json()


def fill(path: str, batch: dict) -> str:
    return (path.replace("{batch_id}", batch["id"]).replace("{item_id}", batch["items"][0]["id"])
            .replace("{which}", "denoised"))


def test_every_route_but_ops_needs_a_valid_key(stack: str, postgres_url: str, alpha_batch: dict) -> None:
    guarded = [(m, p) for m, p in routes(stack) if p not in OPS and not p.startswith("/gallery/log")]
    assert len(guarded) >= 10
    for headers in ({}, {"X-API-Key": "dc_0123_wrong"}, {"X-API-Key": "garbage"}, {"Authorization": "Bearer x"}):
        for method, path in guarded:
            r = httpx.request(method, f"{stack}{fill(path, alpha_batch)}", headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            if path.startswith("/gallery"):  # a page: the sign-in form
                assert 'action="/gallery/login"' in r.text
            else:
                assert r.json()["detail"] in ("an API key is required (X-API-Key header)", "invalid or revoked API key")
    for path in OPS:
        assert httpx.get(f"{stack}{path}").status_code == 200


def test_keys_are_made_listed_and_revoked_from_the_cli(stack: str, postgres_url: str) -> None:
    made = cli(postgres_url, "apikey", "create", "gamma", "--label", "laptop [/] [b]")  # markup-like: shown as is
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("dc_") and "not shown again" in made.stderr
    key_id = key.split("_")[1]
    assert httpx.get(f"{stack}/batches", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    spaced = httpx.post(f"{stack}/batches/open", json={}, headers={"Authorization": f"Bearer  {key}"})
    assert spaced.status_code == 201, spaced.text  # an upload route reads the header as the others do
    second = cli(postgres_url, "apikey", "create", "gamma").stdout.strip()
    browsers = [httpx.Client(base_url=stack, timeout=60, headers={"Origin": stack}) for _ in range(2)]
    for browser, signed_with in zip(browsers, (key, second), strict=True):
        assert browser.post("/gallery/login", data={"key": signed_with}).status_code == 303

    listed = cli(postgres_url, "apikey", "list", "gamma")
    assert listed.returncode == 0, listed.stderr
    assert key_id in listed.stdout and "laptop [/] [b]" in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    engine = make_engine(postgres_url)
    with session_factory(engine)() as s:
        digest = s.scalar(select(ApiKey.digest).where(ApiKey.id == key_id))
    engine.dispose()
    assert digest and key.split("_", 2)[2] not in digest  # only a hash is stored

    assert cli(postgres_url, "apikey", "revoke", key_id).returncode == 0
    r = httpx.get(f"{stack}/batches", headers={"X-API-Key": key})
    assert r.status_code == 401 and r.json()["detail"] == "invalid or revoked API key"
    assert [b.get("/gallery").status_code for b in browsers] == [401, 200]  # the revoked key's browser is signed out
    for browser in browsers:
        browser.close()
    missing = cli(postgres_url, "apikey", "revoke", "nosuchkey")
    assert missing.returncode == 2 and missing.stderr.strip() == "error: no key 'nosuchkey'"


def signed_in(stack: str, client: httpx.Client) -> httpx.Client:
    """A browser of the same tenant: signed in to the gallery, holding only the session cookie."""
    browser = httpx.Client(base_url=stack, timeout=60, headers={"Origin": stack})
    assert browser.post("/gallery/login", data={"key": client.headers["X-API-Key"]}).status_code == 303
    return browser


DELETES = {("DELETE", "/batches/{batch_id}"), ("DELETE", "/items/{item_id}"), ("POST", "/gallery/batches/{batch_id}/delete"),
           ("POST", "/gallery/items/{item_id}/delete")}


def test_another_tenant_gets_404_on_every_route_with_my_ids(stack: str, client: httpx.Client, other: httpx.Client,
                                                            alpha_batch: dict) -> None:
    browsers = {client: signed_in(stack, client), other: signed_in(stack, other)}

    def via(who: httpx.Client, path: str) -> httpx.Client:
        return browsers[who] if path.startswith("/gallery") else who
    done = next(i for i in client.get(f"/batches/{alpha_batch['id']}/items").json()["data"] if i["state"] == "done")
    alpha_batch = {**alpha_batch, "items": [done]}
    with_ids = [(m, p) for m, p in routes(stack) if "{" in p]
    assert {p for _, p in with_ids} >= {"/batches/{batch_id}", "/batches/{batch_id}/items", "/items/{item_id}",
                                        "/items/{item_id}/denoised.png", "/items/{item_id}/noisy.png",
                                        "/items/{item_id}/original", "/items/{item_id}/thumbs/{which}.jpg",
                                        "/gallery/batches/{batch_id}", "/gallery/items/{item_id}"}
    assert set(with_ids) >= DELETES
    sealed = {"/batches/{batch_id}/files": 409}  # the owner's batch is sealed: no more files
    for method, path in with_ids:
        body = {"files": files(("late.png", png(smooth_image(16, 16))))} if path in sealed else {}
        if (method, path) not in DELETES:  # the owner's delete: tests/api/test_delete.py
            owner = via(client, path).request(method, fill(path, alpha_batch), **body)
            assert owner.status_code == sealed.get(path, 200), path
        r = via(other, path).request(method, fill(path, alpha_batch), **body)
        assert r.status_code == 404 and r.json()["detail"].endswith("not found"), (path, r.text)
    gallery = {who: b.get("/gallery").text for who, b in browsers.items()}
    assert alpha_batch["id"] not in gallery[other] and alpha_batch["id"][:8] in gallery[client]
    assert alpha_batch["id"] not in {b["id"] for b in other.get("/batches").json()["data"]}
    assert alpha_batch["id"] in {b["id"] for b in client.get("/batches").json()["data"]}
    caption = client.get("/items/" + done["id"]).json()["result"]["caption"]
    assert other.get("/captions", params={"batch_id": alpha_batch["id"]}).json()["count"] == 0
    assert other.get("/captions", params={"q": caption}).json()["data"] == [] or all(
        c["batch_id"] != alpha_batch["id"] for c in other.get("/captions", params={"q": caption}).json()["data"])
    assert client.get("/captions", params={"batch_id": alpha_batch["id"]}).json()["count"] == 1
    for fmt in ("csv", "jsonl"):
        exported = other.get("/captions/export", params={"format": fmt}).text
        assert alpha_batch["id"] not in exported and done["id"] not in exported
        exported = browsers[other].get("/gallery/export", params={"format": fmt}).text
        assert alpha_batch["id"] not in exported and done["id"] not in exported


def test_same_idempotency_key_and_request_give_the_same_batch(client: httpx.Client, postgres_url: str) -> None:
    body = files(("i.png", png(smooth_image(32, 32, seed=5))))
    first = client.post("/batches", files=body, data={"seed": "3"}, headers={"Idempotency-Key": "night-1"})
    again = client.post("/batches", files=body, data={"seed": "3"}, headers={"Idempotency-Key": "night-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    changed = client.post("/batches", files=body, data={"seed": "4"}, headers={"Idempotency-Key": "night-1"})
    assert changed.status_code == 409 and "different request" in changed.json()["detail"]

    def post(_: int) -> httpx.Response:  # the same key at the same moment, as a retrying client might
        return client.post("/batches", files=body, headers={"Idempotency-Key": "night-2"})
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(post, range(6)))
    assert sorted(r.status_code for r in answers) == [200] * 5 + [201]
    assert len({r.json()["id"] for r in answers}) == 1
    engine = make_engine(postgres_url)
    with session_factory(engine)() as s:
        assert len(s.scalars(select(Batch).where(Batch.idempotency_key == "night-2")).all()) == 1
    engine.dispose()
    wait_batch(client, first.json()["id"])
    wait_batch(client, answers[0].json()["id"])


def test_limits_are_413_with_a_message_and_a_code(client: httpx.Client) -> None:
    tiny = png(smooth_image(8, 8))
    r = client.post("/batches", files=files(*[(f"{i}.png", tiny) for i in range(201)]))
    assert r.status_code == 413 and r.json() == {"detail": "201 files, the limit is 200 per batch",
                                                 "code": "request_too_large"}
    r = client.post("/batches", files=files(("big.png", b"\0" * (31 * 1024**2))))
    assert r.status_code == 413 and "the limit is 31457280" in r.json()["detail"]
    assert r.json()["code"] == "request_too_large"
    r = client.post("/images", files={"file": ("tall.png", png(smooth_image(17000, 1, 1)))})
    assert r.status_code == 413 and "1x17000" in r.json()["detail"] and r.json()["code"] == "file_too_large"


def test_chunked_upload_without_length_is_counted_against_the_limit(client: httpx.Client) -> None:
    def body() -> Iterator[bytes]:  # Transfer-Encoding: chunked, no Content-Length to check up front
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'
        yield from (b"\0" * 1024**2 for _ in range(31))
        yield b"\r\n--b--\r\n"
    r = client.post("/batches", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json() == {"detail": "request body is larger than the limit of 31457280 bytes",
                                                 "code": "request_too_large"}
    assert client.get("/health").status_code == 200


def test_stored_files_are_named_by_ids_only(client: httpx.Client) -> None:
    r = client.post("/batches", files=files(("../../../../tmp/escape.png", png(smooth_image(16, 16))),
                                            ("/etc/passwd", b"x"), ("..\\..\\win.png", png(smooth_image(16, 16)))))
    batch = wait_batch(client, r.json()["id"])
    items = client.get(f"/batches/{batch['id']}/items").json()["data"]
    assert [i["filename"] for i in items] == ["../../../../tmp/escape.png", "/etc/passwd", "..\\..\\win.png"]
    assert not Path("/tmp/escape.png").exists()
    original = client.get(f"/items/{items[0]['id']}/original")
    assert original.headers["content-disposition"] == f'attachment; filename="{items[0]["id"]}"'
