"""Failed rounds are bounded (issue 12): a short deadline with ``below_quorum: fail``
used to add one failed round per deadline forever; after ``rounds.max_failed_rounds``
the federation is ``failed`` and opens no round again."""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.factories import assert_problem, create_federation, enrol, put_update, update_bytes


def test_the_federation_fails_after_max_failed_rounds(
    client: TestClient, app: FastAPI, admin_headers: dict[str, str]
) -> None:
    fed = create_federation(
        client,
        admin_headers,
        rounds={
            "min_participants": 2,
            "deadline_seconds": 0.05,
            "below_quorum": "fail",
            "max_failed_rounds": 3,
        },
    )
    _, participant = enrol(client, admin_headers, fed["id"])
    url = f"/v1/federations/{fed['id']}"
    for _ in range(20):  # bounded: each tick fails at most one round
        time.sleep(0.06)
        app.state.worker.tick()
        if client.get(url, headers=admin_headers).json()["state"] == "failed":
            break
    federation = client.get(url, headers=admin_headers).json()
    assert federation["state"] == "failed"
    assert federation["current_round"] is None
    history = client.get(f"{url}/rounds", headers=admin_headers).json()["items"]
    assert [r["state"] for r in history] == ["failed"] * 3
    # nothing more happens, however long the timer runs
    time.sleep(0.06)
    app.state.worker.tick()
    assert len(client.get(f"{url}/rounds", headers=admin_headers).json()["items"]) == 3
    upload = put_update(client, fed["id"], 4, update_bytes(round=4), participant)
    assert "failed" in assert_problem(upload, 409, "federation-completed")["detail"]
    # a participant long-polling for the next round is answered at once
    current = client.get(f"{url}/rounds/current?wait=30&after=3", headers=participant)
    assert current.status_code == 200
    assert current.json()["number"] == 3


def test_default_max_failed_rounds(client: TestClient, admin_headers: dict[str, str]) -> None:
    fed = create_federation(client, admin_headers)
    assert fed["rounds"]["max_failed_rounds"] == 100
