"""`denocap run` end to end in a real subprocess, on the embedded default (SQLite under the data folder)."""
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import png, smooth_image


def denocap(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core.cli", *args], env={**os.environ, **env}, text=True,
                          check=False, capture_output=True, timeout=300)


def test_run_on_samples_prints_a_table_and_stores_results(env: dict[str, str]) -> None:
    out = denocap(env, "run")
    assert out.returncode == 0, out.stderr
    for name in ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.png"):
        assert name in out.stdout
    assert "5 done, 0 failed" in out.stdout
    db = Path(env["DENOCAP_DATA_DIR"]) / "denocap.db"
    rows = sqlite3.connect(db).execute("SELECT psnr_noisy, psnr, caption FROM results").fetchall()
    assert len(rows) == 5 and all(20 < r[0] < 21 and r[1] is not None for r in rows)


def test_bad_files_fail_alone(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.png").write_bytes(png(smooth_image()))
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_bytes(b"this is not a jpeg")
    (folder / "cut.png").write_bytes(png(smooth_image(128, 128))[:300])
    out = denocap(env, "run", str(folder))
    assert out.returncode == 1
    assert "1 done, 3 failed" in out.stdout
    assert "empty file" in out.stdout and "not an image" in out.stdout and "truncated" in out.stdout


def test_missing_path_is_a_one_line_error(env: dict[str, str], tmp_path: Path) -> None:
    out = denocap(env, "run", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: no such file or folder: {tmp_path / 'nope'}"]


def test_bad_option_is_a_one_line_error(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(smooth_image()))
    out = denocap(env, "run", str(tmp_path / "a.png"), "--denoiser", "nosuch")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --denoiser: unknown denoiser 'nosuch'; known: ffdnet"


def test_self_ensemble_setting_reaches_the_stored_result(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(smooth_image()))
    out = denocap({**env, "DENOCAP_DENOISE_ENSEMBLE": "2"}, "run", str(tmp_path / "a.png"))
    assert out.returncode == 0, out.stderr
    db = Path(env["DENOCAP_DATA_DIR"]) / "denocap.db"
    (version,) = sqlite3.connect(db).execute("SELECT denoiser_version FROM results").fetchone()
    assert version.startswith("ffdnet@") and version.endswith("-x2")
    out = denocap({**env, "DENOCAP_DENOISE_ENSEMBLE": "3"}, "run", str(tmp_path / "a.png"))
    assert out.returncode == 2
    assert out.stderr.strip() == "error: DENOCAP_DENOISE_ENSEMBLE: Value error, must be 1, 2, 4 or 8"


HEAVY = ("torch", "torchvision", "skimage", "cv2")


def imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], text=True, check=True, capture_output=True, timeout=120)
    return eval(out.stdout.strip().splitlines()[-1])  # a list literal we printed ourselves


def test_the_api_and_the_light_commands_start_without_torch(env: dict[str, str]) -> None:
    assert imported_after("import api.main; api.main.create_app()") == []
    for args in (["--help"], ["apikey", "list"], ["caption", "--help"], ["denoiser", "train", "--help"]):
        code = ("from core.cli import app\ntry:\n    app(" + repr(args) + ")\nexcept SystemExit:\n    pass")
        assert imported_after(code) == [], args
