"""What an item costs the shared services: PostgreSQL bytes per finished item (tables and indexes) and the size
of one queue message in Redis, for the capacity note in the README.

python -m bench.footprint [--items 200]   (a fresh database on DENOCAP_TEST_POSTGRES's server, Redis db 14)
"""
import argparse
import tempfile
import uuid
from pathlib import Path

import redis
from celery import Celery
from sqlalchemy import create_engine, text

from core import process, tenants
from core.config import QUEUE, Settings
from core.db import make_engine, migrate, session_factory
from core.options import BatchOptions
from core.storage import LocalStorage
from core.submit import Upload, submit
from tests.conftest import POSTGRES_ADMIN, REDIS, png, smooth_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--items", type=int, default=200)
    a = p.parse_args()
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"denocap_footprint_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(url)
        tmp = Path(tempfile.mkdtemp(prefix="denocap-footprint-"))
        settings = Settings(data_dir=tmp, database_url=url)
        sessions, storage = session_factory(make_engine(url)), LocalStorage(settings.files)
        uploads = [Upload(f"{i}.png", png(smooth_image(64, 64, seed=i))) for i in range(a.items)]
        with sessions.begin() as s:
            tenant = tenants.tenant_named(s, "footprint", create=True).id
            batch, _ = submit(s, storage, settings, tenant, uploads, BatchOptions(add_noise=25))
            ids = [i.id for i in batch.items]
        for start in range(0, len(ids), settings.micro_batch):
            process.process_items(sessions, storage, settings, ids[start:start + settings.micro_batch])
        with sessions() as s:
            size = s.execute(text("SELECT pg_total_relation_size('items') + pg_total_relation_size('results') "
                                  "+ pg_total_relation_size('batches')")).scalar_one()
        print(f"PostgreSQL: {size} bytes for {a.items} done items, {size / a.items:.0f} bytes an item")
        broker = f"{REDIS}/14"
        client = redis.Redis.from_url(broker)
        client.flushdb()
        Celery(broker=broker).send_task("denocap.process_items", args=[ids[:settings.micro_batch]], queue=QUEUE)
        message = client.lindex(QUEUE, 0) or b""
        print(f"Redis: a message of {settings.micro_batch} item ids is {len(message)} bytes "
              f"({client.memory_usage(QUEUE)} bytes of memory as a one-message list)")
        client.flushdb()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"command: python -m bench.footprint --items {a.items}")


if __name__ == "__main__":
    main()
