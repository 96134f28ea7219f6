"""A small plaintext round completed by an upload is claimed, aggregated and committed in
one write transaction (``aggregation_job._run_at_once``), on the upload's own thread
(``RoundWorker.accept_upload``): the same version as the two-step path, and, when the
process dies after the upload committed (before or inside that transaction), the round
stays open and complete and is aggregated exactly once by the timer of the next process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain import aggregation_job, rounds
from coordinator.domain.context import Context
from coordinator.domain.lifecycle import Step, Trigger
from coordinator.domain.recent_updates import RecentUpdates
from coordinator.store.models import Federation, ModelVersion, Round
from tests.factories import (
    create_federation,
    domain_federation,
    enrol,
    put_update,
    update_bytes,
    wait_round_closed,
)


class _Crash(Exception):
    pass


def _complete_round(ctx: Context, participants: int = 3) -> str:
    """A federation whose round 1 holds every participant's update (committed)."""
    fid, parts = domain_federation(ctx, participants=participants)
    for seed, who in enumerate(parts):
        receipt = rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
    assert receipt.may_complete
    return fid


@pytest.fixture
def commits(ctx: Context) -> Iterator[list[str]]:
    """The write transactions committed on the context's database."""
    seen: list[str] = []
    engine = ctx.sessions.kw["bind"]

    def on_commit(_conn: Any) -> None:
        seen.append("commit")

    event.listen(engine, "commit", on_commit)
    yield seen
    event.remove(engine, "commit", on_commit)


