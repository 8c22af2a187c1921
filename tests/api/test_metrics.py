"""/metrics answers whatever the broker (its queue depth is left out, never a 500 for the whole scrape), and many
scrapers at once cost one scrape."""
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi import HTTPException
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api import metrics
from api.metrics import queue_depth, scrape
from core.db import make_engine, migrate, session_factory


@pytest.mark.parametrize("url", ["redis+socket:///tmp/no-such.sock", "redis://127.0.0.1:1/0", "amqp://guest@host//"])
def test_a_broker_it_cannot_read_gives_no_depth(url: str) -> None:
    assert queue_depth(url) is None


def test_scrapers_at_once_cost_one_set_of_queries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The route takes no key and counts every item: 30 anonymous scrapers at once slowed every tenant's requests
    (a hostile pass measured 5 ms -> 0.6 s) and could take the pool's connections."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    sessions, opened = session_factory(make_engine(url)), []

    def counted() -> Session:
        opened.append(1)
        return sessions()
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda _: scrape(url, counted, "amqp://guest@host//"), range(30)))  # type: ignore[arg-type]
    assert len(opened) == 1 and len(set(texts)) == 1 and b'denocap_items{state="done"} 0.0' in texts[0]
    monkeypatch.setattr(metrics, "FRESH", 0.0)
    scrape(url, counted, "amqp://guest@host//")  # type: ignore[arg-type]
    assert len(opened) == 2


def test_a_failed_scrape_is_a_503_for_the_others_not_a_wait_each(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The database down: each waiting scraper ran its own scrape after the one before failed, one at a time; and
    a failure that took longer than FRESH (a connect time-out) must still count from when it failed."""
    url, tries = f"sqlite:///{tmp_path / 'down.sqlite'}", []
    monkeypatch.setattr(metrics, "FRESH", 0.3)

    def down() -> Session:
        tries.append(1)
        time.sleep(0.5)
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    def one(_: int) -> int:
        try:
            scrape(url, down, "amqp://guest@host//")  # type: ignore[arg-type]
        except OperationalError:
            return 0
        except HTTPException as e:
            return e.status_code
        return 200
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(one, range(8)))
    assert len(tries) == 1 and codes == [0] + [503] * 7
