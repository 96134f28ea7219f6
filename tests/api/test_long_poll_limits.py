"""The long-poll's configurable maximum (FEDREC_MAX_LONG_POLL_SECONDS, advertised as
``Round.max_wait_seconds``) and what a renewal costs: one round read, cohort from cache."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from coordinator.config import Settings
from coordinator.domain import rounds
from coordinator.domain.round_snapshots import RoundSnapshots
from tests.factories import assert_problem, create_federation, enrol, put_update, update_bytes


def _current(client: TestClient, fid: str, headers: dict, **params: Any) -> Any:
    return client.get(f"/v1/federations/{fid}/rounds/current", params=params, headers=headers)


def test_the_maximum_is_configurable_and_advertised(settings: Settings) -> None:
    assert Settings(_env_file=None).max_long_poll_seconds == 300  # default: 5 renewals fewer
    assert settings.model_copy(update={"max_long_poll_seconds": 45}).max_long_poll_seconds == 45


def test_every_current_answer_advertises_the_maximum(
    client: TestClient, app: FastAPI, admin_headers: dict
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    assert _current(client, fid, participant).json()["max_wait_seconds"] == 300
    app.state.context.notifier.max_wait_seconds = 90
    body = _current(client, fid, participant, wait=0, after=0).json()
    assert body["max_wait_seconds"] == 90
    # other round reads do not (they are no long-poll's answer)
    assert (
        client.get(f"/v1/federations/{fid}/rounds/1", headers=participant).json()[
            "max_wait_seconds"
        ]
        is None
    )


def test_a_wait_beyond_the_maximum_is_a_problem_naming_it(
    client: TestClient, app: FastAPI, admin_headers: dict
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    app.state.context.notifier.max_wait_seconds = 90
    body = assert_problem(
        _current(client, fid, admin_headers, wait=91, after=1), 422, "validation-error"
    )
    assert body["max_wait_seconds"] == 90
    assert "FEDREC_MAX_LONG_POLL_SECONDS" in body["detail"]
    # the hard bound of the parameter itself is FastAPI's 422
    assert _current(client, fid, admin_headers, wait=3601, after=1).status_code == 422


def test_a_poll_held_beyond_60_s_returns_at_once_when_the_round_opens(
    client: TestClient, admin_headers: dict
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    answers: list[dict[str, Any]] = []

    def poll() -> None:
        answers.append(_current(client, fid, admin_headers, wait=240, after=1).json())

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    poller.join(timeout=0.5)
    assert poller.is_alive(), "a 240 s long-poll was refused or answered early"
    uploaded = time.monotonic()
    assert put_update(client, fid, 1, update_bytes(), participant).status_code == 201
    poller.join(timeout=15)
    assert not poller.is_alive(), "the long-poll did not wake when round 2 opened"
    assert answers[0]["number"] == 2
    assert time.monotonic() - uploaded < 15


def test_a_renewal_that_runs_out_reads_the_round_once(
    client: TestClient, admin_headers: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    reads: list[str] = []
    real = rounds.current_round

    def counted(*args: Any) -> Any:
        reads.append(args[2])
        return real(*args)

    monkeypatch.setattr(rounds, "current_round", counted)
    started = time.monotonic()
    response = _current(client, fid, admin_headers, wait=1, after=1)
    assert response.status_code == 200, response.text
    assert response.json()["number"] == 1
    assert time.monotonic() - started >= 0.9  # it did wait
    assert reads == [fid]  # the read when it began; nothing moved, so no second read


def test_cohort_membership_comes_from_the_cohort_cache(
    client: TestClient, app: FastAPI, admin_headers: dict
) -> None:
    rounds_spec = {"min_participants": 3, "sampling": {"kind": "fixed", "size": 1}}
    fid = create_federation(client, admin_headers, rounds=rounds_spec)["id"]
    parts = dict(enrol(client, admin_headers, fid, f"p{i}") for i in range(3))
    app.state.worker.tick()  # three participants: the timer draws round 1's cohort
    cache = app.state.context.cohort_cache
    loads = cache.loads
    answers = {pid: _current(client, fid, h).json() for pid, h in parts.items()}
    again = {pid: _current(client, fid, h).json() for pid, h in parts.items()}
    assert cache.loads == loads + 1  # one cohort read for six polls
    # the same answer as the round read that takes memberships from the database
    for pid, h in parts.items():
        listed = client.get(f"/v1/federations/{fid}/rounds/1", headers=h).json()
        assert answers[pid]["in_cohort"] is again[pid]["in_cohort"] is listed["in_cohort"]
    assert sorted(a["in_cohort"] for a in answers.values()) == [False, False, True]
    # the admin is in no cohort
    assert _current(client, fid, admin_headers).json()["in_cohort"] is None


def test_a_renewal_beside_a_waiting_poll_reads_nothing(
    client: TestClient, app: FastAPI, admin_headers: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While polls wait, the notifier knows the round mark: a renewal under the same mark
    starts from the process's last read of the round, and a participant of another
    federation is still refused."""
    fid = create_federation(client, admin_headers)["id"]
    other = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    _, outsider = enrol(client, admin_headers, other, "outsider")
    reads: list[str] = []
    real = rounds.current_round

    def counted(*args: Any) -> Any:
        reads.append(args[2])
        return real(*args)

    monkeypatch.setattr(rounds, "current_round", counted)
    app.state.context.round_snapshots.max_age_seconds = 60  # a slow CI machine: not the point
    waiting = threading.Thread(
        target=_current, args=(client, fid, admin_headers), kwargs={"wait": 3, "after": 1}
    )
    waiting.start()
    limit = time.monotonic() + 5
    while not reads and time.monotonic() < limit:
        time.sleep(0.02)
    time.sleep(0.3)  # the first poll waits on the notifier now
    renewal = _current(client, fid, participant, wait=0.5, after=1)
    assert renewal.status_code == 200, renewal.text
    assert renewal.json()["number"] == 1
    assert renewal.json()["in_cohort"] is True
    assert reads == [fid]  # the waiting poll's read only
    assert_problem(_current(client, fid, outsider, wait=0.5, after=1), 403, "forbidden")
    waiting.join(timeout=10)
    # a plain read (no `after`) always reads
    assert _current(client, fid, participant).status_code == 200
    assert reads == [fid, fid]


