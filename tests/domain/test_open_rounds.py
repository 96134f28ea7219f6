"""Uploads to a round this process already found open skip the read phase
(``domain/open_rounds.py``): the same answers as the full path for first uploads, retries,
conflicts, reused keys, closed rounds and invalid updates (both backends)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select, update

from coordinator.domain import aggregation_job, lifecycle, rounds
from coordinator.domain.context import Context
from coordinator.domain.errors import (
    IdempotencyKeyReused,
    InvalidUpdate,
    RoundClosed,
    UpdateConflict,
)
from coordinator.domain.open_rounds import OpenRoundFacts, OpenRounds
from coordinator.domain.specs import SamplingPolicy
from coordinator.store.models import Round, RoundCohortMember, Update
from coordinator.store.repository import RoundRepository
from tests.factories import domain_federation, update_bytes


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The federations whose upload read phase ran (``RoundRepository.upload_check``)."""
    seen: list[str] = []
    check = RoundRepository.upload_check

    def counted(self: RoundRepository, federation_id: str, *args: Any) -> Any:
        seen.append(federation_id)
        return check(self, federation_id, *args)

    monkeypatch.setattr(RoundRepository, "upload_check", counted)
    return seen


def _round(ctx: Context, fid: str, number: int) -> Round:
    with ctx.read_sessions() as session:
        row = RoundRepository(session).get(fid, number)
        assert row is not None
        return row


def _updates(ctx: Context, fid: str) -> int:
    with ctx.read_sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Update)
                .join(Round, Round.id == Update.round_id)
                .where(Round.federation_id == fid)
            )
            or 0
        )


def test_after_the_first_upload_the_next_ones_skip_the_read(ctx: Context, reads: list[str]) -> None:
    fid, parts = domain_federation(ctx, participants=4, min_participants=4)
    first = rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    assert reads == [fid]
    assert ctx.open_rounds.get(fid, 1) == OpenRoundFacts(_round(ctx, fid, 1).id, 0)
    second = rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1), idempotency_key="k")
    third = rounds.submit_update(ctx, parts[2], fid, 1, update_bytes(seed=2))
    assert reads == [fid]  # no read phase for the second and third
    assert first.created
    assert second.created
    assert third.created
    assert second.update.idempotency_key == "k"
    assert len({first.update.id, second.update.id, third.update.id}) == 3
    row = _round(ctx, fid, 1)
    assert (row.state, row.update_count) == ("open", 3)
    # judged like the full path's: 3 of 4, so the round certainly waits (no kick)
    assert third.may_complete is False
    assert third.facts is not None
    assert (third.facts.update_count, third.facts.cohort_active) == (3, 4)
    last = rounds.submit_update(ctx, parts[3], fid, 1, update_bytes(seed=3))
    assert last.may_complete is True  # the one that completes the round kicks its job


def test_a_retry_with_a_warm_cache_gets_its_receipt_and_counts_nothing(
    ctx: Context, reads: list[str]
) -> None:
    fid, parts = domain_federation(ctx, participants=3, min_participants=3)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    body = update_bytes(seed=1)
    original = rounds.submit_update(ctx, parts[1], fid, 1, body, idempotency_key="k1")
    for key in ("k1", None, "another"):
        again = rounds.submit_update(ctx, parts[1], fid, 1, body, idempotency_key=key)
        assert not again.created
        assert again.update.id == original.update.id
    # the first upload read, the original did not; each retry found its repeat in the
    # write transaction (rolled back) and was answered by the full path
    assert reads == [fid] * 4
    assert _round(ctx, fid, 1).update_count == 2
    assert _updates(ctx, fid) == 2
    with pytest.raises(UpdateConflict):  # other bytes to the same round
        rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=9))
    with pytest.raises(IdempotencyKeyReused):  # the key of that upload with other bytes
        rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=9), idempotency_key="k1")
    assert _round(ctx, fid, 1).update_count == 2
    assert ctx.open_rounds.get(fid, 1) is not None  # still open: kept


def test_a_key_of_an_earlier_round_is_refused_with_a_warm_cache(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=2, min_participants=2)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0), idempotency_key="a")
    rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1), idempotency_key="b")
    aggregation_job.run(ctx, fid, 1, trigger=lifecycle.Trigger.ADMIN)
    assert _round(ctx, fid, 2).state == "open"
    rounds.submit_update(ctx, parts[0], fid, 2, update_bytes(round=2, base_version=1, seed=2))
    assert ctx.open_rounds.get(fid, 2) is not None
    with pytest.raises(IdempotencyKeyReused):
        rounds.submit_update(
            ctx,
            parts[1],
            fid,
            2,
            update_bytes(round=2, base_version=1, seed=3),
            idempotency_key="b",
        )
    assert _round(ctx, fid, 2).update_count == 1


