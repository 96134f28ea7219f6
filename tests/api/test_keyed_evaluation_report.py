"""A report sent with an Idempotency-Key is one write transaction: the key's record and the
evaluation row commit together (domain/evaluation.submit_keyed_evaluation), so a retry
after a lost answer replays it once, and a report that failed before its COMMIT left
neither behind."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from coordinator.api.routes import evaluations as evaluation_routes
from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.store.models import Evaluation, IdempotencyRecord
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    put_update,
    update_bytes,
    wait_round_closed,
)

REPORT = {"split": "validation", "metrics": {"ndcg@10": 0.25}, "num_users": 3}


def _counts(client: TestClient) -> tuple[int, int]:
    """(evaluation rows, idempotency records)"""
    with client.app.state.context.read_sessions() as session:  # type: ignore[attr-defined]
        rows = session.scalar(select(func.count()).select_from(Evaluation)) or 0
        records = session.scalar(select(func.count()).select_from(IdempotencyRecord)) or 0
    return int(rows), int(records)


def test_a_keyed_report_is_one_transaction_and_its_retry_replays_it(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    with TestClient(create_app(settings, run_timer=False)) as client:
        ctx = client.app.state.context  # type: ignore[attr-defined]
        fid = create_federation(client, admin_headers)["id"]
        _, headers = enrol(client, admin_headers, fid, "p0")
        url = f"/v1/federations/{fid}/models/0/evaluations"
        # warm the process's caches (the federation's parsed spec, the token)
        warm = client.post(url, json=REPORT, headers={**headers, "Idempotency-Key": "warm"})
        assert warm.status_code == 201, warm.text
        engine = ctx.sessions.kw["bind"]
        statements: list[str] = []
        commits: list[int] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement.split()[0].upper())

        def committed(_conn: Any) -> None:
            commits.append(1)

        event.listen(engine, "before_cursor_execute", seen)
        event.listen(engine, "commit", committed)
        try:
            first = client.post(url, json=REPORT, headers={**headers, "Idempotency-Key": "k-1"})
        finally:
            event.remove(engine, "before_cursor_execute", seen)
            event.remove(engine, "commit", committed)
        assert first.status_code == 201, first.text
        # one COMMIT (before: the pending record's, the report's, the response's: three)
        assert len(commits) == 1, statements
        # reads: the key's record, the federation, the version, the participant's report;
        # writes: the report row (here an UPDATE: the warm-up reported version 0) and the
        # record; PostgreSQL first locks the federation
        data = [s for s in statements if s in ("SELECT", "INSERT", "UPDATE", "DELETE")]
        assert len(data) <= (6 if str(settings.database_url).startswith("sqlite") else 7), (
            statements
        )
        assert "SAVEPOINT" not in statements  # alone in its batch
        assert _counts(client) == (1, 2)

        # the answer was lost: the retry gets the same answer, marked, and stores nothing
        retry = client.post(url, json=REPORT, headers={**headers, "Idempotency-Key": "k-1"})
        assert retry.status_code == 201
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.json() == first.json()
        assert retry.headers["content-type"] == first.headers["content-type"]
        assert _counts(client) == (1, 2)
        # the same key with another report is refused and changes nothing
        other = client.post(
            url,
            json={**REPORT, "num_users": 4},
            headers={**headers, "Idempotency-Key": "k-1"},
        )
        assert_problem(other, 422, "idempotency-key-reused")
        assert _counts(client) == (1, 2)
        # the same report spelled differently (key order, spacing) is the same request
        spelled = client.post(
            url,
            content=b'{"num_users": 3,  "metrics": {"ndcg@10": 0.25}, "split": "validation"}',
            headers={**headers, "Idempotency-Key": "k-1", "Content-Type": "application/json"},
        )
        assert spelled.status_code == 201
        assert spelled.json() == first.json()


def test_a_report_that_fails_before_its_commit_leaves_nothing_and_its_retry_runs(
    settings: Settings, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(settings, run_timer=False), raise_server_exceptions=False) as client:
        fid = create_federation(client, admin_headers)["id"]
        _, headers = enrol(client, admin_headers, fid, "p0")
        url = f"/v1/federations/{fid}/models/0/evaluations"
        keyed = {**headers, "Idempotency-Key": "k-1"}
        rendered = evaluation_routes._rendered

        def crash(_row: object) -> Any:
            raise RuntimeError("the process died after the row, before the COMMIT")

        # the row is flushed, then rendering its answer fails: the transaction rolls back
        monkeypatch.setattr(evaluation_routes, "_rendered", crash)
        assert client.post(url, json=REPORT, headers=keyed).status_code == 500
        assert _counts(client) == (0, 0)  # neither the row nor a pending record
        monkeypatch.setattr(evaluation_routes, "_rendered", rendered)
        retry = client.post(url, json=REPORT, headers=keyed)
        assert retry.status_code == 201, retry.text
        assert "idempotent-replayed" not in retry.headers
        assert _counts(client) == (1, 1)


def test_refused_reports_store_nothing_and_are_checked_again(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    _, headers = enrol(client, admin_headers, fid, "p0")
    keyed = {**headers, "Idempotency-Key": "k-1"}
    missing = client.post(f"/v1/federations/{fid}/models/9/evaluations", json=REPORT, headers=keyed)
    assert_problem(missing, 404, "model-version-not-found")
    undeclared = {**REPORT, "metrics": {"made-up": 1.0}}
    url = f"/v1/federations/{fid}/models/0/evaluations"
    assert_problem(
        client.post(url, json=undeclared, headers={**headers, "Idempotency-Key": "k-2"}),
        422,
        "validation-error",
    )
    assert _counts(client) == (0, 0)
    too_long = {**headers, "Idempotency-Key": "k" * 201}
    assert_problem(client.post(url, json=REPORT, headers=too_long), 400, "bad-request")
    # nothing was recorded for k-2: the same key with a valid report is a new request
    assert (
        client.post(url, json=REPORT, headers={**headers, "Idempotency-Key": "k-2"}).status_code
        == 201
    )
    assert _counts(client) == (1, 1)


def test_the_last_keyed_final_report_completes_the_federation_once(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    stop = {"min_participants": 1, "max_rounds": 1}
    fid = create_federation(client, admin_headers, rounds=stop)["id"]
    _, headers = enrol(client, admin_headers, fid, "p0")
    body = update_bytes(round=1, base_version=0, seed=1)
    assert put_update(client, fid, 1, body, headers).status_code == 201
    assert wait_round_closed(client, fid, 1, admin_headers)["state"] == "closed"
    fed = client.get(f"/v1/federations/{fid}", headers=admin_headers).json()
    assert (fed["state"], fed["latest_version"]) == ("evaluating", 1)
    url = f"/v1/federations/{fid}/models/1/evaluations"
    keyed = {**headers, "Idempotency-Key": "final-1"}
    first = client.post(url, json=REPORT, headers=keyed)
    assert first.status_code == 201, first.text
    assert client.get(f"/v1/federations/{fid}", headers=admin_headers).json()["state"] == (
        "completed"
    )
    # the retry of a lost answer replays it, though the federation no longer takes reports
    retry = client.post(url, json=REPORT, headers=keyed)
    assert (retry.status_code, retry.json()) == (201, first.json())
    assert retry.headers["idempotent-replayed"] == "true"
    assert _counts(client) == (1, 1)


def test_a_keyed_answer_is_the_unkeyed_answer(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    fid = create_federation(client, admin_headers)["id"]
    _, headers = enrol(client, admin_headers, fid, "p0")
    url = f"/v1/federations/{fid}/models/0/evaluations"
    plain = client.post(url, json=REPORT, headers=headers)
    keyed = client.post(url, json=REPORT, headers={**headers, "Idempotency-Key": "k-1"})
    assert (plain.status_code, keyed.status_code) == (201, 201)
    assert plain.headers["content-type"] == keyed.headers["content-type"]
    # the same fields in the same order; only the report's time moved
    assert list(plain.json()) == list(keyed.json())
    assert {**plain.json(), "created_at": None} == {**keyed.json(), "created_at": None}
