"""noise -> denoise -> compare on real files through the real command line."""
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import many_frames, png, smooth_image
from tests.core.test_imageio import tiff_of_pages
from tests.test_cli import denocap


def make_clean(folder: Path, n: int = 2) -> None:
    folder.mkdir()
    for i in range(n):
        (folder / f"img{i}.png").write_bytes(png(smooth_image(64, 96, seed=i)))


def test_noise_then_compare_gives_the_psnr_sigma_implies(env: dict[str, str], tmp_path: Path) -> None:
    make_clean(tmp_path / "clean")
    out = denocap(env, "noise", str(tmp_path / "clean"), str(tmp_path / "noisy"), "--sigma", "25", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "noisy").iterdir()) == ["img0.png", "img1.png"]
    one = denocap(env, "noise", str(tmp_path / "noisy" / "img0.png"), str(tmp_path / "again"))
    assert one.returncode == 0 and "1 image with sigma 25.0 noise in" in one.stdout, one.stdout  # "1 images"
    out = denocap(env, "compare", str(tmp_path / "clean"), str(tmp_path / "noisy"), "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "r.json").read_text())
    # sigma 25 on [0,255] is 20.17 dB; rounding to 8 bits and clipping move it by a little
    assert all(abs(r["psnr"] - 20 * math.log10(255 / 25)) < 0.3 for r in rows), rows


def test_noise_refuses_to_write_into_its_input(env: dict[str, str], tmp_path: Path) -> None:
    make_clean(tmp_path / "clean")
    out = denocap(env, "noise", str(tmp_path / "clean"), str(tmp_path / "clean"))
    assert out.returncode == 2 and "overwritten" in out.stderr


def test_denoise_reports_the_estimate_and_keeps_going_past_bad_files(env: dict[str, str], tmp_path: Path) -> None:
    make_clean(tmp_path / "in")
    (tmp_path / "in" / "zero.png").write_bytes(b"")
    (tmp_path / "in" / "huge.png").write_bytes(png(np.zeros((20000, 1), np.uint8)))
    (tmp_path / "in" / "IMG_7.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    (tmp_path / "in" / "scan.tif").write_bytes(many_frames("TIFF", 2))
    out = denocap(env, "denoise", str(tmp_path / "in"), str(tmp_path / "out"), "--sigma", "auto", "--ensemble", "2")
    assert out.returncode == 1
    assert "zero.png: empty file" in out.stderr and "huge.png: image is 1x20000" in out.stderr
    assert "skipped 1 file in the folders without an image suffix (1 .heic)" in out.stderr
    assert "scan.tif: a TIFF of 2 pages: only the first page was processed" in out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("long")) == ["img0.png", "img1.png", "scan.png"]
    assert Image.open(tmp_path / "out" / "img0.png").size == (96, 64)
    assert "img0.png" in out.stdout
    bad = denocap(env, "denoise", str(tmp_path / "in" / "zero.png"), str(tmp_path / "out"))
    assert bad.returncode == 1 and bad.stdout == "" and bad.stderr.strip() == "zero.png: empty file"  # no empty table


def test_denoise_bad_arguments(env: dict[str, str], tmp_path: Path) -> None:
    make_clean(tmp_path / "in")
    cases = {("--sigma", "-3"): "error: --sigma must be between 0 and 255, got -3.0",
             ("--sigma", "loud"): "error: --sigma must be 'auto' or a number, got 'loud'",
             ("--model", "nosuch"): "error: unknown denoiser 'nosuch'; known: ffdnet",
             ("--ensemble", "3"): "error: ensemble must be one of 1, 2, 4, 8, got 3"}
    for args, message in cases.items():
        out = denocap(env, "denoise", str(tmp_path / "in"), str(tmp_path / "out"), *args)
        assert out.returncode == 2 and out.stderr.strip() == message


def test_outputs_never_write_through_links_or_over_each_other(env: dict[str, str], tmp_path: Path) -> None:
    """A folder of links to the photos is not the photos' folder, and an output never replaces what is in the
    output folder (a link, a folder, the user's own photo): it takes the next free name; two inputs of one stem get
    two outputs."""
    make_clean(tmp_path / "src", 3)
    photo = (tmp_path / "src" / "img0.png").read_bytes()
    links = tmp_path / "links"
    links.mkdir()
    for i in range(3):
        (links / f"img{i}.png").symlink_to(tmp_path / "src" / f"img{i}.png")
    out = denocap(env, "noise", str(links), str(links), "--sigma", "25")
    assert out.returncode == 2 and "overwritten" in out.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "img0.jpg").write_bytes(png(smooth_image(64, 96, seed=5)))  # a second stem "img0"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "img2.png").mkdir()  # in the way of one output
    (tmp_path / "out" / "img1.png").symlink_to(tmp_path / "src" / "img1.png")  # a link where an output goes
    (tmp_path / "out" / "img0.png").write_bytes(b"the user's own photo")
    out = denocap(env, "denoise", str(tmp_path / "src"), str(tmp_path / "other"), str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "src" / "img0.png").read_bytes() == photo
    assert (tmp_path / "out" / "img0.png").read_bytes() == b"the user's own photo"  # it was replaced
    assert (tmp_path / "out" / "img1.png").is_symlink() and (tmp_path / "out" / "img2.png").is_dir()
    assert (tmp_path / "src" / "img1.png").read_bytes() == png(smooth_image(64, 96, seed=1))
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("long")) == [
        "img0 (2).png", "img0 (3).png", "img0.png", "img1 (2).png", "img1.png", "img2 (2).png", "img2.png"]


