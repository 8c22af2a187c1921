"""`denocap submit/status/results` against a real server and worker, as a user runs them: killed mid-upload and
run again, unreadable files, a wrong key."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, func, select

from core import bulk
from core.options import BatchOptions
from core.tables import Batch
from tests.conftest import api_key, many_frames, png
from tests.test_cli import denocap as run_denocap

UPLOADED = re.compile(r"uploaded (\d+)/(\d+) files")


def photos(folder: Path, n: int, start: int = 0) -> list[str]:
    """n distinct small PNGs (a pixel holds the number: no two have the same content)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + n):
        pixels = np.full((24, 24, 3), 128, np.uint8)
        pixels[0, 0], pixels[0, 1] = i % 256, i // 256
        (folder / f"p{i:04d}.png").write_bytes(png(pixels))
        names.append(f"p{i:04d}.png")
    return names


def denocap(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Longer than tests.test_cli's limit: one worker on two busy cores takes minutes for 300 items."""
    return run_denocap(env, *args, timeout=1200)


def client_env(tmp_path: Path, stack: str, key: str) -> dict[str, str]:
    return {"DENOCAP_DATA_DIR": str(tmp_path / "client"), "DENOCAP_URL": stack, "DENOCAP_API_KEY": key}


def batch_count(postgres_url: str) -> int:
    engine = create_engine(postgres_url)
    with engine.connect() as c:
        n = c.scalar(select(func.count()).select_from(Batch))
    engine.dispose()
    return n or 0


def test_a_killed_submit_resumes_into_the_same_batch(stack: str, postgres_url: str, tmp_path: Path) -> None:
    names = photos(tmp_path / "photos", 300)
    key = api_key(postgres_url, "resume")
    env = client_env(tmp_path, stack, key)
    first = subprocess.Popen([sys.executable, "-m", "core.cli", "submit", str(tmp_path / "photos"), "--chunk", "50"],
                             env={**os.environ, **env}, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert first.stderr is not None
    for line in first.stderr:  # progress lines, one per chunk: kill once two chunks are in
        if (m := UPLOADED.search(line)) and int(m[1]) >= 100:
            first.kill()
            break
    assert first.wait(60) == -9, "the upload ended before it could be killed"
    second = denocap(env, "submit", str(tmp_path / "photos"), "--chunk", "50", "--wait")
    assert second.returncode == 0, second.stderr
    resumed = [int(m[1]) for m in UPLOADED.finditer(second.stderr)]
    assert resumed and resumed[0] > 100 and resumed[-1] == 300, second.stderr  # the first chunks were not resent
    assert "done 300, failed 0" in second.stderr
    batch_id = second.stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=stack, headers={"X-API-Key": key}) as api:
        assert api.get("/batches").json()["count"] == 1
        items = api.get(f"/batches/{batch_id}/items", params={"limit": 1000}).json()["data"]
    assert sorted(i["filename"] for i in items) == names  # every file exactly once
    assert all(i["state"] == "done" for i in items)

    out = tmp_path / "out"
    got = denocap(env, "results", batch_id, "--out", str(out), "--format", "jsonl")
    assert got.returncode == 0, got.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 300 and {r["file"] for r in rows} == set(names)
    assert all(r["caption"] and r["denoiser_version"] and r["sigma_estimate"] is not None for r in rows)
    assert sorted(p.name for p in out.glob("*.png")) == names
    again = denocap(env, "results", batch_id, "--out", str(out))  # resumable: nothing is fetched twice
    assert "(0 downloaded, 300 already there)" in again.stdout, again.stdout
    assert len((out / "results.csv").read_text().splitlines()) == 301
    status = denocap(env, "status", batch_id)
    assert status.returncode == 0 and batch_id in status.stdout and "300" in status.stdout


def test_unreadable_files_are_reported_and_skipped(stack: str, postgres_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    photos(folder, 2, start=1000)
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a broken link (root reads chmod 000 files)
    (folder / "x.png").mkdir()  # a folder named like an image
    (folder / "notes.txt").write_text("not an image suffix: not a candidate")
    (folder / "sub").mkdir()
    photos(folder / "sub", 1, start=2000)
    os.mkfifo(folder / "pipe.png")  # opening it would wait for a writer
    photos(tmp_path / "elsewhere", 1, start=2001)
    (folder / "linked").symlink_to(tmp_path / "elsewhere")
    odd = os.fsencode(folder) + b"/caf\xe9.png"  # a Latin-1 name, not UTF-8
    Path(os.fsdecode(odd)).write_bytes(png(np.full((24, 24, 3), 7, np.uint8)))
    key = api_key(postgres_url, "unreadable")
    env = client_env(tmp_path, stack, key)
    out = denocap(env, "submit", str(folder), "--wait", "--seed", "3")
    assert out.returncode == 1, out.stderr
    assert f"{folder / 'gone.png'}: unreadable" in out.stderr and f"{folder / 'x.png'}: unreadable" in out.stderr
    assert f"{folder / 'pipe.png'}: unreadable (not a regular file)" in out.stderr
    with httpx.Client(base_url=stack, headers={"X-API-Key": key}) as api:
        batch = api.get(f"/batches/{out.stdout.strip()}").json()
        names = {i["filename"] for i in api.get(f"/batches/{batch['id']}/items").json()["data"]}
    assert batch["total"] == 5 and batch["counts"]["done"] == 5 and batch["finished"]
    assert "caf\ufffd.png" in names and "p2001.png" in names  # shown with U+FFFD; the linked folder walked
    assert batch["options"]["seed"] == 3 and batch["options"]["denoiser"] == "ffdnet"  # the options reach the batch
    again = denocap(env, "submit", str(folder), "--seed", "3")  # the same command: the same batch, nothing new
    assert again.stdout.strip() == batch["id"] and "new files appeared" not in again.stderr, again.stderr
    other = denocap({**env, "DENOCAP_API_KEY": api_key(postgres_url, "other")}, "submit", str(folder), "--seed", "3")
    assert other.returncode == 2 and (  # the saved batch is not this key's
        f"error: batch {batch['id']} of an earlier run of these paths is not on {stack} for this key; add --new for "
        "a new batch\n") in other.stderr


def test_a_wrong_key_is_one_line_and_exit_2_before_any_upload(stack: str, postgres_url: str, tmp_path: Path) -> None:
    photos(tmp_path / "photos", 3, start=3000)
    before = batch_count(postgres_url)
    env = client_env(tmp_path, stack, "wrong-key")
    out = denocap(env, "submit", str(tmp_path / "photos"), "--chunk", "1")
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {stack}: invalid or revoked API key"
    assert batch_count(postgres_url) == before and not (tmp_path / "client" / "submits").exists()
    assert denocap(env, "results", "0" * 32, "--out", str(tmp_path / "r")).returncode == 2
    missing = denocap({**env, "DENOCAP_API_KEY": ""}, "submit", str(tmp_path / "photos"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: no API key")
    unknown = denocap(env, "submit", str(tmp_path / "photos"), "--denoiser", "nope")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: --denoiser: ") and len(
        unknown.stderr.strip().splitlines()) == 1


def test_results_name_collisions_and_failed_rows(stack: str, postgres_url: str, tmp_path: Path) -> None:
    key = api_key(postgres_url, "collide")
    photos(tmp_path / "a", 1, start=4000)
    photos(tmp_path / "b", 1, start=4001)
    (tmp_path / "b" / "p4000.png").write_bytes((tmp_path / "b" / "p4001.png").read_bytes()[:40])  # truncated
    (tmp_path / "b" / "p4001.png").rename(tmp_path / "b" / "p4000.jpg")
    clip = "phone_burst_2026_12_04_box_7_clip.gif"  # a long name: its note stays one line in a log
    (tmp_path / "a" / clip).write_bytes(many_frames("GIF", 2))
    (tmp_path / "a" / "scan.tif").write_bytes(many_frames("TIFF", 2))  # a document feeder's: an item a page
    env = client_env(tmp_path, stack, key)
    sent = denocap(env, "submit", str(tmp_path / "a"), str(tmp_path / "b"), "--wait")
    assert sent.returncode == 1 and "p4000.png: not an image" in sent.stderr, sent.stderr
    assert f"{clip}: an animated GIF of 2 frames: only the first frame was processed" in sent.stderr
    assert "done 5, failed 1" in sent.stderr
    out = tmp_path / "out"
    got = denocap(env, "results", sent.stdout.strip(), "--out", str(out))
    assert got.returncode == 0, got.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["p4000 (2).png", "p4000.png", clip[:-4] + ".png",
                                                         "scan page 1.png", "scan page 2.png"]
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 7 and sum(",failed," in r for r in rows) == 1
    notes = {r["file"]: r["notes"] for r in csv.DictReader(rows)}
    assert notes[clip].startswith("an animated GIF of 2 frames") and notes["p4000.png"] == ""
    assert notes["scan page 2.tif"] == ""
    batch_id = sent.stdout.strip()
    status = denocap(env, "status", batch_id)
    assert "p4000.png: not an image" in status.stdout and f"{clip}: an animated GIF" in status.stdout
    mine = tmp_path / "mine"  # a folder that holds a photo of that name, the user's own
    mine.mkdir()
    (mine / "p4000.png").write_bytes(b"my own")
    taken = denocap(env, "results", batch_id, "--out", str(mine))
    assert taken.returncode == 1 and "p4000.png is there and is no result of this batch" in taken.stderr, taken.stderr
    assert (mine / "p4000.png").read_bytes() == b"my own" and not (mine / "results.csv").exists()
    (mine / "p4000.png").unlink()
    (mine / "results.csv").write_text("my own table")
    table = denocap(env, "results", batch_id, "--out", str(mine))
    assert table.returncode == 1 and "results.csv is there and is no result" in table.stderr, table.stderr
    assert (mine / "results.csv").read_text() == "my own table"
    other = denocap(env, "submit", str(tmp_path / "a"), "--new", "--wait")
    assert other.returncode == 0, other.stderr
    before = (out / "p4000.png").read_bytes()
    into = denocap(env, "results", other.stdout.strip().splitlines()[-1], "--out", str(out))
    assert into.returncode == 1 and f"holds the results of batch {batch_id}" in into.stderr, into.stderr
    assert (out / "p4000.png").read_bytes() == before
    with httpx.Client(base_url=stack, headers={"X-API-Key": key}) as api:  # the first p4000 deleted: the second
        items = {i["filename"]: i["id"] for i in api.get(f"/batches/{batch_id}/items", params={"state": "done"}).json()
                 ["data"]}  # takes its name
        assert api.delete(f"/items/{items['p4000.png']}").status_code == 204
        second = api.get(f"/items/{items['p4000.jpg']}/denoised.png").content
    again = denocap(env, "results", batch_id, "--out", str(out))
    assert again.returncode == 0 and "(1 downloaded, 3 already there)" in again.stdout, again.stdout + again.stderr
    assert (out / "p4000.png").read_bytes() == second != before and not (out / "p4000 (2).png").exists()


def test_new_seals_the_batch_an_earlier_run_left_open(stack: str, postgres_url: str, tmp_path: Path) -> None:
    """A run stopped before its seal leaves an open batch, which never finishes and holds one of the tenant's
    unfinished batches; --new seals it before it opens the next."""
    photos(tmp_path / "photos", 2, start=5000)
    key = api_key(postgres_url, "abandon")
    with httpx.Client(base_url=stack, headers={"X-API-Key": key}) as api:
        earlier = api.post("/batches/open", json={}).json()["id"]
        one = tmp_path / "photos" / "p5000.png"
        assert api.post(f"/batches/{earlier}/files", files={"files": (one.name, one.read_bytes())}).status_code == 200
        state = bulk.state_file(tmp_path / "client" / "submits", stack, [(tmp_path / "photos").absolute()],
                                BatchOptions())
        bulk.save_state(state, bulk.State(url=stack, idempotency_key="k", batch_id=earlier))
        sent = denocap(client_env(tmp_path, stack, key), "submit", str(tmp_path / "photos"), "--new", "--wait")
        assert sent.returncode == 0, sent.stderr
        assert f"batch {earlier}, left open by an earlier run of these paths, is sealed" in sent.stderr
        assert api.get(f"/batches/{earlier}").json()["sealed"] is True
        new = sent.stdout.strip().splitlines()[-1]
        assert new != earlier and api.get(f"/batches/{new}").json()["total"] == 2
        photos(tmp_path / "more", 1, start=5002)  # a run killed while opening its batch saved only the key
        opened = api.post("/batches/open", json={}, headers={"Idempotency-Key": "killed-while-opening"}).json()["id"]
        state = bulk.state_file(tmp_path / "client" / "submits", stack, [(tmp_path / "more").absolute()],
                                BatchOptions())
        bulk.save_state(state, bulk.State(url=stack, idempotency_key="killed-while-opening"))
        sent = denocap(client_env(tmp_path, stack, key), "submit", str(tmp_path / "more"), "--new")
        assert sent.returncode == 0 and sent.stdout.strip() == opened, sent.stderr  # the empty batch is the new one
        assert api.get(f"/batches/{opened}").json()["sealed"] is True
        assert api.get(f"/batches/{opened}").json()["total"] == 1


def test_a_file_changed_after_it_was_sent_replaces_its_first_copy(stack: str, postgres_url: str, tmp_path: Path) -> None:
    """A photo still being exported when a stopped run sent it: the next run sends it again and deletes the item
    of the copy sent first, so the batch holds each file once, as it is now."""
    a, b = (tmp_path / "photos" / n for n in photos(tmp_path / "photos", 2, start=6000))
    key = api_key(postgres_url, "changed")
    with httpx.Client(base_url=stack, headers={"X-API-Key": key}) as api:
        batch = api.post("/batches/open", json={}).json()["id"]
        sent = api.post(f"/batches/{batch}/files", files=[("files", (p.name, p.read_bytes())) for p in (a, b)]).json()
        first_a, first_b = (f["item"]["id"] for f in sent["files"])
        state = bulk.state_file(tmp_path / "client" / "submits", stack, [(tmp_path / "photos").absolute()],
                                BatchOptions())
        found = bulk.walk([tmp_path / "photos"])
        bulk.save_state(state, bulk.State(url=stack, idempotency_key="k", batch_id=batch,
                                          done={bulk.key(a.absolute()): first_a, bulk.key(b.absolute()): first_b},
                                          stamps={bulk.key(p): bulk.stamp(found, p) for p in found.files}))
        a.write_bytes(png(np.full((24, 24, 3), 7, np.uint8)))  # the export finished
        os.utime(a, ns=(10**18, 10**18))
        run = denocap(client_env(tmp_path, stack, key), "submit", str(tmp_path / "photos"), "--wait")
        assert run.returncode == 0, run.stderr
        assert "uploaded 2/2 files, 1 replacing the copy sent before they changed" in run.stderr
        items = api.get(f"/batches/{batch}/items").json()["data"]
        assert sorted(i["filename"] for i in items) == [a.name, b.name] and all(i["state"] == "done" for i in items)
        now_a = next(i["id"] for i in items if i["filename"] == a.name)
        assert now_a != first_a and api.get(f"/items/{first_a}").status_code == 404
        assert api.get(f"/items/{now_a}/original").content == a.read_bytes()


def test_the_readmes_python_example_runs_as_written(stack: str, postgres_url: str, tmp_path: Path) -> None:
    """It called a method the client does not have, and printed ItemState.running for the state."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("### Python client", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert '"http://127.0.0.1:8000"' in example
    photos(tmp_path / "photos", 2)
    code = f"key = {api_key(postgres_url, 'readme')!r}\n" + example.replace('"http://127.0.0.1:8000"', repr(stack))
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, capture_output=True, text=True,
                         timeout=600,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["p0000.png", "done"], ["p0001.png", "done"]], lines
    assert len(list(tmp_path.glob("*.png"))) == 2
