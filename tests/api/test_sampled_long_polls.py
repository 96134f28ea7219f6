"""Long-polls with ``in_cohort=true`` sit out the rounds their participant was not drawn
into, at no cost per round: no response, no database read per poll."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.factories import (
    create_federation,
    enrol,
    put_update,
    update_bytes,
    wait_round_closed,
)

ROUNDS = 4


def _round(client: TestClient, fid: str, number: int | str, headers: dict) -> dict[str, Any]:
    response = client.get(f"/v1/federations/{fid}/rounds/{number}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_poll_returns_only_for_a_round_its_participant_is_in(
    client: TestClient, app: FastAPI, admin_headers: dict
) -> None:
    rounds = {
        "min_participants": 4,
        "max_rounds": ROUNDS,
        "final_evaluation_seconds": 0,
        "sampling": {"kind": "fixed", "size": 1},
    }
    fid = create_federation(client, admin_headers, rounds=rounds)["id"]
    parts = dict(enrol(client, admin_headers, fid, f"p{i}") for i in range(4))
    app.state.worker.tick()  # four participants now: the timer draws round 1's sample
    members = {pid for pid, h in parts.items() if _round(client, fid, 1, h)["in_cohort"]}
    assert len(members) == 1
    outsiders = [pid for pid in parts if pid not in members]

    answers: dict[str, dict[str, Any]] = {}

    def wait(pid: str) -> None:
        response = client.get(
            f"/v1/federations/{fid}/rounds/current",
            params={"after": 1, "wait": 30, "in_cohort": "true"},
            headers=parts[pid],
        )
        assert response.status_code == 200, response.text
        answers[pid] = {**response.json(), "answered_at": time.monotonic()}

    polls = [threading.Thread(target=wait, args=(pid,)) for pid in outsiders]
    for poll in polls:
        poll.start()
    time.sleep(0.5)  # the polls are waiting
    loads_before = app.state.context.cohort_cache.loads

    cohorts: dict[int, set[str]] = {}
    completing_upload_sent: dict[int, float] = {}  # round n + 1 cannot open before this
    for number in range(1, ROUNDS + 1):
        cohort = [pid for pid, h in parts.items() if _round(client, fid, number, h)["in_cohort"]]
        assert len(cohort) == 1
        cohorts[number] = set(cohort)
        if cohort[0] in outsiders:
            # as a real participant does: it learns from its poll that it was drawn, then
            # uploads (a drawn round waits for its member, so the poll cannot miss it)
            limit = time.monotonic() + 30
            while cohort[0] not in answers and time.monotonic() < limit:
                time.sleep(0.02)
        upload = update_bytes(round=number, base_version=number - 1, seed=number)
        completing_upload_sent[number] = time.monotonic()
        assert put_update(client, fid, number, upload, parts[cohort[0]]).status_code == 201
        wait_round_closed(client, fid, number, admin_headers)
    for poll in polls:
        poll.join(timeout=30)
    assert set(answers) == set(outsiders)

    for pid, answer in answers.items():
        number = answer["number"]
        drawn_into = [n for n in range(2, ROUNDS + 1) if pid in cohorts[n]]
        if drawn_into:
            # it answered with the first round it was drawn into, and not before that opened
            assert number == drawn_into[0], (pid, answer, drawn_into)
            assert answer["in_cohort"] is True
            assert answer["answered_at"] >= completing_upload_sent[number - 1]
        else:
            # never drawn: the poll sat out every round until training stopped
            assert number == ROUNDS
            assert answer["in_cohort"] is False
    # one read of each later round's cohort served every waiting poll
    assert app.state.context.cohort_cache.loads - loads_before <= ROUNDS - 1


def test_without_in_cohort_a_poll_returns_at_the_next_round_as_before(
    client: TestClient, app: FastAPI, admin_headers: dict
) -> None:
    rounds = {"min_participants": 3, "max_rounds": 3, "sampling": {"kind": "fixed", "size": 1}}
    fid = create_federation(client, admin_headers, rounds=rounds)["id"]
    parts = dict(enrol(client, admin_headers, fid, f"p{i}") for i in range(3))
    app.state.worker.tick()
    member = next(pid for pid, h in parts.items() if _round(client, fid, 1, h)["in_cohort"])
    upload = update_bytes(round=1, base_version=0, seed=1)
    assert put_update(client, fid, 1, upload, parts[member]).status_code == 201
    wait_round_closed(client, fid, 1, admin_headers)
    for headers in parts.values():
        response = client.get(
            f"/v1/federations/{fid}/rounds/current",
            params={"after": 1, "wait": 30},
            headers=headers,
        )
        assert response.json()["number"] == 2  # whether or not it was drawn into round 2


def test_a_poll_waiting_for_a_pending_draw_wakes_when_it_is_drawn(
    client: TestClient, app: FastAPI, admin_headers: dict
) -> None:
    """Round 1 draws its sample once enough participants enrolled (on the timer). A
    participant's first request may already be its wait (after=0, in_cohort): the draw
    moves the round mark, so the drawn participant is answered then, not when its wait
    runs out; the one sitting out keeps waiting."""
    rounds = {"min_participants": 2, "max_rounds": 2, "sampling": {"kind": "fixed", "size": 1}}
    fid = create_federation(client, admin_headers, rounds=rounds)["id"]
    parts = dict(enrol(client, admin_headers, fid, f"p{i}") for i in range(2))
    assert _round(client, fid, 1, admin_headers)["cohort_size"] is None  # not drawn yet
    answers: dict[str, dict[str, Any]] = {}

    def wait(pid: str, seconds: int) -> None:
        response = client.get(
            f"/v1/federations/{fid}/rounds/current",
            params={"after": 0, "wait": seconds, "in_cohort": "true"},
            headers=parts[pid],
        )
        assert response.status_code == 200, response.text
        answers[pid] = response.json()

    # each waits 30 s: the drawn one must be answered by the draw, long before that
    polls = {pid: threading.Thread(target=wait, args=(pid, 30)) for pid in parts}
    for poll in polls.values():
        poll.start()
    limit = time.monotonic() + 10
    while app.state.context.notifier.waiting < 2 and time.monotonic() < limit:
        time.sleep(0.02)
    assert app.state.context.notifier.waiting == 2  # both held, nobody answered yet
    app.state.worker.tick()  # two participants now: the timer draws round 1's sample
    member = next(pid for pid, h in parts.items() if _round(client, fid, 1, h)["in_cohort"])
    outsider = next(pid for pid in parts if pid != member)
    polls[member].join(timeout=15)
    assert not polls[member].is_alive(), "the drawn participant's poll missed the draw"
    assert polls[outsider].is_alive(), "the participant sitting out was answered"
    assert answers[member]["number"] == 1
    assert answers[member]["in_cohort"] is True
    polls[outsider].join(timeout=45)
    assert answers[outsider]["number"] == 1  # its wait ran out: still round 1, not drawn
    assert answers[outsider]["in_cohort"] is False
