"""SecAgg+ over REST: the sparse graph drawn per round, recorded, and surviving a restart.

The participants are the SDK's ``SecAggClient`` state machines talking JSON to the real app
(the helpers of ``test_secure_aggregation_rounds``); the federation asks for
``graph: harary``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain.secagg import harary_neighbours
from coordinator.store.models import SecAggShareCiphertext, SecAggState
from tests.api.test_secure_aggregation_rounds import (
    SECURE_STRATEGY,
    assert_model,
    close_due_phases,
    expected_model,
    parties,
    secure_federation,
)
from tests.factories import assert_problem, create_federation, wait_round_closed

SPARSE = {"graph": "harary", "degree": 2, "neighbour_threshold": 2}


def stored_state(app: FastAPI) -> dict[str, Any]:
    with app.state.context.read_sessions() as session:
        state: dict[str, Any] = json.loads(session.scalars(select(SecAggState.state)).one())
    return state


class TestSparseGraph:
    def test_the_drawn_graph_is_recorded_and_the_same_after_a_restart(
        self, client: TestClient, app: FastAPI, settings: Settings, admin_headers: dict
    ) -> None:
        fid = secure_federation(client, admin_headers, threshold=3, **SPARSE)
        group = parties(client, admin_headers, fid, 6)
        before_draw = group[0].status(1)
        assert (before_draw["graph"], before_draw["degree"]) == ("harary", None)
        for p in group:
            p.keys(1)
        # the status shows the graph as drawn, to participants and the admin alike
        drawn = client.get(f"/v1/federations/{fid}/rounds/1/secagg", headers=admin_headers).json()
        assert (drawn["graph"], drawn["degree"], drawn["neighbour_threshold"]) == ("harary", 2, 2)
        state = stored_state(app)
        assert (state["graph"], state["degree"], state["neighbour_threshold"]) == ("harary", 2, 2)
        ring = state["ring"]
        assert sorted(ring) == [p.pid for p in group]
        graph = harary_neighbours(ring, 2)
        rosters = {p.pid: p.status(1)["roster"] for p in group}
        for pid, roster in rosters.items():
            # each participant sees only its neighbourhood, at its points in the whole round
            members = sorted(graph[pid] | {pid})
            assert [e["participant"] for e in roster["entries"]] == members
            assert roster["points"] == {m: [p.pid for p in group].index(m) + 1 for m in members}
            assert (roster["size"], roster["threshold"]) == (6, 2)
        # a new process on the same database: the same graph, nothing redrawn
        with TestClient(create_app(settings, run_timer=False)) as restarted:
            for p in group:
                p.client = restarted
            assert {p.pid: p.status(1)["roster"] for p in group} == rosters
            for p in group:
                p.shares(1)
            with app.state.context.read_sessions() as session:
                rows = session.scalars(select(SecAggShareCiphertext)).all()
            # one ciphertext per edge direction: n * k, not n * (n - 1)
            assert sorted((r.sender_id, r.recipient_id) for r in rows) == sorted(
                (pid, peer) for pid in graph for peer in graph[pid]
            )
            for p in group:
                p.masked(1)
            request = group[0].status(1)["unmask_request"]
            assert request["survivors"] == sorted(graph[group[0].pid] | {group[0].pid})
            for p in group:
                p.unmask(1)
            assert wait_round_closed(restarted, fid, 1, admin_headers)["state"] == "closed"
            want = expected_model(restarted, fid, admin_headers, group)
            assert_model(restarted, fid, admin_headers, 1, want)
            assert stored_state(app)["ring"] == ring

    def test_a_dropout_the_graph_tolerates_is_recovered(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fid = secure_federation(client, admin_headers, threshold=3, **SPARSE)
        group = parties(client, admin_headers, fid, 6)
        for p in group:
            p.keys(1)
        for p in group:
            p.shares(1)
        gone, survivors = group[0], group[1:]
        for p in survivors:
            p.masked(1)
        close_due_phases(app)  # the masked phase closes without the dropped participant
        assert survivors[0].status(1)["phase"] == "unmask"
        for p in survivors:
            p.unmask(1)
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
        want = expected_model(client, fid, admin_headers, survivors)
        assert_model(client, fid, admin_headers, 1, want)
        assert gone.status(1)["survivors"] == [p.pid for p in survivors]

    def test_a_dropout_that_splits_the_survivors_aborts(
        self, client: TestClient, app: FastAPI, admin_headers: dict
    ) -> None:
        fid = secure_federation(client, admin_headers, threshold=2, **SPARSE)
        group = parties(client, admin_headers, fid, 6)
        for p in group:
            p.keys(1)
        for p in group:
            p.shares(1)
        ring = stored_state(app)["ring"]
        # two opposite members of the ring of 6 drop: the survivors are two paths of two
        dropped = {ring[0], ring[3]}
        for p in group:
            if p.pid not in dropped:
                p.masked(1)
        close_due_phases(app)
        status = group[0].status(1)
        assert status["phase"] == "aborted"
        assert "splits into 2 parts" in status["abort_reason"]
        assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "failed"


@pytest.mark.parametrize(
    ("secagg", "message"),
    [
        ({"graph": "harary", "degree": 3}, "even"),
        ({"degree": 4}, "only"),
        ({"graph": "harary", "degree": 4, "neighbour_threshold": 6}, "at most degree + 1"),
        ({"graph": "erdos"}, "graph"),
    ],
)
def test_graph_settings_are_validated(
    client: TestClient, admin_headers: dict, secagg: dict[str, Any], message: str
) -> None:
    response = client.post(
        "/v1/federations",
        json={
            "name": "f",
            "model": {"kind": "mf", "num_items": 5, "dim": 2},
            "strategy": SECURE_STRATEGY,
            "privacy": {"secure_aggregation": {"threshold": 2, "clip_norm": 1.0, **secagg}},
        },
        headers=admin_headers,
    )
    problem = assert_problem(response, 422, "validation-error")
    assert message in json.dumps(problem)


def test_the_complete_graph_stays_the_default(client: TestClient, admin_headers: dict) -> None:
    body = create_federation(
        client,
        admin_headers,
        strategy=SECURE_STRATEGY,
        privacy={"secure_aggregation": {"threshold": 2, "clip_norm": 1.0}},
    )
    stored = body["privacy"]["secure_aggregation"]
    assert stored.get("graph", "complete") == "complete"
