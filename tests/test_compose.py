"""docker-compose.yml is valid against the Compose Specification's JSON schema (tests/data/compose-spec.json,
from github.com/compose-spec/compose-spec, Apache-2.0), and every command it runs is one the project has."""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
OURS = {name: s for name, s in COMPOSE["services"].items() if s.get("image", "").startswith("denocap")}


def test_the_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    jsonschema.Draft201909Validator(schema).validate(COMPOSE)
    assert {"api", "worker", "worker-gpu", "beat", "redis", "postgres", "minio", "flower"} <= set(COMPOSE["services"])
    for service in COMPOSE["services"].values():
        assert set(service.get("depends_on", {})) <= set(COMPOSE["services"])
        assert {v.split(":")[0] for v in service.get("volumes", [])} <= set(COMPOSE["volumes"])


def test_shared_state_is_only_redis_postgres_and_s3() -> None:
    redis_cmd = COMPOSE["services"]["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction" and "--appendonly" in redis_cmd
    for name, service in OURS.items():
        assert "volumes" not in service, f"{name} must not need a shared folder"
        assert service["environment"]["DENOCAP_STORAGE"] == "s3"
    schedulers = [n for n, svc in OURS.items() if "beat" in svc["command"] or "--beat" in svc["command"]]
    assert schedulers == ["beat"]  # scaling the workers never multiplies the reconciler
    gpu = COMPOSE["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and COMPOSE["services"]["worker"]["environment"]["DENOCAP_DEVICE"] == "cpu"


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_command_is_one_the_project_has(name: str) -> None:
    """The command with its own options, plus --help: an unknown command or option exits non-zero."""
    command = [re.sub(r"\$\{[^}]*\}", "x", c) for c in OURS[name]["command"]]  # variables as compose fills them
    program = {"denocap": [sys.executable, "-m", "core.cli"],
               "celery": [sys.executable, "-m", "celery"]}[command[0]]
    run = subprocess.run([*program, *command[1:], "--help"], check=False, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Usage" in run.stdout


def test_the_image_runs_the_code_beside_the_migrations_it_applies(tmp_path: Path) -> None:
    """The API migrates at start. The image installs the code editable in WORKDIR with alembic/ beside it (a wheel
    leaves the migrations out): laid out as the Dockerfile copies it, the code finds and applies them."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    install = next(line for line in dockerfile.splitlines() if line.startswith("RUN pip install"))
    assert " -e " in install, install
    app = tmp_path / "app"
    app.mkdir()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, target = line.split()[1:]
            for source in sources:
                copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
                copy(ROOT / source, app / target if target not in ("./", ".") else app / source)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    code = f"import core.db; assert str(core.db.ROOT) == {str(app)!r}, core.db.ROOT; core.db.migrate({url!r})"
    subprocess.run([sys.executable, "-P", "-c", code], check=True, cwd=tmp_path, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(app)})
    tables = {row[0] for row in sqlite3.connect(tmp_path / "db.sqlite").execute("SELECT name FROM sqlite_master")}
    assert {"alembic_version", "batches", "items", "results"} <= tables


def test_the_others_wait_for_the_api_and_the_storage_is_this_hosts_only_and_has_no_public_password() -> None:
    for name, service in OURS.items():
        if name != "api":
            assert service["depends_on"]["api"] == {"condition": "service_healthy"}, name
    assert all(port.startswith("127.0.0.1:") for port in COMPOSE["services"]["minio"]["ports"])
    assert COMPOSE["services"]["minio"]["environment"]["MINIO_ROOT_PASSWORD"].startswith("${MINIO_ROOT_PASSWORD:?")
