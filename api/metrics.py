"""Prometheus metrics read at scrape time from the database and the broker, so every API replica reports the
same truth: items by state, failures by kind, recent per-stage seconds, queue depth."""
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import redis
from fastapi import HTTPException, status
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from core.config import QUEUE
from core.tables import Item, ItemState, Result

RECENT = timedelta(minutes=10)
FRESH = 5.0  # seconds a scrape's text is served again
_scrapes: dict[tuple[str, str], tuple[float, bytes | None]] = {}  # None: that scrape failed
_scraping = threading.Lock()


def scrape(database_url: str, sessions: sessionmaker, broker_url: str) -> bytes:
    """The metrics' text, one scrape at a time and served again for FRESH seconds: the route takes no key, and
    each scrape counts every item, so many scrapers at once cost one set of queries, not one each. A failed scrape
    (the database down) is a 503 for FRESH seconds too, so the waiters do not each wait out the database's
    time-out in turn."""
    key = (database_url, broker_url)
    with _scraping:
        at, text = _scrapes.get(key, (-FRESH, None))
        if time.monotonic() - at >= FRESH:
            registry = CollectorRegistry()
            registry.register(ItemStates(sessions, broker_url))
            try:
                text = generate_latest(registry)
            except BaseException:
                _scrapes[key] = (time.monotonic(), None)  # from when it failed: it may have waited out a time-out
                raise
            _scrapes[key] = (time.monotonic(), text)
        if text is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "metrics unavailable: the last scrape failed",
                                headers={"Retry-After": str(round(FRESH))})
        return text


class ItemStates(Collector):
    def __init__(self, sessions: sessionmaker, broker_url: str) -> None:
        self.sessions = sessions
        self.broker_url = broker_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.sessions() as session:
            counts = dict(session.execute(select(Item.state, func.count()).group_by(Item.state)).all())
            failures = session.execute(select(Item.failure, func.count()).where(Item.state == ItemState.failed)
                                       .group_by(Item.failure)).all()
            since = datetime.now(UTC) - RECENT
            timings = session.scalars(select(Result.timings).where(Result.created_at > since).limit(10_000)).all()
        gauge = GaugeMetricFamily("denocap_items", "Items by state", labels=["state"])
        for state in ItemState:
            gauge.add_metric([state.value], counts.get(state, 0))
        yield gauge
        failed = GaugeMetricFamily("denocap_failed_items", "Failed items by kind of failure", labels=["reason"])
        for kind, n in failures:
            failed.add_metric([kind or "unknown"], n)
        yield failed
        yield stage_seconds(timings)
        if (depth := queue_depth(self.broker_url)) is not None:
            yield GaugeMetricFamily("denocap_queue_depth", "Messages waiting in the broker's queue", value=depth)


def stage_seconds(timings: list[dict[str, float]]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily("denocap_stage_seconds", "Mean seconds per item and stage, items of the last 10 minutes",
                              labels=["stage"])
    totals: dict[str, list[float]] = {}
    for row in timings:
        for stage, seconds in row.items():
            totals.setdefault(stage, []).append(seconds)
    for stage, values in sorted(totals.items()):
        gauge.add_metric([stage], sum(values) / len(values))
    return gauge


def queue_depth(broker_url: str) -> int | None:
    """None when the broker is not Redis, cannot be reached, or its URL is one redis-py does not read (kombu's
    redis+socket://): the scrape still answers."""
    if not broker_url.startswith("redis"):
        return None
    try:
        with redis.Redis.from_url(broker_url, socket_timeout=1, socket_connect_timeout=1) as client:
            return int(client.llen(QUEUE))
    except (redis.RedisError, ValueError):
        return None
