"""`denocap run` end to end in a real subprocess, on the embedded default (SQLite under the data folder)."""
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from core.db import migrate
from tests.conftest import many_frames, png, smooth_image
from tests.services import free_port


def denocap(env: dict[str, str], *args: str, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core.cli", *args], env={**os.environ, **env}, text=True,
                          check=False, capture_output=True, timeout=timeout, cwd=cwd)


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
    (folder / "scan.tif").write_bytes(many_frames("TIFF", 2))  # a document feeder's: an item a page
    with (folder / "huge.tif").open("wb") as sparse:  # a 2 GiB file that takes no disk
        sparse.truncate(2 * 1024**3)
    measured = ("import resource, subprocess, sys; out = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                "print(out.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(out.stdout)")
    out = subprocess.run([sys.executable, "-c", measured, sys.executable, "-m", "core.cli", "run", str(folder)],
                         env={**os.environ, **env}, text=True, capture_output=True, timeout=300, check=True)
    code, peak_kib = map(int, out.stdout.split("\n", 1)[0].split())
    assert code == 1
    assert "3 done, 4 failed" in out.stdout
    assert "scan page 1.tif │ done" in out.stdout and "scan page 2.tif │ done" in out.stdout
    assert "only the first page" not in out.stdout
    assert "empty file" in out.stdout and "not an image" in out.stdout and "truncated" in out.stdout
    assert "file is 2147483648 bytes" in out.stdout
    assert peak_kib < 1.5 * 1024**2, peak_kib  # the file was never read whole


def test_missing_path_is_a_one_line_error(env: dict[str, str], tmp_path: Path) -> None:
    out = denocap(env, "run", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: no such file or folder: {tmp_path / 'nope'}"]
    os.mkfifo(tmp_path / "pipe.png")  # reading it would wait for a writer
    out = denocap(env, "run", str(tmp_path / "pipe.png"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: not a file or folder: {tmp_path / 'pipe.png'}"]


def test_bad_option_is_a_one_line_error(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(smooth_image()))
    out = denocap(env, "run", str(tmp_path / "a.png"), "--denoiser", "nosuch")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --denoiser: unknown denoiser 'nosuch'; known: ffdnet"


@pytest.mark.parametrize("setting, message", [
    ({"DENOCAP_MICRO_BATCH": "0"}, "DENOCAP_MICRO_BATCH: Input should be greater than 0"),  # items never sent
    ({"DENOCAP_TILE_SIZE": "40"}, "DENOCAP_TILE_SIZE must exceed twice DENOCAP_TILE_OVERLAP"),  # every item failed
    ({"DENOCAP_DEVICE": "gpu"}, "DENOCAP_DEVICE: String should match pattern"),
    ({"DENOCAP_LOG_FORMAT": "xml"}, "DENOCAP_LOG_FORMAT: Input should be 'text' or 'json'"),  # was text, silently
    ({"DENOCAP_STORAGE_ROOT": ""}, "DENOCAP_STORAGE_ROOT: must not be empty"),  # was the working folder
    ({"DENOCAP_TASK_TIME_LIMIT": "5000"}, "DENOCAP_TASK_SOFT_TIME_LIMIT < DENOCAP_TASK_TIME_LIMIT < DENOCAP_VISIBI"),
])
def test_a_setting_that_cannot_work_is_one_line_before_any_work(env: dict[str, str], setting: dict[str, str],
                                                                  message: str) -> None:
    out = denocap({**env, **setting}, "apikey", "list")
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}"), line


def test_no_server_at_the_url_is_exit_1_with_its_retries_said_plainly(env: dict[str, str]) -> None:
    """It was exit 2, a bad argument's, after lines of WARNING:core.client:... ."""
    url = f"http://127.0.0.1:{free_port()}"
    out = denocap(env, "status", "f" * 32, "--url", url, "--key", "k")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and lines[-1].startswith(f"error: {url}: ") and len(lines) > 1
    assert all(line.startswith("WARNING: GET /batches: ") and "retrying in" in line for line in lines[:-1]), lines


def test_a_misspelt_setting_is_said_to_be_ignored(env: dict[str, str], tmp_path: Path) -> None:
    """DENOCAP_DATABSE_URL: the command ran on the default SQLite database and said nothing. A setting in any case
    is read, so it is no misspelling; a misspelt one in .env is one too."""
    (tmp_path / ".env").write_text("DENOCAP_RETENTON_DAYS=7\n")
    out = denocap({**env, "DENOCAP_DATABSE_URL": "postgresql://db/denocap", "denocap_log_format": "text"}, "apikey",
                  "list", cwd=tmp_path)
    assert out.returncode == 0 and out.stderr.strip().splitlines() == [
        f"warning: {name} is not a setting; it is ignored (see the README's configuration)"
        for name in ("DENOCAP_DATABSE_URL", "DENOCAP_RETENTON_DAYS")]


def test_a_database_that_cannot_be_used_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    for url, message in [("garbage", "the database DENOCAP_DATABASE_URL: Could not parse"),
                         (f"postgresql://u:secret@127.0.0.1:{port}/db",
                          f"the database postgresql+psycopg://u:***@127.0.0.1:{port}/db: connection failed")]:
        out = denocap({**env, "DENOCAP_DATABASE_URL": url}, "apikey", "list")
        assert out.returncode == 1 and out.stdout == ""
        [line] = out.stderr.strip().splitlines()
        assert line.startswith(f"error: {message}"), line
    (tmp_path / "file").write_text("")
    out = denocap({**env, "DENOCAP_DATA_DIR": str(tmp_path / "file")}, "apikey", "list")
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [f"error: File exists: {tmp_path / 'file'}"]


def test_a_database_user_without_the_privileges_is_one_line(env: dict[str, str], postgres_url: str) -> None:
    """A role that may not read the tables: a traceback of psycopg's InsufficientPrivilege."""
    role = f"denocap_{uuid.uuid4().hex[:8]}"
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    migrate(postgres_url)
    with engine.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
    url = make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
    try:
        out = denocap({**env, "DENOCAP_DATABASE_URL": url}, "apikey", "list")
        assert out.returncode == 1 and out.stderr.strip().splitlines() == [
            f"error: the database {url}: permission denied for table alembic_version"], out.stderr
    finally:
        with engine.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        engine.dispose()


@pytest.mark.parametrize("args, message", [
    (("submit", "--bogus"), "No such option: --bogus"),
    (("results",), "Missing argument 'batch_id'."),
    (("noise", "--sigma", "abc", "a", "b"), "Invalid value for '--sigma'"),
    (("results", "b1", "--out"), "Option '--out' requires an argument."),  # raised before the command's context
    (("status", "ab\x01cd"), "Invalid value for 'batch_id': not a batch id: 'ab\\x01cd'"),  # it went into the URL
    (("delete", "f" * 32, "x", "--yes"), "Invalid value for 'batch_ids': not a batch id: 'x'"),
    (("serve", "--port", "99999"), "Invalid value for '--port'"),  # a traceback from uvicorn
    (("expire", "--days", "99999999"), "Invalid value for '--days'"),  # an OverflowError
    (("worker", "--pool", "bogus"), "Invalid value for '--pool': must be prefork, solo or threads, got 'bogus'"),
])
def test_a_usage_error_is_one_line_naming_the_help(env: dict[str, str], args: tuple[str, ...], message: str) -> None:
    out = denocap(env, *args)
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}") and line.endswith(f"{args[0]} --help)"), line


def test_self_ensemble_setting_reaches_the_stored_result(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(smooth_image()))
    out = denocap({**env, "DENOCAP_DENOISE_ENSEMBLE": "2"}, "run", str(tmp_path / "a.png"))
    assert out.returncode == 0, out.stderr
    db = Path(env["DENOCAP_DATA_DIR"]) / "denocap.db"
    (version,) = sqlite3.connect(db).execute("SELECT denoiser_version FROM results").fetchone()
    assert version.startswith("ffdnet@") and version.endswith("-x2")
    out = denocap({**env, "DENOCAP_DENOISE_ENSEMBLE": "3"}, "run", str(tmp_path / "a.png"))
    assert out.returncode == 2
    assert out.stderr.strip() == "error: DENOCAP_DENOISE_ENSEMBLE: must be 1, 2, 4 or 8"


def test_run_json_gives_one_object_per_image(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(smooth_image(seed=1)))
    (tmp_path / "b.png").write_bytes(png(smooth_image(seed=2)))
    (tmp_path / "c.png").write_bytes(b"")
    (tmp_path / "d.gif").write_bytes(many_frames("GIF", 4))
    out = denocap(env, "run", str(tmp_path), "--json")
    assert out.returncode == 1, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["file"], r["state"]) for r in rows] == [("a.png", "done"), ("b.png", "done"), ("c.png", "failed"),
                                                      ("d.gif", "done")]
    assert rows[0]["caption"] and rows[0]["sigma_estimate"] is not None and rows[2]["error"] == "empty file"
    assert rows[0]["notes"] == [] and rows[3]["notes"] == ["an animated GIF of 4 frames: only the first frame was processed"]
    assert "3 done, 1 failed" in out.stderr


