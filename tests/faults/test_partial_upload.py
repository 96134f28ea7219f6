"""Must-show 5: a client that disconnects halfway through an upload body.

A raw socket sends the request head with ``Content-Length: N`` and only part of the
body, then closes (politely, or with a TCP reset). Nothing is stored: no update row,
no blob, no temporary file left behind, and no internal error. The same upload sent
again succeeds.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import time
from pathlib import Path

import httpx
import pytest

from participant_sdk.wire import encode_update
from tests.e2e.server import ServerProcess
from tests.faults.conftest import (
    BACKENDS,
    Federation,
    blob_files,
    blob_rows,
    check_blobs,
    server_for,
)

NUM_ITEMS, DIM = 4_000, 16  # ~260 kB: several TCP segments


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _send_partial(
    server: ServerProcess, path: str, token: str, body: bytes, sent: int, *, reset: bool
) -> None:
    head = (
        f"PUT {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Idempotency-Key: cut-short\r\n"
        "\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + body[:sent])
        time.sleep(0.3)  # let the coordinator start reading the body
        if reset:  # abortive close: RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.slow
def test_disconnect_mid_body_stores_nothing_and_the_retry_succeeds(
    backend: str, tmp_path: Path
) -> None:
    with (
        server_for(backend, tmp_path / "data") as server,
        Federation(
            server,
            participants=2,
            num_items=NUM_ITEMS,
            dim=DIM,
            rounds={"min_participants": 2, "max_rounds": 1},
        ) as fed,
    ):
        body = encode_update(fed.deltas(0, 1), round=1, base_version=0, num_examples=5)
        path = f"/v1/federations/{fed.id}/rounds/1/update"
        blobs_before = set(blob_files(server)) | set(blob_rows(server))
        assert len(blobs_before) == 1  # version 0

        for sent, reset in [
            (0, False),
            (len(body) // 2, False),
            (len(body) // 2, True),
            (len(body) - 1, False),
            (len(body) - 1, True),
        ]:
            _send_partial(server, path, fed.tokens[0], body, sent, reset=reset)
            time.sleep(0.2)
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
            current = fed.admin.rounds.get(fed.id, 1)
            assert (current.state, current.update_count) == ("open", 0), (sent, reset)
            assert set(blob_files(server)) | set(blob_rows(server)) == blobs_before, (sent, reset)
            assert check_blobs(server, fed.id) == []

        retry = httpx.put(
            f"{server.url}{path}",
            content=body,
            headers={
                "Authorization": f"Bearer {fed.tokens[0]}",
                "Content-Type": "application/octet-stream",
                "Idempotency-Key": "cut-short",
            },
            timeout=30,
        )
        assert retry.status_code == 201, retry.text
        assert retry.json()["sha256"] == hashlib.sha256(body).hexdigest()
        assert fed.admin.rounds.get(fed.id, 1).update_count == 1
        (row,) = check_blobs(server, fed.id)
        assert row.id == retry.json()["update_id"]
        assert set(blob_files(server)) | set(blob_rows(server)) == blobs_before | {row.sha256}

    # a participant going away is an expected event: logged as such, not as a crash
    log = server.log_path.read_text(errors="replace")
    assert "cut off by the client" in log
    assert "unhandled error" not in log
    assert "Exception in ASGI application" not in log
