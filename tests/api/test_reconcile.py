"""Items whose messages were lost (never sent, or the queue was flushed) are found by the reconciler, which a
worker started with --beat runs on a schedule, and end done exactly once; the same schedule deletes expired batches."""
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core import submit as service
from core.config import Settings
from core.db import make_engine, migrate, session_factory
from core.options import BatchOptions
from core.storage import LocalStorage
from core.tables import Batch, Item, ItemState, Result
from tests.conftest import base_env, png, smooth_image, tenant_id
from tests.services import start, stop

pytestmark = pytest.mark.slow


def test_lost_messages_are_sent_again_and_expired_batches_deleted(weights_dir: Path, postgres_url: str, redis_url: str,
                                                                   tmp_path: Path) -> None:
    env = {**base_env(tmp_path / "data", weights_dir), "DENOCAP_DATABASE_URL": postgres_url,
           "DENOCAP_BROKER_URL": redis_url, "DENOCAP_RECONCILE_EVERY": "1", "DENOCAP_REQUEUE_AFTER": "0",
           "DENOCAP_RETENTION_DAYS": "30", "DENOCAP_EXPIRE_EVERY": "1"}
    migrate(postgres_url)
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url, weights_dir=weights_dir)
    sessions = session_factory(make_engine(postgres_url))
    with sessions.begin() as s:  # rows committed, but no message ever reached the broker
        uploads = [service.Upload(f"{i}.png", png(smooth_image(40, 40, seed=i))) for i in range(3)]
        batch, _ = service.submit(s, LocalStorage(settings.files), settings, tenant_id(s), uploads, BatchOptions())
        batch_id = batch.id
        old, _ = service.submit(s, LocalStorage(settings.files), settings, tenant_id(s),  # finished: a bad file
                                [service.Upload("bad.png", b"no")], BatchOptions())
        old.sealed_at, old_id = datetime.now(UTC) - timedelta(days=31), old.id
    worker = start(env, tmp_path / "worker.log", "worker", "--beat", "--concurrency", "1")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with sessions() as s:
                states = list(s.scalars(select(Item.state).where(Item.batch_id == batch_id)))
            if states == [ItemState.done] * 3:
                break
            time.sleep(1)
        assert states == [ItemState.done] * 3, (tmp_path / "worker.log").read_text()[-3000:]
        time.sleep(3)  # more reconciler runs: done items are never sent or stored again
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(Result).join(Item).where(Item.batch_id == batch_id)) == 3
            assert [i.deliveries for i in s.scalars(select(Item).where(Item.batch_id == batch_id))] == [1, 1, 1]
            assert s.get(Batch, old_id) is None and s.get(Batch, batch_id) is not None  # over 30 days: deleted
    finally:
        stop(worker)


def test_an_expire_message_without_a_retention_of_a_day_deletes_nothing(env: dict[str, str]) -> None:
    """Beat puts its retention in the message; one of 0 (retention turned off, a hand-sent message) is not "now"."""
    from core.config import get_settings
    from core.db import sessions_for
    from worker.tasks import expire
    settings = get_settings()
    migrate(settings.database_url)
    with sessions_for(settings.database_url).begin() as s:
        batch, _ = service.submit(s, LocalStorage(settings.files), settings, tenant_id(s),
                                  [service.Upload("bad.png", b"no")], BatchOptions())  # finished at once
        batch.sealed_at, batch_id = datetime.now(UTC) - timedelta(days=2), batch.id
    assert expire(0) == 0 and expire(3) == 0
    assert expire(1) == 1
    with sessions_for(settings.database_url)() as s:
        assert s.get(Batch, batch_id) is None
