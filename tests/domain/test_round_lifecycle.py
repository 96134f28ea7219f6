"""Round state machine at the domain level, on SQLite and PostgreSQL: exactly-once
aggregation between competing processes, lease takeover, deadlines."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from coordinator.domain import aggregation_job, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.lifecycle import Step, Trigger
from coordinator.domain.lineage import verify_lineage
from coordinator.domain.specs import DifferentialPrivacy, PrivacyPolicy, StrategySpec
from coordinator.store import database_blobs
from coordinator.store.models import Blob, ModelVersion, Round, utc_now
from coordinator.store.repository import ModelVersionRepository, RoundRepository, UpdateRepository
from tests.factories import domain_federation, update_bytes

ADMIN = Principal(is_admin=True)


def _after_upload(ctx: Context, fid: str, number: int) -> ModelVersion | None:
    """The job as an upload's kick runs it: the new version, or None."""
    return aggregation_job.run(ctx, fid, number, trigger=Trigger.UPLOAD).version


_federation = domain_federation


def test_competing_aggregators_make_one_version(ctx: Context) -> None:
    fid, parts = _federation(ctx, participants=2)
    for seed, who in enumerate(parts):
        rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
    others = [replace(ctx, instance_id=f"proc-{i}") for i in range(4)]
    results: list[object] = []
    barrier = threading.Barrier(len(others))

    def race(c: Context) -> None:
        barrier.wait()
        results.append(_after_upload(c, fid, 1))

    threads = [threading.Thread(target=race, args=(c,)) for c in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(r is not None for r in results) == 1
    with ctx.sessions() as session:
        assert ModelVersionRepository(session).count_for_round(fid, 1) == 1
        assert [r.number for r in RoundRepository(session).list(fid)] == [1, 2]
    assert verify_lineage(ctx, fid).ok


def test_expired_lease_is_taken_over_with_identical_bytes(ctx: Context) -> None:
    fid, parts = _federation(ctx, participants=2)
    for seed, who in enumerate(parts):
        rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
    crashed = replace(ctx, instance_id="crashed")
    now = utc_now()
    step, claimed = aggregation_job.claim_round(crashed, fid, 1, trigger=Trigger.UPLOAD)
    assert step is Step.AGGREGATE
    assert claimed is not None
    # the lease is still valid: nobody else may take the round
    assert _after_upload(ctx, fid, 1) is None
    assert aggregation_job.run(ctx, fid, 1, trigger=Trigger.TIMER).version is None
    with ctx.sessions.begin() as session:
        session.execute(update(Round).values(lease_expires_at=now - timedelta(seconds=1)))
    version = aggregation_job.run(ctx, fid, 1, trigger=Trigger.TIMER).version
    assert version is not None
    # the crashed process wakes up late: its lease is gone, it cannot commit
    assert aggregation_job.complete_claim(crashed, claimed) is None
    with ctx.sessions() as session:
        assert ModelVersionRepository(session).count_for_round(fid, 1) == 1


def _round_one_row(ctx: Context, fid: str) -> Round:
    with ctx.read_sessions() as session:
        row = RoundRepository(session).get(fid, 1)
        assert row is not None
        return row


def test_the_one_transaction_path_takes_over_an_expired_lease_by_one_compare_and_set(
    ctx: Context,
) -> None:
    # the one-transaction path writes no claim: its close is the claim's compare-and-set
    fid, parts = _federation(ctx, participants=2)
    for seed, who in enumerate(parts):
        rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
    crashed = replace(ctx, instance_id="crashed")
    _, claimed = aggregation_job.claim_round(crashed, fid, 1, trigger=Trigger.UPLOAD)
    assert claimed is not None
    # a live lease: the one transaction decides to wait and writes nothing
    waited = aggregation_job._run_at_once(ctx, fid, 1, trigger=Trigger.UPLOAD)
    assert (waited.step, waited.version) == (Step.WAIT, None)
    assert _round_one_row(ctx, fid).lease_owner == "crashed"
    with ctx.sessions.begin() as session:
        session.execute(update(Round).values(lease_expires_at=utc_now() - timedelta(seconds=1)))
    outcome = aggregation_job._run_at_once(ctx, fid, 1, trigger=Trigger.UPLOAD)
    assert outcome.version is not None
    row = _round_one_row(ctx, fid)
    assert (row.state, row.result_version, row.lease_owner) == ("closed", 1, ctx.instance_id)
    assert row.lease_expires_at is None
    assert row.closed_at is not None
    # the crashed process wakes up late: its lease is gone, it cannot commit
    assert aggregation_job.complete_claim(crashed, claimed) is None
    with ctx.sessions() as session:
        assert ModelVersionRepository(session).count_for_round(fid, 1) == 1
    assert verify_lineage(ctx, fid).ok


def test_claim_and_close_is_a_compare_and_set(ctx: Context) -> None:
    fid, _parts = _federation(ctx, participants=2)
    round_id = _round_one_row(ctx, fid).id
    now = utc_now()
    with ctx.sessions.begin() as session:
        repo = RoundRepository(session)
        assert repo.claim_for_aggregation(
            round_id, owner="other", now=now, lease_until=now + timedelta(seconds=60)
        )
    with ctx.sessions.begin() as session:  # held under a live lease: not claimable
        repo = RoundRepository(session)
        assert not repo.claim_and_close(
            round_id, owner="me", now=now, result_version=1, closed_at=now
        )
        assert not repo.claim_and_fail(round_id, owner="me", now=now, reason="x", closed_at=now)
    later = now + timedelta(seconds=61)  # the lease expired: taken over and closed at once
    with ctx.sessions.begin() as session:
        repo = RoundRepository(session)
        assert repo.claim_and_close(
            round_id, owner="me", now=later, result_version=1, closed_at=later
        )
    row = _round_one_row(ctx, fid)
    assert (row.state, row.lease_owner, row.result_version) == ("closed", "me", 1)
    assert row.lease_expires_at is None
    with ctx.sessions.begin() as session:  # closed: nothing more to claim
        repo = RoundRepository(session)
        assert not repo.claim_and_close(
            round_id, owner="me", now=later, result_version=2, closed_at=later
        )
        assert not repo.claim_and_fail(round_id, owner="me", now=later, reason="x", closed_at=later)


@pytest.mark.parametrize("inline", [False, True], ids=["weights-in-files", "weights-in-rows"])
def test_dp_takeover_keeps_the_first_commit_and_drops_the_other_draw(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    # DP noise is a fresh CSPRNG draw per aggregation: a takeover computes other bytes,
    # so exactly-once means the first committed result is the round's only one
    if not inline:
        ctx.inline_blob_max_bytes = 0
    fid, parts = _federation(
        ctx,
        participants=2,
        strategy=StrategySpec(normalization="total", weighting="uniform"),
        privacy=PrivacyPolicy(dp=DifferentialPrivacy(clip_norm=1.0, noise_multiplier=1.0)),
    )
    for seed, who in enumerate(parts):
        rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
    crashed = replace(ctx, instance_id="crashed")
    _, claimed = aggregation_job.claim_round(crashed, fid, 1, trigger=Trigger.UPLOAD)
    assert claimed is not None
    with ctx.sessions.begin() as session:
        session.execute(update(Round).values(lease_expires_at=utc_now() - timedelta(seconds=1)))
    winner = aggregation_job.run(ctx, fid, 1, trigger=Trigger.TIMER).version
    assert winner is not None
    removed: list[str] = []
    remove = ctx.blobs.remove

    def recording_remove(digest: str) -> None:
        removed.append(digest)
        remove(digest)

    monkeypatch.setattr(ctx.blobs, "remove", recording_remove)
    written: list[str] = []

    def recording_store_in(session: Session, data: bytes, digest: str) -> None:
        written.append(digest)
        database_blobs.store_in(session, data, digest)

    monkeypatch.setattr(aggregation_job, "store_in", recording_store_in)
    assert aggregation_job.complete_claim(crashed, claimed) is None
    # the late process drew other noise; its weights are gone (files: removed; rows:
    # never written, its transaction rolled back), the winner's stay
    if inline:
        assert removed == []
        assert written == []
        with ctx.read_sessions() as session:
            stored = set(session.scalars(select(Blob.digest)))
        assert winner.sha256 in stored
        assert len(stored) == 3  # two updates and the winner's weights, nothing else
    else:
        assert len(removed) == 1
        assert removed[0] != winner.sha256
        assert not ctx.blobs.exists(removed[0])
    assert ctx.blobs.exists(winner.sha256)
    # a replay of the round finds it closed: no second draw is recorded
    assert aggregation_job.run(ctx, fid, 1, trigger=Trigger.TIMER).version is None
    with ctx.sessions() as session:
        assert ModelVersionRepository(session).count_for_round(fid, 1) == 1
        recorded = ModelVersionRepository(session).get(fid, 1)
        assert recorded is not None
        assert recorded.sha256 == winner.sha256
    assert verify_lineage(ctx, fid).ok


def test_aggregation_is_deterministic(ctx: Context) -> None:
    digests = []
    for _ in range(2):
        fid, parts = _federation(ctx, participants=2)
        for seed, who in enumerate(parts):
            rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
        version = _after_upload(ctx, fid, 1)
        assert version is not None
        digests.append(version.sha256)
    assert digests[0] == digests[1]


def test_deadline_with_quorum_aggregates_what_arrived(ctx: Context) -> None:
    fid, parts = _federation(ctx, participants=3, min_participants=1, deadline_seconds=60)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=1))
    assert aggregation_job.run_due_work(ctx) == 0  # deadline not reached, round incomplete
    with ctx.sessions.begin() as session:
        session.execute(update(Round).values(deadline_at=utc_now() - timedelta(seconds=1)))
    assert aggregation_job.run_due_work(ctx) == 1
    closed = rounds.get_round(ctx, ADMIN, fid, 1)
    assert closed.state == "closed"
    assert closed.result_version == 1


