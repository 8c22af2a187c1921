"""Faults in the middle of a batch, on real processes: a worker killed with SIGKILL, Redis restarted empty,
PostgreSQL stopped for 20 s, a worker sent SIGTERM. Every item ends done, and its result is stored once.
Tests that stop a service run their own throwaway Redis or PostgreSQL."""
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from core.db import make_engine, migrate, session_factory
from core.tables import Item, ItemState, Result
from tests.conftest import api_key, base_env, png, smooth_image
from tests.services import files, free_port, start, stop, wait_batch, wait_http
from tests.throwaway import ThrowawayPostgres, ThrowawayRedis

pytestmark = pytest.mark.slow
ITEMS = 24
FAST_LEASE = {"DENOCAP_TASK_SOFT_TIME_LIMIT": "10", "DENOCAP_TASK_TIME_LIMIT": "12",
              "DENOCAP_VISIBILITY_TIMEOUT": "40", "DENOCAP_RECONCILE_EVERY": "2"}  # lease: 42 s


class Stack:
    """`denocap serve` and `denocap worker` processes on the given database and broker, logging JSON."""

    def __init__(self, tmp: Path, weights_dir: Path, database: str, broker: str, **extra: str) -> None:
        self.tmp, self.database = tmp, database
        self.env = {**base_env(tmp / "data", weights_dir), "DENOCAP_DATABASE_URL": database,
                    "DENOCAP_BROKER_URL": broker, "DENOCAP_LOG_FORMAT": "json", **extra}
        self.workers: list = []
        self.logs: list[Path] = []
        migrate(database)
        port = free_port()
        self.server = start(self.env, tmp / "server.log", "serve", "--port", str(port))
        wait_http(f"http://127.0.0.1:{port}/health", self.server, tmp / "server.log")
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                   headers={"X-API-Key": api_key(database, "faults")})

    def worker(self, *args: str):  # type: ignore[no-untyped-def]
        log = self.tmp / f"worker{len(self.workers)}.log"
        self.logs.append(log)
        self.workers.append(start(self.env, log, "worker", "--beat", *(args or ("--concurrency", "1"))))
        return self.workers[-1]

    def submit(self) -> str:
        body = files(*[(f"{i}.png", png(smooth_image(160, 160, seed=i))) for i in range(ITEMS)])
        r = self.client.post("/batches", files=body, data={"add_noise": "20"})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def states(self, batch_id: str) -> Counter:
        engine = make_engine(self.database)
        with session_factory(engine)() as s:
            states = Counter(s.scalars(select(Item.state).where(Item.batch_id == batch_id)))
        engine.dispose()
        return states

    def check_exactly_once(self, batch_id: str, killed_at: datetime | None = None) -> None:
        """Every item done with one result row, and one "item done" log line in all the workers' logs; or none for
        an item finished before a kill -9 (`killed_at`), which can land between its commit and its log line."""
        engine = make_engine(self.database)
        with session_factory(engine)() as s:
            items = s.scalars(select(Item).where(Item.batch_id == batch_id)).all()
            results = s.scalar(select(func.count()).select_from(Result).join(Item).where(Item.batch_id == batch_id))
        engine.dispose()
        assert [i.state for i in items] == [ItemState.done] * ITEMS, self.tail()
        assert results == ITEMS
        stored = Counter(line["item_id"] for line in self.log_lines() if line.get("message", "").startswith("item done"))
        assert set(stored) <= {i.id for i in items} and set(stored.values()) == {1}, stored
        unlogged = [i for i in items if i.id not in stored]
        assert all(killed_at and i.finished_at <= killed_at for i in unlogged), (killed_at, unlogged)

    def log_lines(self) -> Iterator[dict]:
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    yield json.loads(line)

    def tail(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-3000:] for log in self.logs)

    def close(self) -> None:
        self.client.close()
        stop(self.server)
        for w in self.workers:
            stop(w)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


@pytest.fixture
def stack_on(tmp_path: Path, weights_dir: Path) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(database: str, broker: str, **extra: str) -> Stack:
        made.append(Stack(tmp_path, weights_dir, database, broker, **extra))
        return made[-1]
    yield make
    for s in made:
        s.close()


