"""SIGKILL the coordinator while a group commit of uploads sits between writing its rows
and committing them (the test hook ``FEDREC_TEST_GROUP_COMMIT_PAUSE_SECONDS``).

Two participants are acknowledged first; then four upload together, their blobs are
stored, their rows are written into one transaction, and the process dies before the
commit. Nothing acknowledged is lost, nothing unacknowledged half-exists (no row without
its blob, ``update_count`` equal to the rows), the four retries are each stored once,
and the round aggregates all six.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from coordinator.store.models import Update
from participant_sdk import APIConnectionError, APITimeoutError, Client, Receipt
from tests.faults.conftest import (
    BACKENDS,
    Federation,
    blob_files,
    check_blobs,
    db_session,
    server_for,
    wait_until,
)

FIRST, LATER = 2, 4
PARTICIPANTS = FIRST + LATER
NUM_ITEMS, DIM = 200, 8
HOOK = "FEDREC_TEST_GROUP_COMMIT_PAUSE_SECONDS"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.slow
def test_sigkill_before_a_group_commit_loses_nothing_acknowledged(
    backend: str, tmp_path: Path
) -> None:
    # update blobs as files: the test sees every body stored before its batch commits
    # (small ones kept as rows would be written inside the paused transaction)
    with server_for(backend, tmp_path / "data", FEDREC_INLINE_BLOB_MAX_BYTES="0") as server:
        fed = Federation(
            server,
            participants=PARTICIPANTS,
            num_items=NUM_ITEMS,
            dim=DIM,
            rounds={
                "min_participants": PARTICIPANTS,
                "max_rounds": 1,
                "final_evaluation_seconds": 0,
            },
        )
        try:

            def submit(client: Client, index: int) -> Receipt:
                return client.updates.submit(
                    fed.id, 1, fed.deltas(index, 1), base_version=0, num_examples=10 + index
                )

            acknowledged = {i: submit(fed.clients[i], i) for i in range(FIRST)}

            # a second life whose every batch pauses before its commit
            server.kill()
            server.env[HOOK] = "120"
            server.start()
            blobs_before = set(blob_files(server))
            raw = [
                Client(server.url, fed.tokens[i], max_retries=0, timeout=60)
                for i in range(PARTICIPANTS)
            ]
            outcomes: dict[int, object] = {}

            def upload(index: int) -> None:
                try:
                    outcomes[index] = submit(raw[index], index)
                except (APIConnectionError, APITimeoutError) as exc:
                    outcomes[index] = exc

            threads = [
                threading.Thread(target=upload, args=(i,)) for i in range(FIRST, PARTICIPANTS)
            ]
            for thread in threads:
                thread.start()
            # every body is stored as a blob and handed to the committer; none is answered
            wait_until(
                lambda: len(set(blob_files(server)) - blobs_before) >= LATER,
                timeout=30,
                what="the four blobs",
            )
            wait_until(
                lambda: "before committing uploads" in server.log_path.read_text(errors="replace"),
                timeout=30,
                what="the batch to reach the pause hook",
            )
            assert not outcomes, "an upload was answered before its batch committed"
            server.kill()
            for thread in threads:
                thread.join(timeout=30)
            assert all(isinstance(outcomes[i], Exception) for i in range(FIRST, PARTICIPANTS))
            for client in raw:
                client.close()

            # nothing of the uncommitted batch exists; the acknowledged two do
            with db_session(server) as session:
                rows = {r.participant_id: r for r in session.scalars(select(Update))}
            assert set(rows) == {fed.participant_ids[i] for i in range(FIRST)}
            for index, receipt in acknowledged.items():
                assert rows[fed.participant_ids[index]].id == receipt.update_id
            check_blobs(server, fed.id)

            # a third life without the pause: the retries get through, each once
            server.kill()
            server.env[HOOK] = "0"
            server.start()
            retried = {i: submit(fed.clients[i], i) for i in range(FIRST, PARTICIPANTS)}
            assert len({r.update_id for r in retried.values()}) == LATER
            for index, receipt in acknowledged.items():  # the originals' receipts again
                assert submit(fed.clients[index], index).update_id == receipt.update_id
            wait_until(
                lambda: fed.admin.rounds.get(fed.id, 1).state == "closed",
                timeout=60,
                what="the round to aggregate",
            )
            assert fed.admin.rounds.get(fed.id, 1).update_count == PARTICIPANTS
            (_, version) = fed.admin.models.list(fed.id)
            assert len(version.contributors) == PARTICIPANTS
            with db_session(server) as session:
                assert session.scalar(select(func.count()).select_from(Update)) == PARTICIPANTS
            check_blobs(server, fed.id)
        finally:
            fed.close()
