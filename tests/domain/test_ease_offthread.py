"""A large EASE solve runs off the aggregation thread (both backends): another
federation's round aggregates while it runs; a solve whose process died is taken over
once its lease expires and committed once; a stopped process kills its child solve and
gives the round back, and the restarted process solves it once. The child process's
solve gives the in-process bytes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import select, update

from coordinator.domain import ease_process, rounds
from coordinator.domain.auth import Principal
from coordinator.domain.context import Context
from coordinator.domain.ease_solve import ease_model
from coordinator.domain.errors import RoundNotOpen
from coordinator.domain.federations import create_federation
from coordinator.domain.participants import enrol_participant
from coordinator.domain.specs import (
    DeployPolicy,
    ModelSpec,
    PrivacyPolicy,
    RoundPolicy,
    StrategySpec,
)
from coordinator.store.models import AuditEvent, ModelVersion, Round, utc_now
from coordinator.worker import RoundWorker
from participant_sdk.wire import decode_weights
from tests.factories import domain_federation, gram_update, update_bytes

N = 12
LAMBDAS = (1.0, 10.0)
ADMIN = Principal(is_admin=True)
WAIT = 30.0  # a bound on waiting for an event, never a measured duration

F32 = npt.NDArray[np.float32]


def _silo(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pairs = [(u, i) for u in range(15) for i in rng.choice(N, size=4, replace=False)]
    users, items = np.array(pairs).T
    return users.astype(np.int64), items.astype(np.int64)


def _ease_federation(ctx: Context) -> tuple[str, np.ndarray]:
    """An ease federation whose round 1 has every participant's Gram; the pooled Gram."""
    view = create_federation(
        ctx,
        name="ease",
        model=ModelSpec(kind="ease", num_items=N, ease_lambdas=LAMBDAS),
        strategy=StrategySpec(),
        rounds=RoundPolicy(),
        catalog=None,
        target=None,
        deploy=DeployPolicy(),
        privacy=PrivacyPolicy(),
    )
    fid = view.row.id
    pooled = np.zeros((N, N), dtype=np.float32)
    for seed in range(2):
        row, _ = enrol_participant(ctx, ADMIN, fid, name=f"silo{seed}")
        users, items = _silo(seed)
        gram, body = gram_update(users, items, N)
        pooled += gram
        rounds.submit_update(ctx, Principal(False, row.id, fid, row.name), fid, 1, body)
    return fid, pooled


def _mf_round_ready(ctx: Context) -> str:
    fid, parts = domain_federation(ctx, participants=2)
    for seed, who in enumerate(parts):
        rounds.submit_update(ctx, who, fid, 1, update_bytes(seed=seed))
    return fid


def _versions(ctx: Context, fid: str) -> list[ModelVersion]:
    with ctx.read_sessions() as session:
        return list(
            session.scalars(
                select(ModelVersion)
                .where(ModelVersion.federation_id == fid)
                .order_by(ModelVersion.version)
            )
        )


def _round(ctx: Context, fid: str, number: int) -> Round:
    with ctx.read_sessions() as session:
        row = session.scalars(
            select(Round).where(Round.federation_id == fid, Round.number == number)
        ).one()
        session.expunge(row)
        return row


def _wait_closed(ctx: Context, fid: str, number: int) -> None:
    """Until a heavy thread closed the round (a bounded wait for that event)."""
    for _ in range(int(WAIT / 0.05)):
        if _round(ctx, fid, number).state == "closed":
            return
        time.sleep(0.05)
    raise AssertionError(f"round {number} was not closed within {WAIT}s")


def _aggregations(ctx: Context, fid: str) -> int:
    with ctx.read_sessions() as session:
        return len(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.federation_id == fid, AuditEvent.action == "aggregate"
                )
            ).all()
        )


def _assert_version_1_is_the_pooled_solve(ctx: Context, fid: str, pooled: np.ndarray) -> None:
    versions = _versions(ctx, fid)
    assert [v.version for v in versions] == [0, 1]
    assert versions[1].round_number == 1
    got = decode_weights(ctx.blobs.get(versions[1].sha256))["ease_b"]
    assert np.array_equal(got, ease_model(pooled, LAMBDAS[0])["ease_b"])
    assert _aggregations(ctx, fid) == 1


