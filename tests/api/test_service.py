"""The whole service on real parts: PostgreSQL, Redis, a Celery worker process and the HTTP server."""
import csv
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import many_frames, png, smooth_image
from tests.services import files, wait_batch

pytestmark = pytest.mark.slow


def test_batch_end_to_end(client: httpx.Client) -> None:
    clean = png(smooth_image(96, 128, seed=1))
    r = client.post("/batches", files=files(("a.png", clean), ("b.png", png(smooth_image(64, 64, channels=1))),
                                            ("c.png", png(smooth_image(80, 96, seed=2))),
                                            ("bad.jpg", b"not an image")),
                    data={"add_noise": "25", "seed": "7"})
    assert r.status_code == 201, r.text
    submitted = r.json()
    assert submitted["total"] == 4
    states = {i["filename"]: i["state"] for i in submitted["items"]}
    assert states["bad.jpg"] == "failed" and states["a.png"] == "queued"

    batch = wait_batch(client, submitted["id"])
    assert batch["counts"] == {"queued": 0, "running": 0, "done": 3, "failed": 1}
    assert batch["progress"] == 1.0

    items = client.get(f"/batches/{submitted['id']}/items").json()
    assert items["count"] == 4
    by_name = {i["filename"]: i for i in items["data"]}
    assert by_name["bad.jpg"]["error"] == "not an image (unknown format)"
    a = client.get(f"/items/{by_name['a.png']['id']}").json()
    res = a["result"]
    assert 20 < res["psnr_noisy"] < 21 and res["psnr"] is not None and res["caption"] and res["caption_noisy"]
    assert res["denoiser_version"].startswith("ffdnet@") and res["captioner_version"].startswith("attention@")
    assert {"decode", "denoise", "metrics", "caption"} <= set(res["timings"])
    assert a["deliveries"] == 1

    img = Image.open(io.BytesIO(client.get(a["links"]["denoised"]).content))
    assert img.size == (128, 96) and img.mode == "RGB"
    gray = client.get(f"/items/{by_name['b.png']['id']}/denoised.png")
    assert Image.open(io.BytesIO(gray.content)).mode == "L"
    assert client.get(f"/items/{by_name['a.png']['id']}/original").content == clean
    noisy = np.asarray(Image.open(io.BytesIO(client.get(a["links"]["noisy"]).content)), dtype=np.float32) / 255
    assert 19 < 10 * np.log10(1 / np.mean((noisy - np.asarray(Image.open(io.BytesIO(clean)), np.float32) / 255) ** 2)) < 22

    word = res["caption"].split()[0]
    found = client.get("/captions", params={"q": word, "batch_id": submitted["id"]}).json()
    assert found["count"] >= 1 and all(word in c["caption"] or word in c["caption_noisy"] for c in found["data"])
    assert client.get("/captions", params={"batch_id": submitted["id"], "min_psnr": 99}).json()["count"] == 0

    rows = list(csv.DictReader(io.StringIO(client.get("/captions/export", params={"batch_id": submitted["id"]}).text)))
    assert len(rows) == 3 and {r["filename"] for r in rows} == {"a.png", "b.png", "c.png"}
    lines = client.get("/captions/export", params={"batch_id": submitted["id"], "format": "jsonl"}).text.splitlines()
    assert sorted(json.loads(x)["filename"] for x in lines) == ["a.png", "b.png", "c.png"]


def test_one_image_with_reference(client: httpx.Client) -> None:
    clean = smooth_image(64, 64, seed=3)
    noisy = (clean.astype(int) + 20).clip(0, 255).astype("uint8")
    r = client.post("/images", files={"file": ("x.png", png(noisy)), "reference": ("ref.png", png(clean))})
    assert r.status_code == 201, r.text
    wait_batch(client, r.json()["id"])
    item = client.get(f"/items/{r.json()['items'][0]['id']}").json()
    # a constant offset of 20 grey levels is a PSNR of 20*log10(255/20) = 22.11 dB (a little more where it clips)
    assert item["has_reference"] and item["result"]["psnr_noisy"] == pytest.approx(22.11, abs=0.2)
    shown = client.get(item["links"]["noisy"])  # the upload itself (no synthetic noise), made a PNG when asked for
    assert shown.headers["content-type"] == "image/png" and (np.asarray(Image.open(io.BytesIO(shown.content))) == noisy).all()
    assert Image.open(io.BytesIO(client.get(f"/items/{item['id']}/thumbs/noisy.jpg").content)).size == (64, 64)


