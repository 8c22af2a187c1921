"""Fixtures: tiny weights, settings pointed at temporary folders, real PostgreSQL and Redis."""
import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from core import tenants
from core.config import get_settings
from core.db import make_engine, session_factory
from tests.tiny import write_weights

POSTGRES_ADMIN = os.environ.get("DENOCAP_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("DENOCAP_TEST_REDIS", "redis://127.0.0.1:6379")


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_weights(tmp_path_factory.mktemp("weights"))


def base_env(data_dir: Path, weights_dir: Path) -> dict[str, str]:
    return {"DENOCAP_DATA_DIR": str(data_dir), "DENOCAP_WEIGHTS_DIR": str(weights_dir), "DENOCAP_DEVICE": "cpu",
            "DENOCAP_DATABASE_URL": "", "DENOCAP_TORCH_THREADS": "1"}


@pytest.fixture
def env(tmp_path: Path, weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """DENOCAP_* variables for this test (also handed to the processes it starts)."""
    values = base_env(tmp_path / "data", weights_dir)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


@contextmanager
def fresh_database(prefix: str = "denocap") -> Iterator[str]:
    """A fresh, empty database on the machine's PostgreSQL, dropped afterwards (tests and benchmarks)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis database number of its own on the machine's Redis, flushed before and after."""
    import redis
    db = 1 + uuid.uuid4().int % 15
    url = f"{REDIS}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def png(array: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **save)
    return buf.getvalue()


def smooth_image(h: int = 64, w: int = 80, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth photo-like uint8 image (gradients and a disc) so that noise estimates mean something."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(x / 9 + rng.uniform(0, 3)) * np.cos(y / 11)
    disc = ((y - h / 2) ** 2 + (x - w / 2) ** 2 < (min(h, w) / 4) ** 2) * 0.2
    planes = [np.clip(base + disc * (c + 1) / channels, 0, 1) for c in range(channels)]
    img = (np.stack(planes, axis=-1) * 255).round().astype(np.uint8)
    return img[..., 0] if channels == 1 else img


def many_frames(fmt: str, frames: int = 3, h: int = 64, w: int = 80) -> bytes:
    """An animation (GIF, PNG, WEBP) or a multi-page TIFF of `frames` different smooth images."""
    buf = io.BytesIO()
    first, *rest = (Image.fromarray(smooth_image(h, w, seed=seed)) for seed in range(frames))
    first.save(buf, format=fmt, save_all=True, append_images=rest, lossless=True)
    return buf.getvalue()


def tenant_id(session: Session, name: str = "tests") -> str:
    """The id of a tenant for service-level tests (made on first use)."""
    return tenants.tenant_named(session, name, create=True).id


def api_key(database_url: str, tenant: str) -> str:
    """A fresh API key of the tenant, as `denocap apikey create` makes it."""
    engine = make_engine(database_url)
    with session_factory(engine).begin() as session:
        key = tenants.create_key(session, tenant).key
    engine.dispose()
    return key
