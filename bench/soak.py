"""Soak: many small images through the real HTTP server and N real worker processes on PostgreSQL and Redis;
reports items/s, lost and duplicated items, the peak memory of each worker's process tree, and the mean seconds
of each stage (the timings stored with each result). Each worker has its default shape (one process per core).

python -m bench.soak [--images 2000] [--workers 2] [--batch 500] [--size 64]
(uses a fresh database on DENOCAP_TEST_POSTGRES's server and a Redis database number of its own)
"""
import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine, func, select, text

from core.db import make_engine, migrate, session_factory
from core.tables import Item, ItemState, Result
from tests.conftest import POSTGRES_ADMIN, REDIS, api_key, png, smooth_image
from tests.services import files, free_port, start, stop, wait_http


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (the prefork pool), from /proc."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(proc.name) != pid and int(stat[1]) != pid:
                continue
            total += next(int(line.split()[1]) for line in (proc / "status").read_text().splitlines()
                          if line.startswith("VmRSS:"))
        except (OSError, StopIteration, IndexError):
            continue
    return total


def gallery_timings(client: httpx.Client, batch_id: str, item_id: str) -> dict[str, float]:
    """Seconds to render the first and the last page of a batch in the gallery, and a thumbnail made then cached."""
    def seconds(path: str) -> float:
        t = time.perf_counter()
        client.get(path).raise_for_status()
        return round(time.perf_counter() - t, 4)
    pages = -(-client.get(f"/batches/{batch_id}").json()["total"] // 48)
    signed_in = client.post("/gallery/login", data={"key": client.headers["X-API-Key"]},
                            headers={"Origin": str(client.base_url).rstrip("/")})
    assert signed_in.status_code == 303, signed_in.text  # the gallery takes its own session cookie
    return {"gallery_first_page_s": seconds(f"/gallery/batches/{batch_id}"),
            "gallery_last_page_s": seconds(f"/gallery/batches/{batch_id}?page={pages}"),
            "thumbnail_made_s": seconds(f"/items/{item_id}/thumbs/denoised.jpg"),
            "thumbnail_cached_s": seconds(f"/items/{item_id}/thumbs/denoised.jpg")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    name = f"denocap_soak_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    database = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    broker = f"{REDIS}/15"
    redis.Redis.from_url(broker).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="denocap-soak-"))
    env = {"DENOCAP_DATA_DIR": str(tmp / "data"), "DENOCAP_DATABASE_URL": database, "DENOCAP_BROKER_URL": broker,
           "DENOCAP_LOG_FORMAT": "json", "DENOCAP_TORCH_THREADS": "1", "DENOCAP_MAX_BATCHES_IN_FLIGHT": "1000"}
    migrate(database)
    port = free_port()
    server = start(env, tmp / "server.log", "serve", "--port", str(port))
    workers = [start(env, tmp / f"worker{i}.log", "worker", *(["--beat"] if i == 0 else []))
               for i in range(a.workers)]
    peaks = [0] * a.workers
    running = True

    def sample() -> None:
        while running:
            for i, w in enumerate(workers):
                peaks[i] = max(peaks[i], tree_rss_kib(w.pid))
            time.sleep(0.5)
    threading.Thread(target=sample, daemon=True).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server, tmp / "server.log")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                              headers={"X-API-Key": api_key(database, "soak")})
        images = [png(smooth_image(a.size, a.size, seed=i % 50)) for i in range(a.images)]
        t0, batch_ids = time.perf_counter(), []
        for start_at in range(0, a.images, a.batch):
            chunk = images[start_at:start_at + a.batch]
            r = client.post("/batches", files=files(*[(f"{start_at + i}.png", d) for i, d in enumerate(chunk)]),
                            data={"add_noise": "25"})
            r.raise_for_status()
            batch_ids.append(r.json()["id"])
        engine = make_engine(database)
        sessions = session_factory(engine)
        while True:
            with sessions() as s:
                finished = s.scalar(select(func.count()).select_from(Item).where(
                    Item.state.in_([ItemState.done, ItemState.failed]))) or 0
            if finished >= a.images:
                break
            time.sleep(1)
        elapsed = time.perf_counter() - t0
        with sessions() as s:
            states = Counter(s.scalars(select(Item.state)))
            results = s.scalar(select(func.count()).select_from(Result))
            timings = list(s.scalars(select(Result.timings)))
            first_item = s.scalars(select(Item.id).where(Item.state == ItemState.done).limit(1)).one()
        engine.dispose()
        gallery = gallery_timings(client, batch_ids[-1], first_item)
    finally:
        running = False
        stop(server)
        for w in workers:
            stop(w)
    stored = Counter()
    for i in range(a.workers):
        for line in (tmp / f"worker{i}.log").read_text(errors="replace").splitlines():
            if line.startswith("{") and (entry := json.loads(line)).get("message", "").startswith("item done"):
                stored[entry["item_id"]] += 1
    report = {"images": a.images, "workers": a.workers, "seconds": round(elapsed, 1),
              "items_per_s": round(a.images / elapsed, 2), "done": states[ItemState.done],
              "failed": states[ItemState.failed], "lost": a.images - states[ItemState.done] - states[ItemState.failed],
              "result_rows": results, "stored_twice": sum(n > 1 for n in stored.values()),
              "peak_rss_mib_per_worker": [round(kib / 1024) for kib in peaks], "cpu_count": os.cpu_count(),
              "size": a.size, **gallery,
              "seconds_per_item_by_stage": {k: round(sum(t[k] for t in timings) / len(timings), 3) for k in timings[0]}}
    print(json.dumps(report, indent=1))
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
