"""The upload's write path (domain/rounds.submit_update): Core statements, the round
re-checked by its guarded count, the receipt of a repeat looked up only on the unique
violation, and a bounded number of statements per upload."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.domain.errors import NotFound
from coordinator.domain.federations import federation_settings_by_id
from coordinator.store.models import AuditEvent, Evaluation, Round, Update, utc_now
from tests.factories import assert_problem, create_federation, enrol, put_update, update_bytes

REPORT = '{"split": "validation", "metrics": {"ndcg@10": 0.25}, "num_users": 3}'


def _queue_behind_held_commit(ctx: Any, send: Any) -> tuple[threading.Event, list[Any]]:
    """Hold the upload committer's lead; start ``send`` in a thread and wait until its
    unit queues for the next transaction (its read phase and checks are done)."""
    commits = ctx.upload_commits
    release, entered = threading.Event(), threading.Event()
    answers: list[Any] = []

    def hold(_session: Session) -> None:
        entered.set()
        assert release.wait(30)

    holder = threading.Thread(target=commits.run, args=(("-", 0), hold))
    holder.start()
    assert entered.wait(30)
    sender = threading.Thread(target=lambda: answers.append(send()))
    sender.start()
    deadline = time.monotonic() + 30
    while commits.waiting < 1:
        assert time.monotonic() < deadline, "the upload did not queue"
        time.sleep(0.01)

    def finish() -> list[Any]:
        release.set()
        holder.join(timeout=30)
        sender.join(timeout=30)
        return answers

    release.finish = finish  # type: ignore[attr-defined]
    return release, answers


def test_a_round_closed_after_the_checks_refuses_the_upload_and_stores_nothing(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    with TestClient(create_app(settings, run_timer=False)) as client:
        ctx = client.app.state.context  # type: ignore[attr-defined]
        fid = create_federation(client, admin_headers, rounds={"min_participants": 2})["id"]
        _, headers = enrol(client, admin_headers, fid, "p0")
        body = update_bytes(seed=1)
        release, _ = _queue_behind_held_commit(
            ctx, lambda: put_update(client, fid, 1, body, headers)
        )
        # the round closes (say, a deadline) after the upload passed its read checks
        with ctx.sessions.begin() as session:
            session.execute(
                update(Round)
                .where(Round.federation_id == fid, Round.number == 1)
                .values(state="closed")
            )
        [response] = release.finish()  # type: ignore[attr-defined]
        assert_problem(response, 409, "round-closed")
        with ctx.read_sessions() as session:
            assert session.scalar(select(func.count()).select_from(Update)) == 0
            assert session.scalar(select(Round.update_count).where(Round.federation_id == fid)) == 0
            assert not session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "upload", AuditEvent.outcome == "ok")
            )


def test_a_repeat_that_committed_first_gets_its_receipt_even_once_the_round_closed(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    with TestClient(create_app(settings, run_timer=False)) as client:
        ctx = client.app.state.context  # type: ignore[attr-defined]
        fid = create_federation(client, admin_headers, rounds={"min_participants": 2})["id"]
        participant, headers = enrol(client, admin_headers, fid, "p0")
        body = update_bytes(seed=2)
        release, _ = _queue_behind_held_commit(
            ctx, lambda: put_update(client, fid, 1, body, headers)
        )
        # meanwhile another process stored the same bytes (the first attempt, whose answer
        # was lost), then the round closed
        with ctx.sessions.begin() as session:
            round_id = session.scalar(
                select(Round.id).where(Round.federation_id == fid, Round.number == 1)
            )
            session.add(
                Update(
                    id="first-attempt",
                    round_id=round_id,
                    participant_id=participant,
                    round_number=1,
                    sha256=hashlib.sha256(body).hexdigest(),
                    size=len(body),
                    num_examples=10,
                    kind="dense",
                    received_at=utc_now(),
                )
            )
            session.execute(update(Round).where(Round.id == round_id).values(state="closed"))
        [response] = release.finish()  # type: ignore[attr-defined]
        assert response.status_code == 200, response.text
        assert response.json()["update_id"] == "first-attempt"
        with ctx.read_sessions() as session:
            assert session.scalar(select(func.count()).select_from(Update)) == 1


def test_the_upload_runs_few_statements_and_records_report_and_audit(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    with TestClient(create_app(settings, run_timer=False)) as client:
        ctx = client.app.state.context  # type: ignore[attr-defined]
        fid = create_federation(client, admin_headers, rounds={"min_participants": 3})["id"]
        participant, headers = enrol(client, admin_headers, fid, "p0")
        _, other = enrol(client, admin_headers, fid, "p1")
        # warm the process's caches (the federation's parsed spec, the token)
        assert put_update(client, fid, 1, update_bytes(seed=3), other).status_code == 201
        client.get(f"/v1/federations/{fid}/rounds/current", headers=headers).raise_for_status()
        engine = ctx.sessions.kw["bind"]
        statements: list[str] = []
        # the round's aggregation, which this upload completes, runs in its transaction
        # before the COMMIT (the group commit's finish) or on its thread after it
        # (worker.after_upload): its statements are the job's, not the upload's
        worker = client.app.state.worker  # type: ignore[attr-defined]
        in_job = threading.local()

        def marked(job: Any) -> Any:
            def run(*args: Any) -> Any:
                in_job.on = True
                try:
                    return job(*args)
                finally:
                    in_job.on = False

            return run

        worker.after_upload = marked(worker.after_upload)
        ctx.upload_commits.finish = marked(ctx.upload_commits.finish)

        def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if getattr(in_job, "on", False):
                return
            if not threading.current_thread().name.startswith("fedrec-aggregate"):
                statements.append(statement.split()[0].upper())  # not the worker's kick

        event.listen(engine, "before_cursor_execute", seen)
        try:
            response = client.put(
                f"/v1/federations/{fid}/rounds/1/update",
                content=update_bytes(seed=4),
                headers={
                    **headers,
                    "Content-Type": "application/octet-stream",
                    "X-Base-Evaluation": REPORT,
                    "Idempotency-Key": "k-1",
                },
            )
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert response.status_code == 201, response.text
        # no read: the other participant's upload found the round open (domain/open_rounds);
        # writes: the round's count returning its completeness and whether a repeat exists
        # (none: no lookup of a receipt), the blob (its row holds its bytes), the update,
        # the report, the audit event (which checks and moves the head in the same
        # statement); PostgreSQL first locks the federation and the round
        data = [s for s in statements if s in ("SELECT", "INSERT", "UPDATE", "DELETE")]
        writes = ["UPDATE", "INSERT", "INSERT", "INSERT", "INSERT"]
        if str(settings.database_url).startswith("sqlite"):
            assert data == writes, statements
        else:
            assert data == ["SELECT", "SELECT", *writes], statements
        assert "SAVEPOINT" not in statements  # alone in its batch
        with ctx.read_sessions() as session:
            report = session.scalars(
                select(Evaluation).where(Evaluation.participant_id == participant)
            ).one()
            assert (report.version, report.split, report.num_users) == (0, "validation", 3)
            assert report.metrics == {"ndcg@10": 0.25}
            row = session.scalars(select(Update).where(Update.participant_id == participant)).one()
            assert row.idempotency_key == "k-1"
            assert row.id == response.json()["update_id"]
        # the key replays the receipt
        replay = client.put(
            f"/v1/federations/{fid}/rounds/1/update",
            content=update_bytes(seed=4),
            headers={
                **headers,
                "Content-Type": "application/octet-stream",
                "Idempotency-Key": "k-1",
            },
        )
        assert replay.status_code == 200
        assert replay.json() == response.json()


def test_settings_by_id_read_once_and_404_for_an_unknown_federation(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    with TestClient(create_app(settings, run_timer=False)) as client:
        ctx = client.app.state.context  # type: ignore[attr-defined]
        fid = create_federation(client, admin_headers)["id"]
        ctx.settings_cache.clear()
        with ctx.read_sessions() as session:
            first = federation_settings_by_id(ctx, session, fid)
        assert ctx.settings_cache[fid] is first
        with ctx.read_sessions() as session:
            assert federation_settings_by_id(ctx, session, fid) is first
            with pytest.raises(NotFound):
                federation_settings_by_id(ctx, session, "0" * 36)


def test_only_the_upload_that_may_complete_its_round_kicks_the_job(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    """The upload's transaction judges its round (lifecycle.certainly_waits): uploads the
    round certainly waits past run nothing of the job, a replay nothing, and the one that
    completes the round runs it (a small round on SQLite: in its own transaction, before
    the COMMIT; on PostgreSQL on its own thread after it; before it answers either way)."""
    with TestClient(create_app(settings, run_timer=False)) as client:
        worker = client.app.state.worker  # type: ignore[attr-defined]
        fid = create_federation(client, admin_headers, rounds={"min_participants": 3})["id"]
        parts = [enrol(client, admin_headers, fid, f"p{i}")[1] for i in range(3)]
        runs: list[Any] = []
        kicks: list[Any] = []
        after_upload, kick = worker.after_upload, worker.kick

        def recording_run(federation_id: str, number: int, facts: Any = None) -> None:
            runs.append((federation_id, number))
            after_upload(federation_id, number, facts)

        def recording_kick(federation_id: str, number: int) -> Any:
            kicks.append((federation_id, number))
            return kick(federation_id, number)

        worker.after_upload, worker.kick = recording_run, recording_kick
        for seed, headers in enumerate(parts[:2]):
            assert put_update(client, fid, 1, update_bytes(seed=seed), headers).status_code == 201
        replay = put_update(client, fid, 1, update_bytes(seed=1), parts[1])
        assert replay.status_code == 200
        assert runs == []
        assert client.get(f"/v1/federations/{fid}/rounds/1", headers=admin_headers).json()[
            "state"
        ] == ("open")
        assert put_update(client, fid, 1, update_bytes(seed=2), parts[2]).status_code == 201
        if str(settings.database_url).startswith("sqlite"):
            assert runs == []  # aggregated in the upload's transaction: no kick after it
        else:
            assert runs == [(fid, 1)]
        assert kicks == []  # aggregated before it answered, nothing handed over
        round_one = client.get(f"/v1/federations/{fid}/rounds/1", headers=admin_headers).json()
        assert round_one["state"] == "closed", round_one
