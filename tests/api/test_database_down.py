"""With the database unreachable the API answers 503 with a message, never a 500."""
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.config import get_settings
from tests.conftest import png, smooth_image
from tests.services import free_port


def test_database_down_is_503(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DENOCAP_DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    get_settings.cache_clear()
    queued: list[list[str]] = []
    client = TestClient(create_app(enqueue=queued.append), raise_server_exceptions=False,
                        headers={"X-API-Key": "dc_" + "0" * 32 + "_secret"})  # checking it needs the database
    for r in (client.get("/health"), client.get("/batches"),
              client.post("/batches", files=[("files", ("a.png", png(smooth_image())))])):
        assert r.status_code == 503, r.text
        assert r.json()["detail"] == "database unavailable, try again shortly"
        assert r.headers["retry-after"] == "5"
    assert queued == []
