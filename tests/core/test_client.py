"""The client's retries (connection errors, 5xx, 429 with Retry-After), its errors, and the folder walk and chunked
upload of `denocap submit`, on a mock transport."""
import os
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from core import bulk
from core.client import ROW_FIELDS, ApiError, Client, Conflict, Retry, Unauthorized, item_row
from core.options import BatchOptions

BATCH = {"id": "b" * 32, "created_at": "2026-12-02T00:00:00Z", "options": {}, "total": 0,
         "counts": {"queued": 0, "running": 0, "done": 0, "failed": 0}, "progress": 1.0, "sealed": True,
         "finished": True}


def client(answers: list, slept: list[float], monkeypatch: pytest.MonkeyPatch) -> Client:
    """Answers the requests in turn: an httpx.Response, or an exception to raise."""
    monkeypatch.setattr("core.client.time.sleep", slept.append)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    return Client("http://api", "key", retry=Retry(attempts=5, base=0.5), transport=httpx.MockTransport(handler))


def test_connection_errors_5xx_and_429_are_retried_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    api = client([httpx.ConnectError("refused"), httpx.Response(503), httpx.Response(429, headers={"Retry-After": "7"}),
                  httpx.Response(200, json=BATCH)], slept, monkeypatch)
    assert api.seal("b" * 32).sealed
    assert slept == [0.5, 1.0, 7.0] and api.requests == 4  # backoff doubles; Retry-After wins when longer


def test_a_cdns_and_a_proxys_errors_are_retried_and_retry_after_may_be_a_date(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=61), usegmt=True)
    api = client([httpx.Response(524), httpx.Response(408, headers={"Retry-After": "2.5"}),
                  httpx.Response(503, headers={"Retry-After": in_a_minute}), httpx.Response(429),
                  httpx.Response(200, json=BATCH)], slept, monkeypatch)
    assert api.seal("b" * 32).sealed
    assert slept[:2] == [0.5, 2.5] and 59 < slept[2] <= 61 and slept[3] == 4.0


def test_a_redirect_is_an_error_that_names_where_to(monkeypatch: pytest.MonkeyPatch) -> None:
    api = client([httpx.Response(301, headers={"Location": "https://api/batches"})], [], monkeypatch)
    with pytest.raises(ApiError, match="HTTP 301: the server redirects to https://api/batches; give that as the URL"):
        api.delete_batch("b" * 32)


