"""The participant sends its validation figures of the base with its upload when the round
advertises it (one request), on its own otherwise or when the upload carried nothing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import coordinator.api.routes.rounds as rounds_routes
from coordinator.api import schemas
from fedrec.partition import local_view, partition_users
from fedrec.synthetic import make_synthetic
from participant_sdk import Client, FederatedRecommender
from participant_sdk.recsys import BPRConfig
from participant_sdk.recsys.data import Interactions
from participant_sdk.wire import BASE_EVALUATION_HEADER
from tests.conftest import ADMIN_TOKEN

CONFIG = BPRConfig(dim=8, learning_rate=0.05, epochs=2, seed=0)


@pytest.fixture
def coordinator(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def data() -> Interactions:
    return make_synthetic(num_users=60, num_items=200, seed=1)


def _setup(
    coordinator: TestClient, data: Interactions, sent: list[httpx.Request]
) -> tuple[Client, str, list[FederatedRecommender]]:
    admin = Client(str(coordinator.base_url), ADMIN_TOKEN, http_client=coordinator)
    fid = admin.federations.create(
        "synthetic",
        {"kind": "mf", "num_items": data.num_items, "dim": 8, "seed": 0},
        catalog=data.item_ids,
        rounds={"min_participants": 2, "max_rounds": 3},
    ).id
    parts = []
    for index, users in enumerate(partition_users(data, "iid", 2, seed=0)):
        token = admin.participants.enrol(fid, f"p{index}").token
        sdk = Client(str(coordinator.base_url), token, http_client=coordinator)
        parts.append(FederatedRecommender(sdk, fid, local_view(data, users), config=CONFIG))
    coordinator.event_hooks["request"].append(sent.append)
    return admin, fid, parts


def _reports(sent: list[httpx.Request]) -> list[httpx.Request]:
    return [r for r in sent if r.method == "POST" and r.url.path.endswith("/evaluations")]


def _uploads(sent: list[httpx.Request]) -> list[httpx.Request]:
    return [r for r in sent if r.method == "PUT" and r.url.path.endswith("/update")]


def test_the_upload_carries_the_report(coordinator: TestClient, data: Interactions) -> None:
    sent: list[httpx.Request] = []
    admin, fid, parts = _setup(coordinator, data, sent)
    assert [p.step() for p in parts] == ["uploaded", "uploaded"]
    assert _reports(sent) == []
    assert all(BASE_EVALUATION_HEADER in r.headers for r in _uploads(sent))
    [row] = admin.metrics(fid)
    assert (row.version, row.split, row.participants) == (0, "validation", 2)
    assert row.num_users == sum(p.split.valid.users.size for p in parts)


def test_a_coordinator_without_it_gets_the_report_on_its_own(
    coordinator: TestClient, data: Interactions, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an older coordinator: its rounds do not advertise the field (SDK default False)
    def old_round_out(row: object, in_cohort: bool | None, *maxima: int | None) -> object:
        out = schemas.round_out(row, in_cohort, *maxima)
        return out.model_copy(update={"upload_takes_evaluation": False})

    monkeypatch.setattr(rounds_routes, "round_out", old_round_out)
    sent: list[httpx.Request] = []
    admin, fid, parts = _setup(coordinator, data, sent)
    assert [p.step() for p in parts] == ["uploaded", "uploaded"]
    assert len(_reports(sent)) == 2
    assert not any(BASE_EVALUATION_HEADER in r.headers for r in _uploads(sent))
    [row] = admin.metrics(fid)
    assert (row.version, row.participants) == (0, 2)


def test_an_upload_that_records_nothing_sends_the_report_alone(
    coordinator: TestClient, data: Interactions
) -> None:
    sent: list[httpx.Request] = []
    admin, fid, parts = _setup(coordinator, data, sent)
    first = parts[0]
    assert first.step() == "uploaded"
    # the participant lost its progress: it evaluates and trains round 1 again; its new
    # bytes conflict with the stored update (409), which recorded nothing of this attempt
    first.progress.last_round = 0
    first.progress.last_evaluated_version = -1
    del sent[:]
    assert first.step() == "uploaded"
    assert len(_uploads(sent)) == 1
    assert len(_reports(sent)) == 1
    [row] = admin.metrics(fid)
    assert (row.version, row.participants) == (0, 1)
