"""Submitting many files as `denocap submit` does: N small PNGs through the Python client (open batch, appends of
--chunk files, seal) to a real `denocap serve` on PostgreSQL, no worker (the items stay queued). Prints wall time,
requests made, and the API process's resident memory when idle and at its peak (VmHWM, from /proc).

python -m bench.submit [--images 10000] [--chunk 50] [--size 64]
(uses a fresh database on DENOCAP_TEST_POSTGRES's server and Redis database 14, both emptied afterwards)
"""
import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis

from core import bulk
from core.client import Client
from core.db import migrate
from core.options import BatchOptions
from tests.conftest import REDIS, api_key, fresh_database, png
from tests.services import free_port, start, stop, wait_http


def status_kib(pid: int, field: str) -> int:
    """A memory line of /proc/PID/status in KiB: VmRSS (now) or VmHWM (the peak since the process started)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def write_images(folder: Path, n: int, size: int) -> None:
    """Distinct images (a pixel holds the number), so the server's content dedupe keeps every one."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    folder.mkdir(parents=True)
    for i in range(n):
        base[0, 0], base[0, 1], base[0, 2] = i % 256, (i // 256) % 256, i // 65536
        (folder / f"{i:06d}.png").write_bytes(png(base))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="denocap-bench-submit-"))
    write_images(tmp / "images", a.images, a.size)
    broker = f"{REDIS}/14"
    with fresh_database("denocap_submit") as database:
        try:
            report = measure(database, broker, tmp, a.chunk)
        finally:
            redis.Redis.from_url(broker).flushdb()
    print(json.dumps({"images": a.images, "size": a.size, "chunk": a.chunk, **report,
                      "cpu_count": os.cpu_count()}, indent=1))


def measure(database: str, broker: str, tmp: Path, chunk: int) -> dict[str, object]:
    env = {"DENOCAP_DATA_DIR": str(tmp / "data"), "DENOCAP_DATABASE_URL": database, "DENOCAP_BROKER_URL": broker}
    migrate(database)
    port = free_port()
    server = start(env, tmp / "server.log", "serve", "--port", str(port))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", server, tmp / "server.log")
        with Client(url, api_key(database, "bench")) as api:
            api.check_key()  # the first authenticated request loads what every request needs
            idle = status_kib(server.pid, "VmRSS")
            found = bulk.walk([tmp / "images"])
            state = bulk.State(url=url, idempotency_key=uuid.uuid4().hex)
            t0 = time.perf_counter()
            batch_id = bulk.upload(api, found, BatchOptions(), state, tmp / "state.json", chunk,
                                   lambda _: None, lambda path, reason: print(f"{path}: {reason}"))
            seconds = time.perf_counter() - t0
            total = api.batch(batch_id).total
            requests = api.requests
        peak = status_kib(server.pid, "VmHWM")
    finally:
        stop(server)
    return {"in_batch": total, "bytes": sum(found.sizes.values()), "seconds": round(seconds, 1),
            "files_per_s": round(total / seconds, 1), "requests": requests,
            "api_idle_rss_mib": round(idle / 1024), "api_peak_rss_mib": round(peak / 1024),
            "peak_growth_mib": round((peak - idle) / 1024)}


if __name__ == "__main__":
    main()