def test_it_gives_up_after_the_attempts_and_does_not_retry_4xx(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    api = client([httpx.Response(502)] * 5, slept, monkeypatch)
    with pytest.raises(Exception, match="HTTP 502"):
        api.batch("b" * 32)
    assert len(slept) == 4
    api = client([httpx.Response(401, json={"detail": "invalid or revoked API key"}),
                  httpx.Response(409, json={"detail": "the batch is sealed"})], slept, monkeypatch)
    with pytest.raises(Unauthorized, match="invalid or revoked API key"):
        api.check_key()
    with pytest.raises(Conflict):
        api.seal("b" * 32)
    assert len(slept) == 4


def test_a_deletion_whose_files_are_deleted_later_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    later = {"detail": "the stored files of 3 items are deleted later, by the reconciler", "code": "files_pending"}
    api = client([httpx.Response(204), httpx.Response(202, json=later)], [], monkeypatch)
    assert api.delete_batch("b" * 32) is None
    assert api.delete_item("i" * 32) == later["detail"]


def test_a_row_without_a_result_has_every_field() -> None:
    from api.schemas import ItemOut
    item = ItemOut(id="i", batch_id="b", position=0, filename="x.png", state="failed", error="empty file",
                   deliveries=0, has_reference=False, created_at="2026-12-02T00:00:00Z", started_at=None,
                   finished_at=None, result=None)
    row = item_row(item)
    assert row["file"] == "x.png" and row["error"] == "empty file" and row["caption"] is None and row["notes"] is None
    assert list(row) == ROW_FIELDS


TOO_LARGE = [{"json": {"detail": "request body is 1010 bytes, the limit is 500", "code": "request_too_large"}},
             {"text": "<html><center><h1>413 Request Entity Too Large</h1></center><hr>nginx</html>"}]  # a proxy's


@pytest.mark.parametrize("answer", TOO_LARGE)
def test_a_server_whose_request_limit_is_under_the_chunk_gets_it_in_halves(answer: dict, tmp_path: Path) -> None:
    """413: the chunk is sent again in halves; a file alone over the limit is reported and skipped, not retried
    on every run."""
    sizes = {"a.png": 10, "b.png": 10, "big.png": 900, "c.png": 10}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
    found = bulk.walk([tmp_path])
    sent: list[list[str]] = []
    tried: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/batches/open" or request.url.path.endswith("/seal"):
            return httpx.Response(200, json=BATCH)
        names = re.findall(rb'filename="([^"]+)"', request.content)
        tried.extend(n.decode() for n in names)
        if len(request.content) > 500:
            return httpx.Response(413, **answer)
        sent.append([n.decode() for n in names])
        item = {"id": "i" * 32, "batch_id": "b" * 32, "position": 0, "filename": "f", "state": "queued",
                "error": None, "deliveries": 0, "has_reference": False, "created_at": BATCH["created_at"],
                "started_at": None, "finished_at": None, "result": None}
        return httpx.Response(200, json={"batch": BATCH, "files": [
            {"filename": n.decode(), "duplicate": False, "item": item} for n in names]})
    api = Client("http://api", "key", transport=httpx.MockTransport(handler))
    skipped: list[tuple[Path, str]] = []
    state = bulk.State(url="http://api", idempotency_key="k")
    bulk.upload(api, found, BatchOptions(), state, tmp_path / "state.json", 10, lambda _: None,
                lambda p, why: skipped.append((p, why)))
    assert sent == [["a.png", "b.png"], ["c.png"]]
    [(name, why)] = [(p.name, why) for p, why in skipped]
    assert name == "big.png" and why.startswith("larger than the server takes in one request")
    assert sorted(Path(p).name for p in state.done) == ["a.png", "b.png", "c.png"] and state.sealed
    tried.clear()
    bulk.upload(api, found, BatchOptions(), bulk.load_state(tmp_path / "state.json", "http://api"),
                tmp_path / "state.json", 10, lambda _: None, lambda p, why: skipped.append((p, why)))
    assert tried == [] and [p.name for p, _ in skipped] == ["big.png", "big.png"]  # not sent again, reported again
    (tmp_path / "big.png").write_bytes(b"x" * 20)  # shrunk: sent
    bulk.upload(api, bulk.walk([tmp_path]), BatchOptions(), bulk.load_state(tmp_path / "state.json", "http://api"),
                tmp_path / "state.json", 10, lambda _: None, lambda p, why: skipped.append((p, why)))
    assert tried == ["big.png"] and len(skipped) == 2


def test_pipes_are_not_regular_files_and_names_that_are_not_utf8_keep_their_key(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xff.png"))
    odd.write_bytes(b"x")
    found = bulk.walk([tmp_path])
    assert [(p.name, why) for p, why in found.unreadable] == [("pipe.png", "not a regular file")]
    state = bulk.State(url="u", idempotency_key="k", done={bulk.key(odd): "i"})
    again = bulk.State.model_validate_json(state.model_dump_json())  # as the next run reads it
    assert bulk.key(found.files[0]) in again.done and bulk.key(odd).endswith("/\\xff.png")


def test_linked_folders_are_walked_once(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.png").write_bytes(b"x")
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "top" / "loop").symlink_to(tmp_path / "top")  # a link to a folder above: walked once
    assert [p.relative_to(tmp_path).as_posix() for p in bulk.walk([tmp_path / "top"]).files] == ["top/linked/a.png"]


def test_output_names_are_unique_and_short_enough_for_a_file_system() -> None:
    names = bulk.png_names(["a", "A", "a", "é" * 150])
    assert names[:3] == ["a.png", "A (2).png", "a (3).png"]
    assert len(names[3].encode()) <= 204 and names[3].startswith("é")  # cut on a character, not a byte


@pytest.mark.parametrize("record", ["", "[]", '{"batch": "b"}', '{"batch": "b", "files": 3}'])
def test_a_results_folder_with_a_record_denocap_did_not_write_is_refused_in_one_line(record: str,
                                                                                      tmp_path: Path) -> None:
    (tmp_path / bulk.RECORD).write_text(record)
    with pytest.raises(ValueError, match="is not a record denocap wrote; give another --out"):
        bulk.claim_folder(tmp_path, "b", {"a.png": "i" * 32})


def test_runs_claiming_one_folder_take_turns_so_neither_loses_the_others_names(tmp_path: Path) -> None:
    import fcntl
    import json
    import threading
    held = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # another run in the middle of its claim
    second = threading.Thread(target=bulk.claim_folder, args=(tmp_path, "b", {"results.jsonl": None}), daemon=True)
    try:
        second.start()
        second.join(0.5)
        assert second.is_alive() and not (tmp_path / bulk.RECORD).exists()  # it waits for its turn
        bulk.write_file(tmp_path / bulk.RECORD, json.dumps({"batch": "b", "files": ["results.csv"]}).encode())
    finally:
        os.close(held)
    second.join(5)
    assert json.loads((tmp_path / bulk.RECORD).read_text())["files"] == {"results.csv": None, "results.jsonl": None}


def test_files_in_folders_without_an_image_suffix_are_counted_not_lost_silently(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["a.png", "IMG_1.HEIC", "IMG_2.heic", "notes.txt", "README", ".DS_Store", "sub/b.JPG", "sub/c.heic",
                 ".git/HEAD"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    found = bulk.walk([tmp_path, tmp_path / "notes.txt", Path("sub")])  # named: sent whatever its suffix; sub twice
    assert sorted(p.name for p in found.files) == ["a.png", "b.JPG", "notes.txt"]
    assert sorted(p.name for p in found.unnamed) == ["IMG_1.HEIC", "IMG_2.heic", "README", "c.heic"]
    assert bulk.unnamed_note(found.unnamed).startswith(
        "skipped 4 files in the folders without an image suffix (3 .heic, 1 no suffix)")


def test_a_run_killed_while_opening_its_batch_saved_its_key_first(tmp_path: Path) -> None:
    """The rerun opens with the same Idempotency-Key, so the server gives the batch the killed run opened."""
    (tmp_path / "a.png").write_bytes(b"x")
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["Idempotency-Key"])
        raise KeyboardInterrupt  # the kill, after the server opened the batch
    path = tmp_path / "state.json"
    state = bulk.load_state(path, "http://api")
    with pytest.raises(KeyboardInterrupt):
        bulk.upload(Client("http://api", "key", transport=httpx.MockTransport(handler)), bulk.walk([tmp_path]),
                    BatchOptions(), state, path, 10, lambda _: None, lambda *_: None)
    assert bulk.load_state(path, "http://api").idempotency_key == sent[0]


@pytest.mark.parametrize("answer", [httpx.Response(409, json={"detail": "used with a different request",
                                                                "code": "idempotency_conflict"}),
                                    httpx.Response(200, json=BATCH)])  # its batch sealed since
def test_a_saved_key_the_server_refuses_or_whose_batch_is_sealed_is_replaced(answer: httpx.Response,
                                                                             tmp_path: Path) -> None:
    """A run killed while opening keeps its key, even under --new; had the key gone bad, every run would stop."""
    (tmp_path / "a.png").write_bytes(b"x")
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/batches/open":
            keys.append(request.headers["Idempotency-Key"])
            return answer if len(keys) == 1 else httpx.Response(201, json=BATCH | {"id": "c" * 32, "sealed": False})
        if request.url.path.endswith("/seal"):
            return httpx.Response(200, json=BATCH)
        item = {"id": "i" * 32, "batch_id": "c" * 32, "position": 0, "filename": "a.png", "state": "queued",
                "error": None, "deliveries": 0, "has_reference": False, "created_at": BATCH["created_at"],
                "started_at": None, "finished_at": None, "result": None}
        return httpx.Response(200, json={"batch": BATCH, "files": [{"filename": "a.png", "duplicate": False,
                                                                    "item": item}]})
    state = bulk.State(url="http://api", idempotency_key="killed-while-opening")
    assert bulk.upload(Client("http://api", "key", transport=httpx.MockTransport(handler)), bulk.walk([tmp_path]),
                       BatchOptions(), state, tmp_path / "s.json", 10, lambda _: None, lambda *_: None) == "c" * 32
    assert keys[0] == "killed-while-opening" and keys[1] != keys[0] and state.idempotency_key == keys[1]


def test_one_run_at_a_time_holds_a_state_file_and_a_broken_one_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "submits" / "s.json"
    busy = pytest.raises(bulk.StateError, match="another denocap submit of these paths is running")
    with bulk.only_run(path), busy, bulk.only_run(path):
        pass
    with bulk.only_run(path):  # released
        pass
    for broken in (b"", b"{", b'{"url": 1}'):
        path.write_bytes(broken)
        with pytest.raises(bulk.StateError, match=re.escape(f"({path}) is unreadable") + ".*add --new"):
            bulk.load_state(path, "http://api")


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path: Path) -> None:
    """Root reads a chmod 000 folder, so the walk is made to go past PATH_MAX (4,096 bytes) instead."""
    (tmp_path / "top.png").write_bytes(b"x")
    fd = os.open(tmp_path, os.O_RDONLY)
    for _ in range(20):  # 20 x 251 bytes
        os.mkdir("d" * 250, dir_fd=fd)
        inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    found = bulk.walk([tmp_path, tmp_path])  # given twice: reported once
    assert [p.name for p in found.files] == ["top.png"]
    [(path, why)] = found.unreadable
    assert why.startswith("a folder that cannot be listed") and str(path).startswith(str(tmp_path / ("d" * 250)))


def test_a_sealed_batch_and_a_server_gone_while_waiting_are_one_line_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from core import cli
    (tmp_path / "a.png").write_bytes(b"x")
    monkeypatch.setattr("core.client.time.sleep", lambda _: None)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/files"):
            return httpx.Response(409, json={"detail": "the batch is sealed; open a new batch to add files"})
        raise httpx.ConnectError("refused")
    api = Client("http://api", "key", retry=Retry(attempts=2, base=0.1), transport=httpx.MockTransport(handler))
    state = bulk.State(url="http://api", idempotency_key="k", batch_id="b" * 32)
    with pytest.raises(typer.Exit) as sealed:
        cli._upload(api, bulk.walk([tmp_path]), BatchOptions(), state, tmp_path / "s.json", 10)
    with pytest.raises(typer.Exit) as gone:
        cli._wait(api, "b" * 32)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]  # not the bars
    assert (sealed.value.exit_code, gone.value.exit_code) == (2, 1)
    assert errors[0] == (f"error: batch {'b' * 32} of an earlier run of these paths: the batch is sealed; open a new "
                         "batch to add files; add --new for a new batch")
    assert errors[1:] == [f"error: waiting stopped (ConnectError: refused); the batch goes on: denocap status {'b' * 32}"]


FULL = [(409, {"detail": "a batch holds at most 2 files", "code": "batch_full"}),
        (413, {"detail": "a batch holds at most 2 files"})]  # an older server's answer


@pytest.mark.parametrize("status, answer", FULL)
def test_a_full_batch_is_filled_and_sealed_not_taken_for_files_too_large(
        status: int, answer: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from core import cli
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png"):
        (tmp_path / name).write_bytes(b"x")
    held: list[str] = []
    sealed: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/seal"):
            sealed.append(True)
            return httpx.Response(200, json=BATCH)
        names = [n.decode() for n in re.findall(rb'filename="([^"]+)"', request.content)]
        if len(held) + len(names) > 2:
            return httpx.Response(status, json=answer)
        held.extend(names)
        item = {"id": "i" * 32, "batch_id": "b" * 32, "position": 0, "filename": "f", "state": "queued",
                "error": None, "deliveries": 0, "has_reference": False, "created_at": BATCH["created_at"],
                "started_at": None, "finished_at": None, "result": None}
        return httpx.Response(200, json={"batch": BATCH, "files": [{"filename": n, "duplicate": False, "item": item}
                                                                   for n in names]})
    api = Client("http://api", "key", transport=httpx.MockTransport(handler))
    state = bulk.State(url="http://api", idempotency_key="k", batch_id="b" * 32)
    with pytest.raises(typer.Exit) as stopped:
        cli._upload(api, bulk.walk([tmp_path]), BatchOptions(), state, tmp_path / "s.json", 10)
    assert stopped.value.exit_code == 1 and held == ["a.png", "b.png"] and state.too_large == {}
    assert sorted(Path(p).name for p in state.done) == ["a.png", "b.png"]
    err = capsys.readouterr().err
    if status == 409:  # the batch says it is full: sealed, so that it can finish, and a rerun says so again
        assert sealed == [True] and state.sealed and bulk.load_state(tmp_path / "s.json", "http://api").full
        assert (f"error: upload stopped (a batch holds at most 2 files): batch {'b' * 32} is full, and sealed; the "
                "files not sent need another batch: submit them with other paths") in err
    else:
        assert sealed == [] and "a batch holds at most 2 files" in err


def test_a_server_that_parses_fewer_files_a_form_gets_the_chunk_in_halves(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    sent: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/seal"):
            return httpx.Response(200, json=BATCH)
        names = [n.decode() for n in re.findall(rb'filename="([^"]+)"', request.content)]
        if len(names) > 1:  # Starlette's multipart parser under a low open-file limit
            return httpx.Response(400, json={"detail": "Too many files. Maximum number of files is 1."})
        sent.append(names)
        item = {"id": "i" * 32, "batch_id": "b" * 32, "position": 0, "filename": "f", "state": "queued",
                "error": None, "deliveries": 0, "has_reference": False, "created_at": BATCH["created_at"],
                "started_at": None, "finished_at": None, "result": None}
        return httpx.Response(200, json={"batch": BATCH, "files": [{"filename": names[0], "duplicate": False,
                                                                    "item": item}]})
    state = bulk.State(url="http://api", idempotency_key="k", batch_id="b" * 32)
    bulk.upload(Client("http://api", "key", transport=httpx.MockTransport(handler)), bulk.walk([tmp_path]),
                BatchOptions(), state, tmp_path / "s.json", 10, lambda _: None, lambda *_: None)
    assert sent == [["a.png"], ["b.png"], ["c.png"]] and state.sealed


def test_a_state_folder_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the folder should be")
    with pytest.raises(bulk.StateError, match="cannot keep the state of this run in .*DENOCAP_DATA_DIR"), \
            bulk.only_run(tmp_path / "file" / "submits" / "s.json"):
        pass
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(bulk.StateError, match="is unreadable"):
        bulk.load_state(tmp_path / "dir.json", "http://api")


def test_a_file_changed_since_it_was_sent_is_sent_again_and_replaces_its_first_copy(tmp_path: Path) -> None:
    """A photo still being exported when a run read it: the run is stopped, the photo finished; the next run sends
    it again and deletes the item of the half-written copy, and does not send the other sent photo again."""
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"first")
    sent: list[str] = []
    deleted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/seal"):
            return httpx.Response(200, json=BATCH)
        if request.method == "DELETE":
            deleted.append(request.url.path)
            return httpx.Response(204)
        [name] = [n.decode() for n in re.findall(rb'filename="([^"]+)"', request.content)]
        if name == "c.png" and len(sent) == 2:  # the first run stops here
            return httpx.Response(400, json={"detail": "stop"})
        sent.append(name)
        item = {"id": f"{len(sent):032d}", "batch_id": "b" * 32, "position": 0, "filename": name, "state": "queued",
                "error": None, "deliveries": 0, "has_reference": False, "created_at": BATCH["created_at"],
                "started_at": None, "finished_at": None, "result": None}
        return httpx.Response(200, json={"batch": BATCH, "files": [{"filename": name, "duplicate": False,
                                                                    "item": item}]})
    api = Client("http://api", "key", transport=httpx.MockTransport(handler))
    state = bulk.State(url="http://api", idempotency_key="k", batch_id="b" * 32)
    with pytest.raises(ApiError, match="stop"):
        bulk.upload(api, bulk.walk([tmp_path]), BatchOptions(), state, tmp_path / "s.json", 1, lambda _: None,
                    lambda *_: None)
    (tmp_path / "a.png").write_bytes(b"exported")
    found, state = bulk.walk([tmp_path]), bulk.load_state(tmp_path / "s.json", "http://api")
    assert [f.name for f in found.files if bulk.is_sent(state, found, f)] == ["b.png"]
    bulk.upload(api, found, BatchOptions(), state, tmp_path / "s.json", 1, lambda _: None, lambda *_: None)
    assert sent == ["a.png", "b.png", "a.png", "c.png"] and bulk.unsent(state, bulk.walk([tmp_path])) == []
    assert deleted == [f"/items/{1:032d}"] and state.done[bulk.key(tmp_path / "a.png")] == f"{3:032d}"
    os.utime(tmp_path / "b.png", ns=(0, 0))  # the same size, touched: changed too
    assert [f.name for f in bulk.unsent(state, bulk.walk([tmp_path]))] == ["b.png"]


@pytest.mark.parametrize("says_pages", [True, False])
def test_a_request_kept_whose_answer_was_lost_then_sent_changed_leaves_no_item_behind(
        says_pages: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A photo still being exported: the server keeps the first copy, a proxy loses the answer (502), and the retry
    sends the file as it is by then. Before sealing, the run deletes the item it never heard of, found by the name the
    server gives it (a TIFF's first page, a control character escaped), but not the pages of a multi-page file, which
    are items of their own; nothing, of a server that does not say which are pages."""
    monkeypatch.setattr("core.client.time.sleep", lambda _: None)
    photo = tmp_path / "a\x07.tif"
    photo.write_bytes(b"half")
    held: list[dict] = []
    deleted: list[str] = []

    def item(n: int, upload_id: str | None = None) -> dict:
        name = f"a%07 page {2 if upload_id else 1}.tif"  # as the server names a TIFF's pages
        return {"id": f"{n:032d}", "batch_id": "b" * 32, "position": n, "filename": name, "state": "queued",
                "error": None, "deliveries": 0, "has_reference": False, "created_at": BATCH["created_at"],
                "started_at": None, "finished_at": None, "result": None} | ({"upload_id": upload_id} if says_pages
                                                                              else {})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/seal"):
            return httpx.Response(200, json=BATCH)
        if request.method == "DELETE":
            deleted.append(request.url.path.rsplit("/", 1)[1])
            return httpx.Response(204)
        if request.url.path.endswith("/items"):
            return httpx.Response(200, json={"data": held, "count": len(held)})
        held.extend([item(len(held) + 1), item(len(held) + 2, f"{len(held) + 1:032d}")])  # a file of two pages
        if len(held) == 2:
            photo.write_bytes(b"exported")
            return httpx.Response(502)
        return httpx.Response(200, json={"batch": BATCH | {"total": len(held)},
                                         "files": [{"filename": "a%07.tif", "duplicate": False, "item": held[-2]}]})
    api = Client("http://api", "key", transport=httpx.MockTransport(handler))
    state = bulk.State(url="http://api", idempotency_key="k", batch_id="b" * 32)
    bulk.upload(api, bulk.walk([tmp_path]), BatchOptions(), state, tmp_path / "s.json", 1, lambda _: None,
                lambda *_: None)
    assert state.done == {bulk.key(photo): f"{3:032d}"} and deleted == ([f"{1:032d}"] if says_pages else [])


def test_a_write_interrupted_leaves_neither_the_file_nor_its_temporary(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(bulk.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bulk.write_file(tmp_path / "a.png", b"data")
    assert list(tmp_path.iterdir()) == []
