"""A small plaintext round completed by an upload is aggregated inside that upload's own
write transaction, before its COMMIT (the upload group commit's finish, installed by
``RoundWorker``; ``aggregation_job.aggregate_before_commit``), on SQLite: the uploads and
the new version share one COMMIT (one fsync). The same version as after the COMMIT;
nothing of the round is visible, or cached, unless that COMMIT succeeds; an error in the
job leaves the uploads acknowledged and the round to the kick after the COMMIT. On
PostgreSQL the round is aggregated after the COMMIT, as before."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from coordinator.domain import aggregation_job, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.round_notifier import Moved, mark_of
from coordinator.store.models import ModelVersion, Round, Update
from coordinator.store.repository import FederationRepository
from coordinator.worker import RoundWorker
from tests.factories import domain_federation, update_bytes


class _Crash(Exception):
    pass


@pytest.fixture
def commits(ctx: Context) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = ctx.sessions.kw["bind"]

    def on_commit(_conn: Any) -> None:
        seen.append("commit")

    event.listen(engine, "commit", on_commit)
    yield seen
    event.remove(engine, "commit", on_commit)


def _sqlite(ctx: Context) -> bool:
    return str(ctx.sessions.kw["bind"].dialect.name) == "sqlite"


def _upload(
    worker: RoundWorker, ctx: Context, who: Principal, fid: str, seed: int
) -> rounds.Receipt:
    """An upload as the route runs it: the domain call, then its kick, on one thread."""
    submit = partial(rounds.submit_update, ctx, who, fid, 1, update_bytes(seed=seed))
    return worker.accept_upload(submit, fid, 1)


def _state(ctx: Context, fid: str) -> tuple[str, int | None, int, int]:
    """Round 1's state and result version, its federation's versions, its updates."""
    with ctx.read_sessions() as session:
        row = session.scalars(
            select(Round).where(Round.federation_id == fid, Round.number == 1)
        ).one()
        versions = session.scalar(
            select(func.count()).select_from(ModelVersion).where(ModelVersion.federation_id == fid)
        )
        updates = session.scalar(
            select(func.count()).select_from(Update).where(Update.round_id == row.id)
        )
        return row.state, row.result_version, int(versions or 0), int(updates or 0)


def test_the_completing_upload_and_its_round_share_one_commit(
    ctx: Context, commits: list[str]
) -> None:
    worker = RoundWorker(ctx)
    fid, parts = domain_federation(ctx, participants=2)
    first = _upload(worker, ctx, parts[0], fid, 0)
    assert not first.aggregated
    polls = threading.Event()
    poke = ctx.notifier.poke
    handed: list[Moved | None] = []

    def poked(moved: Moved | None = None) -> None:
        handed.append(moved)
        polls.set()
        poke(moved)

    ctx.notifier.poke = poked  # type: ignore[method-assign]
    commits.clear()
    last = _upload(worker, ctx, parts[1], fid, 1)
    assert last.created
    assert _state(ctx, fid) == ("closed", 1, 2, 2)  # version 0 and the new one
    assert polls.is_set()  # the long-polls were told
    # of round 2 and the federation's mark, exactly as a read answers them once committed
    # (a field that differed would make the notifier's next read wake every poll again)
    [moved] = handed
    assert moved is not None
    assert moved == rounds.current_round(ctx, parts[0], fid)
    with ctx.read_sessions() as session:
        assert mark_of(*moved) == FederationRepository(session).round_marks([fid])[fid]
    with ctx.read_sessions() as session:
        version = session.scalars(
            select(ModelVersion).where(ModelVersion.federation_id == fid, ModelVersion.version == 1)
        ).one()
    assert ctx.served_versions.cached_weights(version.sha256) is not None
    if _sqlite(ctx):
        assert last.aggregated
        assert commits == ["commit"]  # the upload, the claim, the fold's record: one COMMIT
    else:
        assert not last.aggregated  # after the COMMIT, on the upload's thread
        assert commits == ["commit", "commit"]

    # the same version as the kick after the COMMIT gives (a context without the finish)
    ctx.upload_commits.finish = None  # type: ignore[union-attr]
    other, others = domain_federation(ctx, participants=2)
    _upload(worker, ctx, others[0], other, 0)
    after = _upload(worker, ctx, others[1], other, 1)
    assert not after.aggregated
    with ctx.read_sessions() as session:
        again = session.scalars(
            select(ModelVersion).where(
                ModelVersion.federation_id == other, ModelVersion.version == 1
            )
        ).one()
    assert again.sha256 == version.sha256


def test_a_failed_commit_acknowledges_neither_the_upload_nor_the_round(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = RoundWorker(ctx)
    fid, parts = domain_federation(ctx, participants=2)
    _upload(worker, ctx, parts[0], fid, 0)
    served: list[Any] = []
    monkeypatch.setattr(aggregation_job, "serve_new_version", lambda *a: served.append(a))
    commits = ctx.upload_commits
    assert commits is not None

    def dies(*_args: Any) -> None:
        raise _Crash

    monkeypatch.setattr(commits, "_before_commit", dies)
    with pytest.raises(_Crash):
        _upload(worker, ctx, parts[1], fid, 1)
    # rolled back together: no second update, no claim, no version, nothing served
    assert _state(ctx, fid) == ("open", None, 1, 1)
    assert served == []
    monkeypatch.undo()
    again = _upload(worker, ctx, parts[1], fid, 1)  # the participant's retry
    assert again.created
    assert _state(ctx, fid) == ("closed", 1, 2, 2)


def test_an_error_in_the_round_job_keeps_the_upload_and_the_round_for_later(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = RoundWorker(ctx)
    fid, parts = domain_federation(ctx, participants=2)
    _upload(worker, ctx, parts[0], fid, 0)
    record = aggregation_job._record
    calls: list[str] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append("record")
        record(*args, **kwargs)  # closed, recorded, next round opened: then it fails
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(aggregation_job, "_record", broken)
    last = _upload(worker, ctx, parts[1], fid, 1)
    assert last.created
    assert not last.aggregated
    # before the COMMIT (rolled back to its SAVEPOINT, SQLite) and after it (the kick)
    assert calls == (["record", "record"] if _sqlite(ctx) else ["record"])
    assert _state(ctx, fid) == ("open", None, 1, 2)  # the upload stays acknowledged
    monkeypatch.undo()
    assert aggregation_job.run_due_work(ctx) == 1  # the timer aggregates it, once
    assert aggregation_job.run_due_work(ctx) == 0
    assert _state(ctx, fid) == ("closed", 1, 2, 2)


def test_uploads_of_one_batch_aggregate_their_round_once(ctx: Context) -> None:
    """Several uploads in one transaction, the last completing the round: aggregated once,
    from every update of the batch, and each receipt says so."""
    worker = RoundWorker(ctx)
    fid, parts = domain_federation(ctx, participants=3)
    commits = ctx.upload_commits
    assert commits is not None
    release, entered = threading.Event(), threading.Event()

    def hold(_session: Session) -> None:
        entered.set()
        assert release.wait(30)

    holder = threading.Thread(target=commits.run, args=(("-", 0), hold))
    holder.start()
    assert entered.wait(30)
    receipts: dict[int, rounds.Receipt] = {}

    def send(index: int) -> Callable[[], None]:
        def run() -> None:
            receipts[index] = _upload(worker, ctx, parts[index], fid, index)

        return run

    senders = [threading.Thread(target=send(i)) for i in range(3)]
    for sender in senders:
        sender.start()
    while commits.waiting < 3:
        threading.Event().wait(0.01)
    batches = commits.batches
    release.set()
    holder.join(timeout=30)
    for sender in senders:
        sender.join(timeout=30)
    assert commits.batches == batches + 2  # the holder's, then the three uploads'
    assert sorted(receipts) == [0, 1, 2]
    assert _state(ctx, fid) == ("closed", 1, 2, 3)
    with ctx.read_sessions() as session:
        version = session.scalars(
            select(ModelVersion).where(ModelVersion.federation_id == fid, ModelVersion.version == 1)
        ).one()
    assert len(version.contributors) == 3
    if _sqlite(ctx):
        assert all(r.aggregated for r in receipts.values())
