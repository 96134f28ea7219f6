"""compose.yaml: two coordinator replicas and PostgreSQL, checked against the coordinator's
settings (no container can run here, and no docker compose is installed to validate it)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from coordinator.config import BlobBackend, Settings

ROOT = Path(__file__).resolve().parent.parent
COORDINATORS = ("coordinator-a", "coordinator-b")
# what an operator exports before `docker compose up` (README, "Several coordinators")
EXPORTED = {
    "FEDREC_ADMIN_TOKEN": "fra_compose-admin",
    "FEDREC_SECRET_KEY": "compose-secret",
    "FEDREC_AUDIT_KEY": "compose-audit-key",
}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_]+)(?::(?P<op>[-?])(?P<arg>[^}]*))?\}")


def _interpolate(value: str, exported: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if exported.get(name):
            return exported[name]
        if op == "-":
            return str(arg)
        raise KeyError(f"{name} must be exported: {arg}")

    return _VARIABLE.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _env(service: dict[str, Any], exported: dict[str, str] = EXPORTED) -> dict[str, str]:
    return {k: _interpolate(str(v), exported) for k, v in service["environment"].items()}


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", *COORDINATORS}
    for name in COORDINATORS:
        service = compose["services"][name]
        assert service["build"] == "."
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "pg_isready" in " ".join(compose["services"]["postgres"]["healthcheck"]["test"])


def test_every_variable_is_a_setting_and_the_settings_validate(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = {f"FEDREC_{name.upper()}" for name in Settings.model_fields}
    for name in COORDINATORS:
        env = _env(compose["services"][name])
        assert set(env) <= fields, set(env) - fields
        with monkeypatch.context() as patch:  # the container's environment, and only it
            for key in [key for key in os.environ if key.startswith("FEDREC_")]:
                patch.delenv(key)
            for key, value in env.items():
                patch.setenv(key, value)
            settings = Settings(_env_file=None)
        assert settings.blob_store is BlobBackend.postgres
        assert settings.host == "0.0.0.0"
        assert settings.resolved_database_url.startswith("postgresql+psycopg://fedrec:")


def test_replicas_share_the_database_and_the_secrets(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]["environment"]
    envs = [_env(compose["services"][name]) for name in COORDINATORS]
    shared = ("FEDREC_DATABASE_URL", "FEDREC_ADMIN_TOKEN", "FEDREC_SECRET_KEY", "FEDREC_AUDIT_KEY")
    for key in shared:
        assert envs[0][key] == envs[1][key], key
    # one signing key for both: the same compose secret, mounted where the setting points
    for name, env in zip(COORDINATORS, envs, strict=True):
        assert compose["services"][name]["secrets"] == ["fedrec_signing_key"]
        assert env["FEDREC_SIGNING_KEY_FILE"] == "/run/secrets/fedrec_signing_key"
    assert compose["secrets"]["fedrec_signing_key"]["file"] == "./secrets/signing_key.pem"
    url = make_url(envs[0]["FEDREC_DATABASE_URL"])
    assert (url.host, url.port, url.database, url.username) == (
        "postgres",
        5432,
        postgres["POSTGRES_DB"],
        postgres["POSTGRES_USER"],
    )
    assert url.password == _interpolate(postgres["POSTGRES_PASSWORD"], {})


def test_the_shared_secrets_must_be_exported(compose: dict[str, Any]) -> None:
    service = compose["services"]["coordinator-a"]
    for missing in EXPORTED:
        with pytest.raises(KeyError, match=missing):
            _env(service, {k: v for k, v in EXPORTED.items() if k != missing})


def test_ports_and_volumes(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "EXPOSE 8000" in dockerfile
    assert "FEDREC_DATA_DIR=/data" in dockerfile
    host_ports, volumes = set(), set()
    for name in COORDINATORS:
        service = compose["services"][name]
        (mapping,) = service["ports"]
        host, container = mapping.split(":")
        assert container == _env(service)["FEDREC_PORT"] == "8000"
        host_ports.add(host)
        (volume,) = service["volumes"]
        source, target = volume.split(":")
        assert target == "/data"
        assert source in compose["volumes"]
        volumes.add(source)
    assert len(host_ports) == len(volumes) == 2  # no shared port, no shared filesystem


def test_the_readme_documents_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "compose.yaml" in readme
    assert "docker compose up" in readme
