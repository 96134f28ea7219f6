"""Evaluation reports and Idempotency-Key records that arrive together share one commit
too (Context.evaluation_commits, Context.record_commits); each report is stored once, a
refused one (an undeclared metric) rolls back alone; a keyed report repeated within its batch
is answered from the first one's record."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator.domain import idempotency
from coordinator.domain.context import Context
from coordinator.domain.errors import ValidationFailed
from coordinator.domain.evaluation import submit_evaluation, submit_keyed_evaluation
from coordinator.store.group_commit import GroupCommit
from coordinator.store.models import Evaluation, IdempotencyRecord
from tests.factories import domain_federation

K = 6


def _hold_then_run(commits: GroupCommit[Any], key: Any, calls: list[Any]) -> dict[int, Any]:
    """Hold the committer's lead until every call queued, so they form one batch."""
    release, entered = threading.Event(), threading.Event()
    outcomes: dict[int, Any] = {}

    def hold(_session: Session) -> None:
        entered.set()
        assert release.wait(30)

    holder = threading.Thread(target=commits.run, args=(key, hold))
    holder.start()
    assert entered.wait(30)

    def call(index: int) -> None:
        try:
            outcomes[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - asserted by the caller
            outcomes[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while commits.waiting < len(calls):
        assert time.monotonic() < deadline, "the calls did not queue"
        time.sleep(0.01)
    assert not outcomes
    release.set()
    for thread in [holder, *threads]:
        thread.join(timeout=30)
    return outcomes


def test_reports_arriving_together_share_a_commit(ctx: Context) -> None:
    fid, principals = domain_federation(ctx, K)
    commits = ctx.evaluation_commits
    assert commits is not None
    calls: list[Callable[[], Any]] = [
        partial(
            submit_evaluation,
            ctx,
            p,
            fid,
            0,
            split="validation",
            metrics={"ndcg@10": 0.1 * i},
            num_users=1 + i,
        )
        for i, p in enumerate(principals)
    ]
    calls.append(
        lambda: submit_evaluation(
            ctx, principals[0], fid, 0, split="test", metrics={"made-up": 1.0}, num_users=1
        )
    )
    before = commits.batches
    outcomes = _hold_then_run(commits, fid, calls)
    assert commits.batches == before + 2
    assert isinstance(outcomes[K], ValidationFailed)
    assert all(isinstance(outcomes[i], Evaluation) for i in range(K))
    with ctx.read_sessions() as session:
        rows = session.scalars(select(Evaluation).where(Evaluation.federation_id == fid)).all()
    assert sorted((r.split, r.num_users) for r in rows) == [("validation", 1 + i) for i in range(K)]


def test_idempotency_records_arriving_together_share_a_commit(ctx: Context) -> None:
    _fid, principals = domain_federation(ctx, K)
    commits = ctx.record_commits
    assert commits is not None
    calls: list[Callable[[], Any]] = [
        partial(idempotency.begin, ctx, p, "key-1", method="POST", path="/x", fingerprint="f")
        for p in principals
    ]
    # the same participant's key twice in one batch: one record, the other in progress
    calls.append(
        lambda: idempotency.begin(
            ctx, principals[0], "key-1", method="POST", path="/x", fingerprint="f"
        )
    )
    before = commits.batches
    outcomes = _hold_then_run(commits, "-", calls)
    assert commits.batches == before + 2
    record_ids = [o for o in outcomes.values() if isinstance(o, str)]
    assert len(record_ids) == K
    assert sum(type(o).__name__ == "RequestInProgress" for o in outcomes.values()) == 1
    with ctx.read_sessions() as session:
        assert session.scalar(select(func.count()).select_from(IdempotencyRecord)) == K


def test_keyed_reports_in_one_batch_store_once_and_the_repeat_replays(ctx: Context) -> None:
    fid, principals = domain_federation(ctx, 2)
    commits = ctx.evaluation_commits
    assert commits is not None
    request = idempotency.KeyedRequest("key-1", "POST", "/x", "f")

    def report(principal: Any, num_users: int) -> Any:
        return submit_keyed_evaluation(
            ctx,
            principal,
            fid,
            0,
            split="validation",
            metrics={"ndcg@10": 0.1},
            num_users=num_users,
            request=request,
            render=lambda row: idempotency.StoredResponse(201, "application/json", row.id),
        )

    # the same participant's key twice in one batch (a retry racing its first attempt),
    # and another participant's same key: two reports, the repeat answered from the first
    calls: list[Callable[[], Any]] = [
        partial(report, principals[0], 1),
        partial(report, principals[0], 1),
        partial(report, principals[1], 2),
    ]
    before = commits.batches
    outcomes = _hold_then_run(commits, fid, calls)
    assert commits.batches == before + 2
    (first, replayed_first), (repeat, replayed), (other, replayed_other) = (
        outcomes[0],
        outcomes[1],
        outcomes[2],
    )
    assert (replayed_first, replayed, replayed_other) == (False, True, False)
    assert repeat == first
    assert other != first
    with ctx.read_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Evaluation)) == 2
        assert session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 2
