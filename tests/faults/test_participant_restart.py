"""Must-show 6: a participant process killed mid-round, restarted from its saved
local state, rejoins at the coordinator's current round.

The participant under test is a real process running ``FederatedRecommender.run``
with a ``state_dir``; two more participants are driven by the test so that the
test decides when rounds close. The participant uploads round 1 and is SIGKILLed
while round 1 is still open. While it is down, round 1 completes and round 2 is
aggregated without it. Restarted from its state directory it loads its progress and
private user factors, does not upload into round 1 or 2 again, takes part in round 3
(the current round) and round 4, and ends with the federation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedrec.synthetic import make_synthetic
from participant_sdk import Client, Round
from tests.e2e.server import ADMIN_TOKEN, ServerProcess
from tests.faults.conftest import BACKENDS, deltas, server_for, wait_until

REPO = Path(__file__).resolve().parents[2]
DIM, ROUNDS = 8, 4
PARTICIPANT = """
import json, logging, sys
from fedrec.synthetic import make_synthetic
from participant_sdk import Client, FederatedRecommender
from participant_sdk.recsys import BPRConfig

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
url, token, fid, state_dir = sys.argv[1:5]
data = make_synthetic(num_users=40, num_items=120, seed=3)
with Client(url, token, max_retries=1) as client:
    rec = FederatedRecommender(
        client, fid, data, config=BPRConfig(dim=8, epochs=1), state_dir=state_dir
    )
    metrics = rec.run(round_timeout=5, outage_timeout=60)
print("METRICS " + json.dumps(metrics), flush=True)
"""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class ParticipantProcess:
    def __init__(self, server: ServerProcess, token: str, fid: str, tmp_path: Path) -> None:
        self.script = tmp_path / "participant.py"
        self.script.write_text(PARTICIPANT)
        self.state_dir = tmp_path / "participant-state"
        self.log = tmp_path / "participant.log"
        self.args = [sys.executable, str(self.script), server.url, token, fid, str(self.state_dir)]
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def last_round(self) -> int:
        progress = self.state_dir / "progress.json"
        return int(json.loads(progress.read_text())["last_round"]) if progress.exists() else 0

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _others_upload(others: list[Client], fid: str, number: int, num_items: int) -> None:
    for index, client in enumerate(others):
        current: Round = client.rounds.current(fid)
        assert current.number == number
        client.updates.submit(
            fid,
            number,
            deltas(100 * number + index, num_items, DIM),
            base_version=current.base_version,
            num_examples=50,
        )


@pytest.mark.slow
def test_killed_participant_rejoins_at_the_current_round(backend: str, tmp_path: Path) -> None:
    data = make_synthetic(num_users=40, num_items=120, seed=3)
    with server_for(backend, tmp_path / "data") as server, Client(server.url, ADMIN_TOKEN) as admin:
        fid = admin.federations.create(
            "participant-restart",
            {"kind": "mf", "num_items": data.num_items, "dim": DIM},
            # the subject reports the final version, the raw others never do: the
            # coordinator's timer completes the federation after this timeout
            rounds={"max_rounds": ROUNDS, "final_evaluation_seconds": 2},
            catalog=data.item_ids,
        ).id
        subject = admin.participants.enrol(fid, "subject")
        others = [Client(server.url, admin.participants.enrol(fid, f"o{i}").token) for i in (1, 2)]
        participant = ParticipantProcess(server, subject.token, fid, tmp_path)
        try:
            participant.start()
            # it uploads round 1 and saves its progress; round 1 stays open (others missing)
            wait_until(lambda: participant.last_round() == 1, timeout=60, what="upload 1")
            assert admin.rounds.get(fid, 1).update_count == 1
            participant.kill()  # mid-round: round 1 is open

            # while it is down: round 1 completes, round 2 is aggregated without it
            _others_upload(others, fid, 1, data.num_items)
            wait_until(lambda: admin.rounds.current(fid).number == 2, timeout=30, what="round 2")
            _others_upload(others, fid, 2, data.num_items)
            admin.rounds.aggregate(fid, 2)
            assert admin.rounds.current(fid).number == 3

            participant.start()  # from its saved state
            wait_until(lambda: participant.last_round() == 3, timeout=60, what="rejoin at 3")
            assert "resumed from" in participant.output()
            _others_upload(others, fid, 3, data.num_items)
            wait_until(lambda: participant.last_round() == 4, timeout=60, what="upload 4")
            _others_upload(others, fid, 4, data.num_items)
            assert participant.process is not None
            assert participant.process.wait(timeout=60) == 0, participant.output()
        finally:
            if participant.process is not None and participant.process.poll() is None:
                participant.kill()
            for client in others:
                client.close()

        assert "METRICS " in participant.output()
        assert admin.federations.get(fid).state == "completed"
        rounds = admin.rounds.list(fid)
        # the subject is in rounds 1, 3 and 4 exactly once, never in round 2
        assert [(r.number, r.state, r.update_count) for r in rounds] == [
            (1, "closed", 3),
            (2, "closed", 2),
            (3, "closed", 3),
            (4, "closed", 3),
        ]
        assert [v.version for v in admin.models.list(fid)] == [0, 1, 2, 3, 4]
        assert "moving on" not in participant.output()  # never tried a second upload
