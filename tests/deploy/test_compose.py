"""The deployment files, checked without a Docker engine: docker-compose.yml parses, every
``WREG_*`` variable it sets is a real setting, and the Dockerfile runs a real command."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from wreg._config import ClientSettings
from wreg_server.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def server_variables() -> set[str]:
    names = {f"WREG_{name.upper()}" for name in ServerSettings.model_fields}
    aliases = {
        str(f.validation_alias)
        for f in ServerSettings.model_fields.values()
        if isinstance(f.validation_alias, str)
    }
    return names | aliases


def client_variables() -> set[str]:
    return {f"WREG_{f.name.upper()}" for f in dataclasses.fields(ClientSettings)}


def test_services_healthchecks_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "wreg"} <= set(services)
    for name in ("postgres", "minio", "wreg"):
        assert services[name]["healthcheck"]["test"], name
    assert set(compose["volumes"]) >= {"pgdata", "miniodata"}
    mounted = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", [])}
    assert {"pgdata", "miniodata"} <= mounted
    wreg = services["wreg"]
    assert wreg["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert wreg["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert "wreg-server db upgrade" in " ".join(wreg["command"])
    assert "mc mb" in " ".join(services["minio-init"]["command"])


def test_environment_names_are_real_settings(compose: dict[str, Any]) -> None:
    known = server_variables() | client_variables()
    for name, service in compose["services"].items():
        for var in environment(service):
            if var.startswith("WREG_"):
                assert var in known, f"{name}: {var} is not a wreg setting"
    env = environment(compose["services"]["wreg"])
    assert env["WREG_STORE"] == "s3"
    assert env["WREG_DATABASE_URL"].startswith("postgresql+asyncpg://")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert var in env
        assert var in server_variables()
    # The values parse as the server would parse them: strings, as in its environment,
    # that the settings' field types turn into bools, ints and URLs.
    values: dict[str, Any] = {
        k.removeprefix("WREG_").lower(): v for k, v in env.items() if k.startswith("WREG_")
    }
    settings = ServerSettings(**values)
    assert settings.store == "s3"
    assert not settings.is_sqlite
    assert settings.auth_enabled, "a deployment reachable from other hosts needs WREG_AUTH=on"


def test_credentials_match_between_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    minio, wreg = environment(services["minio"]), environment(services["wreg"])
    assert wreg["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert wreg["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert wreg["WREG_S3_BUCKET"] in " ".join(services["minio-init"]["command"])
    pg = environment(services["postgres"])
    assert f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres" in wreg["WREG_DATABASE_URL"]


def test_dockerfile_runs_an_installed_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M), "must not run as root"
    assert 'pip install ".[server]"' in dockerfile
    cmd = json.loads(re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)[-1])
    assert cmd[0] in scripts
    assert cmd[1] == "serve"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - checks the compose file's address, binds nothing


def test_deploy_examples_use_real_variables() -> None:
    known = client_variables() | server_variables()
    for path in (ROOT / "deploy").iterdir():
        text = path.read_text()
        for var in re.findall(r"\bWREG_[A-Z_]+", text):
            assert var in known, f"{path.name}: {var}"
    assert "wreg cache warm --from" in (ROOT / "deploy" / "wreg-cache-warm.cron").read_text()
    service = (ROOT / "deploy" / "wreg-cache-warm.service").read_text()
    assert "Type=oneshot" in service
    assert "cache warm" in service
    assert "OnUnitActiveSec=" in (ROOT / "deploy" / "wreg-cache-warm.timer").read_text()
