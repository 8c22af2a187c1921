"""Thousands of files through the HTTP API, as `denocap submit` and `denocap results` do it: walk folders, upload
in chunks into one open batch, resume after a kill, fetch the table and the denoised images back.
No torch, no FastAPI: only the client (core/client.py)."""
import csv
import fcntl
import hashlib
import io
import json
import os
import stat
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from pydantic import BaseModel

from api.schemas import ItemOut, spreadsheet_safe
from core.client import ROW_FIELDS, ApiError, Client, Conflict, NotFound, item_row, sent_name
from core.config import open_files
from core.imageio import IMAGE_SUFFIXES
from core.options import BatchOptions
from core.submit import label

CHUNK_BYTES = 256 * 1024**2  # a chunk stays well under the server's request limit (2 GiB by default)


@dataclass
class Found:
    files: list[Path] = field(default_factory=list)  # readable, absolute, in walk order, each once
    sizes: dict[Path, int] = field(default_factory=dict)
    mtimes: dict[Path, int] = field(default_factory=dict)  # ns
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # with the reason; reported and skipped
    unnamed: list[Path] = field(default_factory=list)  # files in folders without an image suffix; reported, skipped


def readable(path: Path) -> str | None:
    """Why the file cannot be sent (a broken link, a folder named like an image, a pipe or a device, no
    permission), or None."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # opening a pipe would wait for a writer; a device never ends
            return "not a regular file"
        with path.open("rb"):
            return None
    except OSError as e:
        return e.strerror or type(e).__name__


def key(path: Path) -> str:
    """A path as the state file keeps it: its bytes as UTF-8, any that are not shown as \\xNN (a name that is not
    UTF-8 would not survive JSON, and would be sent again on every run)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def walk(paths: Iterable[Path]) -> Found:
    """Image files under the paths (folders recursively, in name order). A missing top-level path raises
    FileNotFoundError: that is a bad argument, not a bad file."""
    found, seen = Found(), set()
    for top in paths:
        if not top.exists() and not top.is_symlink():
            raise FileNotFoundError(f"no such file or folder: {top}")
        for path in _candidates(top, found.unnamed, found.unreadable):
            absolute = path.absolute()  # not resolved: a link is sent under its own name
            if absolute in seen:
                continue
            seen.add(absolute)
            if (reason := readable(path)) is not None:
                found.unreadable.append((path, reason))
                continue
            found.files.append(absolute)
            st = path.stat()
            found.sizes[absolute], found.mtimes[absolute] = st.st_size, st.st_mtime_ns
    unnamed = {p.absolute(): p for p in found.unnamed}  # each once, and not those named too
    found.unnamed = [p for a, p in unnamed.items() if a not in seen]
    return found


def unnamed_note(unnamed: list[Path]) -> str:
    """One line on the files a folder walk left out for their names (a phone's .heic, say)."""
    kinds = Counter(p.suffix.lower() or "no suffix" for p in unnamed).most_common()
    return (f"skipped {len(unnamed)} file{'s' * (len(unnamed) != 1)} in the folders without an image suffix "
            f"({', '.join(f'{n} {kind}' for kind, n in kinds)}); name a file on the command line to include it")


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def is_left_out(name: str) -> bool:
    """A file a folder walk leaves out and counts: no image suffix, not hidden (.DS_Store is nobody's photo)."""
    return not is_image_name(name) and not name.startswith(".")


