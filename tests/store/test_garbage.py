"""Blob garbage collection against a live federation, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from coordinator.domain.context import Context
from coordinator.domain.garbage import collect_garbage
from coordinator.domain.lineage import verify_lineage
from coordinator.store.models import Blob, ModelVersion, Update
from tests.factories import create_federation, enrol, local_blobs, put_update, update_bytes

TWO_DAYS = 2 * 24 * 3600.0


def _age_everything(ctx: Context) -> None:
    """Every blob stored two days ago: files, and small blobs kept as rows."""
    then = time.time() - TWO_DAYS
    for path in local_blobs(ctx).root.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))
    with ctx.sessions.begin() as session:
        session.execute(update(Blob).values(stored_at=datetime.fromtimestamp(then, UTC)))


def _referenced(ctx: Context) -> set[str]:
    with ctx.sessions() as session:
        updates = session.scalars(select(Update.sha256)).all()
        versions = session.scalars(select(ModelVersion.sha256)).all()
    return set(updates) | set(versions)


@pytest.fixture
def federation(client: TestClient, admin_headers: dict[str, str]) -> dict[str, object]:
    """Round 1 aggregated from two participants; round 2 open with one upload of two."""
    fid = create_federation(client, admin_headers)["id"]
    parts = [enrol(client, admin_headers, fid, f"p{i}")[1] for i in range(2)]
    for seed, headers in enumerate(parts):
        assert put_update(client, fid, 1, update_bytes(seed=seed), headers).status_code == 201
    for _ in range(50):  # bounded: aggregation runs in the background
        state = client.get(f"/v1/federations/{fid}/rounds/1", headers=admin_headers).json()
        if state["state"] in ("closed", "failed"):
            break
        time.sleep(0.1)
    assert state["state"] == "closed"
    body = update_bytes(round=2, base_version=1, seed=5)
    assert put_update(client, fid, 2, body, parts[0]).status_code == 201
    return {"id": fid, "parts": parts}


@pytest.mark.usefixtures("federation")
def test_removes_only_old_unreferenced_files(ctx: Context) -> None:
    orphan = ctx.blobs.put(b"bytes of an upload refused after they were stored")
    leftover = local_blobs(ctx).path(orphan).parent / ".tmp-crashed-write"
    leftover.write_bytes(b"half a blob")
    _age_everything(ctx)
    recent = ctx.blobs.put(b"an upload that has not committed yet")
    referenced = _referenced(ctx)
    assert len(referenced) == 5  # versions 0 and 1, two updates of round 1, one of round 2

    dry = collect_garbage(ctx, dry_run=True)
    assert (dry.removed, dry.kept, dry.recent) == (2, 5, 1)
    assert ctx.blobs.exists(orphan)
    assert leftover.exists()

    report = collect_garbage(ctx)
    assert (report.removed, report.kept, report.recent) == (2, 5, 1)
    assert report.removed_bytes == len(b"bytes of an upload refused after they were stored") + len(
        b"half a blob"
    )
    assert not ctx.blobs.exists(orphan)
    assert not leftover.exists()
    assert ctx.blobs.exists(recent)
    assert all(ctx.blobs.exists(digest) for digest in referenced)
    assert collect_garbage(ctx).removed == 0


def test_finished_round_updates_go_and_the_federation_carries_on(
    ctx: Context,
    client: TestClient,
    admin_headers: dict[str, str],
    federation: dict[str, object],
) -> None:
    fid = str(federation["id"])
    with ctx.sessions() as session:
        by_round = {row.sha256: row.round_number for row in session.query(Update)}
    _age_everything(ctx)

    report = collect_garbage(ctx, keep_finished_updates=False)

    assert report.removed == 2
    for digest, number in by_round.items():
        assert ctx.blobs.exists(digest) == (number == 2)
    assert verify_lineage(ctx, fid).ok  # model versions are never removed
    weights = client.get(f"/v1/federations/{fid}/models/1/weights", headers=admin_headers)
    assert weights.status_code == 200
    # round 2 still aggregates: its update bytes were kept
    parts = federation["parts"]
    assert isinstance(parts, list)
    body = update_bytes(round=2, base_version=1, seed=6)
    assert put_update(client, fid, 2, body, parts[1]).status_code == 201
    for _ in range(50):
        state = client.get(f"/v1/federations/{fid}/rounds/2", headers=admin_headers).json()
        if state["state"] in ("closed", "failed"):
            break
        time.sleep(0.1)
    assert state["state"] == "closed"
    assert state["result_version"] == 2


def test_negative_grace_is_refused(ctx: Context) -> None:
    with pytest.raises(ValueError, match="grace"):
        collect_garbage(ctx, grace_seconds=-1)
