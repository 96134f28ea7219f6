"""SIGKILL the coordinator while an EASE solve runs in its child process.

The first process claims the ease round and hands the solve to a child process, which
waits at the test hook (``FEDREC_TEST_EASE_CHILD_PAUSE_SECONDS``) before solving; the
coordinator is SIGKILLed there. The child dies with it (``PR_SET_PDEATHSIG``: no orphan
keeps gigabytes while the round is solved again), the round stays ``aggregating`` with the
dead process's lease, and the restarted process takes it over once the lease expires and
solves it once: one version, the pooled Gram's ``B``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from sqlalchemy import func, select

from coordinator.store.models import ModelVersion, Round
from participant_sdk.recsys.ease import ease_weights
from participant_sdk.wire import decode_weights
from tests.factories import gram_update
from tests.faults.conftest import ADMIN_TOKEN, BACKENDS, db_session, server_for, wait_until

N = 12
LAMBDAS = [1.0, 10.0]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHILD = "coordinator.domain.ease_process"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _child_solves(server_pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(server_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if CHILD in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # exited meanwhile
            continue
    return found


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _start_ease_round(url: str) -> tuple[str, np.ndarray]:
    """An ease federation, two participants, both Grams uploaded; the pooled Gram."""
    with httpx.Client(base_url=url, timeout=30) as http:
        created = http.post(
            "/v1/federations",
            json={
                "name": "ease",
                "model": {"kind": "ease", "num_items": N, "ease_lambdas": LAMBDAS},
                "rounds": {"min_participants": 2, "max_rounds": 2},
            },
            headers=ADMIN,
        )
        created.raise_for_status()
        fid = str(created.json()["id"])
        pooled = np.zeros((N, N), dtype=np.float32)
        tokens = []
        for seed in range(2):  # both enrolled before the first upload
            enrolled = http.post(
                f"/v1/federations/{fid}/participants", json={"name": f"silo{seed}"}, headers=ADMIN
            )
            enrolled.raise_for_status()
            tokens.append({"Authorization": f"Bearer {enrolled.json()['token']}"})
        for seed, token in enumerate(tokens):
            rng = np.random.default_rng(seed)
            pairs = [(u, i) for u in range(15) for i in rng.choice(N, size=4, replace=False)]
            users, items = np.array(pairs).T
            gram, body = gram_update(users, items, N)
            pooled += gram
            sent = http.put(
                f"/v1/federations/{fid}/rounds/1/update",
                content=body,
                headers={**token, "Content-Type": "application/octet-stream"},
            )
            assert sent.status_code == 201, sent.text
    return fid, pooled


@pytest.mark.slow
def test_sigkill_mid_solve_kills_the_child_and_the_restart_solves_once(
    backend: str, tmp_path: Path
) -> None:
    with server_for(
        backend,
        tmp_path / "data",
        FEDREC_TEST_EASE_CHILD_PAUSE_SECONDS="60",
        FEDREC_EASE_SUBPROCESS_MIN_ITEMS="0",  # the child process even at 12 items
        FEDREC_AGGREGATION_LEASE_SECONDS="2",
    ) as server:
        fid, pooled = _start_ease_round(server.url)
        assert server.process is not None
        (child,) = wait_until(
            lambda: _child_solves(server.process.pid) if server.process else [],
            timeout=60,
            what="the round's solve to start in a child process",
        )
        server.kill()
        wait_until(lambda: _gone(child), timeout=30, what="the orphaned solve to die")
        with db_session(server) as session:
            row = session.scalars(select(Round).where(Round.federation_id == fid)).one()
            assert (row.state, row.result_version) == ("aggregating", None)
            assert (
                session.scalar(
                    select(func.count())
                    .select_from(ModelVersion)
                    .where(ModelVersion.federation_id == fid)
                )
                == 1
            )

        del server.env["FEDREC_TEST_EASE_CHILD_PAUSE_SECONDS"]
        server.start()
        with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as http:

            def closed() -> bool:
                response = http.get(f"/v1/federations/{fid}/rounds/1")
                return bool(response.json()["state"] == "closed")

            wait_until(closed, timeout=90, what="the lease takeover to solve the round")
            versions = http.get(f"/v1/federations/{fid}/models").json()
            weights = http.get(f"/v1/federations/{fid}/models/1/weights").content
        listed = versions["items"] if isinstance(versions, dict) else versions
        assert [(v["version"], v["round"]) for v in listed] == [(0, None), (1, 1)]
        b = np.asarray(decode_weights(weights)["ease_b"], dtype=np.float64)
        expected = np.asarray(ease_weights(pooled, LAMBDAS[0]), dtype=np.float64)
        np.testing.assert_allclose(b, expected, atol=1e-6)
        with db_session(server) as session:
            assert (
                session.scalar(
                    select(func.count())
                    .select_from(ModelVersion)
                    .where(ModelVersion.federation_id == fid, ModelVersion.round_number == 1)
                )
                == 1
            )
