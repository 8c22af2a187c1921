"""A small typed client of the HTTP API (httpx), used by `denocap submit/status/results` and the benchmarks.
It imports neither torch nor FastAPI: responses are read into the API's own models (api/schemas.py).

    with Client("http://127.0.0.1:8000", key) as api:
        batch = api.open_batch(BatchOptions(add_noise=25), idempotency_key="night-42")
        api.append(batch.id, [Path("a.png"), Path("b.jpg")])    # as many times as needed
        api.seal(batch.id)
        for item in api.items(batch.id):
            print(item.filename, item.state, item.result and item.result.caption)
"""
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO, Self

import httpx

from api.schemas import AppendOut, BatchOut, ItemOut, Page
from core.options import BatchOptions

log = logging.getLogger(__name__)


class ApiError(Exception):
    """The API refused the request; `status` is its HTTP status, `code` what the refusal was when the API says
    (e.g. "request_too_large", "batch_full"), the message its detail."""

    def __init__(self, status: int, detail: str, code: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code = status, code


class Unauthorized(ApiError):
    """No key, a wrong or a revoked key (401)."""


class Conflict(ApiError):
    """A sealed or full batch, or an Idempotency-Key used with other options (409)."""


class NotFound(ApiError):
    """No such batch or item for this key (404)."""


ERRORS = {401: Unauthorized, 404: NotFound, 409: Conflict}


@dataclass(frozen=True)
class Retry:
    """Exponential backoff for connection errors and 429/5xx; a Retry-After header wins when it is longer."""
    attempts: int = 8
    base: float = 0.5
    most: float = 30.0

    def pause(self, attempt: int, retry_after: str | None = None) -> float:
        backoff = min(self.most, self.base * 2**attempt)
        return max(backoff, min(_seconds(retry_after), 300.0))


def _seconds(retry_after: str | None) -> float:
    """Retry-After in seconds, given as seconds or as an HTTP date; 0 when it says neither."""
    try:
        asked = float(retry_after or "0")
    except ValueError:
        try:
            when = parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            return 0.0
        asked = (when.replace(tzinfo=when.tzinfo or UTC) - datetime.now(UTC)).total_seconds()
    return asked if math.isfinite(asked) else 0.0


def retried(status: int) -> bool:
    """The server asks to come back later, or a proxy or CDN lost the request (408, 502-504, a CDN's 520-530);
    501 and 505 say the request can never work."""
    return status in (408, 429) or (status >= 500 and status not in (501, 505))


Files = Callable[[ExitStack], list[tuple[str, tuple[str, BinaryIO, str]]]]


FORM_ESCAPES = {ord('"'): "%22"} | {c: f"%{c:02X}" for c in range(0x20) if c != 0x1B}  # as HTML5 forms send them


def sent_name(path: Path) -> str:
    """The name a file is sent under, as the server reads it: a name that is not UTF-8 is shown with U+FFFD, a
    quote and control characters escaped as a form (and httpx) would."""
    return os.fsencode(path.name).decode("utf-8", "replace").translate(FORM_ESCAPES)


class Client:
    """One HTTP connection pool for the API; safe to share between threads."""

    def __init__(self, url: str, key: str, *, timeout: float = 120, retry: Retry = Retry(),
                 transport: httpx.BaseTransport | None = None) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, transport=transport,
                                 headers={"X-API-Key": key})
        self.retry = retry
        self._lock = threading.Lock()
        self.requests = 0  # HTTP requests sent, retries included

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, files: Files | None = None, **kwargs: Any) -> httpx.Response:
        """Sends with retries; `files` opens the request's files afresh for each attempt (a retry re-reads them)."""
        for attempt in itertools.count():
            with ExitStack() as stack:
                with self._lock:
                    self.requests += 1
                try:
                    response = self.http.request(method, path, files=files(stack) if files else None, **kwargs)
                except httpx.TransportError as e:
                    if attempt + 1 >= self.retry.attempts:
                        raise
                    pause = self.retry.pause(attempt)
                    log.warning("%s %s: %s; retrying in %.1f s", method, path, e, pause)
                    time.sleep(pause)
                    continue
            if retried(response.status_code) and attempt + 1 < self.retry.attempts:
                pause = self.retry.pause(attempt, response.headers.get("retry-after"))
                log.warning("%s %s: HTTP %d; retrying in %.1f s", method, path, response.status_code, pause)
                time.sleep(pause)
                continue
            if response.is_redirect:  # not followed: a POST would arrive as a GET, or without its key
                raise ApiError(response.status_code, f"HTTP {response.status_code}: the server redirects to "
                                                     f"{response.headers['location']}; give that as the URL")
            if response.is_error:
                raise ERRORS.get(response.status_code, ApiError)(response.status_code, *_detail(response))
            return response
        raise AssertionError("unreachable")

    def check_key(self) -> None:
        """Raises Unauthorized for a missing, wrong or revoked key; costs one small request."""
        self._send("GET", "/batches", params={"limit": 1})

    def open_batch(self, options: BatchOptions = BatchOptions(), idempotency_key: str | None = None,  # noqa: B008
                   ) -> BatchOut:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._send("POST", "/batches/open", json=options.model_dump(), headers=headers)
        return BatchOut.model_validate(response.json())

    def append(self, batch_id: str, paths: Sequence[Path]) -> AppendOut:
        """Uploads these files into an open batch in one request; content the batch holds already comes back
        as `duplicate`, so resending after a lost answer is safe."""
        def files(stack: ExitStack) -> list[tuple[str, tuple[str, BinaryIO, str]]]:
            return [("files", (sent_name(p), stack.enter_context(p.open("rb")), "application/octet-stream"))
                    for p in paths]
        return AppendOut.model_validate(self._send("POST", f"/batches/{batch_id}/files", files=files).json())

    def seal(self, batch_id: str) -> BatchOut:
        return BatchOut.model_validate(self._send("POST", f"/batches/{batch_id}/seal").json())

    def batch(self, batch_id: str) -> BatchOut:
        return BatchOut.model_validate(self._send("GET", f"/batches/{batch_id}").json())

    def delete_batch(self, batch_id: str) -> str | None:
        """None, or the server's message when it deleted the batch and deletes some of its files later (202: its
        file storage failed, or the batch was large)."""
        return _later(self._send("DELETE", f"/batches/{batch_id}"))

    def delete_item(self, item_id: str) -> str | None:
        return _later(self._send("DELETE", f"/items/{item_id}"))

    def items(self, batch_id: str, state: str | None = None, page: int = 1000,
              noted: bool = False) -> Iterator[ItemOut]:
        """Every item of the batch in upload order (of a state; with a note), fetched a page at a time."""
        for offset in itertools.count(0, page):
            params: dict[str, Any] = ({"limit": page, "offset": offset} | ({"state": state} if state else {})
                                      | ({"noted": "true"} if noted else {}))
            rows = Page[ItemOut].model_validate(self._send("GET", f"/batches/{batch_id}/items", params=params).json())
            yield from rows.data
            if offset + page >= rows.count or not rows.data:
                return

    def get_bytes(self, path: str) -> bytes:
        return self._send("GET", path).content


def _later(response: httpx.Response) -> str | None:
    return _detail(response)[0] if response.status_code == httpx.codes.ACCEPTED else None


def _detail(response: httpx.Response) -> tuple[str, str | None]:
    """The message and the code of an error answer (a proxy's page has neither)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail, code = (body.get("detail"), body.get("code")) if isinstance(body, dict) else (None, None)
    return (detail if isinstance(detail, str) else f"HTTP {response.status_code}: {response.text[:200]}",
            code if isinstance(code, str) else None)


ROW_FIELDS = ["file", "state", "sigma_estimate", "psnr_noisy", "psnr", "ssim_noisy", "ssim", "brisque_noisy",
              "brisque", "caption", "caption_noisy", "denoiser_version", "captioner_version", "error", "notes",
              "item_id"]


def item_row(item: ItemOut) -> dict[str, object]:
    """One flat row per item, the same for `denocap results` and `denocap run --json`."""
    r = item.result
    scores = {k: getattr(r, k) if r else None for k in ROW_FIELDS[2:13]}
    return {"file": item.filename, "state": item.state.value, **scores, "error": item.error,
            "notes": r.notes if r else None, "item_id": item.id}
