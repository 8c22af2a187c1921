"""The client's retries (connection errors, 5xx, 429 with Retry-After) and its errors, on a mock transport."""
import httpx
import pytest

from core.client import Client, Conflict, Retry, Unauthorized, item_row

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


def test_a_row_without_a_result_has_every_field() -> None:
    from api.schemas import ItemOut
    item = ItemOut(id="i", batch_id="b", position=0, filename="x.png", state="failed", error="empty file",
                   deliveries=0, has_reference=False, created_at="2026-12-02T00:00:00Z", started_at=None,
                   finished_at=None, result=None)
    row = item_row(item)
    assert row["file"] == "x.png" and row["error"] == "empty file" and row["caption"] is None and len(row) == 15
