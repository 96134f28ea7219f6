"""Uploads that arrive together are stored in one transaction (the group commit), and
each is still accepted, counted and aggregated exactly once: a repeat inside the batch
gets the original receipt, a conflicting one its 409."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.store.models import AuditEvent, Update
from tests.factories import create_federation, enrol, put_update, update_bytes, wait_round_closed

K = 8


def test_concurrent_uploads_share_a_commit_and_each_counts_once(
    settings: Settings, admin_headers: dict[str, str]
) -> None:
    with TestClient(create_app(settings, run_timer=False)) as client:
        ctx = client.app.state.context  # type: ignore[attr-defined]
        commits = ctx.upload_commits
        fid = create_federation(
            client, admin_headers, rounds={"min_participants": K, "max_rounds": 2}
        )["id"]
        headers = [enrol(client, admin_headers, fid, f"p{i}")[1] for i in range(K)]
        # participant 0 sends its bytes twice, participant 1 two different bodies
        sends: list[tuple[int, bytes]] = [(i, update_bytes(seed=i)) for i in range(K)]
        sends += [(0, update_bytes(seed=0)), (1, update_bytes(seed=99))]
        responses: dict[int, Any] = {}

        # hold the committer's lead so that every upload queues into one batch
        release, entered = threading.Event(), threading.Event()

        def hold(_session: Session) -> None:
            entered.set()
            assert release.wait(30)

        holder = threading.Thread(target=commits.run, args=(("-", 0), hold))
        holder.start()
        assert entered.wait(30)
        batches_before = commits.batches

        def send(index: int) -> None:
            who, body = sends[index]
            responses[index] = put_update(client, fid, 1, body, headers[who])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(sends))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while commits.waiting < len(sends):
            assert time.monotonic() < deadline, "the uploads did not queue"
            time.sleep(0.01)
        assert not responses  # nobody is answered before the batch commits
        release.set()
        for thread in [holder, *threads]:
            thread.join(timeout=30)

        assert commits.batches == batches_before + 2  # the holder's, then all uploads
        codes = sorted(r.status_code for r in responses.values())
        # K first uploads, participant 0's repeat (its receipt), participant 1's conflict
        assert codes == sorted([201] * K + [200, 409]), [r.text for r in responses.values()]
        created = [r.json() for r in responses.values() if r.status_code == 201]
        assert len({r["update_id"] for r in created}) == K
        repeat = next(r.json() for r in responses.values() if r.status_code == 200)
        first_of_0 = responses[0].json() if responses[0].status_code == 201 else responses[K].json()
        assert repeat["update_id"] == first_of_0["update_id"]

        round_after = wait_round_closed(client, fid, 1, admin_headers)
        assert round_after["update_count"] == K
        version = client.get(
            f"/v1/federations/{fid}/models/{round_after['result_version']}", headers=admin_headers
        ).json()
        assert sorted(version["contributors"]) == sorted(r["sha256"] for r in created)
        with ctx.read_sessions() as session:
            assert session.scalar(select(func.count()).select_from(Update)) == K
            uploads = session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "upload", AuditEvent.outcome == "ok")
            )
            assert uploads == K
