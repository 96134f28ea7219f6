"""FEDREC_BLOB_STORE and its settings: an incomplete choice stops the command with what to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.config import BlobBackend, Settings
from fedrec.cli import main


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FEDREC_DATABASE_URL", "FEDREC_S3_BUCKET", "FEDREC_BLOB_STORE"):
        monkeypatch.delenv(name, raising=False)


def test_local_is_the_default(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, _env_file=None).blob_store is BlobBackend.local


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FEDREC_BLOB_STORE": "postgres"}, "set FEDREC_DATABASE_URL to a postgresql:// URL"),
        ({"FEDREC_BLOB_STORE": "s3"}, "FEDREC_BLOB_STORE=s3 needs FEDREC_S3_BUCKET"),
        ({"FEDREC_BLOB_STORE": "nfs"}, "blob_store: Input should be 'local', 'postgres' or 's3'"),
    ],
)
def test_an_incomplete_choice_exits_with_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(["migrate", "--data-dir", str(tmp_path)])
    message = str(exited.value.code)
    assert message.startswith("invalid coordinator settings: ")
    assert expected in message


def test_postgres_accepts_a_postgres_url(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        blob_store="postgres",
        database_url="postgresql://fedrec@db/fedrec",
        _env_file=None,
    )
    assert settings.resolved_database_url == "postgresql+psycopg://fedrec@db/fedrec"


def test_the_embedded_coordinator_keeps_its_blobs_beside_its_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """simulate and demo run on SQLite: an operator's FEDREC_BLOB_STORE does not apply."""
    import httpx

    from fedrec.local_server import embedded_coordinator

    monkeypatch.setenv("FEDREC_BLOB_STORE", "postgres")
    with embedded_coordinator(tmp_path) as (url, token):
        created = httpx.post(
            f"{url}/v1/federations",
            json={"name": "f", "model": {"kind": "mf", "num_items": 5, "dim": 2}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
    assert len([p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]) == 1  # version 0