def test_compare_writes_finite_json_and_csv_a_spreadsheet_shows_as_text(env: dict[str, str], tmp_path: Path) -> None:
    make_clean(tmp_path / "ref", 1)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "=HYPERLINK(1).png").write_bytes((tmp_path / "ref" / "img0.png").read_bytes())
    (tmp_path / "ref" / "=HYPERLINK(1).png").write_bytes((tmp_path / "ref" / "img0.png").read_bytes())
    out = denocap(env, "compare", str(tmp_path / "ref"), str(tmp_path / "test"), "--json", str(tmp_path / "r.json"),
                  "--csv", str(tmp_path / "r.csv"))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "r.json").read_text())[0]["psnr"] == 100.0  # identical: capped, not Infinity
    assert (tmp_path / "r.csv").read_text().splitlines()[1].startswith("'=HYPERLINK(1).png,100.0,")
    missing = denocap(env, "compare", str(tmp_path / "ref"), str(tmp_path / "test"), "--csv", str(tmp_path / "no/r.csv"))
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: no folder {tmp_path / 'no'} to write r.csv into"
    photo = (tmp_path / "ref" / "img0.png").read_bytes()
    over = denocap(env, "compare", str(tmp_path / "ref"), str(tmp_path / "test"), "--csv", str(tmp_path / "ref/img0.png"))
    assert over.returncode == 2 and "is named as an image in an input folder" in over.stderr, over.stderr  # it
    assert (tmp_path / "ref" / "img0.png").read_bytes() == photo  # replaced the photo
    beside = denocap(env, "compare", str(tmp_path / "ref"), str(tmp_path / "test"), "--csv", str(tmp_path / "ref/t.csv"))
    assert beside.returncode == 0 and (tmp_path / "ref" / "t.csv").is_file(), beside.stderr  # a table is no image
    folder = denocap(env, "compare", str(tmp_path / "ref"), str(tmp_path / "test"), "--json", str(tmp_path))
    assert folder.returncode == 2 and folder.stderr.strip() == f"error: cannot write {tmp_path}"  # a traceback
    unwritable = denocap(env, "compare", str(tmp_path / "ref"), str(tmp_path / "test"), "--csv", "/proc/r.csv")
    assert unwritable.returncode in (1, 2)  # 2 when the check before the work can tell (not as root)
    assert unwritable.stderr.strip().splitlines()[-1].startswith("error: cannot write /proc/r.csv")  # not its .part


def test_a_file_name_that_is_not_utf8_keeps_its_bytes(env: dict[str, str], tmp_path: Path) -> None:
    """An old camera card's or a Windows zip's Latin-1 name: it stopped the run before any image was written."""
    make_clean(tmp_path / "in", n=1)
    latin1 = os.fsdecode(os.fsencode(tmp_path / "in") + b"/caf\xe9.png")
    Path(latin1).write_bytes(png(smooth_image(64, 96, seed=5)))
    (tmp_path / "in" / ".hidden.png").write_bytes(png(smooth_image(64, 96, seed=6)))  # hidden is still an image
    (tmp_path / "in" / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a link to a photo moved away: it was
    out = denocap(env, "noise", str(tmp_path / "in"), str(tmp_path / "out"))  # skipped without a word
    assert out.returncode == 1 and "gone.png: " in out.stderr, out.stderr
    assert sorted(os.listdir(os.fsencode(tmp_path / "out"))) == [b".hidden.png", b"caf\xe9.png", b"img0.png"]
    table = denocap(env, "compare", str(tmp_path / "in"), str(tmp_path / "out"), "--csv", str(tmp_path / "t.csv"),
                    "--json", str(tmp_path / "t.json"))  # it wrote a header, then stopped on the name
    assert table.returncode == 0, table.stderr
    assert "caf\ufffd.png" in (tmp_path / "t.csv").read_text() and len(json.loads((tmp_path / "t.json").read_text())) == 3


def test_pages_splits_scans_into_a_png_a_page_named_apart(env: dict[str, str], tmp_path: Path) -> None:
    for folder in ("box1", "box2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "scan.tif").write_bytes(many_frames("TIFF", 2 if folder == "box1" else 3))
    (tmp_path / "box2" / "cut.tif").write_bytes(many_frames("TIFF", 2)[:100])
    (tmp_path / "box2" / "torn.tif").write_bytes(tiff_of_pages(5)[:12 + 3 * 66 + 4])  # the 4th page's entry cut
    (tmp_path / "box2" / "moving.gif").write_bytes(many_frames("GIF", 3))
    (tmp_path / "box2" / f"{'long' * 50}.tif").write_bytes(many_frames("TIFF", 2))  # a 200-byte name keeps " page N"
    out = denocap(env, "pages", str(tmp_path / "box1"), str(tmp_path / "box2"), str(tmp_path / "out"))
    assert out.returncode == 1 and "cut.tif: " in out.stderr and "11 pages in" in out.stdout, out.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("long*")) == [f"{'long' * 37}lo page {n}.png" for n in (1, 2)]
    assert "torn.tif: the pages after page 3 could not be read" in out.stderr
    assert "moving.gif: an animated GIF of 3 frames: only the first frame was processed" in out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("long")) == [
        "moving page 1.png", "scan page 1 (2).png", "scan page 1.png", "scan page 2 (2).png", "scan page 2.png",
        "scan page 3.png", "torn page 1.png", "torn page 2.png", "torn page 3.png"]
    third = Image.open(io.BytesIO(many_frames("TIFF", 3)))
    third.seek(2)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "scan page 3.png")), np.asarray(third.convert("RGB")))