def test_a_snapshot_is_used_only_under_the_notifiers_mark_and_while_young() -> None:
    class Row:
        id = "f1"

    snapshots = RoundSnapshots(max_age_seconds=0.2)
    snapshots.put(Row(), Row(), (1, "active", 0))  # type: ignore[arg-type]
    assert snapshots.unmoved("f1", (1, "active", 0)) is not None
    assert snapshots.unmoved("f1", (2, "active", 1)) is None  # the round moved
    assert snapshots.unmoved("f1", None) is None  # nobody waits: nothing known
    assert snapshots.unmoved("f2", (1, "active", 0)) is None
    time.sleep(0.3)
    assert snapshots.unmoved("f1", (1, "active", 0)) is None  # too old


def test_a_poll_sitting_out_rounds_may_wait_longer_and_is_told_how_long(
    client: TestClient, app: FastAPI, admin_headers: dict
) -> None:
    """With after and in_cohort=true a poll may ask for FEDREC_MAX_COHORT_WAIT_SECONDS
    (advertised on every answer as max_cohort_wait_seconds); a plain poll may not."""
    assert Settings(_env_file=None).max_cohort_wait_seconds == 1800
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    notifier = app.state.context.notifier
    notifier.max_wait_seconds, notifier.max_cohort_wait_seconds = 90, 600
    body = _current(client, fid, participant).json()
    assert (body["max_wait_seconds"], body["max_cohort_wait_seconds"]) == (90, 600)
    # round 1 is open and this participant takes part: answered at once, whatever the wait
    started = time.monotonic()
    held = _current(client, fid, participant, wait=600, after=0, in_cohort="true")
    assert held.status_code == 200, held.text
    assert held.json()["number"] == 1
    assert time.monotonic() - started < 30
    refused = assert_problem(
        _current(client, fid, participant, wait=601, after=0, in_cohort="true"),
        422,
        "validation-error",
    )
    assert refused["max_cohort_wait_seconds"] == 600
    assert "FEDREC_MAX_COHORT_WAIT_SECONDS" in refused["detail"]
    # without in_cohort (or without after) the plain maximum applies
    for params in ({"wait": 91, "after": 0}, {"wait": 91, "in_cohort": "true"}):
        plain = assert_problem(
            _current(client, fid, participant, **params), 422, "validation-error"
        )
        assert plain["max_wait_seconds"] == 90
        assert "FEDREC_MAX_LONG_POLL_SECONDS" in plain["detail"]