HEAVY = ("torch", "torchvision", "skimage", "cv2")


def imported_after(code: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], text=True, check=True, capture_output=True, timeout=120)
    return eval(out.stdout.strip().splitlines()[-1])  # a list literal we printed ourselves


def test_the_api_and_the_light_commands_start_without_torch(env: dict[str, str]) -> None:
    assert imported_after("import api.main; api.main.create_app()") == []
    for args in (["--help"], ["apikey", "list"], ["caption", "--help"], ["denoiser", "train", "--help"],
                 ["submit", "--help"], ["status", "--help"], ["results", "--help"]):
        code = ("from core.cli import app\ntry:\n    app(" + repr(args) + ")\nexcept SystemExit:\n    pass")
        client = args[0] in ("submit", "status", "results")  # the client side needs no server framework either
        assert imported_after(code, HEAVY + ("fastapi",) * client) == [], args
    help_only = "from core.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass"
    assert imported_after(help_only, ("sqlalchemy", "numpy", "PIL")) == []  # --help: 1.2 s -> 0.5 s here


def test_the_gpu_probe_reads_the_memory_from_its_last_line_and_anything_else_as_no_gpu(monkeypatch) -> None:
    import subprocess

    from core import cli
    for stdout, gib in [("79.6\n", 79.6), ("a banner from a site hook\n15.7\n", 15.7), ("False\n", 0.0), ("", 0.0),
                        ("Traceback ...\n", 0.0)]:
        monkeypatch.setattr(cli.subprocess, "run", lambda *a, out=stdout, **k: subprocess.CompletedProcess(a, 0, out))
        assert cli._gpu_gib() == gib