@pytest.mark.parametrize(("action", "state"), [("extend", "open"), ("fail", "failed")])
def test_deadline_below_quorum(ctx: Context, action: str, state: str) -> None:
    fid, parts = _federation(
        ctx, participants=3, min_participants=2, deadline_seconds=60, below_quorum=action
    )
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=1))
    with ctx.sessions.begin() as session:
        session.execute(update(Round).values(deadline_at=utc_now() - timedelta(seconds=1)))
    aggregation_job.run_due_work(ctx)
    first = rounds.get_round(ctx, ADMIN, fid, 1)
    assert first.state == state
    if action == "extend":
        assert first.deadline_at is not None
        assert first.deadline_at > utc_now()
    else:
        second = rounds.get_round(ctx, ADMIN, fid, 2)
        assert second.state == "open"
        assert second.base_version == first.base_version


def test_the_claims_digests_come_with_the_cohorts_active_members(ctx: Context) -> None:
    from coordinator.domain.participants import revoke_participant

    fid, parts = _federation(ctx, participants=3)
    for seed, who in enumerate(parts[:2]):
        rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
    round_id = _round_one_row(ctx, fid).id
    with ctx.read_sessions() as session:
        updates = UpdateRepository(session)
        digests, active = updates.digests_and_cohort(round_id, federation_id=fid, sampled=False)
        assert digests == updates.digests_from_active(round_id)
        assert (len(digests), active) == (2, 3)
    assert parts[0].participant_id is not None
    revoke_participant(ctx, ADMIN, fid, parts[0].participant_id)
    with ctx.read_sessions() as session:
        digests, active = UpdateRepository(session).digests_and_cohort(
            round_id, federation_id=fid, sampled=False
        )
        assert (len(digests), active) == (1, 2)  # neither counts the revoked participant
        # a sampled round counts its drawn members (none drawn into round 1 here)
        sampled = UpdateRepository(session).digests_and_cohort(
            round_id, federation_id=fid, sampled=True
        )
        assert sampled == (digests, 0)
        empty = UpdateRepository(session).digests_and_cohort(
            "no-such-round", federation_id=fid, sampled=False
        )
        assert empty == ([], None)
