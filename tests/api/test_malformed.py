"""A corpus of more than 100 malformed inputs: each gets a clear 4xx or a failed item with a reason, while the
valid files of the same batch finish. Then schemathesis fuzzes every route from the OpenAPI schema: no 5xx."""
import io
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from core.submit import label
from tests.conftest import png, smooth_image
from tests.services import files, wait_batch

pytestmark = pytest.mark.slow


def encoded(fmt: str, array: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **save)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims the size and whose data is a few bytes: what a bomb or a lie looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def bad_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    image = smooth_image(64, 64)
    whole = {"png": png(image), "jpeg": encoded("JPEG", image), "gif": encoded("GIF", image),
             "bmp": encoded("BMP", image), "webp": encoded("WEBP", image), "tiff": encoded("TIFF", image)}
    corpus: dict[str, bytes] = {}
    for fmt, data in whole.items():  # cut short at many places
        for frac in (0.02, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.97):
            corpus[f"cut-{frac}.{fmt}"] = data[: max(1, int(len(data) * frac))]
    for i in range(12):  # random bytes, some behind a real signature
        noise = rng.integers(0, 256, 200 + 50 * i, dtype=np.uint8).tobytes()
        corpus[f"noise{i}.png"] = (b"\x89PNG\r\n\x1a\n" if i % 3 == 0 else b"\xff\xd8\xff" if i % 3 == 1 else b"") + noise
    corpus |= {"zero.png": b"", "one.jpg": b"\xff", "text.png": b"hello, world\n", "html.jpg": b"<html></html>",
               "svg.png": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
               "pdf.png": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "json.png": b'{"image": true}', "zip.png": b"PK\x03\x04" + b"\0" * 40,
               "gif-bomb.gif": b"GIF89a" + (60000).to_bytes(2, "little") * 2 + b"\x00\x00\x00;",
               "png-bomb.png": png_header(40000, 40000), "wide.png": png_header(20000, 2),
               "tall.png": png_header(1, 17000), "zero-width.png": png_header(0, 10),
               "float.tif": encoded("TIFF", np.zeros((8, 8), np.float32))}
    return corpus


def good_files() -> dict[str, bytes]:
    """Valid images, some with names or extensions that could fool a careless service."""
    img = smooth_image(40, 48, seed=9)
    return {"plain.png": png(img), "jpeg-named.png": encoded("JPEG", img), "png-named.jpg": png(img),
            "../../../etc/passwd": png(img), "名前 ünïcødé.webp": encoded("WEBP", img), "CON": png(img),
            "a" * 300 + ".png": png(img), "gray16.png": png(smooth_image(40, 40, 1).astype(np.uint16) * 257),
            "rgba.png": png(np.dstack([img, np.full(img.shape[:2], 200, np.uint8)])),
            "palette.gif": encoded("GIF", img)}


def test_a_batch_of_malformed_files_fails_them_alone(client: httpx.Client) -> None:
    bad, good = bad_files(), good_files()
    assert len(bad) >= 80
    r = client.post("/batches", files=files(*bad.items(), *good.items()))
    assert r.status_code == 201, r.text
    batch = wait_batch(client, r.json()["id"], timeout=600)
    items = client.get(f"/batches/{batch['id']}/items", params={"limit": 1000}).json()["data"]
    assert len(items) == len(bad) + len(good)
    states = {i["filename"]: (i["state"], i["error"]) for i in items}
    shown = {label(n, 0) for n in good}  # as the service shows them: printable, at most 255, extension kept
    assert shown == {n for n, (s, _) in states.items() if s == "done"}
    for name, (state, error) in states.items():
        if name not in shown:
            assert state == "failed" and error and len(error) < 500, (name, state, error)


REQUESTS = [  # (description, request keywords, expected status)
    ("field named file, not files", {"files": {"file": ("a.png", png(smooth_image(8, 8)))}}, 422),
    ("no multipart at all", {"json": {"files": ["a.png"]}}, 422),
    ("form without files", {"data": {"seed": "1"}}, 422),
    ("add_noise not a number", {"data": {"add_noise": "loud"}}, 422),
    ("add_noise too big", {"data": {"add_noise": "1e400"}}, 422),
    ("add_noise negative", {"data": {"add_noise": "-0.5"}}, 422),
    ("seed negative", {"data": {"seed": "-1"}}, 422),
    ("seed a float", {"data": {"seed": "1.5"}}, 422),
    ("denoise_sigma a list", {"data": {"denoise_sigma": "[25]"}}, 422),
    ("denoiser with SQL", {"data": {"denoiser": "ffdnet'; DROP TABLE items; --"}}, 422),
    ("denoiser with a path", {"data": {"denoiser": "../../etc/passwd"}}, 422),
    ("captioner unknown", {"data": {"captioner": "gpt"}}, 422),
]


@pytest.mark.parametrize("what, kwargs, code", REQUESTS, ids=[r[0] for r in REQUESTS])
def test_malformed_requests_are_4xx_with_a_message(client: httpx.Client, what: str, kwargs: dict, code: int) -> None:
    if "files" not in kwargs and "json" not in kwargs and what != "form without files":
        kwargs = {**kwargs, "files": files(("a.png", png(smooth_image(8, 8))))}
    r = client.post("/batches", **kwargs)
    assert r.status_code == code, (what, r.text)
    assert r.json()["detail"], what


def test_schemathesis_finds_no_server_error(stack: str, client: httpx.Client, tmp_path: Path) -> None:
    """Property-based fuzzing of every operation in the OpenAPI schema, authenticated as a tenant."""
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    run = subprocess.run(
        [st, "run", f"{stack}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "15",
         "--header", f"X-API-Key: {client.headers['X-API-Key']}", "--seed", "1", "--phases", "examples,coverage,fuzzing",
         "--request-timeout", "60"],
        check=False, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
