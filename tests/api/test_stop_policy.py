"""The stop policy through the API, on SQLite and PostgreSQL: patience and min_delta are
served with the federation, a stopped federation is ``evaluating`` (no round open, a
participant's long-poll says so until it reported), and it deploys the best version."""

from __future__ import annotations

import threading
import time

from fastapi.testclient import TestClient

from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    evaluate,
    put_update,
    update_bytes,
    wait_round_closed,
)

STOP = {"min_participants": 1, "max_rounds": 50, "patience": 1, "min_delta": 0.05}


def _round(client: TestClient, fid: str, number: int, score: float, p: dict, admin: dict) -> None:
    evaluate(client, fid, number - 1, p, metrics={"ndcg@10": score})
    body = update_bytes(round=number, base_version=number - 1, seed=number)
    assert put_update(client, fid, number, body, p).status_code == 201
    assert wait_round_closed(client, fid, number, admin)["state"] == "closed"


def test_policy_is_served_and_validated(client: TestClient, admin_headers: dict) -> None:
    fed = create_federation(client, admin_headers, rounds=STOP)
    assert fed["rounds"]["patience"] == 1
    assert fed["rounds"]["min_delta"] == 0.05
    assert fed["rounds"]["final_evaluation_seconds"] == 600
    default = create_federation(client, admin_headers)
    assert (default["rounds"]["patience"], default["rounds"]["min_delta"]) == (None, 0.0)
    for bad in ({"patience": 0}, {"min_delta": -0.1}, {"final_evaluation_seconds": -1}):
        response = client.post(
            "/v1/federations",
            json={
                "name": "bad",
                "model": {"kind": "mf", "num_items": 5, "dim": 2},
                "rounds": bad,
            },
            headers=admin_headers,
        )
        assert_problem(response, 422, "validation-error")


def test_min_rounds_above_max_rounds_is_a_problem_that_says_what_to_fix(
    client: TestClient, admin_headers: dict
) -> None:
    response = client.post(
        "/v1/federations",
        json={
            "name": "bad",
            "model": {"kind": "mf", "num_items": 5, "dim": 2},
            "rounds": {"max_rounds": 5, "patience": 2, "min_rounds": 8},
        },
        headers=admin_headers,
    )
    body = assert_problem(response, 422, "validation-error")
    assert "min_rounds (8) exceeds max_rounds (5)" in response.text, body
    assert "lower min_rounds or raise max_rounds" in response.text
    served = create_federation(client, admin_headers, rounds={**STOP, "min_rounds": 4})
    assert served["rounds"]["min_rounds"] == 4
    assert create_federation(client, admin_headers)["rounds"]["min_rounds"] is None


def test_a_federation_with_min_rounds_does_not_complete_early(
    client: TestClient, admin_headers: dict
) -> None:
    # without min_rounds this curve stops once round 3 closed (as the test below shows)
    fid = create_federation(client, admin_headers, rounds={**STOP, "min_rounds": 5})["id"]
    _, p = enrol(client, admin_headers, fid)
    for number, score in enumerate([0.10, 0.20, 0.22, 0.21, 0.20], start=1):
        fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
        assert fed["state"] == "active", number
        _round(client, fid, number, score, p, admin_headers)
    fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
    assert (fed["state"], fed["current_round"], fed["latest_version"]) == ("evaluating", None, 5)
    assert evaluate(client, fid, 5, p, metrics={"ndcg@10": 0.1}).status_code == 201
    fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
    assert (fed["state"], fed["deployed_version"]) == ("completed", 2)


def test_patience_stops_evaluates_the_final_version_and_deploys_the_best(
    client: TestClient, admin_headers: dict
) -> None:
    fid = create_federation(client, admin_headers, rounds=STOP)["id"]
    _, p = enrol(client, admin_headers, fid)
    _round(client, fid, 1, 0.10, p, admin_headers)
    _round(client, fid, 2, 0.20, p, admin_headers)  # v1 improves on v0 by 0.1
    _round(client, fid, 3, 0.22, p, admin_headers)  # v2: +0.02 < min_delta, 1 stale
    fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
    assert (fed["state"], fed["current_round"], fed["latest_version"]) == ("evaluating", None, 3)
    current = client.get(f"/v1/federations/{fid}/rounds/current", headers=p).json()
    assert (current["number"], current["state"]) == (3, "closed")
    # the participant owes the final version's figures: its long-poll returns at once
    owed = client.get(
        f"/v1/federations/{fid}/rounds/current", params={"wait": 30, "after": 3}, headers=p
    )
    assert owed.json()["number"] == 3

    assert evaluate(client, fid, 3, p, metrics={"ndcg@10": 0.5}).status_code == 201
    fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
    assert (fed["state"], fed["deployed_version"]) == ("completed", 3)
    # test figures of the deployed version are accepted after completion, as before
    assert evaluate(client, fid, 3, p, split="test").status_code == 201


def test_a_participant_that_reported_waits_for_the_completion(
    client: TestClient, admin_headers: dict
) -> None:
    fid = create_federation(client, admin_headers, rounds={"max_rounds": 1})["id"]
    _, first = enrol(client, admin_headers, fid, "first")
    _, second = enrol(client, admin_headers, fid, "second")
    for seed, headers in enumerate((first, second)):
        put_update(client, fid, 1, update_bytes(seed=seed), headers)
    wait_round_closed(client, fid, 1, admin_headers)
    assert evaluate(client, fid, 1, first).status_code == 201
    states: list[str] = []

    def poll() -> None:
        client.get(
            f"/v1/federations/{fid}/rounds/current", params={"wait": 20, "after": 1}, headers=first
        )
        states.append(client.get(f"/v1/federations/{fid}", headers=admin_headers).json()["state"])

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    poller.join(timeout=0.5)
    assert poller.is_alive(), "a participant that reported was not kept waiting"
    started = time.monotonic()
    assert evaluate(client, fid, 1, second).status_code == 201  # the last report completes it
    poller.join(timeout=15)
    assert not poller.is_alive(), "the long-poll did not wake when the federation completed"
    assert states == ["completed"]
    assert time.monotonic() - started < 15
