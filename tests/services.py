"""Real processes for integration tests: the HTTP server and Celery workers, started as a user would."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(env: dict[str, str], log: Path, *args: str, wrap: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """`denocap ARGS` as a user would run it; `wrap` runs it inside another command (e.g. ip netns exec NS)."""
    return subprocess.Popen([*wrap, sys.executable, "-m", "core.cli", *args], env={**os.environ, **env},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up: {log.read_text()[-2000:]}")


def wait_batch(client: httpx.Client, batch_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.get(f"/batches/{batch_id}").json()
        if batch["finished"]:
            return batch
        time.sleep(0.5)
    raise TimeoutError(f"batch {batch_id} not finished: {batch}")


def files(*named: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart `files` fields for POST /batches."""
    return [("files", (name, data, "application/octet-stream")) for name, data in named]
