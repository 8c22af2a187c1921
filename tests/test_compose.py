"""docker-compose.yml is valid against the Compose Specification's JSON schema (tests/data/compose-spec.json,
from github.com/compose-spec/compose-spec, Apache-2.0), and every command it runs is one the project has."""
import json
import re
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