class SlowSolver:
    """A solver whose first ``blocked`` calls wait for :attr:`release` (a solve that takes
    as long as the test wants); every call is recorded, and then solves for real."""

    def __init__(self, blocked: int = 1) -> None:
        self.calls: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self._blocked = blocked

    def factory(self) -> Callable[..., Callable[[F32, float, int | None], dict[str, F32]]]:
        def solver(
            target: ease_process.SolveTarget, **_: object
        ) -> Callable[[F32, float, int | None], dict[str, F32]]:
            def solve(gram: F32, lam: float, top_k: int | None) -> dict[str, F32]:
                self.calls.append(target.federation_id)
                if len(self.calls) <= self._blocked:
                    self.started.set()
                    assert self.release.wait(WAIT), "the test never released the solve"
                return ease_model(gram, lam, top_k=top_k)

            return solve

        return solver


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowSolver]:
    solver = SlowSolver()
    monkeypatch.setattr(ease_process, "solver", solver.factory())
    yield solver
    solver.release.set()  # never leave a heavy thread waiting


def test_a_slow_ease_solve_does_not_block_another_federations_round(
    ctx: Context, slow: SlowSolver
) -> None:
    ease_id, pooled = _ease_federation(ctx)
    mf_id = _mf_round_ready(ctx)
    worker = RoundWorker(ctx)
    try:
        solving = worker.kick(ease_id, 1)
        assert solving is not None
        assert slow.started.wait(WAIT)
        # the solve holds its heavy thread; the other federation's round aggregates now
        other = worker.kick(mf_id, 1)
        assert other is not None
        other.result(timeout=WAIT)  # before: queued behind the solve, this timed out
        assert [v.version for v in _versions(ctx, mf_id)] == [0, 1]
        assert not solving.done()
        assert _round(ctx, ease_id, 1).state == "aggregating"
        # a second kick of the solving round claims nothing (its lease is held)
        again = worker.kick(ease_id, 1)
        assert again is not None
        again.result(timeout=WAIT)
        slow.release.set()
        solving.result(timeout=WAIT)
    finally:
        slow.release.set()
        worker.stop()
    assert slow.calls == [ease_id]
    assert _round(ctx, ease_id, 1).state == "closed"
    _assert_version_1_is_the_pooled_solve(ctx, ease_id, pooled)


def test_a_round_finding_the_heavy_threads_busy_stays_open_for_the_timer(
    ctx: Context, slow: SlowSolver
) -> None:
    first_id, _ = _ease_federation(ctx)
    second_id, second_pooled = _ease_federation(ctx)
    worker = RoundWorker(ctx)  # one heavy thread
    try:
        solving = worker.kick(first_id, 1)
        assert solving is not None
        assert slow.started.wait(WAIT)
        waiting = worker.kick(second_id, 1)
        assert waiting is not None
        waiting.result(timeout=WAIT)
        # not claimed: another process (or this one's timer, later) may take it
        assert _round(ctx, second_id, 1).state == "open"
        # the admin is told why (409), and nothing is claimed either
        with pytest.raises(RoundNotOpen, match="FEDREC_HEAVY_WORKERS"):
            worker.aggregate_now(ADMIN, second_id, 1).result(timeout=WAIT)
        assert _round(ctx, second_id, 1).state == "open"
        slow.release.set()
        solving.result(timeout=WAIT)
        assert worker.tick() == 0  # the timer hands it to the now free heavy thread...
        _wait_closed(ctx, second_id, 1)  # ...and it is committed there
    finally:
        slow.release.set()
        worker.stop()
    assert slow.calls == [first_id, second_id]
    _assert_version_1_is_the_pooled_solve(ctx, second_id, second_pooled)


