"""Group commit (store/group_commit.py): units that arrive together share one transaction;
each unit is committed exactly once or not at all, a refused unit is rolled back alone,
and a caller hears back only after the transaction holding its unit committed."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coordinator.store.db import create_db_engine, create_session_factory
from coordinator.store.group_commit import GroupCommit

UNITS = 12


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE gc_rows (id INTEGER PRIMARY KEY, note VARCHAR(20))"))
    yield engine
    engine.dispose()


def _ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(int(i) for i in conn.execute(text("SELECT id FROM gc_rows")).scalars())


def _insert(row_id: int) -> Any:
    def work(session: Session) -> int:
        session.execute(text("INSERT INTO gc_rows (id) VALUES (:id)"), {"id": row_id})
        return row_id

    return work


def _wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 20
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _run_while_leader_holds(
    commits: GroupCommit[int], leader_work: Any, others: dict[int, Any]
) -> tuple[dict[int, Any], dict[int, BaseException]]:
    """Start a leader unit that blocks until every other unit has queued behind it, so
    the others form the next batch (deterministically, not by timing luck)."""
    release, entered = threading.Event(), threading.Event()
    results: dict[int, Any] = {}
    errors: dict[int, BaseException] = {}

    def call(key: int, work: Any) -> None:
        try:
            results[key] = commits.run(key, work)
        except BaseException as exc:  # noqa: BLE001 - asserted by the caller
            errors[key] = exc

    def leading(session: Session) -> Any:
        entered.set()
        assert release.wait(20), "the test never released the leader"
        return leader_work(session)

    leader = threading.Thread(target=call, args=(0, leading))
    leader.start()
    assert entered.wait(20), "the leader did not start"
    threads = [threading.Thread(target=call, args=item) for item in others.items()]
    for thread in threads:
        thread.start()
    _wait_for(lambda: commits.waiting == len(others), "every unit to queue")
    release.set()
    for thread in [leader, *threads]:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in [leader, *threads])
    return results, errors


def test_units_arriving_together_share_one_commit_and_each_lands_once(engine: Engine) -> None:
    commits: GroupCommit[int] = GroupCommit(create_session_factory(engine))
    others = {key: _insert(key) for key in range(1, UNITS)}
    results, errors = _run_while_leader_holds(commits, _insert(0), others)
    assert not errors
    assert results == {key: key for key in range(UNITS)}
    # the leader's transaction, then one for every unit that queued meanwhile
    assert (commits.batches, commits.units) == (2, UNITS)
    assert _ids(engine) == list(range(UNITS))


def test_a_refused_unit_is_rolled_back_alone(engine: Engine) -> None:
    commits: GroupCommit[int] = GroupCommit(create_session_factory(engine))

    def refused(session: Session) -> None:
        session.execute(text("INSERT INTO gc_rows (id) VALUES (500)"))
        raise ValueError("refused after writing")

    others = {1: _insert(1), 2: refused, 3: _insert(1), 4: _insert(4)}  # 3 repeats 1's key
    results, errors = _run_while_leader_holds(commits, _insert(0), others)
    assert results == {0: 0, 1: 1, 4: 4}
    assert isinstance(errors[2], ValueError)
    assert isinstance(errors[3], IntegrityError)
    assert commits.batches == 2
    assert _ids(engine) == [0, 1, 4]  # nothing of the refused units, nothing twice


def test_a_unit_alone_in_its_batch_is_refused_without_a_savepoint(engine: Engine) -> None:
    commits: GroupCommit[int] = GroupCommit(create_session_factory(engine))
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    def refused(session: Session) -> None:
        session.execute(text("INSERT INTO gc_rows (id) VALUES (500)"))
        raise ValueError("refused after writing")

    with pytest.raises(ValueError, match="refused after writing"):
        commits.run(1, refused)
    assert commits.run(2, _insert(2)) == 2
    with pytest.raises(IntegrityError):
        commits.run(3, _insert(2))  # a unique violation, alone in its transaction
    assert commits.run(4, _insert(4)) == 4
    assert _ids(engine) == [2, 4]  # nothing of the refused units
    assert (commits.batches, commits.units) == (4, 4)
    assert not [s for s in statements if "SAVEPOINT" in s.upper()]


def test_a_failed_commit_acknowledges_no_unit_of_its_batch(engine: Engine) -> None:
    sessions = create_session_factory(engine)
    commits: GroupCommit[int] = GroupCommit(sessions)
    failing = {"on": False}

    @event.listens_for(sessions, "before_commit")
    def _fail(_session: Session) -> None:
        if failing["on"]:
            raise RuntimeError("disk full")

    # set by the first unit of the second batch: the leader's own commit passes
    def first_of_batch(session: Session) -> int:
        failing["on"] = True
        return _insert(1)(session)

    others = {1: first_of_batch, 2: _insert(2), 3: _insert(3)}
    results, errors = _run_while_leader_holds(commits, _insert(0), others)
    assert results == {0: 0}
    assert set(errors) == {1, 2, 3}
    assert all(isinstance(e, RuntimeError) for e in errors.values())
    assert _ids(engine) == [0]
    # the committer is not stuck: the next unit gets a transaction of its own
    failing["on"] = False
    assert commits.run(9, _insert(9)) == 9
    assert _ids(engine) == [0, 9]


def test_a_unit_waits_for_the_batch_ahead_of_it_before_answering(engine: Engine) -> None:
    """A caller whose unit is queued is not answered until its own batch commits: while
    the leader's transaction is open, the queued unit has no result and no row."""
    commits: GroupCommit[int] = GroupCommit(create_session_factory(engine))
    release, entered, answered = threading.Event(), threading.Event(), threading.Event()

    def slow(session: Session) -> int:
        entered.set()
        assert release.wait(20)
        return _insert(0)(session)

    def queued() -> None:
        commits.run(1, _insert(1))
        answered.set()

    leader = threading.Thread(target=commits.run, args=(0, slow))
    leader.start()
    assert entered.wait(20)
    follower = threading.Thread(target=queued)
    follower.start()
    _wait_for(lambda: commits.waiting == 1, "the follower to queue")
    assert not answered.is_set()
    assert _ids(engine) == []
    release.set()
    leader.join(timeout=30)
    follower.join(timeout=30)
    assert answered.is_set()
    assert _ids(engine) == [0, 1]


