"""The audit log (issue 12, finding 10: no record of who enrolled, revoked, uploaded,
aggregated, promoted, or failed to authenticate), on every backend."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, text, update

from coordinator.app import build_context
from coordinator.config import Settings
from coordinator.domain import audit
from coordinator.domain.context import Context
from coordinator.store.models import AuditEvent, AuditHead
from fedrec.cli import main
from tests.conftest import ADMIN_TOKEN
from tests.factories import (
    assert_problem,
    create_federation,
    enrol,
    put_update,
    update_bytes,
    wait_round_closed,
)


def _events(client: TestClient, admin: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/audit", headers=admin, params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.fixture
def story(client: TestClient, admin_headers: dict[str, str]) -> dict[str, Any]:
    """Enrol two, one refused upload, two uploads, an aggregation, a promotion and a
    roll-back, a revocation and its token's failure, a re-enrolment, an unknown token."""
    fid = create_federation(client, admin_headers)["id"]
    pid_a, a = enrol(client, admin_headers, fid, "a")
    _, b = enrol(client, admin_headers, fid, "b")
    assert_problem(put_update(client, fid, 2, update_bytes(round=2), a), 409, "future-round")
    put_update(client, fid, 1, update_bytes(seed=1), a)
    put_update(client, fid, 1, update_bytes(seed=2), b)
    wait_round_closed(client, fid, 1, admin_headers)
    deploy = f"/v1/federations/{fid}/deployment"
    assert client.post(deploy, headers=admin_headers, json={"version": 1}).status_code == 200
    assert client.post(deploy, headers=admin_headers, json={"version": 0}).status_code == 200
    client.delete(f"/v1/federations/{fid}/participants/{pid_a}", headers=admin_headers)
    assert client.get(f"/v1/federations/{fid}", headers=a).status_code == 401
    reenrolled = client.post(
        f"/v1/federations/{fid}/participants/{pid_a}/reenrol", headers=admin_headers
    )
    unknown = {"Authorization": "Bearer frp_not-a-token-anybody-holds"}
    assert client.get(f"/v1/federations/{fid}", headers=unknown).status_code == 401
    return {
        "fid": fid,
        "pid_a": pid_a,
        "tokens": [a["Authorization"], b["Authorization"], reenrolled.json()["token"]],
    }


class TestRecorded:
    def test_every_security_relevant_event_in_order(
        self, client: TestClient, admin_headers: dict[str, str], story: dict[str, Any]
    ) -> None:
        events = _events(client, admin_headers)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        actions = [(e["action"], e["outcome"]) for e in events]
        assert actions == [
            ("admin-token-create", "ok"),  # the coordinator's start registers its bootstrap token
            ("enrol", "ok"),
            ("enrol", "ok"),
            ("upload", "refused"),
            ("upload", "ok"),
            ("upload", "ok"),
            ("aggregate", "ok"),
            ("promote", "ok"),
            ("rollback", "ok"),
            ("revoke", "ok"),
            ("auth-failure", "refused"),
            ("reenrol", "ok"),
            ("auth-failure", "refused"),
        ]
        assert events[0]["actor"] == "coordinator"
        assert events[0]["detail"]["kind"] == "bootstrap"
        refused = events[3]
        assert refused["actor"] == f"participant:{story['pid_a']}"
        assert refused["detail"] == {"problem": "future-round"}
        assert events[6]["detail"]["version"] == 1
        assert events[6]["detail"]["updates"] == 2
        assert events[10]["actor"] == f"participant:{story['pid_a']}"
        assert events[10]["detail"] == {"reason": "revoked"}
        assert events[12]["actor"] == "anonymous"

    def test_no_token_in_the_log(
        self, client: TestClient, admin_headers: dict[str, str], story: dict[str, Any]
    ) -> None:
        dumped = json.dumps(_events(client, admin_headers))
        for token in [*story["tokens"], ADMIN_TOKEN, "frp_not-a-token-anybody-holds"]:
            assert token.removeprefix("Bearer ") not in dumped
        assert "frp_" not in dumped

    def test_paginated(
        self, client: TestClient, admin_headers: dict[str, str], story: dict[str, Any]
    ) -> None:
        everything = _events(client, admin_headers)
        assert len(everything) == 13
        assert story["fid"]
        first = _events(client, admin_headers, limit=5)
        rest = _events(client, admin_headers, after=first[-1]["seq"], limit=500)
        assert first + rest == everything
        assert len(first) == 5

    def test_admin_only(self, client: TestClient, story: dict[str, Any]) -> None:
        participant = {"Authorization": story["tokens"][1]}
        assert_problem(client.get("/v1/audit", headers=participant), 403, "forbidden")
        assert client.get("/v1/audit").status_code == 401

    def test_budget_refusal(self, client: TestClient, admin_headers: dict[str, str]) -> None:
        from coordinator.domain.accountant import pld_epsilon

        budget = (pld_epsilon(2.0, 1.0, 1, 1e-5) + pld_epsilon(2.0, 1.0, 2, 1e-5)) / 2
        fed = create_federation(
            client,
            admin_headers,
            strategy={"normalization": "total", "weighting": "uniform"},
            rounds={"max_rounds": 10},
            privacy={"dp": {"clip_norm": 1.0, "noise_multiplier": 2.0, "max_epsilon": budget}},
        )
        _, headers = enrol(client, admin_headers, fed["id"])
        put_update(client, fed["id"], 1, update_bytes(), headers)
        wait_round_closed(client, fed["id"], 1, admin_headers)
        last = _events(client, admin_headers)[-1]
        assert (last["action"], last["actor"]) == ("budget-refusal", "coordinator")
        assert last["detail"] == {"reason": "privacy_budget", "completed_rounds": 1}


