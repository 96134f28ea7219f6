"""The round's critical path: an unsynced claim that may be lost, and this process's
long-polls woken by the aggregation itself (both backends)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio
import pytest
from sqlalchemy import update

from coordinator.domain import aggregation_job, rounds
from coordinator.domain.context import Context
from coordinator.domain.lifecycle import Step, Trigger
from coordinator.domain.lineage import verify_lineage
from coordinator.store.models import Round
from coordinator.store.repository import (
    FederationMark,
    ModelVersionRepository,
    RoundRepository,
    RoundView,
)
from tests.factories import domain_federation, update_bytes


def test_a_lost_claim_reopens_and_the_round_aggregates_once(ctx: Context) -> None:
    # The claim commits without waiting for its fsync. A power cut can lose it: the
    # database comes back as if the claim never happened (the round open, no lease),
    # while the process that claimed it is gone or, on a database-server crash, still
    # aggregating. Nothing may be aggregated twice, and the round must not stall.
    fid, parts = domain_federation(ctx, participants=2)
    for seed, who in enumerate(parts):
        rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
    claimer = replace(ctx, instance_id="claimer")
    step, claimed = aggregation_job.claim_round(claimer, fid, 1, trigger=Trigger.UPLOAD)
    assert step is Step.AGGREGATE
    assert claimed is not None
    with ctx.sessions.begin() as session:  # the claim's log frames were never written
        session.execute(
            update(Round)
            .where(Round.federation_id == fid, Round.number == 1)
            .values(state="open", lease_owner=None, lease_expires_at=None)
        )
    # the next timer tick (any process) claims the round again and aggregates it
    version = aggregation_job.run(ctx, fid, 1, trigger=Trigger.TIMER).version
    assert version is not None
    # the first claimer, still running, cannot commit a second version
    assert aggregation_job.complete_claim(claimer, claimed) is None
    with ctx.read_sessions() as session:
        assert ModelVersionRepository(session).count_for_round(fid, 1) == 1
        assert [r.state for r in RoundRepository(session).list(fid)] == ["closed", "open"]
    assert verify_lineage(ctx, fid).ok


def test_a_lost_claim_before_anyone_else_looked_is_claimed_again(ctx: Context) -> None:
    # the claimer died with its claim (a power cut): the timer needs no lease to expire
    fid, parts = domain_federation(ctx, participants=2)
    for seed, who in enumerate(parts):
        rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
    _, claimed = aggregation_job.claim_round(
        replace(ctx, instance_id="gone"), fid, 1, trigger=Trigger.UPLOAD
    )
    assert claimed is not None
    with ctx.sessions.begin() as session:
        session.execute(
            update(Round)
            .where(Round.federation_id == fid, Round.number == 1)
            .values(state="open", lease_owner=None, lease_expires_at=None)
        )
    outcome = aggregation_job.run(ctx, fid, 1, trigger=Trigger.TIMER)
    assert outcome.version is not None
    assert outcome.version.contributors == sorted(claimed.update_digests)


def test_the_aggregation_wakes_this_process_long_polls_at_once(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the notifier reads the database once a minute here: only the job's poke can wake
    # the poll before its 20 s run out, and a poll that ran out returns round 1
    ctx.notifier.interval_seconds = 60.0
    fid, parts = domain_federation(ctx, participants=2)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    answers: list[tuple[FederationMark, RoundView]] = []
    round_reads: list[str] = []
    read_round = rounds.current_round

    def counted(*args: Any) -> tuple[FederationMark, RoundView]:
        round_reads.append("read")
        return read_round(*args)

    monkeypatch.setattr(rounds, "current_round", counted)

    async def main() -> None:
        async def poll() -> None:
            answer = await rounds.wait_for_round(ctx, parts[0], fid, after=1, wait_seconds=20)
            answers.append(answer)

        async with anyio.create_task_group() as group:
            group.start_soon(poll)
            for _ in range(400):  # bounded: until the poll waits on the notifier
                if ctx.notifier.waiting and ctx.notifier.reads:
                    break
                await anyio.sleep(0.01)
            assert ctx.notifier.waiting == 1
            reads = ctx.notifier.reads

            def last_upload_and_kick() -> None:
                rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1))
                outcome = aggregation_job.run(ctx, fid, 1, trigger=Trigger.UPLOAD)
                assert outcome.version is not None

            await anyio.to_thread.run_sync(last_upload_and_kick)
        # woken by the poke, which handed over round 2 and its mark: no read of the marks,
        # and the poll answers from the round handed over, without reading it
        assert ctx.notifier.reads == reads
        assert ctx.notifier.handed == 1

        # the next round's poll, back within the interval: its federation's mark is still
        # known, and the round handed over answers its first look without a read
        marks_read = ctx.notifier.reads
        with anyio.move_on_after(0.2):
            await rounds.wait_for_round(ctx, parts[0], fid, after=2, wait_seconds=20)
        assert ctx.notifier.reads == marks_read

    anyio.run(main)
    assert round_reads == ["read"]  # the first poll's first read (round 1) only
    [(federation, row)] = answers
    assert row.number == 2
    # the right round: what a read answers now, every column
    assert (federation, row) == read_round(ctx, parts[0], fid)


def test_a_round_handed_over_is_the_mark_the_next_read_finds(ctx: Context) -> None:
    """No double wake-up: after a poll was woken from the mark the job handed over, the
    notifier's periodic read finds that same mark, so the polls still waiting (for the
    round after) are not woken again by it."""
    ctx.notifier.interval_seconds = 60.0
    fid, parts = domain_federation(ctx, participants=2)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    wakes: list[int] = []
    answers: list[int] = []

    async def main() -> None:
        async def poll(after: int) -> None:
            _, row = await rounds.wait_for_round(ctx, parts[0], fid, after=after, wait_seconds=20)
            answers.append(row.number)

        notify = ctx.notifier._wake_drawn

        async def counted(federation_id: str, mark: Any) -> None:
            wakes.append(mark[0])
            await notify(federation_id, mark)

        ctx.notifier._wake_drawn = counted  # type: ignore[method-assign]
        async with anyio.create_task_group() as group:
            group.start_soon(poll, 1)  # answered by round 2
            group.start_soon(poll, 2)  # woken by round 2 too, then waits on for round 3
            for _ in range(400):  # bounded: until both polls wait on the notifier
                if ctx.notifier.waiting == 2 and ctx.notifier.reads:
                    break
                await anyio.sleep(0.01)
            assert ctx.notifier.waiting == 2

            def last_upload_and_kick() -> None:
                rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1))
                aggregation_job.run(ctx, fid, 1, trigger=Trigger.UPLOAD)

            await anyio.to_thread.run_sync(last_upload_and_kick)
            for _ in range(400):  # bounded: until round 2's poll answered
                if answers and ctx.notifier.waiting == 1:
                    break
                await anyio.sleep(0.01)
            assert answers == [2]
            assert wakes == [2]  # once, from the mark handed over
            assert ctx.notifier.waiting == 1  # the second poll waits on, under round 2
            reads = ctx.notifier.reads
            ctx.notifier.poke()  # a read now, as the interval's would be
            for _ in range(400):
                if ctx.notifier.reads > reads:
                    break
                await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            assert ctx.notifier.reads == reads + 1
            assert wakes == [2]  # the read found the mark handed over: nobody woken again
            assert ctx.notifier.waiting == 1
            assert answers == [2]
            group.cancel_scope.cancel()

    anyio.run(main)


def test_a_poke_with_nobody_waiting_is_harmless(ctx: Context) -> None:
    ctx.notifier.poke()  # no task, no loop: nothing to do
    assert ctx.notifier.waiting == 0
    assert ctx.notifier.reads == 0
