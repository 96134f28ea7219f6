"""/v1/federations/{id}/rounds: aggregation (admin and automatic), completion, long-poll."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from coordinator.domain.lineage import verify_lineage
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    evaluate,
    put_update,
    random_deltas,
    update_bytes,
    wait_round_closed,
    weights,
)


class TestAggregate:
    def test_fedavg_matches_numpy(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fed = create_federation(client, admin_headers)
        fid = fed["id"]
        parts = [enrol(client, admin_headers, fid, f"p{i}")[1] for i in range(3)]
        base = weights(client, fid, 0, admin_headers)
        deltas = [random_deltas(seed) for seed in (1, 2)]
        counts = [10, 30]
        for headers, delta, n in zip(parts[:2], deltas, counts, strict=True):
            body = update_bytes(deltas=delta, num_examples=n)
            assert put_update(client, fid, 1, body, headers).status_code == 201
        response = client.post(f"/v1/federations/{fid}/rounds/1/aggregate", headers=admin_headers)
        assert response.status_code == 201, response.text
        version = response.json()
        assert version["version"] == 1
        assert version["round"] == 1
        assert version["parent"] == 0
        new = weights(client, fid, 1, admin_headers)
        for name in ("item_factors", "item_bias"):
            expected = base[name].astype(np.float64) + sum(
                n * d[name].astype(np.float64) for n, d in zip(counts, deltas, strict=True)
            ) / sum(counts)
            np.testing.assert_array_equal(new[name], expected.astype(np.float32))
        rounds = client.get(f"/v1/federations/{fid}/rounds", headers=admin_headers).json()["items"]
        assert [(r["number"], r["state"], r["result_version"]) for r in rounds] == [
            (1, "closed", 1),
            (2, "open", None),
        ]
        assert rounds[1]["base_version"] == 1
        assert verify_lineage(app.state.context, fid).ok

    def test_no_updates_409(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        response = client.post(
            f"/v1/federations/{fed['id']}/rounds/1/aggregate", headers=admin_headers
        )
        assert_problem(response, 409, "no-updates")

    def test_closed_round_409(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        _, p1 = enrol(client, admin_headers, fed["id"])
        _, p2 = enrol(client, admin_headers, fed["id"], "other")
        put_update(client, fed["id"], 1, update_bytes(), p1)
        client.post(f"/v1/federations/{fed['id']}/rounds/1/aggregate", headers=admin_headers)
        again = client.post(
            f"/v1/federations/{fed['id']}/rounds/1/aggregate", headers=admin_headers
        )
        assert_problem(again, 409, "round-not-open")
        versions = client.get(f"/v1/federations/{fed['id']}/models", headers=admin_headers)
        assert [v["version"] for v in versions.json()["items"]] == [0, 1]

    def test_round_closes_when_all_uploaded(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        fid = fed["id"]
        parts = [enrol(client, admin_headers, fid, f"p{i}")[1] for i in range(2)]
        for seed, headers in enumerate(parts):
            put_update(client, fid, 1, update_bytes(seed=seed), headers)
        closed = wait_round_closed(client, fid, 1, admin_headers)
        assert closed["result_version"] == 1
        assert closed["update_count"] == 2

    def test_federation_completes_after_max_rounds(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fed = create_federation(client, admin_headers, rounds={"max_rounds": 2})
        fid = fed["id"]
        _, headers = enrol(client, admin_headers, fid)
        for number in (1, 2):
            body = update_bytes(round=number, base_version=number - 1, seed=number)
            assert put_update(client, fid, number, body, headers).status_code == 201
            wait_round_closed(client, fid, number, admin_headers)
        stopped = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert (stopped["state"], stopped["current_round"]) == ("evaluating", None)
        late = put_update(client, fid, 3, update_bytes(round=3, base_version=2), headers)
        assert_problem(late, 409, "federation-completed")  # no round opens while evaluating
        assert evaluate(client, fid, 2, headers).status_code == 201  # the final version
        state = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert state["state"] == "completed"
        assert state["current_round"] is None
        assert state["latest_version"] == 2
        late = put_update(client, fid, 3, update_bytes(round=3, base_version=2), headers)
        assert_problem(late, 409, "federation-completed")
        report = verify_lineage(app.state.context, fid)
        assert report.ok
        assert report.checked == 3

    def test_revoked_participant_not_aggregated(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fed = create_federation(client, admin_headers)
        fid = fed["id"]
        p1, h1 = enrol(client, admin_headers, fid, "a")
        _, h2 = enrol(client, admin_headers, fid, "b")
        _, h3 = enrol(client, admin_headers, fid, "c")
        put_update(client, fid, 1, update_bytes(seed=1), h1)
        put_update(client, fid, 1, update_bytes(seed=2), h2)
        client.delete(f"/v1/federations/{fid}/participants/{p1}", headers=admin_headers)
        version = client.post(f"/v1/federations/{fid}/rounds/1/aggregate", headers=admin_headers)
        assert len(version.json()["contributors"]) == 1
        assert version.json()["contributors"] == [hashlib.sha256(update_bytes(seed=2)).hexdigest()]


class TestLongPoll:
    """``GET .../rounds/current?wait=S&after=N``: each test bounds how long the poll took, so
    a long-poll that always sat out its full ``wait`` fails instead of passing slowly."""

    def test_returns_immediately_when_round_is_newer(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fed = create_federation(client, admin_headers)
        started = time.monotonic()
        response = client.get(
            f"/v1/federations/{fed['id']}/rounds/current",
            params={"wait": 30, "after": 0},
            headers=admin_headers,
        )
        assert response.json()["number"] == 1
        assert time.monotonic() - started < 5  # not the 30 s it was allowed to wait

    def test_times_out_with_current_round(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        started = time.monotonic()
        response = client.get(
            f"/v1/federations/{fed['id']}/rounds/current",
            params={"wait": 0.5, "after": 1},
            headers=admin_headers,
        )
        assert response.json()["number"] == 1
        elapsed = time.monotonic() - started
        assert 0.4 <= elapsed < 5  # waited its 0.5 s, and no more than that (plus slack)

    def test_wakes_when_the_next_round_opens(self, client: TestClient, admin_headers: dict) -> None:
        fed = create_federation(client, admin_headers)
        _, participant = enrol(client, admin_headers, fed["id"])
        numbers: list[int] = []
        returned: list[float] = []

        def poll() -> None:
            response = client.get(
                f"/v1/federations/{fed['id']}/rounds/current",
                params={"wait": 30, "after": 1},
                headers=admin_headers,
            )
            numbers.append(response.json()["number"])
            returned.append(time.monotonic())

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        poller.join(timeout=0.5)
        assert poller.is_alive(), "the long-poll returned before a newer round opened"
        uploaded = time.monotonic()
        # the only participant uploads: round 1 closes and round 2 opens
        assert put_update(client, fed["id"], 1, update_bytes(), participant).status_code == 201
        poller.join(timeout=10)
        assert not poller.is_alive(), "the long-poll did not wake when round 2 opened"
        assert numbers == [2]
        assert returned[0] - uploaded < 10

    def test_returns_immediately_once_the_federation_completed(
        self, client: TestClient, admin_headers: dict
    ) -> None:
        fed = create_federation(client, admin_headers, rounds={"max_rounds": 1})
        _, participant = enrol(client, admin_headers, fed["id"])
        put_update(client, fed["id"], 1, update_bytes(), participant)
        wait_round_closed(client, fed["id"], 1, admin_headers)
        started = time.monotonic()
        response = client.get(
            f"/v1/federations/{fed['id']}/rounds/current",
            params={"wait": 30, "after": 1},
            headers=admin_headers,
        )
        assert response.json()["number"] == 1  # the last round: no newer one will open
        assert time.monotonic() - started < 5