class TestTamperEvident:
    def test_untouched_log_verifies(self, app: FastAPI, story: dict[str, Any]) -> None:
        assert story
        report = audit.verify_audit(app.state.context)
        assert report.ok, report.reason
        assert report.checked == 13

    def test_edited_event(self, app: FastAPI, story: dict[str, Any]) -> None:
        assert story
        ctx: Context = app.state.context
        with ctx.sessions.begin() as session:
            session.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(actor="admin"))
        report = audit.verify_audit(ctx)
        assert (report.bad_seq, report.reason) == (4, "the event was changed")

    def test_deleted_event(self, app: FastAPI, story: dict[str, Any]) -> None:
        assert story
        ctx: Context = app.state.context
        with ctx.sessions.begin() as session:
            session.execute(delete(AuditEvent).where(AuditEvent.seq == 7))
        report = audit.verify_audit(ctx)
        assert (report.bad_seq, report.reason) == (7, "event 7 is missing")

    def test_deleted_newest_events(self, app: FastAPI, story: dict[str, Any]) -> None:
        assert story
        ctx: Context = app.state.context
        with ctx.sessions.begin() as session:
            session.execute(delete(AuditEvent).where(AuditEvent.seq >= 11))
        report = audit.verify_audit(ctx)
        assert not report.ok
        assert "events were deleted" in (report.reason or "")

    def test_chain_recomputed_without_the_key(self, app: FastAPI, story: dict[str, Any]) -> None:
        # a database writer rewrites an event and re-chains everything after it with a
        # plain hash (it does not hold the audit key)
        assert story
        ctx: Context = app.state.context
        with ctx.sessions.begin() as session:
            events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
            prev = events[2].hash
            for event in events[3:]:
                event.detail = {**event.detail, "forged": True} if event.seq == 4 else event.detail
                event.prev_hash = prev
                event.hash = hashlib.sha256((prev + str(event.seq)).encode()).hexdigest()
                prev = event.hash
            head = session.get(AuditHead, 1)
            assert head is not None
            head.hash = prev
        report = audit.verify_audit(ctx)
        assert (report.bad_seq, report.reason) == (4, "the event was changed")


def test_cli_audit_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    assert main(["migrate", "--data-dir", str(data_dir)]) == 0
    ctx = build_context(Settings(data_dir=data_dir, _env_file=None))
    try:
        for n in range(3):
            audit.record_now(ctx, actor="admin", action="enrol", subject=f"p{n}")
        assert main(["audit", "verify", "--data-dir", str(data_dir)]) == 0
        assert "audit log ok: 3 events verified" in capsys.readouterr().out
        with ctx.sessions.begin() as session:
            session.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(subject="x"))
        assert main(["audit", "verify", "--data-dir", str(data_dir)]) == 1
        assert "audit log broken at event 2" in capsys.readouterr().err
    finally:
        ctx.sessions.kw["bind"].dispose()


def test_sql_parameters_stay_out_of_database_errors(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    secret_value = "do-not-log-this-value"
    with caplog.at_level(logging.DEBUG), pytest.raises(Exception) as info:  # noqa: PT011
        with ctx.sessions.begin() as session:
            session.execute(
                text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"),
                {"h": secret_value},
            )
    assert "audit_head" in str(info.value)  # the statement is named...
    assert secret_value not in str(info.value)  # ...its values are not
    assert secret_value not in caplog.text
