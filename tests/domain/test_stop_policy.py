"""The stop policy and the final evaluation at the domain level, on SQLite and PostgreSQL:
patience with min_delta, the best validated version deployed (the final one included),
and the evaluating state's timeout driven by the timer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from coordinator.domain import aggregation_job, evaluation, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.deployment import deployed_version
from coordinator.domain.lifecycle import FederationState, Trigger
from coordinator.domain.participants import revoke_participant
from coordinator.domain.stopping import stale_versions
from coordinator.store.models import Federation, ModelVersion, utc_now
from coordinator.store.repository import FederationRepository
from tests.factories import domain_federation, update_bytes


def _federation(ctx: Context, fid: str) -> Federation:
    with ctx.read_sessions() as session:
        federation = FederationRepository(session).get(fid)
        assert federation is not None
        return federation


def _report(ctx: Context, who: Principal, fid: str, version: int, ndcg: float) -> None:
    evaluation.submit_evaluation(
        ctx, who, fid, version, split="validation", metrics={"ndcg@10": ndcg}, num_users=10
    )


def _train(ctx: Context, fid: str, parts: list[Principal], scores: list[float]) -> None:
    """Each round: every participant reports its base version's score, then uploads."""
    for number, score in enumerate(scores, start=1):
        assert _federation(ctx, fid).state == FederationState.ACTIVE
        for seed, who in enumerate(parts):
            _report(ctx, who, fid, number - 1, score)
            body = update_bytes(round=number, base_version=number - 1, seed=seed + number)
            rounds.submit_update(ctx, who, fid, number, body)
        assert aggregation_job.run(ctx, fid, number, trigger=Trigger.UPLOAD).version is not None


@pytest.mark.parametrize(
    ("scores", "min_delta", "stale"),
    [
        ({}, 0.0, 0),
        ({0: 0.1, 1: 0.2, 2: 0.3}, 0.0, 0),
        ({0: 0.1, 1: 0.2, 2: 0.2}, 0.0, 1),  # equal is no improvement
        ({0: 0.1, 1: 0.2, 2: 0.205, 3: 0.15}, 0.01, 2),  # +0.005 is below min_delta
        ({0: 0.1, 1: 0.2, 2: 0.25, 3: 0.15}, 0.01, 1),
        ({0: 0.3, 3: 0.1}, 0.0, 3),  # unevaluated versions count as rounds
    ],
)
def test_stale_versions(scores: dict[int, float], min_delta: float, stale: int) -> None:
    assert stale_versions(scores, min_delta) == stale


def test_patience_stops_then_the_final_report_completes_and_deploys_the_best(
    ctx: Context,
) -> None:
    fid, parts = domain_federation(ctx, participants=2, max_rounds=50, patience=2, min_delta=0.01)
    # v0 0.1, v1 0.2 (best), v2 0.205 (< min_delta better), v3 0.15: 2 stale versions
    _train(ctx, fid, parts, [0.1, 0.2, 0.205, 0.15])
    federation = _federation(ctx, fid)
    assert federation.state == FederationState.EVALUATING
    assert (federation.current_round, federation.latest_version) == (None, 4)
    with ctx.read_sessions() as session:
        assert deployed_version(session, fid) is None
    _report(ctx, parts[0], fid, 4, 0.1)
    assert _federation(ctx, fid).state == FederationState.EVALUATING  # one report missing
    _report(ctx, parts[1], fid, 4, 0.1)
    assert _federation(ctx, fid).state == FederationState.COMPLETED
    with ctx.read_sessions() as session:
        # the highest validation score wins, also when its gain was below min_delta
        assert deployed_version(session, fid) == 2


@pytest.mark.parametrize(("min_rounds", "stopped_after"), [(None, 2), (4, 4), (6, 6)])
def test_min_rounds_holds_patience_back(
    ctx: Context, min_rounds: int | None, stopped_after: int
) -> None:
    # patience 1 on a falling curve stops once round 2 closed (v1 is 1 version past v0)
    fid, parts = domain_federation(
        ctx, participants=1, max_rounds=8, patience=1, min_rounds=min_rounds
    )
    scores = [0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    _train(ctx, fid, parts, scores[:stopped_after])
    federation = _federation(ctx, fid)
    assert federation.state == FederationState.EVALUATING
    assert (federation.completed_rounds, federation.latest_version) == (
        stopped_after,
        stopped_after,
    )


def test_max_rounds_still_caps_a_federation_under_min_rounds(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=1, max_rounds=3, min_rounds=3, patience=1)
    _train(ctx, fid, parts, [0.1, 0.2, 0.3])  # improving: only the cap stops it
    assert _federation(ctx, fid).state == FederationState.EVALUATING
    assert _federation(ctx, fid).latest_version == 3


def test_the_final_version_is_evaluated_and_deployed_when_best(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=1, max_rounds=2)
    _train(ctx, fid, parts, [0.1, 0.2])
    assert _federation(ctx, fid).state == FederationState.EVALUATING
    _report(ctx, parts[0], fid, 2, 0.4)
    assert _federation(ctx, fid).state == FederationState.COMPLETED
    with ctx.read_sessions() as session:
        assert deployed_version(session, fid) == 2


def test_without_patience_training_runs_to_max_rounds(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=1, max_rounds=4)
    _train(ctx, fid, parts, [0.3, 0.2, 0.1, 0.1])  # worse every round: no early stop
    assert _federation(ctx, fid).latest_version == 4


def test_evaluating_times_out_on_the_timer(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=2, max_rounds=1, final_evaluation_seconds=60)
    _train(ctx, fid, parts, [0.1])
    _report(ctx, parts[0], fid, 1, 0.3)  # the other participant vanished
    assert aggregation_job.run_due_work(ctx) == 0  # within the timeout: it keeps waiting
    assert _federation(ctx, fid).state == FederationState.EVALUATING
    with ctx.sessions.begin() as session:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.federation_id == fid, ModelVersion.version == 1)
            .values(created_at=utc_now() - timedelta(seconds=61))
        )
    assert aggregation_job.run_due_work(ctx) == 1
    assert _federation(ctx, fid).state == FederationState.COMPLETED
    with ctx.read_sessions() as session:
        assert deployed_version(session, fid) == 1  # its one report, 0.3, beats v0's 0.1


def test_zero_final_evaluation_seconds_completes_at_once(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=1, max_rounds=1, final_evaluation_seconds=0)
    _train(ctx, fid, parts, [0.1])
    assert _federation(ctx, fid).state == FederationState.COMPLETED


def test_a_revocation_can_settle_the_final_evaluation(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=2, max_rounds=1)
    _train(ctx, fid, parts, [0.1])
    _report(ctx, parts[0], fid, 1, 0.3)
    assert parts[1].participant_id is not None
    revoke_participant(ctx, Principal(is_admin=True), fid, parts[1].participant_id)
    assert aggregation_job.run_due_work(ctx) == 1
    assert _federation(ctx, fid).state == FederationState.COMPLETED
