"""Server optimizers through the HTTP app: their state survives a restart, two replicas
(and a taken-over aggregation) produce the same bytes, and their settings are validated."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain.aggregation_job import claim_round, complete_claim, run_due_work
from coordinator.domain.lifecycle import Trigger
from coordinator.domain.lineage import verify_lineage
from coordinator.domain.model_versions import MODEL_METADATA
from coordinator.domain.specs import StrategySpec
from coordinator.domain.strategy import build_strategy
from coordinator.store.blobs import sha256_hex
from participant_sdk.wire import (
    decode_update,
    decode_weights,
    encode_update,
    encode_weights,
    mf_spec,
)
from tests.factories import (
    DIM,
    NUM_ITEMS,
    assert_problem,
    blob_count,
    create_federation,
    enrol,
    local_blobs,
    put_update,
)

ROUNDS = 3
STRATEGY = {"name": "fedadam", "server_lr": 0.05, "beta2": 0.9, "tau": 0.01}


def sparse_update(round_number: int, participant: int) -> bytes:
    """A row-sparse update, different per round and participant; each round leaves
    some rows untouched, so the per-row moments are exercised."""
    rng = np.random.default_rng(100 * round_number + participant)
    rows = np.sort(rng.choice(NUM_ITEMS, size=6, replace=False)).astype(np.int64)
    return encode_update(
        {
            "item_factors": rng.standard_normal((6, DIM)).astype(np.float32) * 0.1,
            "item_bias": rng.standard_normal(6).astype(np.float32) * 0.1,
        },
        round=round_number,
        base_version=round_number - 1,
        num_examples=int(rng.integers(1, 20)),
        rows=rows,
    )


class Federation:
    """A federation of three participants of which two upload each round, so rounds
    close only when the admin aggregates them (no automatic aggregation races)."""

    def __init__(self, client: TestClient, admin: dict[str, str]) -> None:
        self.admin = admin
        fed = create_federation(client, admin, strategy=STRATEGY, rounds={"max_rounds": ROUNDS})
        self.id = fed["id"]
        self.headers = [enrol(client, admin, self.id, f"p{i}")[1] for i in range(3)]

    def upload(self, client: TestClient, number: int) -> None:
        for index, headers in enumerate(self.headers[:2]):
            response = put_update(client, self.id, number, sparse_update(number, index), headers)
            assert response.status_code == 201, response.text

    def aggregate(self, client: TestClient, number: int) -> dict[str, Any]:
        url = f"/v1/federations/{self.id}/rounds/{number}/aggregate"
        response = client.post(url, headers=self.admin)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def round(self, client: TestClient, number: int) -> dict[str, Any]:
        self.upload(client, number)
        return self.aggregate(client, number)

    def versions(self, client: TestClient) -> list[dict[str, Any]]:
        response = client.get(f"/v1/federations/{self.id}/models", headers=self.admin)
        items: list[dict[str, Any]] = response.json()["items"]
        return items


def recorded(versions: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(v["sha256"], v["server_state_sha256"]) for v in versions]


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_timer=False)) as client:
        yield client


def test_state_is_recorded_per_version_and_checked_by_verify_lineage(
    app_client: TestClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    fed = Federation(app_client, admin_headers)
    for number in range(1, ROUNDS + 1):
        fed.round(app_client, number)
    versions = fed.versions(app_client)
    assert versions[0]["server_state_sha256"] is None  # version 0: no step taken yet
    states = [v["server_state_sha256"] for v in versions[1:]]
    assert all(states)
    assert len(set(states)) == ROUNDS  # the moments move every round
    ctx = app_client.app.state.context  # type: ignore[attr-defined]
    assert verify_lineage(ctx, fed.id).ok
    # a state blob that went missing breaks the lineage, and the report says which
    ctx.blobs.remove(states[1])  # a file, or rows when small
    report = verify_lineage(ctx, fed.id)
    assert (report.bad_version, report.reason) == (2, "server state blob is missing")
    local_blobs(ctx).path(states[1]).parent.mkdir(exist_ok=True)
    local_blobs(ctx).path(states[1]).write_bytes(b"tampered")
    assert "server state sha256" in (verify_lineage(ctx, fed.id).reason or "")
    del settings


def test_state_survives_a_coordinator_restart(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    with TestClient(create_app(settings, run_timer=False)) as client:
        uninterrupted = Federation(client, admin_headers)
        for number in range(1, ROUNDS + 1):
            uninterrupted.round(client, number)
        expected = recorded(uninterrupted.versions(client))
        restarted = Federation(client, admin_headers)
        restarted.round(client, 1)
    # a new process on the same database and blob folder continues from the stored moments
    with TestClient(create_app(settings, run_timer=False)) as client:
        for number in range(2, ROUNDS + 1):
            restarted.round(client, number)
        assert recorded(restarted.versions(client)) == expected
        # and those bytes are version 1's weights stepped with version 1's stored moments
        blobs = client.app.state.context.blobs  # type: ignore[attr-defined]
        (v1_weights, v1_state), (v2_weights, _) = expected[1:3]
        assert v1_state is not None
        spec = mf_spec(num_items=NUM_ITEMS, dim=DIM)
        strategy = build_strategy(StrategySpec.model_validate(STRATEGY), spec, dp=None)
        for index in range(2):
            strategy.add(decode_update(sparse_update(2, index), spec))
        stepped, _ = strategy.result(
            decode_weights(blobs.get(v1_weights)), decode_weights(blobs.get(v1_state))
        )
        assert sha256_hex(encode_weights(stepped, MODEL_METADATA)) == v2_weights


def test_two_replicas_and_a_takeover_produce_identical_bytes(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    # replica A holds short leases, so replica B may take over a round A claimed
    quick = settings.model_copy(update={"aggregation_lease_seconds": 0.05})
    with (
        TestClient(create_app(quick, run_timer=False)) as a,
        TestClient(create_app(settings, run_timer=False)) as b,
    ):
        uninterrupted = Federation(a, admin_headers)
        for number in range(1, ROUNDS + 1):
            uninterrupted.round(a, number)
        expected = recorded(uninterrupted.versions(a))

        shared = Federation(a, admin_headers)
        shared.round(a, 1)  # A writes the state of version 1
        shared.round(b, 2)  # B reads it and writes version 2's
        shared.upload(b, 3)
        # A claims round 3, then stalls past its lease; B's timer takes the round over
        ctx_a = a.app.state.context  # type: ignore[attr-defined]
        _step, claim = claim_round(ctx_a, shared.id, 3, trigger=Trigger.ADMIN)
        assert claim is not None
        time.sleep(0.1)  # let A's lease expire
        assert run_due_work(b.app.state.context) == 1  # type: ignore[attr-defined]
        blobs = blob_count(ctx_a)
        # A wakes up: its commit is refused, and what it wrote were the same blobs
        assert complete_claim(ctx_a, claim) is None
        assert blob_count(ctx_a) == blobs
        assert recorded(shared.versions(b)) == expected
        assert verify_lineage(ctx_a, shared.id).ok


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "fedadagrad"),
        ("server_momentum", 1.0),
        ("beta1", -0.1),
        ("beta2", 1.0),
        ("tau", 0),
        ("server_lr", 0),
        ("proximal_mu", -1),
    ],
)
def test_invalid_optimizer_settings_are_refused(
    client: TestClient, admin_headers: dict[str, str], field: str, value: object
) -> None:
    response = client.post(
        "/v1/federations",
        json={
            "name": "bad",
            "model": {"kind": "mf", "num_items": NUM_ITEMS, "dim": DIM},
            "strategy": {"name": "fedadam", field: value},
        },
        headers=admin_headers,
    )
    body = assert_problem(response, 422, "validation-error")
    assert any(error["loc"][-1] == field for error in body["errors"]), body


def test_optimizer_settings_are_stored_and_served(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    adam = create_federation(client, admin_headers, strategy={"name": "fedadam"})["strategy"]
    assert adam["server_lr"] == 0.01  # an adaptive step needs a small default
    assert (adam["beta1"], adam["beta2"], adam["tau"]) == (0.9, 0.99, 1e-3)
    assert adam["proximal_mu"] == 0.0
    fedavg = create_federation(client, admin_headers)["strategy"]
    assert fedavg["server_lr"] == 1.0
    chosen = {"name": "fedavgm", "server_lr": 0.5, "server_momentum": 0.8, "proximal_mu": 0.1}
    stored = create_federation(client, admin_headers, strategy=chosen)
    served = client.get(f"/v1/federations/{stored['id']}", headers=admin_headers).json()
    assert served["strategy"].items() >= chosen.items()


def test_dp_with_an_adaptive_optimizer_is_accepted(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    strategy = {"name": "fedyogi", "weighting": "uniform", "normalization": "total"}
    dp = {"dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}}
    created = create_federation(client, admin_headers, strategy=strategy, privacy=dp)
    assert created["strategy"]["name"] == "fedyogi"
    refused = client.post(
        "/v1/federations",
        json={
            "name": "dp",
            "model": {"kind": "mf", "num_items": NUM_ITEMS, "dim": DIM},
            "strategy": {"name": "fedyogi"},
            "privacy": dp,
        },
        headers=admin_headers,
    )
    assert assert_problem(refused, 422, "validation-error")["field"] == "strategy"
