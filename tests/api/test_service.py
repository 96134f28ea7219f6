"""The app as a whole: OpenAPI docs, a busy SQLite database becoming 503, reads and health
answering while a round aggregates. (``/healthz`` itself: ``test_health.py``.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.migrate import upgrade
from tests.conftest import ADMIN_TOKEN, SECRET_KEY
from tests.factories import assert_problem, federation_body


def test_docs_and_openapi(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    spec = client.get("/openapi.json").json()
    assert "/v1/federations/{federation_id}/rounds/{number}/update" in spec["paths"]
    upload = spec["paths"]["/v1/federations/{federation_id}/rounds/{number}/update"]["put"]
    assert "application/octet-stream" in upload["requestBody"]["content"]
    assert "409" in upload["responses"]


def test_locked_sqlite_is_a_retryable_503(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    upgrade(f"sqlite:///{db}")
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{db}",
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        sqlite_busy_timeout_ms=100,
        _env_file=None,
    )
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        with TestClient(create_app(settings, run_timer=False)) as client:
            response = client.post(
                "/v1/federations",
                json=federation_body(),
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            problem = assert_problem(response, 503, "service-unavailable")
            assert response.headers["retry-after"] == "1"
            assert "retry" in problem["detail"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with TestClient(create_app(settings, run_timer=False)) as client:
        listing = client.get("/v1/federations", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert listing.json()["items"] == []  # the failed request left nothing behind


def test_health_and_reads_answer_while_a_round_aggregates(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from tests.factories import create_federation, enrol, put_update, update_bytes

    # the documented test-only hook (docs/architecture.md), read by the aggregation job
    monkeypatch.setenv("FEDREC_TEST_AGGREGATION_PAUSE_SECONDS", "4")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(settings, run_timer=False)) as client:
        fid = create_federation(client, admin)["id"]
        _, participant = enrol(client, admin, fid)
        # completing the round starts its aggregation on the worker thread, paused inside
        put_update(client, fid, 1, update_bytes(), participant)
        url = f"/v1/federations/{fid}/rounds/1"
        deadline = time.monotonic() + 3
        while client.get(url, headers=admin).json()["state"] != "aggregating":
            assert time.monotonic() < deadline, "aggregation did not start"
            time.sleep(0.05)
        started = time.monotonic()
        assert client.get("/healthz").status_code == 200
        assert client.get(url, headers=admin).json()["state"] == "aggregating"
        assert time.monotonic() - started < 2.0  # answered during the 4 s aggregation pause
        deadline = time.monotonic() + 10
        while client.get(f"/v1/federations/{fid}", headers=admin).json()["latest_version"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