def _recording(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    calls: list[str] = []
    original = getattr(aggregation_job, name)

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(aggregation_job, name, recording)
    return calls


def _round_one(ctx: Context, fid: str) -> tuple[str, int | None, int]:
    with ctx.read_sessions() as session:
        row = session.scalars(select(Round).where(Round.federation_id == fid, Round.number == 1))
        round_one = row.one()
        versions = session.scalar(
            select(func.count())
            .select_from(ModelVersion)
            .where(ModelVersion.federation_id == fid, ModelVersion.round_number == 1)
        )
        return round_one.state, round_one.result_version, int(versions or 0)


def test_a_small_round_commits_once_and_matches_the_two_step_path(
    ctx: Context, commits: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    two_step = _recording(monkeypatch, "claim_round")
    fid = _complete_round(ctx)
    commits.clear()
    outcome = aggregation_job.run(ctx, fid, 1, trigger=Trigger.UPLOAD)
    assert outcome.step is Step.AGGREGATE
    assert outcome.version is not None
    assert commits == ["commit"]  # claim, fold and record: one write transaction
    assert two_step == []
    assert _round_one(ctx, fid) == ("closed", 1, 1)

    # the same updates through the two-step path (a round above the bound)
    monkeypatch.setattr(aggregation_job, "ONE_TRANSACTION_MAX_VALUES", 0)
    other = _complete_round(ctx)
    commits.clear()
    again = aggregation_job.run(ctx, other, 1, trigger=Trigger.UPLOAD)
    assert again.version is not None
    assert two_step == ["claim_round"]
    assert len(commits) == 2  # the claim, then the version
    assert again.version.sha256 == outcome.version.sha256


def test_the_timer_and_the_admin_keep_the_two_step_path(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_step = _recording(monkeypatch, "claim_round")
    fid = _complete_round(ctx)
    assert aggregation_job.run_due_work(ctx) == 1
    assert two_step == ["claim_round"]
    assert _round_one(ctx, fid) == ("closed", 1, 1)


def test_a_crash_after_the_completing_upload_committed_aggregates_once(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    fid = _complete_round(ctx)
    # the process died before its kick ran: nothing but the uploads was written
    assert _round_one(ctx, fid) == ("open", None, 0)
    restarted = replace(ctx, instance_id="restarted", recent_updates=RecentUpdates())
    at_once = _recording(monkeypatch, "_run_at_once")
    assert aggregation_job.run_due_work(restarted) == 1  # the timer finds it complete
    assert aggregation_job.run_due_work(restarted) == 0
    # a late kick (another process's upload thread) finds it closed
    assert aggregation_job.run(restarted, fid, 1, trigger=Trigger.UPLOAD).step is Step.WAIT
    assert at_once == []
    assert _round_one(ctx, fid) == ("closed", 1, 1)


def test_a_crash_inside_the_one_transaction_leaves_the_round_open_for_the_timer(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    fid = _complete_round(ctx)
    record = aggregation_job._record

    def dies_before_commit(*args: Any, **kwargs: Any) -> Any:
        record(*args, **kwargs)  # closed, recorded and the next round opened: not committed
        raise _Crash

    monkeypatch.setattr(aggregation_job, "_record", dies_before_commit)
    with pytest.raises(_Crash):
        aggregation_job.run(ctx, fid, 1, trigger=Trigger.UPLOAD)
    # rolled back: not claimed (no lease to wait out), no version, no round 2
    assert _round_one(ctx, fid) == ("open", None, 0)
    with ctx.read_sessions() as session:
        assert session.scalar(select(func.count()).where(Round.federation_id == fid)) == 1
    monkeypatch.undo()
    assert aggregation_job.run_due_work(ctx) == 1
    assert aggregation_job.run_due_work(ctx) == 0
    assert _round_one(ctx, fid) == ("closed", 1, 1)


# ---------------------------------------------------------------- on the upload's thread


@contextmanager
def _two_participants(
    settings: Settings, admin: dict[str, str], kicks: list[tuple[str, int]]
) -> Iterator[tuple[TestClient, str, list[dict[str, str]]]]:
    """A running app (no timer) whose worker records its kicks, and a federation of two."""
    with TestClient(create_app(settings, run_timer=False)) as client:
        worker = client.app.state.worker  # type: ignore[attr-defined]
        kick = worker.kick

        def recording_kick(federation_id: str, number: int) -> Any:
            kicks.append((federation_id, number))
            return kick(federation_id, number)

        worker.kick = recording_kick
        fid = create_federation(client, admin)["id"]
        tokens = [enrol(client, admin, fid, f"p{i}")[1] for i in range(2)]
        yield client, fid, tokens


def test_the_completing_upload_answers_with_its_round_aggregated(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    kicks: list[tuple[str, int]] = []
    with _two_participants(settings, admin_headers, kicks) as (client, fid, tokens):
        assert put_update(client, fid, 1, update_bytes(seed=1), tokens[0]).status_code == 201
        assert put_update(client, fid, 1, update_bytes(seed=2), tokens[1]).status_code == 201
        # no waiting: the second upload's own thread aggregated before it answered
        state = client.get(f"/v1/federations/{fid}/rounds/1", headers=admin_headers).json()
        assert (state["state"], state["result_version"]) == ("closed", 1)
        assert (
            client.get(f"/v1/federations/{fid}", headers=admin_headers).json()["current_round"] == 2
        )
    assert kicks == []  # nothing was handed to the worker's thread


def test_a_round_too_large_for_one_transaction_is_kicked_to_the_worker(
    settings: Settings, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aggregation_job, "ONE_TRANSACTION_MAX_VALUES", 0)
    kicks: list[tuple[str, int]] = []
    with _two_participants(settings, admin_headers, kicks) as (client, fid, tokens):
        for seed, token in enumerate(tokens):
            assert put_update(client, fid, 1, update_bytes(seed=seed), token).status_code == 201
        wait_round_closed(client, fid, 1, admin_headers)
    assert kicks == [(fid, 1)]  # only the completing upload kicks


def test_an_aggregation_error_on_the_upload_thread_keeps_the_201_and_the_round(
    settings: Settings, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(aggregation_job, "_aggregate", broken)
    kicks: list[tuple[str, int]] = []
    with _two_participants(settings, admin_headers, kicks) as (client, fid, tokens):
        for seed, token in enumerate(tokens):
            assert put_update(client, fid, 1, update_bytes(seed=seed), token).status_code == 201
        url = f"/v1/federations/{fid}/rounds/1"
        assert client.get(url, headers=admin_headers).json()["state"] == "open"
        monkeypatch.undo()
        ctx = client.app.state.context  # type: ignore[attr-defined]
        assert aggregation_job.run_due_work(ctx) == 1  # the timer aggregates it, once
        assert aggregation_job.run_due_work(ctx) == 0
        assert client.get(url, headers=admin_headers).json()["state"] == "closed"


def test_the_completing_uploads_kick_starts_from_its_transactions_facts(
    ctx: Context, commits: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No read of the round between the upload's COMMIT and the claim: the receipt carries
    the completeness its transaction judged, and the kick starts from it."""
    fid, parts = domain_federation(ctx, participants=2)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    receipt = rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1))
    assert receipt.facts is not None
    assert receipt.facts.update_count == 2
    judged = _recording(monkeypatch, "_judge")
    commits.clear()
    outcome = aggregation_job.run_if_small(ctx, fid, 1, receipt.facts)
    assert outcome is not None
    assert outcome.version is not None
    assert judged == []
    assert commits == ["commit"]
    assert _round_one(ctx, fid) == ("closed", 1, 1)


def test_facts_outdated_by_an_aggregation_change_nothing(ctx: Context) -> None:
    """Facts read before another thread (or process) aggregated the round: the claim,
    under the write lock, finds the round closed; nothing is aggregated twice."""
    fid, parts = domain_federation(ctx, participants=2)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    receipt = rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1))
    assert receipt.facts is not None
    assert aggregation_job.run_due_work(ctx) == 1  # the timer got there first
    outcome = aggregation_job.run_if_small(ctx, fid, 1, receipt.facts)
    assert outcome is not None
    assert outcome.version is None
    assert _round_one(ctx, fid) == ("closed", 1, 1)


# ---------------------------------------------------------------- what the transaction runs


@contextmanager
def _watching(ctx: Context) -> Iterator[tuple[list[str], list[list[str]]]]:
    """The data statements run on the context's database, and what each ORM flush
    found to write (the class names of the new and changed objects)."""
    statements: list[str] = []
    flushes: list[list[str]] = []
    engine = ctx.sessions.kw["bind"]

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.split()[0].upper()
        if verb in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            statements.append(verb)

    def flushing(session: Session, *_args: Any) -> None:
        changed = [*session.new, *(o for o in session.dirty if session.is_modified(o))]
        flushes.append(sorted(type(o).__name__ for o in changed))

    event.listen(engine, "before_cursor_execute", seen)
    event.listen(Session, "before_flush", flushing)
    try:
        yield statements, flushes
    finally:
        event.remove(engine, "before_cursor_execute", seen)
        event.remove(Session, "before_flush", flushing)


def test_a_small_round_writes_its_close_by_core_statements_without_a_flush(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=2, deadline_seconds=600)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    receipt = rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1))
    with _watching(ctx) as (statements, flushes):
        outcome = aggregation_job.run_if_small(ctx, fid, 1, receipt.facts)
    assert outcome is not None
    assert outcome.version is not None
    # the federation's counters and round 2 went by Core: nothing left for the flush
    assert flushes == []
    # lock the federation and the round, reading the base version and the cohort's
    # count with them; the updates' digests (counted by the decision too); validation
    # figures; claim and close (one compare-and-set); the version's blob (its row holds
    # its bytes, migration 0016), the version; the audit event (it checks and moves the
    # head); the federation's counters; round 2 (PostgreSQL: the same; SQLite's BEGIN
    # IMMEDIATE is no statement)
    assert len(statements) == 9, statements
    with ctx.read_sessions() as session:
        federation = session.get(Federation, fid)
        assert federation is not None
        assert (federation.current_round, federation.latest_version) == (2, 1)
        assert (federation.completed_rounds, federation.state) == (1, "active")
        two = session.scalars(select(Round).where(Round.federation_id == fid, Round.number == 2))
        opened = two.one()
        assert (opened.state, opened.base_version, opened.update_count) == ("open", 1, 0)
        assert opened.deadline_at is not None
        assert len(opened.id) == 36
        assert opened.sampled is False
    # and round 2 takes uploads and aggregates as round 1 did
    for seed, who in enumerate(parts):
        body = update_bytes(round=2, base_version=1, seed=seed)
        receipt = rounds.submit_update(ctx, who, fid, 2, body)
    again = aggregation_job.run_if_small(ctx, fid, 2, receipt.facts)
    assert again is not None
    assert again.version is not None
    assert again.version.version == 2


def test_a_round_that_stops_the_federation_is_written_by_the_flush(ctx: Context) -> None:
    fid, parts = domain_federation(ctx, participants=2, max_rounds=1)
    rounds.submit_update(ctx, parts[0], fid, 1, update_bytes(seed=0))
    receipt = rounds.submit_update(ctx, parts[1], fid, 1, update_bytes(seed=1))
    with _watching(ctx) as (_statements, flushes):
        outcome = aggregation_job.run_if_small(ctx, fid, 1, receipt.facts)
    assert outcome is not None
    assert outcome.version is not None
    assert flushes[-1:] == [["Federation"]]  # no next round: the unit of work writes the stop
    with ctx.read_sessions() as session:
        federation = session.get(Federation, fid)
        assert federation is not None
        assert federation.current_round is None
        assert federation.state in ("evaluating", "completed")
        assert (federation.latest_version, federation.completed_rounds) == (1, 1)
        count = select(func.count()).where(Round.federation_id == fid)
        assert session.scalar(count) == 1


# The versions of a fixed federation (two participants: their float64 sum does not depend
# on the order of their random ids), as main recorded them before the round job's claim and
# record became Core statements (commit 0bfba90): weights sha256 and chain hash per version.
_FIXED_LINEAGE = [
    (
        0,
        None,
        "69769b07ede95027c9046b2de1e5d815333dd82b709f6d6465afbae10eff4f75",
        "b9a25b1ccea8c8588b052ca546f9cf5b65db73800fe9d45b50637e769c4b0080",
    ),
    (
        1,
        0,
        "3b23af3ad3a1826c3abdd9e20b66361d6306de8662f03066645449d0e7319088",
        "85ed78e3086dff87588b1c929d04dd53328ff039959503a4a21e1003db602156",
    ),
    (
        2,
        1,
        "664434423524a72c0df156d6e3f7b99d9ae563419438614270eae51d208640f4",
        "d39a295db05f3ecf9573f0cef8510ac40816cf3e6bb5fbb8ae34b18312e28571",
    ),
    (
        3,
        2,
        "a302c9b007c1c90fd246b68e6a63378eefb749cc700e34cb03cb944c044afc50",
        "375204e02dda39c02ad3edfa34a0d5985330bd8769bd537b271df3aefac8e1af",
    ),
]


@pytest.mark.parametrize("path", ["one-transaction", "two-step"])
def test_a_fixed_federation_records_the_same_versions_and_lineage_as_before(
    ctx: Context, path: str
) -> None:
    from coordinator.domain.lineage import verify_lineage

    fid, parts = domain_federation(ctx, participants=2, deadline_seconds=600)
    for number in (1, 2, 3):
        for seed, who in enumerate(parts):
            body = update_bytes(round=number, base_version=number - 1, seed=10 * number + seed)
            receipt = rounds.submit_update(ctx, who, fid, number, body)
        if path == "one-transaction":
            outcome = aggregation_job.run_if_small(ctx, fid, number, receipt.facts)
        else:
            outcome = aggregation_job.run(ctx, fid, number, trigger=Trigger.TIMER)
        assert outcome is not None
        assert outcome.version is not None
    with ctx.read_sessions() as session:
        versions = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.federation_id == fid)
            .order_by(ModelVersion.version)
        ).all()
        recorded = [(v.version, v.parent, v.sha256, v.chain_hash) for v in versions]
    assert recorded == _FIXED_LINEAGE
    assert verify_lineage(ctx, fid).ok
