"""Must-show 2: SIGKILL the coordinator in the middle of aggregating a round.

The first process claims the round (``open -> aggregating`` with a short lease) and
stops at the test hook between summing the updates and committing; it is SIGKILLed
there. The restarted process takes the round over when the lease expires. Exactly
one model version results, byte-identical to an undisturbed run of the same uploads
on a second coordinator with the same federation seed.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from coordinator.store.models import ModelVersion, Round
from participant_sdk import ModelVersion as ModelVersionOut
from tests.e2e.server import ServerProcess
from tests.faults.conftest import (
    ADMIN_TOKEN,
    BACKENDS,
    Federation,
    check_blobs,
    db_session,
    server_for,
    wait_until,
)

PARTICIPANTS = 5
NUM_ITEMS, DIM, SEED = 5_000, 16, 11
POLICY = {"min_participants": PARTICIPANTS, "max_rounds": 2}
LEASE_SECONDS = "2"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _upload_round_one(fed: Federation) -> None:
    """Everyone uploads; deltas go by the rank of the participant id, which is the
    aggregation order, so two coordinators sum the very same values in the same order."""
    ranks = {pid: rank for rank, pid in enumerate(sorted(fed.participant_ids))}
    for index, client in enumerate(fed.clients):
        rank = ranks[fed.participant_ids[index]]
        client.updates.submit(
            fed.id, 1, fed.deltas(rank, 1), base_version=0, num_examples=10 + 7 * rank
        )


def _weights(server: ServerProcess, fid: str, version: int) -> bytes:
    response = httpx.get(
        f"{server.url}/v1/federations/{fid}/models/{version}/weights",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.content


def _round_closed(fed: Federation, number: int) -> bool:
    return fed.admin.rounds.get(fed.id, number).state == "closed"


def _reference_run(tmp_path: Path) -> tuple[str, ModelVersionOut, bytes]:
    """The same federation and uploads on an undisturbed coordinator."""
    with (
        server_for("sqlite", tmp_path / "reference") as server,
        Federation(
            server,
            participants=PARTICIPANTS,
            num_items=NUM_ITEMS,
            dim=DIM,
            seed=SEED,
            rounds=POLICY,
        ) as fed,
    ):
        _upload_round_one(fed)
        wait_until(lambda: _round_closed(fed, 1), timeout=30, what="the reference round")
        version_0, version_1 = fed.admin.models.list(fed.id)
        return version_0.sha256, version_1, _weights(server, fed.id, 1)


@pytest.mark.slow
def test_sigkill_mid_aggregation_gives_one_identical_version(backend: str, tmp_path: Path) -> None:
    with server_for(
        backend,
        tmp_path / "data",
        FEDREC_TEST_AGGREGATION_PAUSE_SECONDS="120",
        FEDREC_AGGREGATION_LEASE_SECONDS=LEASE_SECONDS,
    ) as server:
        fed = Federation(
            server,
            participants=PARTICIPANTS,
            num_items=NUM_ITEMS,
            dim=DIM,
            seed=SEED,
            rounds=POLICY,
        )
        try:
            _upload_round_one(fed)
            # the last upload kicks aggregation: wait until it sits at the hook, then kill
            wait_until(
                lambda: "test hook: pausing" in server.log_path.read_text(errors="replace"),
                timeout=30,
                what="aggregation to reach the pause hook",
            )
            assert fed.admin.rounds.get(fed.id, 1).state == "aggregating"
            server.kill()
            with db_session(server) as session:
                (row,) = session.scalars(select(Round).where(Round.federation_id == fed.id))
                assert (row.state, row.result_version) == ("aggregating", None)
                assert row.lease_owner is not None
                dead_owner = row.lease_owner
                assert session.scalar(select(func.count()).select_from(ModelVersion)) == 1

            server.env["FEDREC_TEST_AGGREGATION_PAUSE_SECONDS"] = "0"
            server.start()
            wait_until(lambda: _round_closed(fed, 1), timeout=30, what="the lease takeover")

            versions = fed.admin.models.list(fed.id)
            assert [(v.version, v.round) for v in versions] == [(0, None), (1, 1)]
            round_1, round_2 = fed.admin.rounds.list(fed.id)
            assert (round_1.state, round_1.result_version, round_1.update_count) == (
                "closed",
                1,
                PARTICIPANTS,
            )
            assert (round_2.state, round_2.base_version) == ("open", 1)
            with db_session(server) as session:
                assert (
                    session.scalar(
                        select(func.count())
                        .select_from(ModelVersion)
                        .where(ModelVersion.federation_id == fed.id, ModelVersion.round_number == 1)
                    )
                    == 1
                )
                taken_over = session.scalars(
                    select(Round.lease_owner).where(
                        Round.federation_id == fed.id, Round.number == 1
                    )
                ).one()
                assert taken_over != dead_owner  # the restarted process finished it
            check_blobs(server, fed.id)
            got_version, got_bytes = versions[1], _weights(server, fed.id, 1)
            base_sha = versions[0].sha256
        finally:
            fed.close()

    reference_base_sha, reference, reference_bytes = _reference_run(tmp_path)
    assert base_sha == reference_base_sha  # the same seed gives the same version 0
    assert got_version.contributors == reference.contributors
    assert got_bytes == reference_bytes
    assert got_version.sha256 == reference.sha256
    assert got_version.chain_hash == reference.chain_hash
