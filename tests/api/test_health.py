"""/healthz (liveness) and /readyz (database and blob store)."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from coordinator.config import Settings
from tests.conftest import _admin_engine, postgres_url
from tests.factories import assert_problem


def test_healthz_answers_ok_without_a_token(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_answers_ready_without_a_token(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}


def test_readyz_is_503_once_the_database_is_gone(
    app: FastAPI, client: TestClient, backend: str
) -> None:
    assert client.get("/readyz").status_code == 200
    engine = app.state.context.sessions.kw["bind"]
    if backend == "sqlite":
        engine.dispose()  # pooled connections would keep the deleted file open
        for suffix in ("", "-wal", "-shm"):
            Path(f"{engine.url.database}{suffix}").unlink(missing_ok=True)
    else:
        base = postgres_url()
        assert base is not None
        admin = _admin_engine(base)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{engine.url.database}" WITH (FORCE)'))
        admin.dispose()
    response = client.get("/readyz")
    body = assert_problem(response, 503, "service-unavailable")
    assert body["checks"]["database"].startswith("unreachable")
    # small blobs live as database rows too (FilesAndRows), so the blob check fails with it
    assert body["checks"]["blobs"].startswith("unusable")
    assert "database" in body["detail"]
    assert response.headers["Retry-After"]
    assert client.get("/healthz").status_code == 200  # alive, only not ready


def test_readyz_is_503_without_the_blob_folder(client: TestClient, settings: Settings) -> None:
    shutil.rmtree(settings.blob_dir)
    body = assert_problem(client.get("/readyz"), 503, "service-unavailable")
    assert body["checks"] == {"database": "ok", "blobs": body["checks"]["blobs"]}
    assert "does not exist" in body["checks"]["blobs"]