def _candidates(top: Path, unnamed: list[Path], unreadable: list[tuple[Path, str]]) -> Iterator[Path]:
    """A file given by name is sent whatever its suffix; in folders, entries with an image suffix, the other
    files (not hidden ones) added to `unnamed`. A folder named like an image (x.png) is a candidate, not walked:
    it is reported as unreadable rather than vanish, as is a folder that cannot be listed. Linked folders are walked,
    each folder once (a link to a folder above is no loop)."""
    if not top.is_dir():
        yield top
        return
    visited: set[tuple[int, int]] = set()
    def cannot_list(e: OSError) -> None:
        entry = (Path(e.filename), f"a folder that cannot be listed: {e.strerror or type(e).__name__}")
        if entry not in unreadable:  # the folder given twice, or reached by two links
            unreadable.append(entry)
    for folder, dirs, names in os.walk(top, followlinks=True, onerror=cannot_list):
        here, st = Path(folder), os.stat(folder)
        if (st.st_dev, st.st_ino) in visited:
            dirs[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        yield from (here / n for n in sorted(names + dirs) if is_image_name(n))
        if not any(part.startswith(".") for part in here.relative_to(top).parts):  # not a .git's insides
            unnamed += (here / n for n in sorted(names) if is_left_out(n))
        dirs[:] = sorted(d for d in dirs if not is_image_name(d))


class State(BaseModel):
    """What a `denocap submit` run has done, so a second run after a kill sends only what is missing."""
    url: str
    idempotency_key: str  # opening again with it gives the same batch, even if the kill came before batch_id was saved
    batch_id: str | None = None
    done: dict[str, str] = {}  # file path -> item id
    stamps: dict[str, tuple[int, int]] = {}  # file path -> (size, mtime in ns) as the walk saw it before sending
    too_large: dict[str, int] = {}  # file path -> its size when the server refused it in a request of its own
    replaced: list[str] = []  # items of files changed since they were sent, to delete from the batch
    total: int = 0  # items the batch held at the last answer, less those replaced since
    sealed: bool = False
    full: bool = False  # sealed because the batch held as many files as a batch may


def state_file(folder: Path, url: str, paths: list[Path], options: BatchOptions) -> Path:
    """One state per (server, paths given, options): the same command line finds its batch again."""
    what = json.dumps([url.rstrip("/"), sorted(map(str, paths)), options.model_dump()], sort_keys=True)
    return folder / f"{hashlib.sha256(what.encode()).hexdigest()[:32]}.json"


class StateError(ValueError):
    """The state of an earlier run cannot be read, or another run holds it."""


def load_state(path: Path, url: str) -> State:
    if path.exists():
        try:
            return State.model_validate_json(path.read_bytes())
        except (ValueError, OSError) as e:
            raise StateError(f"the state of an earlier run of these paths ({path}) is unreadable ({type(e).__name__}); "
                             "add --new for a new batch") from e
    return State(url=url, idempotency_key=new_key())


def new_key() -> str:
    return f"denocap-submit-{uuid.uuid4().hex}"


def left_open(path: Path) -> State | None:
    """The state of an earlier run of these paths that left its batch open (killed, or stopped), or None."""
    try:
        earlier = State.model_validate_json(path.read_bytes())
    except (ValueError, OSError):  # none, or the unreadable state --new replaces
        return None
    return None if earlier.sealed else earlier


def start_over(path: Path) -> None:
    """--new: the earlier run's batch and files are forgotten. A run killed before it learnt its batch's id keeps its
    key: the batch the server may have opened with it holds nothing yet, and becomes the new one."""
    earlier = left_open(path)
    if earlier is None or earlier.batch_id is not None:
        path.unlink(missing_ok=True)


@contextmanager
def only_run(path: Path) -> Iterator[None]:
    """One run at a time per state file: a second `submit` of the same paths would open a second batch."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise StateError(f"cannot keep the state of this run in {path.parent}: {e.strerror or e}; "
                         "set DENOCAP_DATA_DIR to a folder you can write") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError("another denocap submit of these paths is running; let it finish") from None
        yield
    finally:
        os.close(fd)


def save_state(path: Path, state: State) -> None:
    """A kill mid-write leaves the previous state, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, state.model_dump_json().encode())


