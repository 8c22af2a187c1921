"""What a hostile client broke (issue #19), each case against the real server and worker on PostgreSQL and Redis."""
import io
import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from api import deps
from core.db import make_engine, session_factory
from core.tables import Batch, Item, ItemState
from tests.conftest import api_key, png, smooth_image
from tests.services import files, wait_batch

pytestmark = pytest.mark.slow


def avif(data: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(data).save(buf, format="AVIF")
    return buf.getvalue()


def test_a_tiny_image_does_not_fail_its_neighbours(client: httpx.Client) -> None:
    good = [(f"good{i}.png", png(smooth_image(48, 48, seed=i))) for i in range(3)]
    tiny = [("1x1.png", png(np.full((1, 1, 3), 99, np.uint8))), ("1x7.png", png(np.full((1, 7, 3), 9, np.uint8))),
            ("7x1.png", png(np.full((7, 1), 200, np.uint8)))]
    batch = client.post("/batches", files=files(*good, *tiny)).json()
    assert wait_batch(client, batch["id"])["counts"] == {"queued": 0, "running": 0, "done": 6, "failed": 0}


def test_corrupted_avif_fails_its_item_only(client: httpx.Client) -> None:
    whole = avif(smooth_image(64, 64))
    broken = [whole[:len(whole) // 2], whole[:40] + bytes(len(whole) - 40), whole[:-10],
              bytes(b ^ 0xFF if 200 < k < 260 else b for k, b in enumerate(whole))]
    named = [(f"broken{i}.avif", b) for i, b in enumerate(broken)]
    r = client.post("/batches", files=files(("ok.avif", whole), *named))
    assert r.status_code == 201, r.text
    batch = wait_batch(client, r.json()["id"])
    items = client.get(f"/batches/{batch['id']}/items").json()["data"]
    states = {i["filename"]: i["state"] for i in items}
    assert states["ok.avif"] == "done" and {states[n] for n, _ in named} == {"failed"}
    assert all("image" in (i["error"] or "") for i in items if i["state"] == "failed")


def test_flat_images_come_back_finite_and_exports_stay_valid_json(client: httpx.Client) -> None:
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[::4] = stripes[1::4] = 255
    flat = [("grey.png", png(np.full((64, 64, 3), 128, np.uint8))), ("stripes.png", png(stripes)),
            ("black.png", png(np.zeros((300, 1600, 3), np.uint8)))]
    batch = client.post("/batches", files=files(*flat)).json()
    assert wait_batch(client, batch["id"])["counts"]["done"] == 3
    for item in client.get(f"/batches/{batch['id']}/items").json()["data"]:
        assert np.isfinite(item["result"]["sigma_estimate"]) and item["result"]["caption"]
    export = client.get("/captions/export", params={"batch_id": batch["id"], "format": "jsonl"})
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in the export")) for line in
            export.text.splitlines()]
    assert len(rows) == 3


@pytest.mark.parametrize("path", ["/batches/%00", "/items/%00", "/items/%00/denoised.png", "/batches/%00/items",
                                  "/items/" + "a" * 31 + "%00"])
def test_nul_in_an_id_is_404(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 404


@pytest.mark.parametrize("query", [{"q": "a\x00b"}, {"batch_id": "\x00"}])
def test_nul_in_a_query_is_422(client: httpx.Client, query: dict) -> None:
    for path in ("/captions", "/captions/export"):
        r = client.get(path, params=query)
        assert r.status_code == 422, (path, r.text)


def test_words_pasted_or_repeated_search_as_typed_and_their_number_is_bounded(client: httpx.Client) -> None:
    """A no-break or zero-width space from a web page is a space, not a control character (422); a word said 20
    times is matched once, not that many times over every caption; more than ten different words are refused."""
    def count(q: str) -> int:
        r = client.get("/captions", params={"q": q})
        assert r.status_code == 200, r.text
        return r.json()["count"]
    assert count("a\u00a0dog\u200b") == count("a dog") == count("a\u200bdog") == count(" ".join(["a", "A", "dog"] * 20))
    assert deps.words("cat\u200bdog\u00adgy") == "cat doggy"  # a zero-width space parts words, a soft hyphen not
    r = client.get("/captions", params={"q": " ".join(f"w{i}" for i in range(11))})
    assert r.status_code == 422 and "at most 10 different words" in r.text


def test_nul_in_a_key_or_a_file_name_is_no_server_error(stack: str, client: httpx.Client) -> None:
    r = httpx.post(f"{stack}/gallery/login", data={"key": "dc_ab\x00c_s"}, headers={"Origin": stack})
    assert r.status_code == 401
    body = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="a\x00b.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png(smooth_image(16, 16)) + b"\r\n--b--\r\n")
    r = client.post("/batches", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 201 and r.json()["items"][0]["filename"] == "ab.png", r.text


def test_one_idempotency_key_raced_ten_times_makes_one_batch_and_no_500(client: httpx.Client) -> None:
    def post(i: int) -> int:
        return client.post("/batches", files=files((f"{i}.png", png(smooth_image(16, 16, seed=i)))),
                           headers={"Idempotency-Key": "race-1"}).status_code
    with ThreadPoolExecutor(10) as pool:
        codes = sorted(pool.map(post, range(10)))
    assert codes.count(201) == 1 and set(codes) <= {201, 409}, codes


def test_the_key_is_checked_before_the_body_is_read(stack: str) -> None:
    port = int(stack.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /batches HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 20000000\r\n\r\n--b\r\n")  # 20 MB promised (under the limit), none sent
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]


def test_the_json_api_ignores_the_gallery_cookie_and_sign_out_ends_the_session(stack: str,
                                                                                client: httpx.Client) -> None:
    key = client.headers["X-API-Key"]
    with httpx.Client(base_url=stack, headers={"Origin": stack}) as browser:
        assert browser.post("/gallery/login", data={"key": key}).status_code == 303
        cookie = browser.cookies["denocap_session"]
        assert key not in cookie
        assert browser.get("/gallery").status_code == 200
        assert browser.get("/batches").status_code == 401  # the JSON API takes keys from headers only
        assert browser.post("/batches", files=files(("a.png", png(smooth_image(16, 16))))).status_code == 401
        assert browser.post("/gallery/logout").status_code == 303
    replay = httpx.get(f"{stack}/gallery", cookies={"denocap_session": cookie})
    assert replay.status_code == 401  # the old cookie is dead, not merely deleted


def test_cross_site_gallery_posts_are_refused(stack: str, client: httpx.Client) -> None:
    key = client.headers["X-API-Key"]
    for headers in ({"Origin": "http://127.0.0.1:1"}, {"Origin": "null"}, {}):
        r = httpx.post(f"{stack}/gallery/login", data={"key": key}, headers=headers)
        assert r.status_code == 403 and "denocap_session" not in r.cookies, headers
    assert httpx.post(f"{stack}/gallery/logout", headers={"Origin": "http://evil.example"}).status_code == 403


def test_sixteen_bit_colour_stays_sixteen_bit(client: httpx.Client) -> None:
    import cv2
    rgb16 = (smooth_image(32, 40).astype(np.uint16) * 257)[..., ::-1]
    data = cv2.imencode(".png", np.ascontiguousarray(rgb16))[1].tobytes()
    batch = client.post("/batches", files=files(("deep.png", data))).json()
    wait_batch(client, batch["id"])
    out = client.get(f"/items/{batch['items'][0]['id']}/denoised.png").content
    assert out[24] == 16 and out[25] == 2  # IHDR: 16 bits, colour


def test_a_killed_pool_child_leaves_no_item_stuck(stack: str, postgres_url: str) -> None:
    """The pool child running an item is SIGKILLed; Celery redelivers and the item finishes, no reconcile."""
    sessions = session_factory(make_engine(postgres_url))
    with httpx.Client(base_url=stack, timeout=120, headers={"X-API-Key": api_key(postgres_url, "killed")}) as c:
        big = png(np.random.default_rng(1).integers(0, 256, (2000, 2000, 3), dtype=np.uint8), compress_level=1)
        batch = c.post("/batches", files=files(("a.png", big))).json()
        item_id = batch["items"][0]["id"]
        deadline, runner = time.monotonic() + 60, None
        while time.monotonic() < deadline and runner is None:
            with sessions() as s:
                runner = s.scalar(select(Item.runner).where(Item.id == item_id, Item.state == ItemState.running))
            time.sleep(0.02)
        assert runner, "the item never started"
        os.kill(int(runner.rsplit(":", 1)[1]), signal.SIGKILL)
        done = wait_batch(c, batch["id"], timeout=120)
    with sessions() as s:
        item = s.get_one(Item, item_id)
        assert s.get_one(Batch, item.batch_id) is not None
    assert done["counts"]["done"] == 1, done
    assert item.deliveries == 2
