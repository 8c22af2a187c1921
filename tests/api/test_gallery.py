"""The gallery in a real headless Chromium (Debian's, driven by Playwright) against the real server and worker:
sign in, watch a batch reach 100%, open an item, see both images and captions, search a caption word.
Screenshots go to $DENOCAP_TEST_SCREENSHOTS (docs/gallery for the README) or the test's folder."""
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import many_frames, png, smooth_image
from tests.services import files

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DENOCAP_TEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(page: Page, stack: str, key: str) -> None:
    page.goto(f"{stack}/gallery")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.fill("#key", key)
    page.click("#sign-in")
    expect(page.locator("h1")).to_have_text("Batches")


def test_watch_a_batch_then_look_and_search(browser: Browser, stack: str, client: httpx.Client, shots: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{stack}/gallery")
    page.fill("#key", "dc_0123_wrong")
    page.click("#sign-in")
    expect(page.locator("#login-error")).to_contain_text("not valid")
    key = client.headers["X-API-Key"]
    sign_in(page, stack, key)
    assert key not in page.url and page.evaluate("document.cookie") == ""  # HttpOnly, never in a URL

    body = files(*[(f"photo{i}.png", png(smooth_image(120, 160, seed=20 + i))) for i in range(6)],
                 ("broken.png", b"not an image"), ("clip.gif", many_frames("GIF", 2, 120, 160)),
                 ("scan.tif", many_frames("TIFF", 2, 120, 160)))
    batch = client.post("/batches", files=body, data={"add_noise": "25"}).json()
    page.reload()
    row = page.locator(f'tr[data-batch="{batch["id"]}"]')
    expect(row.locator(".pct")).to_have_text("100%", timeout=180_000)  # updated by polling, no reload
    assert row.get_attribute("data-finished") == "true"
    page.screenshot(path=str(shots / "batches.png"))

    row.locator("a").click()
    cards = page.locator(".card")
    expect(cards).to_have_count(10)  # the TIFF's two pages are two
    expect(page.locator(".card.state-failed .error")).to_have_text("not an image (unknown format)")
    expect(page.locator(".card .note")).to_have_text("an animated GIF of 2 frames: only the first frame was processed")
    expect(page.locator(".card", has_text="scan page 2.tif").locator("img")).to_have_count(1)
    page.wait_for_function("[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)")
    first = cards.first
    thumb = first.locator("img")
    before = thumb.get_attribute("src")
    first.locator("button.toggle").click()
    assert thumb.get_attribute("src") != before and "noisy" in (thumb.get_attribute("src") or "")
    page.screenshot(path=str(shots / "batch.png"), full_page=True)

    first.locator("a").click()
    item_id = page.url.rsplit("/", 1)[1]
    api_item = client.get(f"/items/{item_id}").json()
    expect(page.locator("#caption")).to_have_text(api_item["result"]["caption"])
    expect(page.locator("#caption-noisy")).to_have_text(api_item["result"]["caption_noisy"])
    page.wait_for_function("['noisy', 'denoised'].every(id => document.getElementById(id).naturalWidth === 160)")
    page.fill("#slider", "20")
    assert "20%" in page.eval_on_selector("#denoised", "e => e.style.clipPath")
    page.screenshot(path=str(shots / "item.png"), full_page=True)

    word = max(api_item["result"]["caption"].split(), key=len)
    page.goto(f"{stack}/gallery/search")
    page.fill("#q", word)
    page.click("#search")
    expect(page.locator(f'#results .card[data-item="{item_id}"]')).to_have_count(1)
    for caption in page.locator("#results .caption").all_inner_texts():
        assert word.lower() in caption.lower() or word.lower() in page.locator("#results").inner_text().lower()
    page.screenshot(path=str(shots / "search.png"), full_page=True)
    export = page.locator("a", has_text="CSV").get_attribute("href") or ""
    assert export.startswith("/gallery/export?q=") and key not in export
    with page.expect_download() as download:
        page.locator("a", has_text="CSV").click()
    assert item_id in Path(download.value.path()).read_text()

    page.goto(f"{stack}/gallery")
    page.click("text=Sign out")
    expect(page.locator("h1")).to_have_text("Sign in")
    assert page.goto(f"{stack}/gallery").status == 401  # the session ended on the server
    page.close()


def test_another_tenant_sees_the_sign_in_or_404(browser: Browser, stack: str, client: httpx.Client,
                                                other: httpx.Client) -> None:
    batch = client.get("/batches").json()["data"][0]
    page = browser.new_page()
    assert page.goto(f"{stack}/gallery/batches/{batch['id']}").status == 401  # not signed in: the form
    sign_in(page, stack, other.headers["X-API-Key"])
    expect(page.locator(f'tr[data-batch="{batch["id"]}"]')).to_have_count(0)
    assert page.goto(f"{stack}/gallery/batches/{batch['id']}").status == 404
    page.close()
