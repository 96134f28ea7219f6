"""Must-show 3: two coordinator processes on one PostgreSQL database.

Both share the admin token, the secret key and the blob folder; 20 participants are
spread over them. Most rounds miss a few uploads, so they close at a short deadline,
by whichever process's timer claims them first; some rounds close on completion. Over
10 rounds: exactly one model version per round, and every acknowledged update is in
the round it was acknowledged for and among that version's contributors.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import func, select

from coordinator.store.models import ModelVersion, Round, Update
from participant_sdk import Receipt, RoundClosedError
from tests.e2e.server import ServerProcess
from tests.faults.conftest import Federation, check_blobs, db_session, new_postgres_database

log = logging.getLogger(__name__)

PARTICIPANTS, ROUNDS = 20, 10
NUM_ITEMS, DIM = 2_000, 16
DEADLINE_SECONDS = 2
COMPLETE_ROUNDS = {4, 8}  # everyone uploads: closed on completion, not at the deadline


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_one_database_exactly_one_version_per_round(tmp_path: Path) -> None:
    with new_postgres_database() as database_url:
        data_dir = tmp_path / "shared-data"
        servers = [ServerProcess(data_dir, database_url) for _ in range(2)]
        for server in servers:  # one after the other: the first migrates the database
            server.start()
        try:
            federation_id = _run(servers)
        finally:
            for server in servers:
                server.stop()
        lineage = servers[0].cli("verify-lineage", federation_id)
        assert lineage.returncode == 0, lineage.stderr
        assert f"{ROUNDS + 1} versions verified" in lineage.stdout


def _run(servers: list[ServerProcess]) -> str:
    fed = Federation(
        servers[0],
        participants=PARTICIPANTS,
        num_items=NUM_ITEMS,
        dim=DIM,
        rounds={
            "min_participants": 1,
            "max_rounds": ROUNDS,
            "deadline_seconds": DEADLINE_SECONDS,
            "below_quorum": "extend",
            "final_evaluation_seconds": 0,  # raw uploads: nobody reports the final version
        },
        urls=[s.url for s in servers],  # participant i talks to server i % 2
    )
    rng = random.Random(5)
    acked: dict[int, dict[int, Receipt]] = {}
    late: dict[int, list[int]] = {}

    def upload(index: int, number: int) -> tuple[int, Receipt | None]:
        client = fed.clients[index]
        current = client.rounds.current(fed.id)
        assert current.number == number, (current.number, number)
        try:
            receipt = client.updates.submit(
                fed.id,
                number,
                fed.deltas(index, number),
                base_version=current.base_version,
                num_examples=5 + index,
            )
        except RoundClosedError:  # uploaded after the deadline closed the round: fine, not acked
            return index, None
        return index, receipt

    try:
        with ThreadPoolExecutor(max_workers=PARTICIPANTS) as pool:
            for number in range(1, ROUNDS + 1):
                skip = set() if number in COMPLETE_ROUNDS else set(rng.sample(range(20), 3))
                results = list(
                    pool.map(
                        partial(upload, number=number),
                        [i for i in range(PARTICIPANTS) if i not in skip],
                    )
                )
                acked[number] = {i: r for i, r in results if r is not None}
                late[number] = [i for i, r in results if r is None]
                # wait through the other server than the one that opened the round
                watcher = fed.clients[number % 2]
                nxt = watcher.rounds.wait_for_next(fed.id, after=number, timeout=30)
                assert nxt.number == number + 1 or number == ROUNDS

        federation = fed.admin.federations.get(fed.id)
        assert federation.state == "completed"
        assert federation.latest_version == ROUNDS

        versions = fed.admin.models.list(fed.id)
        assert [(v.version, v.round) for v in versions] == [(0, None)] + [
            (n, n) for n in range(1, ROUNDS + 1)
        ]
        rounds = fed.admin.rounds.list(fed.id)
        assert [(r.number, r.state, r.result_version) for r in rounds] == [
            (n, "closed", n) for n in range(1, ROUNDS + 1)
        ]
        for round_, version in zip(rounds, versions[1:], strict=True):
            receipts = acked[round_.number]
            assert round_.update_count == len(receipts), (round_.number, late[round_.number])
            assert version.contributors == sorted(r.sha256 for r in receipts.values())
            if round_.number in COMPLETE_ROUNDS:
                assert round_.update_count == PARTICIPANTS

        with db_session(servers[0]) as session:
            per_round = dict(
                session.execute(
                    select(ModelVersion.round_number, func.count())
                    .where(ModelVersion.federation_id == fed.id)
                    .group_by(ModelVersion.round_number)
                ).all()
            )
            expected_rounds: list[int | None] = [None, *range(1, ROUNDS + 1)]
            assert per_round == dict.fromkeys(expected_rounds, 1)
            stored = {
                row.id: (row.round_number, row.sha256) for row in session.scalars(select(Update))
            }
            owners = Counter(
                session.scalars(select(Round.lease_owner).where(Round.federation_id == fed.id))
            )
        expected = {
            r.update_id: (number, r.sha256)
            for number, receipts in acked.items()
            for r in receipts.values()
        }
        assert stored == expected  # no update lost, none extra
        check_blobs(servers[0], fed.id)

        aggregated = [s.log_path.read_text(errors="replace").count("aggregated ") for s in servers]
        log.info(
            "rounds aggregated per process (log lines): %s; lease owners: %s; late: %s",
            aggregated,
            dict(owners),
            {n: v for n, v in late.items() if v},
        )
        assert sum(aggregated) == ROUNDS
        assert len(owners) == sum(1 for a in aggregated if a)
        return fed.id
    finally:
        fed.close()
