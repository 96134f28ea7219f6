"""/healthz: liveness."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_healthz_answers_ok_without_a_token(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
