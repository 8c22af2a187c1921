"""Prometheus metrics read from the database at scrape time, so every API replica reports the same truth."""
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from core.tables import Item, ItemState


class ItemStates(Collector):
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("denocap_items", "Items by state", labels=["state"])
        with self.sessions() as session:
            counts = dict(session.execute(select(Item.state, func.count()).group_by(Item.state)).all())
        for state in ItemState:
            gauge.add_metric([state.value], counts.get(state, 0))
        yield gauge
        failed = GaugeMetricFamily("denocap_failed_items", "Failed items by reason", labels=["reason"])
        with self.sessions() as session:
            rows = session.execute(select(Item.error, func.count()).where(Item.state == ItemState.failed)
                                   .group_by(Item.error)).all()
        for reason, n in rows:
            failed.add_metric([(reason or "unknown").split(":")[0][:80]], n)
        yield failed
