"""Work a round no longer does: the timer's tick reads an incomplete round without
taking the write lock, and the aggregation job reads the updates this process accepted
from memory instead of the blob store (with the same bytes, so the same version)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from coordinator.domain import aggregation_job, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.lifecycle import Step, Trigger
from coordinator.domain.participants import revoke_participant
from coordinator.domain.recent_updates import RecentUpdates
from coordinator.store.blobs import sha256_hex
from coordinator.store.models import Round, utc_now
from tests.factories import domain_federation, update_bytes

ADMIN = Principal(is_admin=True)


def _recording_claims(monkeypatch: pytest.MonkeyPatch) -> list[Trigger]:
    claims: list[Trigger] = []
    claim_in = aggregation_job.claim_in  # both paths' claim (two-step, one transaction)

    def recording(*args: Any, **kwargs: Any) -> Any:
        claims.append(kwargs["trigger"])
        return claim_in(*args, **kwargs)

    monkeypatch.setattr(aggregation_job, "claim_in", recording)
    return claims


def test_the_timer_reads_an_incomplete_round_without_claiming_it(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    fid, parts = domain_federation(ctx, participants=3, min_participants=1, deadline_seconds=60)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=1))
    claims = _recording_claims(monkeypatch)
    ctx.settings_cache.clear()  # a fresh process: the timer parses the settings itself
    assert aggregation_job.run_due_work(ctx) == 0
    assert aggregation_job.run_due_work(ctx) == 0
    assert claims == []  # incomplete and before its deadline: no write transaction
    with ctx.sessions.begin() as session:
        session.execute(update(Round).values(deadline_at=utc_now() - timedelta(seconds=1)))
    assert aggregation_job.run_due_work(ctx) == 1  # the deadline passed: quorum 1 aggregates
    assert claims == [Trigger.TIMER]


def test_the_timer_aggregates_a_round_a_revocation_completed(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    fid, parts = domain_federation(ctx, participants=3)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1))
    claims = _recording_claims(monkeypatch)
    assert aggregation_job.run_due_work(ctx) == 0
    assert claims == []
    revoke_participant(ctx, ADMIN, fid, parts[2].participant_id or "")  # 2 of 2 active sent
    assert aggregation_job.run_due_work(ctx) == 1
    assert claims == [Trigger.TIMER]


def test_the_job_reads_this_process_uploads_from_memory(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = []
    for from_memory in (True, False):
        fid, parts = domain_federation(ctx, participants=2)
        bodies = [update_bytes(seed=seed) for seed in range(2)]
        for body, who in zip(bodies, parts, strict=True):
            rounds.submit_update(ctx, who, fid, 1, body)
        digests = {sha256_hex(body) for body in bodies}
        if not from_memory:  # as if another process had accepted them
            ctx.recent_updates.forget(digests)
        read: list[str] = []
        monkeypatch.setattr(type(ctx.blobs), "get_each", _recording(type(ctx.blobs).get_each, read))
        outcome = aggregation_job.run(ctx, fid, 1, trigger=Trigger.UPLOAD)
        monkeypatch.undo()
        assert outcome.step is Step.AGGREGATE
        assert outcome.version is not None
        versions.append(outcome.version.sha256)
        assert set(read) == (set() if from_memory else digests)
        assert ctx.recent_updates.held_bytes() == 0  # aggregated: forgotten
    assert versions[0] == versions[1]  # the same bytes, wherever they were read from


def _recording(get_each: Any, read: list[str]) -> Any:
    def recording_get_each(store: Any, wanted: Sequence[str]) -> Iterator[bytes]:
        read.extend(wanted)
        result: Iterator[bytes] = get_each(store, wanted)
        return result

    return recording_get_each


class _Store:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.asked: list[list[str]] = []

    def get_each(self, digests: Sequence[str]) -> Iterator[bytes]:
        self.asked.append(list(digests))
        return (self.blobs[d] for d in digests)


def test_recent_updates_keep_order_and_bounds() -> None:
    blobs = {f"d{i}": bytes([i]) * 10 for i in range(5)}
    store = _Store(blobs)
    recent = RecentUpdates(max_bytes=30, max_blob_bytes=10)
    recent.put("big", b"x" * 11)  # above max_blob_bytes: not kept
    for digest in ("d0", "d1", "d2", "d3"):
        recent.put(digest, blobs[digest])  # d0 falls out past 30 bytes
    assert recent.held_bytes() == 30
    order = ["d4", "d0", "d3", "d1", "d2"]
    assert list(recent.read_each(store, order)) == [blobs[d] for d in order]  # type: ignore[arg-type]
    assert store.asked == [["d4", "d0"]]  # only what memory did not hold
    # the same bytes from two participants (one digest twice), kept and not kept
    twice = ["d3", "d4", "d3", "d4"]
    assert list(recent.read_each(store, twice)) == [blobs[d] for d in twice]  # type: ignore[arg-type]
    assert store.asked[-1] == ["d4", "d4"]
    recent.forget(["d1", "d2", "nothing"])
    assert recent.held_bytes() == 10
