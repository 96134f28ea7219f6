"""``fedrec gc`` and ``fedrec verify-lineage`` on every blob store, against a live federation.

Backends: the local folder (SQLite), PostgreSQL rows, and S3 objects (moto's server on
127.0.0.1) indexed in PostgreSQL. The commands run as an operator runs them: the CLI,
configured by ``FEDREC_*`` variables only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, update

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain.context import Context
from coordinator.migrate import upgrade
from coordinator.store.blobs import sha256_hex
from coordinator.store.files_and_rows import FilesAndRows
from coordinator.store.models import Blob, BlobChunk
from coordinator.store.s3_blobs import S3BlobStore
from fedrec.cli import main
from tests.conftest import ADMIN_TOKEN, SECRET_KEY, _scratch_postgres_database
from tests.factories import create_federation, enrol, put_update, update_bytes, wait_round_closed
from tests.s3_server import new_bucket

TWO_DAYS = 2 * 24 * 3600.0
BACKENDS = [
    "local",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("s3", marks=pytest.mark.postgres),
]


@dataclass
class Deployment:
    """A coordinator's settings as ``FEDREC_*`` variables, and its app's context."""

    env: dict[str, str]
    ctx: Context
    client: TestClient
    s3: Any = None
    bucket: str = ""


@pytest.fixture(params=BACKENDS)
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    backend = str(request.param)
    env = {
        "FEDREC_DATA_DIR": str(tmp_path / "data"),
        "FEDREC_ADMIN_TOKEN": ADMIN_TOKEN,
        "FEDREC_SECRET_KEY": SECRET_KEY,
        "FEDREC_BLOB_STORE": backend,
    }
    s3, bucket = None, ""
    if backend == "s3":
        bucket, s3 = new_bucket(request.getfixturevalue("s3_endpoint"), monkeypatch)
        env |= {
            "FEDREC_S3_BUCKET": bucket,
            "FEDREC_S3_ENDPOINT_URL": str(request.getfixturevalue("s3_endpoint")),
            "FEDREC_S3_REGION": "us-east-1",
        }
    with _database(backend, tmp_path) as url:
        env["FEDREC_DATABASE_URL"] = url
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        app = create_app(Settings(_env_file=None), run_timer=False)
        with TestClient(app) as client:
            yield Deployment(env, app.state.context, client, s3, bucket)


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _database(backend: str, tmp_path: Path) -> Any:
    if backend == "local":
        url = f"sqlite:///{tmp_path / 'fedrec.db'}"
        upgrade(url)
        return _yielding(url)
    return _scratch_postgres_database(template="migrated")


class _yielding:
    def __init__(self, value: str) -> None:
        self.value = value

    def __enter__(self) -> str:
        return self.value

    def __exit__(self, *exc: object) -> None:
        return None


def _age_every_blob(dep: Deployment) -> None:
    """Make every stored blob look stored two days ago."""
    then = time.time() - TWO_DAYS
    if isinstance(dep.ctx.blobs, FilesAndRows):  # and the rows of its small blobs below
        for path in dep.ctx.blobs.files.root.rglob("*"):
            if path.is_file():
                os.utime(path, (then, then))
    with dep.ctx.sessions.begin() as session:
        session.execute(update(Blob).values(stored_at=datetime.fromtimestamp(then, UTC)))


def _lose(dep: Deployment, digest: str) -> None:
    """Remove a blob behind the store's back, as a storage fault would."""
    blobs = dep.ctx.blobs
    if isinstance(blobs, FilesAndRows) and blobs.files.exists(digest):
        blobs.files.path(digest).unlink()
    elif isinstance(blobs, S3BlobStore):
        dep.s3.delete_object(Bucket=dep.bucket, Key=blobs.key(digest))
    else:
        with dep.ctx.sessions.begin() as session:
            session.execute(delete(BlobChunk).where(BlobChunk.digest == digest))
            session.execute(delete(Blob).where(Blob.digest == digest))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _federation(dep: Deployment, admin: dict[str, str]) -> tuple[str, Callable[[], None]]:
    """Round 1 aggregated from two participants; returns the id and a round-2 upload."""
    fid = create_federation(dep.client, admin)["id"]
    parts = [enrol(dep.client, admin, fid, f"p{i}")[1] for i in range(2)]
    for seed, headers in enumerate(parts):
        assert put_update(dep.client, fid, 1, update_bytes(seed=seed), headers).status_code == 201
    assert wait_round_closed(dep.client, fid, 1, admin)["state"] == "closed"

    def upload_round_2() -> None:
        body = update_bytes(round=2, base_version=1, seed=5)
        assert put_update(dep.client, fid, 2, body, parts[0]).status_code == 201

    return fid, upload_round_2


def test_gc_and_verify_lineage(
    deployment: Deployment, admin: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    dep = deployment
    fid, upload_round_2 = _federation(dep, admin)
    orphan = dep.ctx.blobs.put(b"bytes of an upload refused after they were stored")
    _age_every_blob(dep)
    upload_round_2()  # recent and referenced: kept whatever the options

    code, out = _run(capsys, "gc", "--dry-run")
    assert code == 0
    # referenced: versions 0 and 1, two updates of round 1, one of round 2
    assert "would remove 1 " in out, out
    assert "kept 5 referenced" in out, out
    assert dep.ctx.blobs.exists(orphan)

    code, out = _run(capsys, "gc", "--finished-round-updates")
    assert code == 0
    assert "removed 3 " in out, out  # the orphan and round 1's two updates
    assert not dep.ctx.blobs.exists(orphan)

    code, out = _run(capsys, "verify-lineage", fid)
    assert (code, "lineage ok: 2 versions verified" in out) == (0, True), out
    response = dep.client.get(f"/v1/federations/{fid}/models/1/weights", headers=admin)
    assert response.status_code == 200
    assert response.headers["ETag"] == f'"{sha256_hex(response.content)}"'

    _lose(dep, sha256_hex(response.content))
    code, out = _run(capsys, "verify-lineage", fid)
    assert code == 1
    assert "lineage broken at version 1: weights blob is missing" in out, out
