"""The upload's two combined statements (both backends): the read that also says whether a
repeat exists (``RoundRepository.upload_check``), and the guarded count that returns the
round's completeness (``RoundRepository.count_update_judged``), which must equal what
``RoundRepository.completeness`` reads after the count."""

from __future__ import annotations

from dataclasses import astuple

from sqlalchemy import update

from coordinator.domain import aggregation_job, lifecycle, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.participants import revoke_participant
from coordinator.domain.specs import SamplingPolicy
from coordinator.store.models import Round, utc_now
from coordinator.store.repository import RoundCompleteness, RoundRepository
from tests.factories import domain_federation, update_bytes

ADMIN = Principal(is_admin=True)


def _round_id(ctx: Context, fid: str, number: int) -> str:
    with ctx.read_sessions() as session:
        row = RoundRepository(session).get(fid, number)
        assert row is not None
        return row.id


def _count_and_compare(ctx: Context, fid: str, number: int) -> RoundCompleteness:
    """Count one update with the combined statement, read completeness in the same
    transaction, and roll both back; asserts the two agree."""
    round_id = _round_id(ctx, fid, number)
    with ctx.sessions() as session, session.begin():
        repo = RoundRepository(session)
        judged = repo.count_update_judged(round_id, if_state=lifecycle.RoundState.OPEN)
        read = repo.completeness(fid, number)
        assert judged is not None
        assert read is not None
        assert astuple(judged) == astuple(read)
        session.rollback()
    return judged


def test_the_judged_count_returns_the_completeness_as_counted(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=3, deadline_seconds=600)
    facts = _count_and_compare(ctx, fid, 1)
    assert (facts.state, facts.update_count, facts.cohort_active) == ("open", 1, 3)
    assert facts.deadline_at is not None
    assert lifecycle.certainly_waits(facts, utc_now())  # 1 of 3, before the deadline
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    revoke_participant(ctx, ADMIN, fid, parts[2].participant_id or "")
    facts = _count_and_compare(ctx, fid, 1)
    assert (facts.update_count, facts.cohort_active) == (2, 2)  # the revoked one is out


def test_the_judged_count_counts_a_sampled_rounds_drawn_cohort(ctx: Context) -> None:
    fid, parts = domain_federation(
        ctx, participants=4, min_participants=4, sampling=SamplingPolicy(kind="fixed", size=2)
    )
    aggregation_job.run(ctx, fid, 1, trigger=lifecycle.Trigger.TIMER)  # draws, then waits
    facts = _count_and_compare(ctx, fid, 1)
    assert (facts.sampled, facts.cohort_size, facts.cohort_active) == (True, 2, 2)
    assert facts.population == 4


def test_the_judged_count_counts_nothing_in_a_round_not_open(ctx: Context) -> None:
    fid, _parts = domain_federation(ctx, participants=2)
    round_id = _round_id(ctx, fid, 1)
    with ctx.sessions.begin() as session:
        session.execute(update(Round).where(Round.id == round_id).values(state="closed"))
    with ctx.sessions.begin() as session:
        repo = RoundRepository(session)
        assert repo.count_update_judged(round_id, if_state=lifecycle.RoundState.OPEN) is None
    with ctx.read_sessions() as session:
        facts = RoundRepository(session).completeness(fid, 1)
        assert facts is not None
        assert facts.update_count == 0


def _repeats(ctx: Context, fid: str, number: int, who: Principal, key: str | None) -> bool:
    with ctx.read_sessions() as session:
        target = RoundRepository(session).upload_check(fid, number, who.participant_id or "", key)
        assert target is not None
        return bool(target.repeats)


def test_the_upload_check_says_whether_a_repeat_exists(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=3, max_rounds=3)
    assert not _repeats(ctx, fid, 1, parts[0], "k-0")
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0), idempotency_key="k-0")
    assert _repeats(ctx, fid, 1, parts[0], None)  # its update of the round
    assert _repeats(ctx, fid, 1, parts[0], "k-other")
    assert _repeats(ctx, fid, 2, parts[0], "k-0")  # the key, sent to another round
    assert not _repeats(ctx, fid, 2, parts[0], "k-1")  # round 2 does not exist yet
    assert not _repeats(ctx, fid, 1, parts[1], "k-0")  # another participant's key
    with ctx.read_sessions() as session:
        assert RoundRepository(session).upload_check("nope", 1, "p", None) is None
        target = RoundRepository(session).upload_check(fid, 7, parts[1].participant_id or "", None)
        assert target is not None
        assert (target.round_id, bool(target.repeats)) == (None, False)


def test_a_repeat_is_still_answered_from_its_receipt(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=3, max_rounds=3)
    body = update_bytes(seed=0)
    first = rounds.submit_update(ctx, parts[0], fid, 1, body, idempotency_key="k-0")
    again = rounds.submit_update(ctx, parts[0], fid, 1, body, idempotency_key="k-0")
    assert first.created
    assert not again.created
    assert again.update.id == first.update.id
    with ctx.read_sessions() as session:
        facts = RoundRepository(session).completeness(fid, 1)
        assert facts is not None
        assert facts.update_count == 1  # the repeat counted nothing