def test_the_cohort_maximum_is_never_below_the_plain_one(settings: Settings) -> None:
    from coordinator.app import build_context
    from coordinator.domain.round_notifier import RoundNotifier

    notifier = RoundNotifier(max_wait_seconds=900, max_cohort_wait_seconds=60)
    assert notifier.max_cohort_wait_seconds == 900
    both = {"max_long_poll_seconds": 900, "max_cohort_wait_seconds": 60}
    context = build_context(settings.model_copy(update=both))
    try:
        assert context.notifier.max_cohort_wait_seconds == 900
    finally:
        context.sessions.kw["bind"].dispose()


@pytest.mark.parametrize("handed", [False, True], ids=["read", "handed-over"])
def test_the_long_polls_a_new_round_wakes_share_one_read(
    client: TestClient,
    app: FastAPI,
    admin_headers: dict,
    monkeypatch: pytest.MonkeyPatch,
    handed: bool,
) -> None:
    """Every long-poll of a federation wakes when its round moves; the first one's read of
    the new round is shared by the others instead of one read each. When this process's
    job opened the round and handed it over (the notifier keeps it in the round
    snapshots), nobody reads it: the polls answer from it."""
    notifier = app.state.context.notifier
    notifier.interval_seconds = 60.0  # only the job's poke moves the polls here
    if not handed:  # the round's mark is handed over, the round is not kept: one read
        monkeypatch.setattr(notifier, "snapshots", None)
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    reads: list[str] = []
    real = rounds.current_round

    def counted(*args: Any) -> Any:
        reads.append(args[2])
        return real(*args)

    monkeypatch.setattr(rounds, "current_round", counted)
    app.state.context.round_snapshots.max_age_seconds = 60  # a slow CI machine: not the point
    answers: list[int] = []
    polls = 12

    def poll() -> None:
        answers.append(_current(client, fid, admin_headers, wait=60, after=1).json()["number"])

    waiting = [threading.Thread(target=poll, daemon=True) for _ in range(polls)]
    for thread in waiting:
        thread.start()
    limit = time.monotonic() + 30
    while (notifier.waiting < polls or not notifier.reads) and time.monotonic() < limit:
        time.sleep(0.02)
    assert notifier.waiting == polls
    reads.clear()
    assert put_update(client, fid, 1, update_bytes(), participant).status_code == 201
    for thread in waiting:
        thread.join(timeout=30)
    assert answers == [2] * polls
    # one read shared by all the polls, not one per poll; none for a round handed over
    assert len(reads) == (0 if handed else 1), reads


def test_a_read_in_flight_is_shared_under_its_mark_only() -> None:
    async def scenario() -> None:
        snapshots = RoundSnapshots()
        first, lead = snapshots.flight("f1", (2, "active", 1))
        assert lead
        same, follows = snapshots.flight("f1", (2, "active", 1))
        assert (same, follows) == (first, False)
        moved, lead_again = snapshots.flight("f1", (3, "active", 2))
        assert lead_again
        assert moved is not first
        snapshots.land("f1", first, None)  # a failed read: its followers read themselves
        assert first.result() is None
        assert snapshots.flight("f1", (3, "active", 2)) == (moved, False)  # still in flight
        snapshots.land("f1", moved, None)
        assert snapshots.flight("f1", (3, "active", 2))[1]  # landed: a new read leads

    asyncio.run(scenario())