def test_finish_writes_in_the_batchs_transaction_and_its_follow_up_runs_after_the_commit(
    engine: Engine,
) -> None:
    """The finish hook sees the units that succeeded, writes in their transaction, and
    what it returns runs once that transaction committed, before any caller returns."""
    sessions = create_session_factory(engine)
    commits: GroupCommit[int] = GroupCommit(sessions)
    seen: list[list[tuple[int, Any]]] = []
    followed: list[list[int]] = []

    def finish(session: Session, units: list[tuple[int, Any]]) -> Any:
        seen.append(units)
        session.execute(text("INSERT INTO gc_rows (id) VALUES (:id)"), {"id": 100 + len(seen)})
        return lambda: followed.append(_ids(engine))  # a new connection: committed rows only

    commits.finish = finish

    def refused(session: Session) -> None:
        session.execute(text("INSERT INTO gc_rows (id) VALUES (500)"))
        raise ValueError("refused after writing")

    others = {1: _insert(1), 2: refused, 3: _insert(3)}
    results, errors = _run_while_leader_holds(commits, _insert(0), others)
    assert results == {0: 0, 1: 1, 3: 3}
    assert isinstance(errors[2], ValueError)
    assert seen == [[(0, 0)], [(1, 1), (3, 3)]]  # the refused unit is not offered
    # each follow-up saw its own batch's rows and the finish's row committed
    assert followed == [[0, 101], [0, 1, 3, 101, 102]]
    assert _ids(engine) == [0, 1, 3, 101, 102]


def test_a_failed_commit_runs_no_follow_up_and_a_failed_follow_up_keeps_the_units(
    engine: Engine,
) -> None:
    sessions = create_session_factory(engine)
    commits: GroupCommit[int] = GroupCommit(sessions)
    followed: list[str] = []
    failing = {"commit": True}

    @event.listens_for(sessions, "before_commit")
    def _fail(_session: Session) -> None:
        if failing["commit"]:
            raise RuntimeError("disk full")

    commits.finish = lambda _session, _units: lambda: followed.append("ran")
    with pytest.raises(RuntimeError, match="disk full"):
        commits.run(1, _insert(1))
    assert followed == []  # nothing follows a COMMIT that did not happen
    assert _ids(engine) == []

    failing["commit"] = False

    def broken_follow_up() -> None:
        raise RuntimeError("cache on fire")

    commits.finish = lambda _session, _units: broken_follow_up
    assert commits.run(2, _insert(2)) == 2  # committed: acknowledged all the same
    assert _ids(engine) == [2]


