"""End to end: ``fedrec serve`` as a real process, participants through the SDK."""

from __future__ import annotations

import json

import numpy as np
import pytest

from participant_sdk import Client, UpdateConflictError
from tests.e2e.server import ADMIN_TOKEN, ServerProcess

NUM_ITEMS, DIM = 50, 8


def _deltas(participant: int, round_number: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1000 * participant + round_number)
    return {
        "item_factors": (rng.standard_normal((NUM_ITEMS, DIM)) * 0.05).astype(np.float32),
        "item_bias": (rng.standard_normal(NUM_ITEMS) * 0.05).astype(np.float32),
    }


def _setup(server: ServerProcess, participants: int, max_rounds: int) -> tuple[str, list[Client]]:
    with Client(server.url, ADMIN_TOKEN) as admin:
        federation = admin.federations.create(
            "e2e",
            {"kind": "mf", "num_items": NUM_ITEMS, "dim": DIM, "seed": 3},
            # raw uploads: nobody reports the final version, so complete without waiting
            rounds={"min_participants": 1, "max_rounds": max_rounds, "final_evaluation_seconds": 0},
        )
        tokens = [
            admin.participants.enrol(federation.id, f"org-{i}").token for i in range(participants)
        ]
    return federation.id, [Client(server.url, token) for token in tokens]


@pytest.mark.slow
def test_three_participants_three_rounds_match_numpy_fedavg(server: ServerProcess) -> None:
    fid, clients = _setup(server, participants=3, max_rounds=3)
    examples = [100, 250, 40]
    try:
        for round_number in (1, 2, 3):
            uploaded = []
            for index, client in enumerate(clients):
                current = client.rounds.current(fid)
                assert current.number == round_number
                assert current.state == "open"
                base = client.models.weights(fid, current.base_version)
                delta = _deltas(index, round_number)
                receipt = client.updates.submit(
                    fid,
                    current.number,
                    delta,
                    base_version=current.base_version,
                    num_examples=examples[index],
                )
                assert receipt.size > 0
                uploaded.append(delta)
            closed = clients[0].rounds.wait_for_next(fid, after=round_number, timeout=30)
            assert closed.number == round_number + 1 or round_number == 3
            version = clients[0].models.get(fid, round_number)
            assert version.parent == round_number - 1
            got = clients[0].models.weights(fid, round_number)
            for name in ("item_factors", "item_bias"):
                acc = sum(
                    n * d[name].astype(np.float64) for n, d in zip(examples, uploaded, strict=True)
                )
                expected = (base[name].astype(np.float64) + acc / sum(examples)).astype(np.float32)
                np.testing.assert_array_equal(got[name], expected)
        with Client(server.url, ADMIN_TOKEN) as admin:
            federation = admin.federations.get(fid)
            assert federation.state == "completed"
            assert federation.latest_version == 3
            assert [r.state for r in admin.rounds.list(fid)] == ["closed"] * 3
        with pytest.raises(UpdateConflictError):  # a second, different upload
            clients[0].updates.submit(fid, 3, _deltas(9, 9), base_version=2, num_examples=1)
    finally:
        for client in clients:
            client.close()
    assert server.cli("verify-lineage", fid).returncode == 0


@pytest.mark.slow
def test_sigkill_after_acknowledged_upload_loses_nothing(server: ServerProcess) -> None:
    fid, clients = _setup(server, participants=2, max_rounds=2)
    try:
        receipt = clients[0].updates.submit(fid, 1, _deltas(0, 1), base_version=0, num_examples=5)
        server.kill()
        server.start()
        with Client(server.url, ADMIN_TOKEN) as admin:
            current = admin.rounds.current(fid)
            assert current.number == 1
            assert current.update_count == 1
        # the same bytes again (a retry whose answer was lost) get the original receipt
        again = clients[0].updates.submit(fid, 1, _deltas(0, 1), base_version=0, num_examples=5)
        assert again.update_id == receipt.update_id
        clients[1].updates.submit(fid, 1, _deltas(1, 1), base_version=0, num_examples=5)
        clients[0].rounds.wait_for_next(fid, after=1, timeout=30)
        for index, client in enumerate(clients):
            client.updates.submit(fid, 2, _deltas(index, 2), base_version=1, num_examples=5)
        clients[0].rounds.wait_for_next(fid, after=2, timeout=30)
        server.kill()
        server.start()
        with Client(server.url, ADMIN_TOKEN) as admin:
            assert [r.update_count for r in admin.rounds.list(fid)] == [2, 2]
            versions = admin.models.list(fid)
            assert [v.version for v in versions] == [0, 1, 2]
            assert admin.federations.get(fid).state == "completed"
    finally:
        for client in clients:
            client.close()
    server.stop()

    ok = server.cli("verify-lineage", fid)
    assert ok.returncode == 0, ok.stderr
    assert "3 versions verified" in ok.stdout

    server.tamper_blob(versions[1].sha256)
    broken = server.cli("verify-lineage", fid)
    assert broken.returncode == 1
    assert "version 1" in broken.stderr


@pytest.mark.slow
def test_admin_commands_drive_a_real_coordinator(server: ServerProcess) -> None:
    """`fedrec federations create / participants enrol / status` over real HTTP, the admin
    token from FEDREC_ADMIN_TOKEN (the server's environment), never printed."""
    url = ("--url", server.url)
    created = server.cli(
        "federations", "create", "--recipe", "bpr-silos", "--num-items", "20", "--json", *url
    )
    assert created.returncode == 0, created.stderr
    fid = json.loads(created.stdout)["id"]
    enrolled = server.cli("participants", "enrol", fid, "org-1", *url)
    assert enrolled.returncode == 0, enrolled.stderr
    status = server.cli("status", fid, *url)
    assert status.returncode == 0, status.stderr
    assert f"federation {fid} 'bpr-silos': active" in status.stdout
    assert "participants: 1 active" in status.stdout
    assert "#1    open" in status.stdout
    for result in (created, enrolled, status):
        assert ADMIN_TOKEN not in result.stdout + result.stderr
