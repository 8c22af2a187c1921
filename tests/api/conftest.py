"""A real stack per test module: PostgreSQL, Redis, one `denocap worker` process and `denocap serve`."""
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.db import migrate
from tests.conftest import api_key, base_env
from tests.services import free_port, start, stop, wait_http


@pytest.fixture(scope="module")
def stack(weights_dir: Path, postgres_url: str, redis_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a real server with one real worker; JSON logs go to stack/*.log."""
    tmp_path = tmp_path_factory.mktemp("stack")
    env = {**base_env(tmp_path / "data", weights_dir), "DENOCAP_DATABASE_URL": postgres_url,
           "DENOCAP_BROKER_URL": redis_url, "DENOCAP_LOG_FORMAT": "json",
           "DENOCAP_MAX_FILES_PER_BATCH": "200", "DENOCAP_MAX_REQUEST_BYTES": str(30 * 1024**2)}
    migrate(postgres_url)
    port = free_port()
    worker = start(env, tmp_path / "worker.log", "worker", "--concurrency", "1")
    server = start(env, tmp_path / "server.log", "serve", "--port", str(port))
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server, tmp_path / "server.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)
        stop(worker)


@pytest.fixture(scope="module")
def client(stack: str, postgres_url: str) -> Iterator[httpx.Client]:
    """Tenant "alpha"."""
    with httpx.Client(base_url=stack, timeout=60, headers={"X-API-Key": api_key(postgres_url, "alpha")}) as c:
        yield c


@pytest.fixture(scope="module")
def other(stack: str, postgres_url: str) -> Iterator[httpx.Client]:
    """Tenant "beta"."""
    with httpx.Client(base_url=stack, timeout=60, headers={"X-API-Key": api_key(postgres_url, "beta")}) as c:
        yield c