def _announced_unit(
    commits: GroupCommit[int], key: int, go: threading.Event, *, run: bool
) -> tuple[threading.Thread, dict[int, Any]]:
    """A caller that announces its unit, waits for ``go``, then runs it (or withdraws)."""
    results: dict[int, Any] = {}

    def call() -> None:
        with commits.expecting():
            assert go.wait(20), "the test never let the announced unit go"
            if run:
                results[key] = commits.run(key, _insert(key))

    thread = threading.Thread(target=call)
    thread.start()
    _wait_for(lambda: commits.expected == 1, "the announcement")
    return thread, results


def _leader(commits: GroupCommit[int], key: int) -> tuple[threading.Thread, dict[int, Any]]:
    results: dict[int, Any] = {}
    thread = threading.Thread(target=lambda: results.update({key: commits.run(key, _insert(key))}))
    thread.start()
    return thread, results


def test_a_leader_waits_for_an_announced_unit_and_both_share_one_commit(engine: Engine) -> None:
    commits: GroupCommit[int] = GroupCommit(create_session_factory(engine), sibling_wait=20)
    go = threading.Event()
    announced, announced_results = _announced_unit(commits, 1, go, run=True)
    leader, leader_results = _leader(commits, 0)
    _wait_for(lambda: commits.sibling_waits == 1, "the leader to wait for its sibling")
    assert commits.batches == 0
    assert _ids(engine) == []
    go.set()
    for thread in (announced, leader):
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert (leader_results, announced_results) == ({0: 0}, {1: 1})
    assert (commits.batches, commits.units, commits.expected) == (1, 2, 0)
    assert _ids(engine) == [0, 1]


def test_a_withdrawn_announcement_releases_the_waiting_leader(engine: Engine) -> None:
    # the wait's bound is far beyond the test's: only the withdrawal can end it
    commits: GroupCommit[int] = GroupCommit(create_session_factory(engine), sibling_wait=600)
    go = threading.Event()
    announced, _ = _announced_unit(commits, 1, go, run=False)  # e.g. its upload is refused
    leader, leader_results = _leader(commits, 0)
    _wait_for(lambda: commits.sibling_waits == 1, "the leader to wait for its sibling")
    go.set()
    for thread in (announced, leader):
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert leader_results == {0: 0}
    assert (commits.batches, commits.units, commits.expected) == (1, 1, 0)


def test_the_wait_for_an_announced_unit_is_bounded(engine: Engine) -> None:
    commits: GroupCommit[int] = GroupCommit(create_session_factory(engine), sibling_wait=0.05)
    go = threading.Event()
    announced, announced_results = _announced_unit(commits, 1, go, run=True)
    leader, leader_results = _leader(commits, 0)
    leader.join(timeout=30)  # commits alone once the wait ran out, the sibling still held
    assert not leader.is_alive()
    assert leader_results == {0: 0}
    assert (commits.batches, commits.expected, _ids(engine)) == (1, 1, [0])
    go.set()
    announced.join(timeout=30)
    assert announced_results == {1: 1}
    assert (commits.batches, commits.expected, _ids(engine)) == (2, 0, [0, 1])


def test_an_announcement_follows_its_context_into_a_worker_thread(engine: Engine) -> None:
    # a request announces on the event loop and runs its unit on a worker thread, which
    # gets a copy of the request's context (anyio's to_thread, Starlette's threadpool)
    commits: GroupCommit[int] = GroupCommit(create_session_factory(engine))
    with commits.expecting():
        assert commits.expected == 1
        copied = contextvars.copy_context()
        worker = threading.Thread(target=copied.run, args=(commits.run, 7, _insert(7)))
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert commits.expected == 0  # joined: a leader no longer waits for it
    assert commits.expected == 0  # leaving does not count it twice
    assert _ids(engine) == [7]
