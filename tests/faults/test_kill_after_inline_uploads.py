"""SIGKILL right after the 201s of uploads whose bytes are database rows.

A small update (under ``FEDREC_INLINE_BLOB_MAX_BYTES``) is stored as rows of the
transaction that records it, with no file: its one COMMIT is what makes it durable
before the 201. The coordinator is killed the moment the acknowledgements arrive; the
restarted one still has every acknowledged update, byte for byte, and aggregates them
with the last participant's into the round's one version.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from coordinator.store.models import ModelVersion
from participant_sdk import Receipt
from tests.faults.conftest import (
    BACKENDS,
    Federation,
    blob_files,
    blob_rows,
    check_blobs,
    db_session,
    server_for,
    wait_until,
)

PARTICIPANTS = 3
NUM_ITEMS, DIM = 300, 8  # ~10 KB updates: far under the default 1 MiB


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.slow
def test_sigkill_after_the_201_still_aggregates_the_upload(backend: str, tmp_path: Path) -> None:
    with server_for(backend, tmp_path / "data") as server:
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

            def submit(index: int) -> Receipt:
                return fed.clients[index].updates.submit(
                    fed.id, 1, fed.deltas(index, 1), base_version=0, num_examples=5 + index
                )

            files_before = set(blob_files(server))
            receipts = {i: submit(i) for i in range(PARTICIPANTS - 1)}
            server.kill()  # SIGKILL the moment the last 201 arrived

            server.start()
            rows = blob_rows(server)
            for receipt in receipts.values():
                # the bytes are rows (check_blobs hashes them), and no file was written
                assert receipt.sha256 in rows
            assert set(blob_files(server)) == files_before
            updates = check_blobs(server, fed.id)
            assert {u.id for u in updates} == {r.update_id for r in receipts.values()}

            receipts[PARTICIPANTS - 1] = submit(PARTICIPANTS - 1)
            wait_until(
                lambda: fed.admin.rounds.get(fed.id, 1).state == "closed",
                timeout=60,
                what="round 1 to aggregate",
            )
            with db_session(server) as session:
                versions = list(
                    session.scalars(
                        select(ModelVersion).where(
                            ModelVersion.federation_id == fed.id, ModelVersion.round_number == 1
                        )
                    )
                )
            assert len(versions) == 1
            assert sorted(versions[0].contributors) == sorted(r.sha256 for r in receipts.values())
            check_blobs(server, fed.id)
        finally:
            fed.close()