def test_a_round_closed_since_is_refused_and_forgotten(ctx: Context, reads: list[str]) -> None:
    fid, parts = domain_federation(ctx, participants=3, min_participants=3)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    with ctx.sessions.begin() as session:
        session.execute(
            update(Round)
            .where(Round.federation_id == fid, Round.number == 1)
            .values(state="closed")
        )
    with pytest.raises(RoundClosed):
        rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1))
    assert ctx.open_rounds.get(fid, 1) is None
    # the full path answered: a bad update to the closed round gets the 409, not a 422
    with pytest.raises(RoundClosed):
        rounds.submit_update(ctx, parts[2], fid, 1, update_bytes(base_version=7, seed=2))
    assert reads == [fid, fid, fid]
    assert _round(ctx, fid, 1).update_count == 1
    assert _updates(ctx, fid) == 1


def test_an_invalid_update_gets_the_full_paths_refusal(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=3, min_participants=3)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    with pytest.raises(InvalidUpdate) as refused:
        rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(base_version=3, seed=1))
    assert refused.value.extra.get("field") == "base_version"
    with pytest.raises(InvalidUpdate):
        rounds.submit_update(ctx, parts[1], fid, 1, b"not safetensors")
    assert _round(ctx, fid, 1).update_count == 1
    assert rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1)).created


def test_a_sampled_round_is_not_kept(ctx: Context, reads: list[str]) -> None:
    fid, parts = domain_federation(
        ctx, participants=4, min_participants=3, sampling=SamplingPolicy(kind="fixed", size=3)
    )
    aggregation_job.run(ctx, fid, 1, trigger=lifecycle.Trigger.TIMER)  # draws the cohort
    with ctx.read_sessions() as session:
        drawn = set(
            session.scalars(
                select(RoundCohortMember.participant_id).where(
                    RoundCohortMember.round_id == _round(ctx, fid, 1).id
                )
            )
        )
    members = [p for p in parts if p.participant_id in drawn]
    assert len(members) == 3
    for seed, principal in enumerate(members[:2]):
        assert rounds.submit_update(ctx, principal, fid, 1, update_bytes(seed=seed)).created
    # each upload checked its cohort membership on the read phase
    assert reads == [fid, fid]
    assert ctx.open_rounds.get(fid, 1) is None


def test_the_count_says_whether_the_upload_may_repeat_one(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=3, min_participants=3)
    p0, p1 = (p.participant_id or "" for p in parts[:2])
    round_id = _round(ctx, fid, 1).id

    def count(participant: str, key: str | None) -> tuple[Any, bool]:
        with ctx.sessions() as session, session.begin():
            found = RoundRepository(session).count_update_unless_repeat(
                round_id, participant, key, if_state=lifecycle.RoundState.OPEN
            )
            judged = RoundRepository(session).completeness(fid, 1)
            session.rollback()
        if found[0] is not None:
            assert found[0] == judged
        return found

    facts, repeats = count(p0, None)
    assert facts is not None
    assert facts.update_count == 1
    assert not repeats
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0), idempotency_key="x")
    assert count(p0, None)[1]  # its update of the round
    assert count(p1, "x")[1] is False  # another participant's key
    assert count(p1, None)[1] is False
    with ctx.sessions.begin() as session:
        session.execute(update(Round).where(Round.id == round_id).values(state="closed"))
    assert count(p1, None) == (None, False)


def test_the_facts_kept_are_bounded() -> None:
    kept = OpenRounds(max_rounds=2)
    for number in (1, 2, 3):
        kept.put("f", number, OpenRoundFacts(f"r{number}", number - 1))
    assert kept.get("f", 1) is None
    assert kept.get("f", 3) == OpenRoundFacts("r3", 2)
    kept.forget("f", 3)
    assert kept.get("f", 3) is None
    assert kept.get("f", 2) is not None


def test_a_repeat_in_a_batch_rolls_back_alone(ctx: Context) -> None:
    """Two uploads without the read phase in one group-commit batch: the retry's unit finds
    its repeat and rolls back to its SAVEPOINT (then the full path answers it), the first
    upload beside it commits."""
    fid, parts = domain_federation(ctx, participants=3, min_participants=3)
    body = update_bytes(seed=0)
    original = rounds.submit_update(ctx, parts[0], fid, 1, body, idempotency_key="k0")
    commits = ctx.upload_commits
    assert commits is not None
    release, entered = threading.Event(), threading.Event()

    def hold(_session: Any) -> None:
        entered.set()
        assert release.wait(30)

    holder = threading.Thread(target=commits.run, args=(("-", 0), hold))
    holder.start()
    assert entered.wait(30)
    answers: dict[str, Any] = {}

    def send(name: str, principal: Any, data: bytes, key: str) -> None:
        answers[name] = rounds.submit_update(ctx, principal, fid, 1, data, idempotency_key=key)

    senders = [
        threading.Thread(target=send, args=("retry", parts[0], body, "k0")),
        threading.Thread(target=send, args=("first", parts[1], update_bytes(seed=1), "k1")),
    ]
    batches = commits.batches
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 30
    while commits.waiting < 2:
        assert time.monotonic() < deadline, "the uploads did not queue"
        time.sleep(0.01)
    release.set()
    holder.join(timeout=30)
    for sender in senders:
        sender.join(timeout=30)
    assert commits.batches > batches
    assert not answers["retry"].created
    assert answers["retry"].update.id == original.update.id
    assert answers["first"].created
    assert _round(ctx, fid, 1).update_count == 2
    assert _updates(ctx, fid) == 2