def chunks(files: list[Path], sizes: dict[Path, int], most: int, most_bytes: int = CHUNK_BYTES) -> Iterator[list[Path]]:
    chunk: list[Path] = []
    total = 0
    for path in files:
        if chunk and (len(chunk) >= most or total + sizes[path] > most_bytes):
            yield chunk
            chunk, total = [], 0
        chunk.append(path)
        total += sizes[path]
    if chunk:
        yield chunk


@dataclass(frozen=True)
class Uploaded:
    files: int
    bytes: int
    duplicates: int  # the server had them already (a chunk sent before a kill, or the same content twice)
    replaced: int = 0  # files changed since an earlier run sent them: their first copies are deleted


def too_large(state: State, found: Found) -> list[Path]:
    """Files the server refused as too large for a request in an earlier run, and no smaller since: not sent again."""
    return [f for f in found.files if found.sizes[f] >= state.too_large.get(key(f), found.sizes[f] + 1)]


def stamp(found: Found, path: Path) -> tuple[int, int]:
    return found.sizes[path], found.mtimes[path]


def is_sent(state: State, found: Found, path: Path) -> bool:
    """Sent in an earlier run and not changed since (a photo still being exported when that run read it, say)."""
    k = key(path)
    return k in state.done and tuple(state.stamps.get(k, stamp(found, path))) == stamp(found, path)


def unsent(state: State, found: Found) -> list[Path]:
    """What a run still has to send: files not sent yet, or changed since."""
    refused = set(too_large(state, found))
    return [f for f in found.files if not is_sent(state, found, f) and f not in refused]


def upload(api: Client, found: Found, options: BatchOptions, state: State, path: Path, chunk: int,
           on_chunk: Callable[[Uploaded], None], on_unreadable: Callable[[Path, str], None]) -> str:
    """Opens (or finds) the batch, appends what the state does not list yet chunk by chunk, saving the state
    after each, and seals it. Returns the batch id."""
    if state.batch_id is None:
        save_state(path, state)  # the key first: a run killed while opening finds the same batch again
        state.batch_id = _open(api, options, state, path)
        save_state(path, state)
    _drop_replaced(api, state, path)  # a run killed before it did
    for f in too_large(state, found):  # reported again
        on_unreadable(f, "larger than the server took in one request in an earlier run")
    todo = unsent(state, found)
    try:
        for part in chunks(todo, found.sizes, min(chunk, open_files() - 64)):  # a part holds each file open
            sendable = []
            for f in part:  # a file may have gone since the walk
                if (reason := readable(f)) is None:
                    sendable.append(f)
                else:
                    on_unreadable(f, reason)
            _append(api, state, path, sendable, found, on_chunk, on_unreadable)
    except ApiError as e:
        if e.code == "batch_full":  # filled: sealed, so that it can finish
            state.full = True
            _seal(api, state, path)
        raise
    if state.total > len(set(state.done.values())) and not found.unreadable and not unsent(state, found):
        _drop_unknown(api, state, found)  # every file is in: any other item is a lost try's
    _seal(api, state, path)
    return state.batch_id


def _open(api: Client, options: BatchOptions, state: State, path: Path) -> str:
    """The batch of the saved key. A key the server refuses for these options (409: the options' form changed since,
    say), or whose batch was sealed since, is replaced by a fresh one: nothing was sent with it yet."""
    try:
        if not (batch := api.open_batch(options, state.idempotency_key)).sealed:
            return batch.id
    except Conflict:
        pass
    state.idempotency_key = new_key()
    save_state(path, state)
    return api.open_batch(options, state.idempotency_key).id


def _seal(api: Client, state: State, path: Path) -> None:
    assert state.batch_id is not None
    api.seal(state.batch_id)
    state.sealed = True
    save_state(path, state)


def _too_large(e: ApiError) -> bool:
    """A 413 about the request's size: the API's code says so; a proxy's page has no code, nor has an older
    server's answer, which also gave 413 for a full batch."""
    return e.code == "request_too_large" or (
        e.status == 413 and e.code is None and not str(e).startswith("a batch holds"))