def test_a_solve_whose_process_died_is_taken_over_and_committed_once(
    ctx: Context, slow: SlowSolver
) -> None:
    ease_id, pooled = _ease_federation(ctx)
    dying = RoundWorker(replace(ctx, instance_id="dying"))
    other = RoundWorker(replace(ctx, instance_id="other"))
    try:
        stalled = dying.kick(ease_id, 1)
        assert stalled is not None
        assert slow.started.wait(WAIT)
        assert _round(ctx, ease_id, 1).lease_owner == "dying"
        # the process is gone: no renewal comes, and its lease runs out
        with ctx.sessions.begin() as session:
            session.execute(
                update(Round)
                .where(Round.federation_id == ease_id, Round.number == 1)
                .values(lease_expires_at=utc_now() - timedelta(seconds=1))
            )
        # any process's timer takes it over (on its own heavy thread) and commits it
        assert other.tick() == 0
        _wait_closed(ctx, ease_id, 1)
        # the first attempt finishes after all: its commit finds the lease lost
        slow.release.set()
        stalled.result(timeout=WAIT)
    finally:
        slow.release.set()
        dying.stop()
        other.stop()
    assert slow.calls == [ease_id, ease_id]  # solved twice, committed once
    assert _round(ctx, ease_id, 1).lease_owner == "other"
    _assert_version_1_is_the_pooled_solve(ctx, ease_id, pooled)


def test_a_stopped_process_kills_its_child_solve_and_the_restart_solves_once(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ease_id, pooled = _ease_federation(ctx)
    scratch = tmp_path / "scratch"
    ctx.scratch_dir = scratch
    ctx.ease_subprocess_min_items = 0  # the real child process, even at 12 items
    monkeypatch.setenv(ease_process.TEST_CHILD_PAUSE_ENV, "60")
    worker = RoundWorker(ctx)
    solving = worker.kick(ease_id, 1)
    assert solving is not None
    for _ in range(int(WAIT / 0.05)):  # the child has its Gram (its directory exists)
        if scratch.is_dir() and any(scratch.iterdir()):
            break
        time.sleep(0.05)
    assert _round(ctx, ease_id, 1).state == "aggregating"
    worker.stop()  # kills the paused child: had it run on, version 1 would be recorded
    solving.result(timeout=WAIT)  # the kick's caller only waits; the failure is logged
    assert _round(ctx, ease_id, 1).state == "open"  # released at once, no lease to wait
    assert [v.version for v in _versions(ctx, ease_id)] == [0]
    assert not any(scratch.iterdir())  # the solve's files are removed

    monkeypatch.delenv(ease_process.TEST_CHILD_PAUSE_ENV)
    restarted = RoundWorker(replace(ctx, instance_id="restarted"))
    try:
        outcome = restarted.aggregate_now(ADMIN, ease_id, 1).result(timeout=WAIT * 2)
    finally:
        restarted.stop()
    assert outcome.version is not None
    _assert_version_1_is_the_pooled_solve(ctx, ease_id, pooled)


@pytest.mark.parametrize("top_k", [None, 5])
def test_the_child_process_gives_the_in_process_bytes(tmp_path: Path, top_k: int | None) -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((40, N)) < 0.3).astype(np.float32)
    gram = x.T @ x
    target = ease_process.SolveTarget(
        federation_id="f",
        round_number=1,
        scratch_dir=tmp_path,
        timeout_seconds=WAIT * 2,
        should_stop=lambda: False,
    )
    child = ease_process.solve_in_subprocess(gram, 3.0, top_k, target=target)
    here = ease_model(gram, 3.0, top_k=top_k)
    assert child.keys() == here.keys()
    for name in here:
        assert np.array_equal(child[name], here[name])
    assert not any(tmp_path.iterdir())
    # a Gram LAPACK refuses: the child's reason, raised here
    with pytest.raises(ValueError, match="not positive definite"):
        ease_process.solve_in_subprocess(-np.eye(N, dtype=np.float32), 0.5, None, target=target)
    assert not any(tmp_path.iterdir())


def test_scratch_left_by_a_crashed_process_is_swept(tmp_path: Path) -> None:
    old, new = tmp_path / "ease-solve-old", tmp_path / "ease-solve-new"
    for path in (old, new):
        path.mkdir()
        (path / "gram.npy").write_bytes(b"x")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert ease_process.sweep_scratch(tmp_path, older_than_seconds=3600) == 1
    assert not old.exists()
    assert new.exists()
