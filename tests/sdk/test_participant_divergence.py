"""A participant whose local training diverges uploads nothing and says why."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fedrec.synthetic import make_synthetic
from participant_sdk import Client, FederatedRecommender
from participant_sdk.recsys import BPRConfig
from tests.conftest import ADMIN_TOKEN


@pytest.fixture
def coordinator(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _sdk(coordinator: TestClient, token: str) -> Client:
    return Client(str(coordinator.base_url), token, http_client=coordinator)


def test_absurd_learning_rate_uploads_nothing_and_says_why(
    coordinator: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_synthetic(num_users=30, num_items=80, seed=1)
    admin = _sdk(coordinator, ADMIN_TOKEN)
    fid = admin.federations.create(
        "diverging",
        {"kind": "mf", "num_items": data.num_items, "dim": 8, "seed": 0},
        catalog=data.item_ids,
        rounds={"max_rounds": 2},
    ).id
    token = admin.participants.enrol(fid, "p0").token
    config = BPRConfig(dim=8, learning_rate=1e9, epochs=1)
    participant = FederatedRecommender(_sdk(coordinator, token), fid, data, config=config)
    with caplog.at_level(logging.WARNING, logger="fedrec.participant"):
        assert participant.step() == "diverged"
    assert admin.rounds.get(fid, 1).update_count == 0
    assert participant.waiting_after == 1  # the round is not retried with the same base
    error = participant.last_divergence
    assert error is not None
    assert error.round_number == 1
    assert error.learning_rates == [1e9, 5e8, 2.5e8, 1.25e8]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith("round 1: local training diverged: tensor 'item_factors'")
    assert "nothing uploaded" in errors[0]
    assert participant.progress.last_round == 0
