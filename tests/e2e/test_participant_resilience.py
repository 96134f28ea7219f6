"""The participant loop rides out a coordinator restart and resumes at the current round."""

from __future__ import annotations

import threading
import time

import pytest

from fedrec.synthetic import make_synthetic
from participant_sdk import Client, FederatedRecommender
from participant_sdk.recsys import BPRConfig
from tests.e2e.server import ADMIN_TOKEN, ServerProcess


@pytest.mark.slow
def test_participant_survives_coordinator_restart(server: ServerProcess) -> None:
    data = make_synthetic(num_users=40, num_items=120, seed=3)
    with Client(server.url, ADMIN_TOKEN) as admin:
        fid = admin.federations.create(
            "restart",
            {"kind": "mf", "num_items": data.num_items, "dim": 8},
            rounds={"max_rounds": 4},
            catalog=data.item_ids,
        ).id
        token = admin.participants.enrol(fid, "solo").token
    outcome: dict[str, object] = {}
    client = Client(server.url, token, max_retries=1)
    participant = FederatedRecommender(client, fid, data, config=BPRConfig(dim=8, epochs=1))

    def run() -> None:
        try:
            outcome["metrics"] = participant.run(round_timeout=5, outage_timeout=60)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    # slow the participant a little so the restart lands mid-federation
    original_step = participant.step

    def slow_step() -> str:
        time.sleep(0.5)
        return original_step()

    participant.step = slow_step  # type: ignore[method-assign,assignment]
    thread.start()
    deadline = time.monotonic() + 30
    with Client(server.url, ADMIN_TOKEN) as admin:
        while admin.rounds.current(fid).number < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    server.kill()
    time.sleep(2)
    server.start()
    thread.join(timeout=120)
    client.close()
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    with Client(server.url, ADMIN_TOKEN) as admin:
        assert admin.federations.get(fid).state == "completed"
        rounds = admin.rounds.list(fid)
        assert [r.update_count for r in rounds] == [1, 1, 1, 1]
        assert [v.version for v in admin.models.list(fid)] == [0, 1, 2, 3, 4]
    assert "ndcg@10" in outcome["metrics"]  # type: ignore[operator]
