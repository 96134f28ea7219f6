"""The aggregation job's own cost on a small round (both backends): a kick of an
incomplete round reads one row, and never answers "waits" where ``next_step`` would
not; the new version goes straight into the cache its downloads, and the next round's
aggregation, read."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import event, update

from coordinator.domain import aggregation_job, lifecycle, model_versions, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.participants import revoke_participant
from coordinator.domain.specs import SamplingPolicy
from coordinator.store.models import Round, utc_now
from coordinator.store.repository import (
    FederationRepository,
    RoundCohortRepository,
    RoundRepository,
)
from tests.factories import domain_federation, update_bytes

ADMIN = Principal(is_admin=True)


@contextmanager
def statements(ctx: Context) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = ctx.sessions.kw["bind"]

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.split()[0].upper() not in ("BEGIN", "PRAGMA", "SET"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _agrees_with_next_step(ctx: Context, fid: str, number: int) -> bool:
    """certainly_waits on the round now; asserts next_step says WAIT whenever it does."""
    now = utc_now()
    with ctx.read_sessions() as session:
        facts = RoundRepository(session).completeness(fid, number)
        federation = FederationRepository(session).get(fid)
        round_row = RoundRepository(session).get(fid, number)
        assert facts is not None
        assert federation is not None
        assert round_row is not None
        waits = lifecycle.certainly_waits(facts, now)
        step = lifecycle.next_step(
            session, federation, round_row, trigger=lifecycle.Trigger.UPLOAD, now=now
        )
    assert not waits or step is lifecycle.Step.WAIT, (facts, step)
    return waits


def test_a_kick_of_an_incomplete_round_reads_one_row(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=3)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    with statements(ctx) as seen:
        outcome = aggregation_job.run(ctx, fid, 1, trigger=lifecycle.Trigger.UPLOAD)
    assert outcome.step is lifecycle.Step.WAIT
    assert len(seen) == 1, seen
    assert seen[0].lstrip().upper().startswith("SELECT")


def test_certainly_waits_only_where_next_step_waits(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=3, deadline_seconds=600)
    assert _agrees_with_next_step(ctx, fid, 1)  # nothing uploaded
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1))
    assert _agrees_with_next_step(ctx, fid, 1)  # 2 of 3
    # the third participant leaves: the two updates are the whole cohort now
    revoke_participant(ctx, ADMIN, fid, parts[2].participant_id or "")
    assert not _agrees_with_next_step(ctx, fid, 1)
    # past the deadline the round aggregates, fails or is extended: never "certainly waits"
    with ctx.sessions.begin() as session:
        session.execute(
            update(Round)
            .where(Round.federation_id == fid, Round.number == 1)
            .values(deadline_at=utc_now() - timedelta(seconds=1))
        )
    assert not _agrees_with_next_step(ctx, fid, 1)


def test_a_revoked_uploader_leaves_the_round_to_the_locked_check(ctx: Context) -> None:
    # its update counts in update_count (2 of 2 active) but not in next_step's count
    # (1 of 2): the row alone cannot tell, so the kick asks next_step, which waits
    fid, parts = domain_federation(ctx, participants=3)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1))
    revoke_participant(ctx, ADMIN, fid, parts[0].participant_id or "")
    assert not _agrees_with_next_step(ctx, fid, 1)
    outcome = aggregation_job.run(ctx, fid, 1, trigger=lifecycle.Trigger.UPLOAD)
    assert outcome.step is lifecycle.Step.WAIT
    assert outcome.version is None


def test_a_round_being_aggregated_waits_until_its_lease_expires(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=2)
    for seed, who in enumerate(parts):
        rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
    assert not _agrees_with_next_step(ctx, fid, 1)  # complete
    _, claimed = aggregation_job.claim_round(
        replace(ctx, instance_id="other"), fid, 1, trigger=lifecycle.Trigger.UPLOAD
    )
    assert claimed is not None
    assert _agrees_with_next_step(ctx, fid, 1)  # another process holds the lease
    with ctx.sessions.begin() as session:
        session.execute(
            update(Round)
            .where(Round.federation_id == fid, Round.number == 1)
            .values(lease_expires_at=utc_now() - timedelta(seconds=1))
        )
    assert not _agrees_with_next_step(ctx, fid, 1)  # any process may take it over
    version = aggregation_job.run(ctx, fid, 1, trigger=lifecycle.Trigger.UPLOAD).version
    assert version is not None
    assert _agrees_with_next_step(ctx, fid, 1)  # closed


def test_a_sampled_round_counts_its_drawn_cohort(ctx: Context) -> None:
    fid, parts = domain_federation(
        ctx, participants=4, min_participants=4, sampling=SamplingPolicy(kind="fixed", size=2)
    )
    assert _agrees_with_next_step(ctx, fid, 1)  # not drawn yet: enrolled after it opened
    aggregation_job.run(ctx, fid, 1, trigger=lifecycle.Trigger.TIMER)  # draws, then waits
    with ctx.read_sessions() as session:
        round_row = RoundRepository(session).get(fid, 1)
        assert round_row is not None
        assert round_row.cohort_size == 2
        members = RoundCohortRepository(session).members(round_row.id)
    drawn = [p for p in parts if p.participant_id in members]
    assert len(drawn) == 2
    rounds.submit_update(ctx, drawn[0], fid, 1, update_bytes(seed=0))
    assert _agrees_with_next_step(ctx, fid, 1)  # 1 of the 2 drawn, though 4 are active
    rounds.submit_update(ctx, drawn[1], fid, 1, update_bytes(seed=1))
    assert not _agrees_with_next_step(ctx, fid, 1)


def test_the_new_version_is_served_and_aggregated_on_without_a_read(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=2, max_rounds=5)
    for seed, who in enumerate(parts):
        rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
    outcome = aggregation_job.run(ctx, fid, 1, trigger=lifecycle.Trigger.UPLOAD)
    assert outcome.version is not None
    stored = ctx.blobs.get(outcome.version.sha256)

    reads: list[str] = []
    get, get_each = ctx.blobs.get, ctx.blobs.get_each

    def recording_get(digest: str) -> bytes:
        reads.append(digest)
        return get(digest)

    def recording_get_each(digests: Sequence[str]) -> Iterator[bytes]:
        reads.extend(digests)
        return get_each(digests)

    ctx.blobs.get = recording_get  # type: ignore[method-assign]
    ctx.blobs.get_each = recording_get_each  # type: ignore[method-assign]
    with statements(ctx) as seen:
        served = model_versions.served_version(ctx, parts[0], fid, 1)
        weights = model_versions.served_bytes(ctx, served.blob("float32")[0])
    assert weights == stored
    assert seen == []  # no database
    assert reads == []  # no blob store
    assert served.manifest == outcome.version.manifest
    assert served.signature == outcome.version.signature

    for seed, who in enumerate(parts):
        rounds.submit_update(ctx, who, fid, 2, update_bytes(round=2, base_version=1, seed=seed))
    second = aggregation_job.run(ctx, fid, 2, trigger=lifecycle.Trigger.UPLOAD).version
    assert second is not None
    assert second.parent == 1
    assert outcome.version.sha256 not in reads  # the base came from the cache
    assert reads == []  # and the two updates from this process's memory (recent_updates)
