"""Scale-out across hosts: the API and two workers each in a network namespace of their own (separate
addresses, separate working folders, no shared storage path), reaching PostgreSQL, Redis and S3 only over the
network. A batch of 50 images finishes with every result stored once and readable from the API."""
import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import api_key, base_env, png, smooth_image
from tests.netns import Network, can_make_namespaces
from tests.services import files, free_port, start, stop, wait_batch, wait_http
from tests.throwaway import ThrowawayPostgres, ThrowawayRedis, ThrowawayS3

pytestmark = pytest.mark.slow
IMAGES = 50


@pytest.fixture
def network() -> Iterator[Network]:
    if not can_make_namespaces():
        pytest.fail("this test makes network namespaces: run it as root with iproute2 installed")
    net = Network()
    yield net
    net.remove()


def test_api_and_two_workers_on_three_hosts(network: Network, weights_dir: Path, tmp_path: Path) -> None:
    addresses = {name: network.host(name) for name in ("api", "worker1", "worker2")}
    db = ThrowawayPostgres(host=network.gateway)
    db.start()
    broker = ThrowawayRedis(tmp_path, host=network.gateway)
    broker.start()
    s3 = ThrowawayS3(tmp_path / "bucket", host=network.gateway)
    procs, logs = [], {}
    try:
        shared = {"DENOCAP_DATABASE_URL": db.url, "DENOCAP_BROKER_URL": broker.url, "DENOCAP_LOG_FORMAT": "json",
                  **s3.env()}
        port = free_port()
        for name, address in addresses.items():
            logs[name] = tmp_path / f"{name}.log"
            env = {**base_env(tmp_path / name, weights_dir), **shared}  # each host its own working folder
            args = ("serve", "--host", address, "--port", str(port)) if name == "api" else ("worker", "--concurrency", "1")
            procs.append(start(env, logs[name], *args, wrap=tuple(network.command(name))))
        url = f"http://{addresses['api']}:{port}"
        wait_http(f"{url}/health", procs[0], logs["api"])
        with httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": api_key(db.url, "hosts")}) as client:
            body = files(*[(f"{i}.png", png(smooth_image(48, 64, seed=i))) for i in range(IMAGES)])
            r = client.post("/batches", files=body, data={"add_noise": "15"})
            assert r.status_code == 201, r.text
            batch = wait_batch(client, r.json()["id"], timeout=300)
            assert batch["counts"]["done"] == IMAGES, batch
            items = client.get(f"/batches/{batch['id']}/items", params={"limit": 100}).json()["data"]
            for item in items:
                image = Image.open(io.BytesIO(client.get(f"/items/{item['id']}/denoised.png").content))
                assert image.size == (64, 48)
        done = Counter()
        for name in ("worker1", "worker2"):
            for line in logs[name].read_text(errors="replace").splitlines():
                if line.startswith("{") and json.loads(line).get("message", "").startswith("item done"):
                    done[(name, json.loads(line)["item_id"])] += 1
        per_item = Counter(item for _, item in done)
        assert set(per_item) == {i["id"] for i in items} and set(per_item.values()) == {1}
        assert {name for name, _ in done} == {"worker1", "worker2"}  # both hosts worked
        for name in addresses:  # nothing was written to any host's own disk: all files went to S3
            assert not (tmp_path / name / "files").exists()
        assert len(list((tmp_path / "bucket" / "denocap" / "items").iterdir())) == IMAGES
    finally:
        for proc in procs:
            stop(proc)
        s3.stop()
        broker.stop()
        db.remove()
