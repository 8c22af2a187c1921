"""A real stack per test module: PostgreSQL, Redis, one `denocap worker` process and `denocap serve`."""
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from core.db import migrate
from tests.conftest import api_key, base_env
from tests.services import free_port, start, stop, wait_http


@contextmanager
def running_stack(tmp_path: Path, weights_dir: Path, postgres_url: str, redis_url: str,
                  **settings: str) -> Iterator[str]:
    """A real `denocap serve` and one real `denocap worker`; DENOCAP_<NAME> settings on top of the tests' own."""
    env = {**base_env(tmp_path / "data", weights_dir), "DENOCAP_DATABASE_URL": postgres_url,
           "DENOCAP_BROKER_URL": redis_url, **{f"DENOCAP_{k.upper()}": v for k, v in settings.items()}}
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
def stack(weights_dir: Path, postgres_url: str, redis_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a real server with one real worker; JSON logs go to stack/*.log."""
    with running_stack(tmp_path_factory.mktemp("stack"), weights_dir, postgres_url, redis_url, log_format="json",
                       max_files_per_batch="200", max_request_bytes=str(30 * 1024**2)) as url:
        yield url


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
