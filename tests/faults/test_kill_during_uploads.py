"""Must-show 1: SIGKILL the coordinator while 10 participants upload.

Uploads trickle (a transport sends each body in small timed chunks) and start
staggered, so at the kill some participants hold a 201, some are halfway through
their body and some have not started. After the restart every acknowledged update is
there with its original receipt, no half-written blob is visible, and the round
completes once the others' retries get through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from coordinator.store.models import Update
from participant_sdk import APIConnectionError, APITimeoutError, Client, Receipt
from tests.faults.conftest import (
    BACKENDS,
    Federation,
    check_blobs,
    db_session,
    server_for,
    wait_until,
)

log = logging.getLogger(__name__)

PARTICIPANTS = 10
NUM_ITEMS, DIM = 20_000, 16  # ~1.4 MB per update
CHUNK, CHUNK_DELAY = 64 * 1024, 0.04  # ~1 s per upload
STAGGER = 0.2


class _Trickle(httpx.SyncByteStream):
    def __init__(self, body: bytes) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self._body), CHUNK):
            time.sleep(CHUNK_DELAY)
            yield self._body[start : start + CHUNK]


class TrickleUploads(httpx.HTTPTransport):
    """Send PUT bodies slowly, like a participant on a thin link."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            request.stream = _Trickle(request.read())
        return super().handle_request(request)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.slow
def test_sigkill_while_ten_participants_upload(backend: str, tmp_path: Path) -> None:
    with server_for(backend, tmp_path / "data") as server:
        fed = Federation(
            server,
            participants=PARTICIPANTS,
            num_items=NUM_ITEMS,
            dim=DIM,
            # raw uploads: nobody reports the final version, so complete without waiting
            rounds={
                "min_participants": PARTICIPANTS,
                "max_rounds": 1,
                "final_evaluation_seconds": 0,
            },
        )
        uploaders = [
            Client(server.url, token, max_retries=0, timeout=20, transport=TrickleUploads())
            for token in fed.tokens
        ]
        receipts: dict[int, list[Receipt]] = {i: [] for i in range(PARTICIPANTS)}
        failures: dict[int, list[str]] = {i: [] for i in range(PARTICIPANTS)}
        acked = threading.Semaphore(0)
        stop_at = time.monotonic() + 90
        start = threading.Barrier(PARTICIPANTS + 1)

        def participant(index: int) -> None:
            start.wait(timeout=10)
            time.sleep(index * STAGGER)
            while time.monotonic() < stop_at:
                try:
                    receipt = uploaders[index].updates.submit(
                        fed.id, 1, fed.deltas(index, 1), base_version=0, num_examples=10 + index
                    )
                except (APIConnectionError, APITimeoutError) as exc:
                    failures[index].append(type(exc).__name__)
                    time.sleep(0.3)  # the coordinator is down: retry the same bytes
                    continue
                receipts[index].append(receipt)
                acked.release()
                return

        threads = [threading.Thread(target=participant, args=(i,)) for i in range(PARTICIPANTS)]
        for thread in threads:
            thread.start()
        try:
            start.wait(timeout=10)
            for _ in range(3):  # the kill lands after three 201s, mid-way through the rest
                assert acked.acquire(timeout=30), "uploads did not get through"
            server.kill()
            before_kill = {i: list(r) for i, r in receipts.items() if r}
            server.start()
            for thread in threads:
                thread.join(timeout=max(0.0, stop_at - time.monotonic()) + 5)
            assert not any(t.is_alive() for t in threads)
        finally:
            for client in uploaders:
                client.close()

        log.info(
            "acknowledged before the kill: %s; failed attempts: %s",
            sorted(before_kill),
            {i: len(f) for i, f in failures.items() if f},
        )
        assert 3 <= len(before_kill) < PARTICIPANTS, "the kill did not land mid-uploads"
        assert any(failures.values()), "no upload was cut off by the kill"
        assert all(len(receipts[i]) == 1 for i in range(PARTICIPANTS)), (receipts, failures)

        try:
            # every 2xx is there, with the receipt the participant holds
            with db_session(server) as session:
                rows = {
                    row.id: row
                    for row in session.scalars(select(Update).where(Update.round_number == 1))
                }
            for index, (receipt,) in receipts.items():
                row = rows.get(receipt.update_id)
                assert row is not None, f"participant {index}'s acknowledged update is lost"
                assert row.sha256 == receipt.sha256
                assert row.participant_id == fed.participant_ids[index]
            assert len(rows) == PARTICIPANTS
            for index, (receipt,) in before_kill.items():
                again = fed.clients[index].updates.submit(
                    fed.id, 1, fed.deltas(index, 1), base_version=0, num_examples=10 + index
                )
                assert again.update_id == receipt.update_id
                assert again.sha256 == receipt.sha256

            # the round completes with all ten
            wait_until(
                lambda: fed.admin.federations.get(fed.id).state == "completed",
                timeout=30,
                what="the round to aggregate",
            )
            (round_1,) = fed.admin.rounds.list(fed.id)
            assert round_1.state == "closed"
            assert round_1.update_count == PARTICIPANTS
            version = fed.admin.models.get(fed.id, 1)
            assert version.contributors == sorted(r[0].sha256 for r in receipts.values())

            # nothing half-written is visible
            updates = check_blobs(server, fed.id)
            assert len(updates) == PARTICIPANTS
        finally:
            fed.close()
        server.stop()
        lineage = server.cli("verify-lineage", fed.id)
        assert lineage.returncode == 0, lineage.stderr