def test_worker_shape_is_one_process_per_core_on_a_cpu_and_one_per_two_cores_sharing_a_gpu() -> None:
    from core.cli import worker_shape
    assert worker_shape(None, 0, 2, gpu_gib=0) == (2, 1)
    assert worker_shape(None, 0, 16, gpu_gib=141) == (8, 2)
    assert worker_shape(None, 0, 64, gpu_gib=15.7) == (7, 9)  # at most one process per 2 GiB of the GPU
    assert worker_shape(None, 0, 1, gpu_gib=80) == (1, 1)
    assert worker_shape(4, 0, 16, gpu_gib=0) == (4, 4)
    assert worker_shape(None, 3, 8, gpu_gib=0) == (8, 3)  # DENOCAP_TORCH_THREADS wins
    assert worker_shape(3, 0, 2, gpu_gib=0) == (3, 1)
    assert worker_shape(None, 0, 16, gpu_gib=141, exclusive=True) == (1, 16)  # a second process would fail its items
    assert worker_shape(1, 0, 16, gpu_gib=141, exclusive=True) == (1, 16)
    with pytest.raises(ValueError, match="exclusive-process mode: one process can use it, not 4"):
        worker_shape(4, 0, 16, gpu_gib=141, exclusive=True)


def test_exclusive_process_mode_is_read_from_nvidia_smi_for_the_workers_gpu(monkeypatch) -> None:
    import subprocess

    from core import cli
    asked: list[list[str]] = []

    def answer(out: str) -> None:
        monkeypatch.setattr(cli.subprocess, "run",
                            lambda args, **k: asked.append(args) or subprocess.CompletedProcess(args, 0, out))
    for out, exclusive in [("Exclusive_Process\n", True), ("Default\n", False), ("", False)]:
        answer(out)
        assert cli._gpu_exclusive("auto") is exclusive
    answer("Exclusive_Process\n")
    assert cli._gpu_exclusive("cuda:1") and asked[-1][1] == "--id=1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, GPU-8f0e")  # cuda:0 is the machine's GPU 2, cuda:1 a UUID
    cli._gpu_exclusive("auto")
    cli._gpu_exclusive("cuda:1")
    assert [a[1] for a in asked[-2:]] == ["--id=2", "--id=GPU-8f0e"]

    def missing(*a: object, **k: object) -> None:
        raise FileNotFoundError("nvidia-smi")
    monkeypatch.setattr(cli.subprocess, "run", missing)
    assert cli._gpu_exclusive("cuda") is False  # no nvidia-smi: cannot tell