@pytest.mark.parametrize("data, message", [
    ({"add_noise": "-1"}, "greater than or equal to 0"),
    ({"denoiser": "nosuch"}, "unknown denoiser 'nosuch'"),
    ({"captioner": "nosuch"}, "unknown captioner 'nosuch'"),
    ({"seed": "abc"}, "valid integer"),
])
def test_bad_options_are_422_with_a_message(client: httpx.Client, data: dict, message: str) -> None:
    r = client.post("/batches", files=files(("a.png", png(smooth_image()))), data=data)
    assert r.status_code == 422 and message in r.text


def test_unknown_ids_are_404(client: httpx.Client) -> None:
    for path in ("/batches/nope", "/batches/nope/items", "/items/nope", "/items/nope/denoised.png"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["detail"].endswith("not found")


def test_no_files_is_422(client: httpx.Client) -> None:
    assert client.post("/batches", data={"seed": "1"}).status_code == 422


def bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (30000, 30000)).save(buf, format="PNG")  # about 900 MB of pixels in a small file
    return buf.getvalue()


def test_malformed_files_fail_alone_and_names_are_only_labels(client: httpx.Client) -> None:
    good = png(smooth_image(48, 64))
    cut = png(smooth_image(128, 128))
    named = [("../../etc/passwd.png", good), ("ünïcødé 画像.png", good), ("bomb.png", bomb_png()),
             ("zero.png", b""), ("cut.png", cut[: len(cut) // 3]), ("tall.png", png(smooth_image(17000, 1, 1))),
             ("GIF89a.jpg", b"GIF89a" + b"\x00" * 20), ("ok.png", good), ("moving.webp", many_frames("WEBP"))]
    r = client.post("/batches", files=files(*named))
    assert r.status_code == 201, r.text
    batch = wait_batch(client, r.json()["id"])
    items = {i["filename"]: i for i in client.get(f"/batches/{batch['id']}/items").json()["data"]}
    assert {n for n, i in items.items() if i["state"] == "done"} == {"../../etc/passwd.png", "ünïcødé 画像.png",
                                                                      "ok.png", "moving.webp"}
    assert items["ok.png"]["result"]["notes"] == []
    note = "an animated WEBP of 3 frames: only the first frame was processed"
    assert items["moving.webp"]["result"]["notes"] == [note]
    noted = client.get(f"/batches/{batch['id']}/items", params={"noted": "true"}).json()
    assert noted["count"] == 1 and [i["filename"] for i in noted["data"]] == ["moving.webp"]
    exported = {r["filename"]: r for r in csv.DictReader(io.StringIO(
        client.get("/captions/export", params={"batch_id": batch["id"]}).text))}
    assert exported["moving.webp"]["notes"] == note and exported["ok.png"]["notes"] == ""
    found = client.get("/captions", params={"batch_id": batch["id"], "q": ""}).json()["data"]
    assert [c["notes"] for c in found if c["filename"] == "moving.webp"] == [[note]]
    errors = {n: i["error"] for n, i in items.items() if i["state"] == "failed"}
    assert "30000x30000" in errors["bomb.png"] or "decompression bomb" in errors["bomb.png"]
    assert errors["zero.png"] == "empty file"
    assert "truncated" in errors["cut.png"]
    assert "1x17000" in errors["tall.png"]
    assert errors["GIF89a.jpg"].startswith(("not an image", "broken or truncated"))


def test_metrics_count_items_by_state(client: httpx.Client) -> None:
    r = client.post("/batches", files=files(("m.png", png(smooth_image(32, 32))), ("empty.png", b"")))
    wait_batch(client, r.json()["id"])
    text = httpx.get(f"{client.base_url}/metrics").text  # no key needed
    done = [line for line in text.splitlines() if line.startswith('denocap_items{state="done"}')]
    assert done and float(done[0].split()[-1]) >= 1
    assert 'denocap_failed_items{reason="bad_image"}' in text
    assert 'denocap_stage_seconds{stage="denoise"}' in text and "denocap_queue_depth" in text
