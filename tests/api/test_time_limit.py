"""An item over the task's time limit fails alone, with the reason; the rest of its task finishes (issue #19).
A module of its own: its worker must not share a queue with another module's."""
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.api.conftest import running_stack
from tests.conftest import api_key, png, smooth_image
from tests.services import files, wait_batch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slow_stack(weights_dir: Path, postgres_url: str, redis_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A server and a worker whose tasks may run 2 s (soft limit), four items a task."""
    tmp = tmp_path_factory.mktemp("slow")
    with running_stack(tmp, weights_dir, postgres_url, redis_url, task_soft_time_limit="2",
                       task_time_limit="60", micro_batch="4") as url:
        yield url, tmp


def big_png() -> bytes:
    rng = np.random.default_rng(0)
    return png(rng.integers(0, 256, (3000, 3000, 3), dtype=np.uint8), compress_level=1)


def test_a_time_out_fails_its_own_item_and_the_rest_finish(slow_stack: tuple[str, Path], postgres_url: str) -> None:
    url, tmp = slow_stack
    with httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": api_key(postgres_url, "slow")}) as c:
        body = files(("huge.png", big_png()), *[(f"s{i}.png", png(smooth_image(32, 32, seed=i))) for i in range(3)])
        batch = c.post("/batches", files=body).json()
        wait_batch(c, batch["id"], timeout=240)
        items = {i["filename"]: i for i in c.get(f"/batches/{batch['id']}/items").json()["data"]}
    assert items["huge.png"]["state"] == "failed" and items["huge.png"]["error"].startswith("time limit"), \
        (tmp / "worker.log").read_text()[-2000:]
    assert all(items[f"s{i}.png"]["state"] == "done" for i in range(3))