def test_kill_9_worker_mid_batch(stack_on: Callable[..., Stack], postgres_url: str, redis_url: str) -> None:
    stack = stack_on(postgres_url, redis_url, **FAST_LEASE)
    first = stack.worker()
    batch = stack.submit()
    wait_for(lambda: stack.states(batch)[ItemState.done] >= 4, 120, "no progress before the kill")
    killed_at = datetime.now(UTC)
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool children, mid-item
    first.wait()
    stack.worker()
    wait_batch(stack.client, batch, timeout=240)
    stack.check_exactly_once(batch, killed_at)


def test_redis_restart_mid_batch(stack_on: Callable[..., Stack], postgres_url: str, tmp_path: Path) -> None:
    broker = ThrowawayRedis(tmp_path)
    broker.start()
    try:
        stack = stack_on(postgres_url, broker.url, DENOCAP_RECONCILE_EVERY="2", DENOCAP_REQUEUE_AFTER="5")
        stack.worker()
        batch = stack.submit()
        wait_for(lambda: stack.states(batch)[ItemState.done] >= 4, 120, "no progress before the restart")
        broker.stop()  # every queued message is gone
        time.sleep(2)
        broker.start()
        wait_batch(stack.client, batch, timeout=240)
        stack.check_exactly_once(batch)
    finally:
        broker.stop()


def test_postgres_stopped_for_20_s_mid_batch(stack_on: Callable[..., Stack], redis_url: str) -> None:
    db = ThrowawayPostgres()
    db.start()
    try:
        stack = stack_on(db.url, redis_url)
        stack.worker()
        batch = stack.submit()
        wait_for(lambda: stack.states(batch)[ItemState.done] >= 4, 120, "no progress before the stop")
        db.stop()
        answers = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answers.append(stack.client.get(f"/batches/{batch}"))
            time.sleep(1)
        assert answers and all(r.status_code == 503 for r in answers), [r.status_code for r in answers]
        assert answers[0].json()["detail"] == "database unavailable, try again shortly"
        db.start()
        wait_batch(stack.client, batch, timeout=240)
        stack.check_exactly_once(batch)
    finally:
        db.remove()


def test_sigterm_lets_the_worker_finish_its_item(stack_on: Callable[..., Stack], postgres_url: str,
                                                redis_url: str) -> None:
    stack = stack_on(postgres_url, redis_url)
    worker = stack.worker()
    batch = stack.submit()
    wait_for(lambda: stack.states(batch)[ItemState.running] >= 1, 120, "nothing started")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0, stack.tail()
    states = stack.states(batch)
    assert states[ItemState.running] == 0 and states[ItemState.done] >= 1, states  # nothing left half done
    stack.worker()  # the rest is still queued for the next worker
    wait_batch(stack.client, batch, timeout=240)
    stack.check_exactly_once(batch)


def test_a_second_message_for_a_running_item_does_not_run_it_again(stack_on: Callable[..., Stack], postgres_url: str,
                                                                   redis_url: str) -> None:
    """What a broker redelivery looks like (visibility timeout passed, or a reconciler run): another message for
    an item a worker is still running, picked up by a free worker process at once."""
    from celery import Celery
    stack = stack_on(postgres_url, redis_url)
    stack.worker("--concurrency", "2")
    r = stack.client.post("/batches", files=files(("slow.png", png(smooth_image(1400, 1400)))),
                          data={"add_noise": "20"})
    batch, item_id = r.json()["id"], r.json()["items"][0]["id"]
    wait_for(lambda: stack.states(batch)[ItemState.running] == 1, 120, "never started")
    Celery(broker=redis_url).send_task("denocap.process_items", args=[[item_id]], queue="denocap")
    wait_batch(stack.client, batch, timeout=240)
    item = stack.client.get(f"/items/{item_id}").json()
    assert item["state"] == "done" and item["deliveries"] == 1
    stored = [x for x in stack.log_lines() if x.get("message", "").startswith("item done")]
    assert [x["item_id"] for x in stored] == [item_id]
    lines = list(stack.log_lines())
    received = [i for i, x in enumerate(lines) if "received" in x.get("message", "").lower()
                and "process_items" in x.get("message", "")]
    done = next(i for i, x in enumerate(lines) if x.get("message", "").startswith("item done"))
    assert len(received) >= 2 and received[1] < done, stack.tail()  # the second came while the item ran (and
    # was sent again a minute later, to find the item done)
