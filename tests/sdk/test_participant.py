"""The participant loop against the in-process coordinator: evaluate, train, upload,
complete, deploy, report test figures, recommend; resume from saved state."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fedrec.partition import local_view, partition_users
from fedrec.synthetic import make_synthetic
from participant_sdk import Client, FederatedRecommender
from participant_sdk.recsys import BPRConfig, BPRTrainer
from participant_sdk.recsys.data import Interactions
from tests.conftest import ADMIN_TOKEN

CONFIG = BPRConfig(dim=8, learning_rate=0.05, epochs=2, seed=0)


def _sdk(coordinator: TestClient, token: str) -> Client:
    return Client(str(coordinator.base_url), token, http_client=coordinator)


@pytest.fixture
def coordinator(app: FastAPI) -> Iterator[TestClient]:
    """The in-process coordinator (tests/sdk's own ``client`` fixture is a fake)."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def data() -> Interactions:
    return make_synthetic(num_users=60, num_items=200, seed=1)


def _federation(
    coordinator: TestClient, data: Interactions, participants: int, **extra: object
) -> tuple[Client, str, list[str]]:
    admin = _sdk(coordinator, ADMIN_TOKEN)
    federation = admin.federations.create(
        "synthetic",
        {"kind": "mf", "num_items": data.num_items, "dim": 8, "seed": 0},
        catalog=data.item_ids,
        **extra,  # type: ignore[arg-type]
    )
    tokens = [admin.participants.enrol(federation.id, f"p{i}").token for i in range(participants)]
    return admin, federation.id, tokens


def test_three_participants_run_to_deployment(coordinator: TestClient, data: Interactions) -> None:
    admin, fid, tokens = _federation(
        coordinator,
        data,
        3,
        rounds={"max_rounds": 3},
        deploy={"policy": "best", "metric": "ndcg@10"},
    )
    parts = [
        FederatedRecommender(_sdk(coordinator, token), fid, local_view(data, users), config=CONFIG)
        for token, users in zip(tokens, partition_users(data, "iid", 3, seed=0), strict=True)
    ]
    for round_number in (1, 2, 3):
        assert [p.step() for p in parts] == ["uploaded"] * 3
        admin.rounds.wait_for_next(fid, after=round_number, timeout=30)
        assert admin.rounds.get(fid, round_number).update_count == 3
    assert admin.federations.get(fid).state == "evaluating"
    # each participant reports the final version on validation; the last report completes it
    assert [p.step() for p in parts] == ["waiting"] * 3
    assert admin.federations.get(fid).state == "completed"
    assert [p.step() for p in parts] == ["completed"] * 3
    results = [p.finish() for p in parts]
    assert all(0.0 <= r["ndcg@10"] <= 1.0 for r in results)
    assert {"hr@10", "precision@10", "recall@10", "sampled_hr@10", "sampled_ndcg@10"} <= set(
        results[0]
    )

    versions = admin.models.list(fid)
    assert [len(v.contributors) for v in versions] == [0, 3, 3, 3]
    history = admin.metrics(fid)
    validation = {row.version: row for row in history if row.split == "validation"}
    assert sorted(validation) == [0, 1, 2, 3]  # every version, the final one included
    assert all(row.participants == 3 for row in validation.values())
    deployment = admin.deployment.get(fid)
    best = max(validation.values(), key=lambda row: (row.metrics["ndcg@10"], row.version))
    assert deployment.version == best.version
    test_rows = [row for row in history if row.split == "test"]
    assert [(row.version, row.participants) for row in test_rows] == [(deployment.version, 3)]

    user = parts[0].data.user_ids[0]
    recommended = parts[0].recommend(user, k=5)
    assert len(recommended) == 5
    owned = {parts[0].data.item_ids[i] for i in parts[0].data.items[parts[0].data.users == 0]}
    assert not owned & set(recommended)


def test_target_stops_early(coordinator: TestClient, data: Interactions) -> None:
    admin, fid, tokens = _federation(
        coordinator, data, 1, rounds={"max_rounds": 10}, target={"metric": "hr@10", "value": 0.0}
    )
    part = FederatedRecommender(_sdk(coordinator, tokens[0]), fid, data, config=CONFIG)
    assert part.step() == "uploaded"
    admin.rounds.wait_for_next(fid, after=1, timeout=30)
    assert admin.federations.get(fid).state == "evaluating"
    assert part.step() == "waiting"  # it reports version 1 on validation
    assert part.step() == "completed"
    assert admin.federations.get(fid).state == "completed"
    assert admin.federations.get(fid).latest_version == 1


def test_restart_from_saved_state_rejoins_current_round(
    coordinator: TestClient, data: Interactions, tmp_path: Path
) -> None:
    admin, fid, tokens = _federation(coordinator, data, 2, rounds={"max_rounds": 5})
    halves = partition_users(data, "iid", 2, seed=0)
    first = FederatedRecommender(
        _sdk(coordinator, tokens[0]),
        fid,
        local_view(data, halves[0]),
        config=CONFIG,
        state_dir=tmp_path,
    )
    other = FederatedRecommender(
        _sdk(coordinator, tokens[1]), fid, local_view(data, halves[1]), config=CONFIG
    )
    assert first.step() == "uploaded"
    assert isinstance(first.trainer, BPRTrainer)
    saved = first.trainer.user_factors.copy()
    del first  # the process dies after its upload
    assert other.step() == "uploaded"
    admin.rounds.wait_for_next(fid, after=1, timeout=30)

    restarted = FederatedRecommender(
        _sdk(coordinator, tokens[0]),
        fid,
        local_view(data, halves[0]),
        config=CONFIG,
        state_dir=tmp_path,
    )
    assert restarted.progress.last_round == 1
    assert isinstance(restarted.trainer, BPRTrainer)
    np.testing.assert_array_equal(restarted.trainer.user_factors, saved)
    assert restarted.step() == "uploaded"
    assert admin.rounds.current(fid).number == 2
    assert restarted.progress.last_round == 2
    assert restarted.step() == "waiting"


def test_revoked_participant_stops_with_a_typed_error(
    coordinator: TestClient, data: Interactions
) -> None:
    from participant_sdk import ParticipantRevokedError

    admin, fid, tokens = _federation(coordinator, data, 1)
    part = FederatedRecommender(_sdk(coordinator, tokens[0]), fid, data, config=CONFIG)
    pid = admin.participants.list(fid)[0].id
    admin.participants.revoke(fid, pid)
    with pytest.raises(ParticipantRevokedError):
        part.run(round_timeout=1, outage_timeout=1)


def test_participant_without_data_waits_for_the_next_round(
    coordinator: TestClient, data: Interactions, caplog: pytest.LogCaptureFixture
) -> None:
    admin, fid, tokens = _federation(coordinator, data, 2)
    empty = data.subset(np.zeros(len(data), dtype=bool))
    with caplog.at_level(logging.WARNING, logger="fedrec.participant"):
        idle = FederatedRecommender(_sdk(coordinator, tokens[0]), fid, empty, config=CONFIG)
    assert any("no local interactions" in r.getMessage() for r in caplog.records)
    assert idle.step() == "waiting"
    # run() would now long-poll for round 2 instead of spinning on round 1
    assert idle.waiting_after == 1
    assert admin.rounds.get(fid, 1).update_count == 0


def test_participants_train_with_the_federations_proximal_mu(
    coordinator: TestClient, data: Interactions
) -> None:
    _admin, fid, tokens = _federation(coordinator, data, 1, strategy={"proximal_mu": 0.25})
    part = FederatedRecommender(_sdk(coordinator, tokens[0]), fid, data, config=CONFIG)
    assert isinstance(part.config, BPRConfig)
    assert part.config.mu == 0.25  # the federation's value, not the local config's 0
    _admin, plain, tokens = _federation(coordinator, data, 1)
    local = CONFIG.replace(mu=0.5)
    plain_config = FederatedRecommender(
        _sdk(coordinator, tokens[0]), plain, data, config=local
    ).config
    assert isinstance(plain_config, BPRConfig)
    assert plain_config.mu == 0


def test_run_refreshes_the_token_transparently(
    coordinator: TestClient, data: Interactions, monkeypatch: pytest.MonkeyPatch
) -> None:
    import participant_sdk.participant as participant_module

    admin, fid, tokens = _federation(
        coordinator, data, 1, rounds={"max_rounds": 2, "final_evaluation_seconds": 0}
    )
    # every check finds the token due: each pass of the loop refreshes it
    monkeypatch.setattr(participant_module, "TOKEN_REFRESH_FRACTION", 1.0)
    issued: list[str] = []
    sdk = _sdk(coordinator, tokens[0])
    part = FederatedRecommender(sdk, fid, data, config=CONFIG, on_token_refresh=issued.append)
    part.run(round_timeout=5, outage_timeout=5)
    assert admin.federations.get(fid).state == "completed"
    assert len(issued) >= 2
    assert len(set(issued)) == len(issued)
    assert tokens[0] not in issued
    assert sdk._token == issued[-1]  # the client switched to each new token
    me = _sdk(coordinator, issued[-1]).participants.me(fid)
    assert me.token_expires_at is not None


def test_sampled_out_participants_do_not_train_and_wait_for_the_next_round(
    coordinator: TestClient, app: FastAPI, data: Interactions
) -> None:
    admin, fid, tokens = _federation(
        coordinator,
        data,
        4,
        rounds={"max_rounds": 3, "min_participants": 4, "sampling": {"kind": "fixed", "size": 2}},
    )
    parts = [
        FederatedRecommender(_sdk(coordinator, token), fid, local_view(data, users), config=CONFIG)
        for token, users in zip(tokens, partition_users(data, "iid", 4, seed=0), strict=True)
    ]
    # round 1 opened before anyone enrolled: it draws once enough are (the timer)
    assert parts[0].step() == "waiting"
    assert parts[0].waiting_after == 0  # it may still be drawn into round 1: no skip
    app.state.worker.tick()
    drawn = [p.client.rounds.current(fid).in_cohort is True for p in parts]
    assert sorted(drawn) == [False, False, True, True]
    # the sampled-out step first: once both drawn ones upload, round 1 may close and
    # round 2 open (aggregation runs in the background), which would be a different test
    order = sorted(range(len(parts)), key=lambda i: drawn[i])
    outcomes = {i: parts[i].step() for i in order}
    assert [outcomes[i] for i in order] == ["waiting", "waiting", "uploaded", "uploaded"]
    sampled_out = [parts[i] for i in order[:2]]
    # no download, no training, no upload: they long-poll for round 2
    assert all(p.progress.history == [] for p in sampled_out)
    assert all(p.waiting_after == 1 for p in sampled_out)
    admin.rounds.wait_for_next(fid, after=1, timeout=30)
    closed = admin.rounds.get(fid, 1)
    assert closed.update_count == 2
    assert closed.cohort_size == 2
    assert admin.rounds.get(fid, 2).cohort_size == 2


def test_run_waits_only_for_rounds_it_is_drawn_into(
    coordinator: TestClient, data: Interactions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run() long-polls with in_cohort=true: a sampled-out participant sends no request per
    round it sits out; an unsampled federation is unaffected (every round includes it)."""
    admin, fid, tokens = _federation(
        coordinator, data, 1, rounds={"max_rounds": 2, "final_evaluation_seconds": 0}
    )
    sdk = _sdk(coordinator, tokens[0])
    waits: list[dict[str, Any]] = []
    real = sdk.rounds.wait_for_work  # the long-poll whose answer carries the base weights

    def recorded(fid: str, after: int, timeout: float, **kwargs: Any) -> Any:
        waits.append(kwargs)
        return real(fid, after, timeout, **kwargs)

    monkeypatch.setattr(sdk.rounds, "wait_for_work", recorded)
    FederatedRecommender(sdk, fid, data, config=CONFIG).run(round_timeout=10, outage_timeout=10)
    assert admin.federations.get(fid).state == "completed"
    assert waits
    assert all(w == {"in_cohort": True, "encoding": None} for w in waits)


class _Overloaded(httpx.BaseTransport):
    """The coordinator's transport, except that the first ``refusals`` reads of
    rounds/current (alone or with its weights) are shed: 503 ``overloaded`` with
    ``Retry-After``, as coordinator/api/overload.py answers past its bound."""

    def __init__(self, inner: httpx.BaseTransport, refusals: int, retry_after: int) -> None:
        self.inner = inner
        self.refusals = refusals
        self.retry_after = retry_after
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        polls = ("/rounds/current", "/rounds/current/weights")
        if request.url.path.endswith(polls) and self.refused < self.refusals:
            self.refused += 1
            return httpx.Response(
                503,
                json={
                    "type": "urn:fedrec:problem:overloaded",
                    "title": "Overloaded",
                    "status": 503,
                    "detail": "this coordinator process is answering 128 requests already",
                },
                headers={
                    "Content-Type": "application/problem+json",
                    "Retry-After": str(self.retry_after),
                },
            )
        return self.inner.handle_request(request)


def test_run_rides_out_a_shedding_coordinator(
    coordinator: TestClient, data: Interactions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five 503 overloaded in a row: more than the client's own retries (2), so run() itself
    waits too; every wait honours Retry-After plus jitter, and the run completes."""
    import participant_sdk.participant as participant_module

    admin, fid, tokens = _federation(
        coordinator, data, 1, rounds={"max_rounds": 2, "final_evaluation_seconds": 0}
    )
    shedding = _Overloaded(coordinator._transport, refusals=5, retry_after=7)
    sdk = Client(str(coordinator.base_url), tokens[0], transport=shedding)
    client_sleeps: list[float] = []
    run_sleeps: list[float] = []
    sdk._sleep = client_sleeps.append
    monkeypatch.setattr(
        participant_module,
        "time",
        SimpleNamespace(monotonic=time.monotonic, sleep=run_sleeps.append),
    )
    FederatedRecommender(sdk, fid, data, config=CONFIG).run(round_timeout=10, outage_timeout=60)
    assert admin.federations.get(fid).state == "completed"
    assert shedding.refused == 5
    # the client's own retries: 2 after the first refusal, 2 after the fourth
    backoffs = [s for s in client_sleeps if s >= 7]
    assert len(backoffs) == 4
    assert all(7 <= s <= 7 * 1.25 for s in backoffs)
    # run()'s pause once the client gave up: at least Retry-After, at most a quarter more
    assert len(run_sleeps) == 1
    assert 7 <= run_sleeps[0] <= 7 * 1.25