def test_expire_deletes_finished_batches_sealed_over_the_days_given(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for n in range(2):
        (tmp_path / "in" / f"{n}.png").write_bytes(png(smooth_image(24, 24, seed=n)))
    assert denocap(env, "run", str(tmp_path / "in")).returncode == 0
    db = sqlite3.connect(Path(env["DENOCAP_DATA_DIR"]) / "denocap.db")
    [batch] = [row[0] for row in db.execute("SELECT id FROM batches")]
    files = Path(env["DENOCAP_DATA_DIR"]) / "files"
    assert any(p.is_file() for p in files.rglob("*"))
    no_days = denocap(env, "expire")
    assert no_days.returncode == 2 and no_days.stderr.strip() == "error: give --days or set DENOCAP_RETENTION_DAYS"
    assert denocap(env, "expire", "--days", "1", "--dry-run").stdout.strip() == "no finished batch sealed over 1 days ago"
    with db:
        db.execute("UPDATE batches SET sealed_at = datetime('now', '-2 days')")
    assert denocap(env, "expire", "--days", "1", "--dry-run").stdout.strip() == batch
    done = denocap({**env, "DENOCAP_RETENTION_DAYS": "1"}, "expire")
    assert done.returncode == 0 and done.stdout.strip() == "deleted 1 finished batch sealed over 1 days ago", done.stderr
    assert [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("batches", "items", "results")] == [0, 0, 0]
    assert not any(p.is_file() for p in files.rglob("*"))


def test_an_interrupted_run_fails_what_it_did_not_process(env: dict[str, str], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C left its items queued, which nothing here ever runs: the batch counted as in flight for good, and
    after DENOCAP_MAX_BATCHES_IN_FLIGHT of them `run` refused to start."""
    from typer.testing import CliRunner

    from core import cli, process
    (tmp_path / "in").mkdir()
    for n in range(3):
        (tmp_path / "in" / f"{n}.png").write_bytes(png(smooth_image(24, 24, seed=n)))

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(process, "process_items", interrupted)
    ran = CliRunner().invoke(cli.app, ["run", str(tmp_path / "in")])
    assert ran.exit_code != 0
    assert "interrupted: 0 of 3 images processed, the other 3 failed as not processed (batch " in ran.output  # it
    # said nothing
    db = sqlite3.connect(Path(env["DENOCAP_DATA_DIR"]) / "denocap.db")
    assert db.execute("SELECT state, error FROM items").fetchall() == [
        ("failed", "not processed: the run was interrupted")] * 3
    again = denocap({**env, "DENOCAP_MAX_BATCHES_IN_FLIGHT": "1"}, "run", str(tmp_path / "in"))
    assert again.returncode == 0, again.stderr