def _append(api: Client, state: State, path: Path, files: list[Path], found: Found,
            on_chunk: Callable[[Uploaded], None], on_unreadable: Callable[[Path, str], None]) -> None:
    """One request. Answered 413 (over a server's or a proxy's request limit), 400 "Too many files" (Starlette's
    form parser under a low open-file limit) or 409 batch_full (room for fewer), it goes again in halves; a file
    alone over the request limit is recorded, reported and skipped."""
    if not files:
        return
    assert state.batch_id is not None
    try:
        answer = api.append(state.batch_id, files)
    except ApiError as e:
        fewer = e.status == 413 or e.code == "batch_full" or (e.status == 400 and str(e).startswith("Too many files"))
        if not fewer or (len(files) == 1 and not _too_large(e)):
            raise
        if len(files) == 1:
            state.too_large[key(files[0])] = found.sizes[files[0]]
            save_state(path, state)
            on_unreadable(files[0], f"larger than the server takes in one request: {e}")
            return
        for half in (files[:len(files) // 2], files[len(files) // 2:]):
            _append(api, state, path, half, found, on_chunk, on_unreadable)
        return
    earlier = {state.done[key(f)] for f in files if key(f) in state.done}
    state.done.update((key(f), a.item.id) for f, a in zip(files, answer.files, strict=True))
    state.stamps.update((key(f), stamp(found, f)) for f in files)
    replaced = earlier - set(state.done.values())  # not an item another file still is (the same content)
    state.replaced += sorted(replaced)
    state.total = answer.batch.total
    save_state(path, state)
    on_chunk(Uploaded(len(files), sum(found.sizes[f] for f in files), sum(a.duplicate for a in answer.files),
                      len(replaced)))
    _drop_replaced(api, state, path)


def _drop_unknown(api: Client, state: State, found: Found) -> None:
    """Deletes the items of the batch that no file is, of a file's name that is another item now: a request the
    server kept whose answer was lost (a proxy's 502, a kill before the state was saved), sent again after the file
    changed. Not against a server that does not say which items are a file's later pages."""
    assert state.batch_id is not None
    items = list(api.items(state.batch_id))
    if not all("upload_id" in i.model_fields_set for i in items):
        return
    known = set(state.done.values())
    names = {label(sent_name(f), 0, page) for f in found.files for page in (None, 1)}  # as the server names items
    for item in items:
        if item.upload_id is None and item.id not in known and item.filename in names:
            try:
                api.delete_item(item.id)
            except NotFound:
                pass


def _drop_replaced(api: Client, state: State, path: Path) -> None:
    """Deletes the items of files that changed after they were sent (a photo still being exported then): the batch
    holds each file once, as it is now."""
    while state.replaced:
        try:
            api.delete_item(state.replaced[0])
        except NotFound:  # deleted already: the answer to an earlier try was lost
            pass
        state.replaced.pop(0)
        state.total -= 1
        save_state(path, state)


def output_names(items: list[ItemOut]) -> dict[str, str]:
    """The file name of each item's denoised PNG: its upload's name, `name (2).png` for the second of a name.
    Made from all items in upload order, so a second run gives every item the same name (and can skip it)."""
    stems = [PurePath(i.filename.replace("\\", "/")).stem or i.id for i in items]
    return dict(zip((i.id for i in items), png_names(stems), strict=True))


def png_names(stems: list[str], most: int = 200, taken: set[str] | None = None) -> list[str]:
    """`stem.png` for each, `stem (2).png` for the second of a stem (case-insensitively: one folder may not tell
    them apart; also apart from the names in `taken`, which grows), a stem cut to `most` bytes (a name a file system
    takes, with room for a temporary suffix)."""
    names: list[str] = []
    taken = set() if taken is None else taken
    for stem in stems:
        stem = cut(stem, most)
        name, n = f"{stem}.png", 1
        while name.lower() in taken:
            n += 1
            name = f"{stem} ({n}).png"
        taken.add(name.lower())
        names.append(name)
    return names


def cut(name: str, most: int) -> str:
    """The name cut on a character to at most `most` bytes; a name's bytes that are not UTF-8 kept as they are."""
    while len(os.fsencode(name)) > most:
        name = name[:-1]
    return name


def write_file(path: Path, data: bytes) -> None:
    """A temporary file renamed into place: `path` exists only when complete, and a link there is replaced, not
    written through (to the file it points at, perhaps an input)."""
    tmp = path.with_name(f".part-{uuid.uuid4().hex}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:  # a full disk, or Ctrl-C mid-write: no hidden .part file left behind
        tmp.unlink(missing_ok=True)
        raise


def write_table(items: list[ItemOut], names: dict[str, str], path: Path, form: str) -> None:
    rows = [item_row(i) | {"image": names[i.id] if i.result else None} for i in items]
    text = io.StringIO(newline="")
    if form == "csv":
        writer = csv.DictWriter(text, fieldnames=[*ROW_FIELDS, "image"])
        writer.writeheader()
        writer.writerows(map(spreadsheet_safe, rows))
    else:
        text.writelines(json.dumps(row) + "\n" for row in rows)
    write_file(path, text.getvalue().encode())


RECORD = ".denocap-results.json"  # in a results folder: whose results its files are, a PNG's item by its name


def claim_folder(out: Path, batch_id: str, names: dict[str, str | None]) -> dict[str, str | None]:
    """Records in `out` which item each of these files is (None: a table), before any is written, so a later run
    knows a file there as its own (complete: downloads are renamed into place); an image an earlier run wrote whose
    name no item has now (its item was deleted) is removed. Returns what the record said before. ValueError when
    `out` holds another batch's results, or a file of one of these names that no run for this batch wrote (the
    user's own)."""
    path = out / RECORD
    with _locked(out):  # two runs into one folder: each reads the record the other wrote
        try:
            record = json.loads(path.read_text()) if path.exists() else {"batch": batch_id, "files": {}}
            owner, files = str(record["batch"]), record["files"]
            ours = {str(n): None for n in files} if isinstance(files, list) else {  # a list: before items were kept
                str(n): None if i is None else str(i) for n, i in files.items()}
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise ValueError(f"{path} is not a record denocap wrote; give another --out") from None
        if owner != batch_id:
            raise ValueError(f"{out} holds the results of batch {owner}; give another --out")
        clash = next((n for n in names if n not in ours and (out / n).exists()), None)
        if clash:
            raise ValueError(f"{out / clash} is there and is no result of this batch (a folder filled before "
                             f"denocap kept {RECORD} has none); give another --out")
        gone = [n for n, item in ours.items() if item is not None and n not in names]
        for name in gone:
            (out / name).unlink(missing_ok=True)
        kept = {n: item for n, item in ours.items() if n not in gone}
        write_file(path, json.dumps({"batch": batch_id, "files": dict(sorted((kept | names).items()))}).encode())
    return ours


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (nothing is added to it), released when its descriptor closes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def download_images(api: Client, items: list[ItemOut], names: dict[str, str], out: Path, threads: int,
                    before: dict[str, str | None], on_file: Callable[[bool], None]) -> None:
    """The denoised image of every done item, `threads` at a time; a file already there that an earlier run
    downloaded for the same item (`before`: claim_folder's record) is complete, so it is skipped. `on_file(fetched)`
    after each image."""
    def fetch(item: ItemOut) -> None:
        dest = out / names[item.id]
        fetched = not (before.get(names[item.id]) == item.id and dest.exists())
        if fetched:
            write_file(dest, api.get_bytes(f"/items/{item.id}/denoised.png"))
        on_file(fetched)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fetch, [i for i in items if i.result is not None]))
