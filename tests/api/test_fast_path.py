"""The hot participant routes' fast paths (api/fast_path.py): the same answers as FastAPI's
generic handler, FastAPI's own answer for anything they do not read, no dependency solving
for the ordinary request, and a plain poll that reads the round as it is now."""

from __future__ import annotations

import threading
from typing import Any

import fastapi.routing
import pytest
from fastapi.dependencies.utils import solve_dependencies
from fastapi.testclient import TestClient
from sqlalchemy import event

from coordinator.api.fast_path import FastPathRoute
from coordinator.app import create_app
from coordinator.config import Settings
from tests.factories import create_federation, enrol, put_update, update_bytes

# headers that differ per request whichever path answers
VOLATILE = {"x-request-id", "date"}


def _answer(response: Any) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE}
    return response.status_code, headers, response.content


@pytest.fixture
def generic(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Call ``generic(fn)`` to run ``fn`` with the fast paths switched off."""

    def run(fn: Any) -> Any:
        monkeypatch.setattr(FastPathRoute, "enabled", False)
        try:
            return fn()
        finally:
            monkeypatch.setattr(FastPathRoute, "enabled", True)

    return run


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of the requests FastAPI solved dependencies for."""
    calls: list[str] = []
    original = solve_dependencies

    async def counting(*, request: Any, **kwargs: Any) -> Any:
        calls.append(request.url.path)
        return await original(request=request, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return calls


POLL_QUERIES = [
    "",
    "wait=0",
    "after=0&wait=0",
    "after=0&wait=0.5&in_cohort=true",
    "after=1&wait=0.05",  # runs out: round 1 stays current
    "after=1&wait=0.05&in_cohort=false&unknown=1",
    # not read by the fast path: FastAPI's answers (422s and its own readings)
    "wait=-1",
    "after=-1",
    "after=abc",
    "in_cohort=maybe",
    "in_cohort=1&after=0&wait=0",
    "wait=1e1",
    "wait=3601&after=1",
    "wait=301&after=1",  # the coordinator's own maximum: its problem
    "after=1&after=0&wait=0",
    "after=99999999999",
]


def test_poll_answers_equal_the_generic_handlers(
    client: TestClient, admin_headers: dict, generic: Any
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    _, participant = enrol(client, admin_headers, fid)
    path = f"/v1/federations/{fid}/rounds/current"
    for query in POLL_QUERIES:
        for headers in (participant, admin_headers):
            fast = _answer(client.get(f"{path}?{query}", headers=headers))
            slow = _answer(generic(lambda q=query, h=headers: client.get(f"{path}?{q}", headers=h)))
            assert fast == slow, query
    # unknown federation, no token, a bad token
    bad = "/v1/federations/nope/rounds/current"
    for headers in (participant, {}, {"Authorization": "Bearer fra_nobody"}):
        assert _answer(client.get(bad, headers=headers)) == _answer(
            generic(lambda h=headers: client.get(bad, headers=h))
        )


def test_download_answers_equal_the_generic_handlers(
    client: TestClient, admin_headers: dict, generic: Any
) -> None:
    fid = create_federation(client, admin_headers, transport={"encoding": "float16"})["id"]
    _, participant = enrol(client, admin_headers, fid)
    base = f"/v1/federations/{fid}/models"
    etag = client.get(f"{base}/0/weights", headers=participant).headers["etag"]
    cases: list[tuple[str, dict[str, str]]] = [
        ("0/weights", {}),
        ("latest/weights", {}),
        ("00/weights", {}),
        ("0/weights?encoding=float32", {}),
        ("0/weights?encoding=float16", {}),
        ("0/weights?encoding=int8", {}),  # not served: a 422 problem
        ("0/weights?encoding=bf16", {}),
        ("0/weights?encoding=float32&encoding=float16", {}),
        ("0/weights", {"If-None-Match": etag}),
        ("0/weights", {"If-None-Match": f'"other", W/{etag}'}),
        ("0/weights", {"If-None-Match": "*"}),
        ("9/weights", {}),
        ("99999999999/weights", {}),
        ("abc/weights", {}),
    ]
    for tail, extra in cases:
        headers = {**participant, **extra}
        fast = _answer(client.get(f"{base}/{tail}", headers=headers))
        slow = _answer(generic(lambda t=tail, h=headers: client.get(f"{base}/{t}", headers=h)))
        assert fast == slow, (tail, extra)
    other = create_federation(client, admin_headers)["id"]
    refused = f"/v1/federations/{other}/models/0/weights"
    assert _answer(client.get(refused, headers=participant))[0] == 403
    assert _answer(client.get(refused, headers=participant)) == _answer(
        generic(lambda: client.get(refused, headers=participant))
    )


def test_upload_answers_equal_the_generic_handlers(
    client: TestClient, admin_headers: dict, generic: Any
) -> None:
    fid = create_federation(client, admin_headers, rounds={"min_participants": 5})["id"]
    _, first = enrol(client, admin_headers, fid, "p0")
    _, second = enrol(client, admin_headers, fid, "p1")
    body = update_bytes(seed=1)
    report = '{"split": "validation", "metrics": {"ndcg@10": 0.1}, "num_users": 3}'

    def put(
        headers: dict[str, str],
        number: Any = 1,
        data: bytes = body,
        extra: dict[str, str] | None = None,
    ) -> Any:
        return client.put(
            f"/v1/federations/{fid}/rounds/{number}/update",
            content=data,
            headers={**headers, "Content-Type": "application/octet-stream", **(extra or {})},
        )

    # refusals first (they store nothing): identical problems either way
    refusals: list[tuple[Any, dict[str, str]]] = [
        ("abc", {}),
        ("99999999999", {}),
        (7, {}),  # a future round
        (1, {"X-Base-Evaluation": "not json"}),
        (1, {"X-Base-Evaluation": '{"split": "test", "metrics": {}, "num_users": 1}'}),
        (1, {"X-Base-Evaluation": "x" * 4097}),
        (1, {"Idempotency-Key": "k" * 201}),
    ]
    for number, extra in refusals:
        fast = _answer(put(first, number, extra=extra))
        slow = _answer(generic(lambda n=number, e=extra: put(first, n, extra=e)))
        assert fast == slow, (number, extra)
        assert fast[0] >= 400, (number, extra)
    wrong_type = client.put(
        f"/v1/federations/{fid}/rounds/1/update", content=body, headers={**first}
    )
    assert _answer(wrong_type) == _answer(
        generic(
            lambda: client.put(
                f"/v1/federations/{fid}/rounds/1/update", content=body, headers={**first}
            )
        )
    )
    assert wrong_type.status_code == 415
    # accepted: one participant through each path, the same receipt's shape and status
    fast_receipt = put(first, extra={"X-Base-Evaluation": report, "Idempotency-Key": "a-1"})
    slow_receipt = generic(
        lambda: put(second, data=update_bytes(seed=2), extra={"X-Base-Evaluation": report})
    )
    assert fast_receipt.status_code == slow_receipt.status_code == 201
    assert fast_receipt.headers["content-type"] == slow_receipt.headers["content-type"]
    assert fast_receipt.json().keys() == slow_receipt.json().keys()
    # the same bytes again: the original receipt, 200, byte for byte on either path
    again = _answer(put(first, extra={"Idempotency-Key": "a-1"}))
    assert (again[0], again[2]) == (200, fast_receipt.content)
    assert again == _answer(generic(lambda: put(first, extra={"Idempotency-Key": "a-1"})))
    # different bytes from the same participant: the conflict, either way
    other = update_bytes(seed=3)
    assert _answer(put(first, data=other)) == _answer(generic(lambda: put(first, data=other)))


def test_the_ordinary_requests_solve_no_dependencies(
    client: TestClient, admin_headers: dict, solved: list[str]
) -> None:
    fid = create_federation(client, admin_headers, rounds={"min_participants": 2})["id"]
    _, participant = enrol(client, admin_headers, fid)
    solved.clear()
    current = f"/v1/federations/{fid}/rounds/current"
    assert client.get(current, headers=participant).status_code == 200
    assert client.get(f"{current}?after=1&wait=0.01", headers=participant).status_code == 200
    weights = f"/v1/federations/{fid}/models/0/weights"
    assert client.get(weights, headers=participant).status_code == 200
    assert put_update(client, fid, 1, update_bytes(), participant).status_code == 201
    assert solved == []
    # what the fast path does not read is FastAPI's, dependencies and all
    assert client.get(f"{current}?wait=-1", headers=participant).status_code == 422
    assert client.get(current).status_code == 401
    assert solved == [current, current]


def test_a_plain_poll_reads_the_round_another_process_moved(
    settings: Settings, admin_headers: dict
) -> None:
    """Two coordinator processes on one database (two apps): a plain poll answered by one
    sees what the other wrote at once (no per-process snapshot of the round), in one
    statement."""
    with (
        TestClient(create_app(settings, run_timer=False)) as first,
        TestClient(create_app(settings, run_timer=False)) as second,
    ):
        fid = create_federation(first, admin_headers, rounds={"min_participants": 2})["id"]
        _, p0 = enrol(first, admin_headers, fid, "p0")
        _, p1 = enrol(first, admin_headers, fid, "p1")
        current = f"/v1/federations/{fid}/rounds/current"
        assert first.get(current, headers=p0).json()["update_count"] == 0
        assert put_update(second, fid, 1, update_bytes(seed=1), p1).status_code == 201
        assert first.get(current, headers=p0).json()["update_count"] == 1
        # the other process closes the round (its aggregation opens round 2)
        assert put_update(second, fid, 1, update_bytes(seed=2), p0).status_code == 201
        second.post(f"/v1/federations/{fid}/rounds/1/aggregate", headers=admin_headers)
        engine = first.app.state.context.sessions.kw["bind"]  # type: ignore[attr-defined]
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if not threading.current_thread().name.startswith("fedrec-aggregate"):
                statements.append(" ".join(statement.split()))

        event.listen(engine, "before_cursor_execute", seen)
        try:
            moved = first.get(current, headers=p0).json()
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert (moved["number"], moved["state"]) == (2, "open"), moved
        # the federation and its current round in one statement (an auth generation
        # re-read may come too: it is time-based)
        assert len([s for s in statements if "rounds" in s]) == 1, statements
        assert not [s for s in statements if s.split()[0] in ("INSERT", "UPDATE")], statements
