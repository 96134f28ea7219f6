"""Secure aggregation end to end: a real coordinator, real HTTP, participants killed
mid-protocol (SIGKILL after sharing keys, after the masked upload), the coordinator
killed and restarted mid-protocol, and a round below the threshold that aborts."""

from __future__ import annotations

import subprocess  # nosec B404 # the test's own party script, argv built here
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrec.partition import local_view
from fedrec.synthetic import make_synthetic
from participant_sdk import Client, FederatedRecommender
from participant_sdk.secagg.client import SecAggClient
from participant_sdk.secagg.fixed_point import FixedPointCodec
from participant_sdk.secagg.keys import RoundContext
from participant_sdk.secagg.messages import Roster, ShareInbox, UnmaskRequest
from participant_sdk.secagg.session import Outcome, clip_to_norm, contribute
from tests.e2e.secagg_party import party_update
from tests.e2e.server import ADMIN_TOKEN, ServerProcess

NUM_ITEMS, DIM = 30, 4
LENGTH = NUM_ITEMS * DIM + NUM_ITEMS
CLIP = 1.0
ROOT = Path(__file__).resolve().parents[2]
STRATEGY = {
    "name": "fedavg",
    "weighting": "uniform",
    "normalization": "total",
    "update_norm_clip": None,
}


def _federation(admin: Client, threshold: int, phase_seconds: float) -> str:
    return admin.federations.create(
        "secure",
        {"kind": "mf", "num_items": NUM_ITEMS, "dim": DIM, "seed": 3},
        strategy=STRATEGY,
        rounds={"min_participants": 1, "max_rounds": 2},
        privacy={
            "secure_aggregation": {
                "threshold": threshold,
                "clip_norm": CLIP,
                "phase_seconds": phase_seconds,
            }
        },
    ).id


def _enrol(admin: Client, fid: str, n: int) -> list[tuple[str, str]]:
    out = []
    for k in range(n):
        enrolled = admin.participants.enrol(fid, f"silo-{k}")
        out.append((enrolled.id, enrolled.token))
    return out


def _honest(
    server: ServerProcess, fid: str, pid: str, token: str, seed: int
) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        with Client(server.url, token) as client:
            try:
                result.append(
                    contribute(client, fid, 1, pid, party_update(seed, LENGTH), timeout=60)
                )
            except Exception as exc:  # reported by the test's assertion
                result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def _doomed(
    server: ServerProcess, fid: str, pid: str, token: str, seed: int, stop: str
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "tests.e2e.secagg_party",
        server.url,
        token,
        fid,
        "1",
        pid,
        str(seed),
        str(LENGTH),
        stop,
    ]
    # this test's own script, no shell; from the repository root so that `tests` imports
    return subprocess.Popen(argv, cwd=ROOT)  # nosec B603


def _mean(seeds: list[int]) -> np.ndarray:
    return np.mean([clip_to_norm(party_update(s, LENGTH), CLIP) for s in seeds], axis=0)


@pytest.mark.slow
def test_killed_participants_are_recovered_to_the_exact_survivors_sum(
    server: ServerProcess,
) -> None:
    with Client(server.url, ADMIN_TOKEN) as admin:
        fid = _federation(admin, threshold=3, phase_seconds=3.0)
        people = _enrol(admin, fid, 5)
        honest = [
            _honest(server, fid, pid, token, seed) for seed, (pid, token) in enumerate(people[:3])
        ]
        after_sharing = _doomed(server, fid, *people[3], seed=3, stop="shares")
        after_upload = _doomed(server, fid, *people[4], seed=4, stop="masked-input")
        for thread, _ in honest:
            thread.join(timeout=90)
        assert after_sharing.wait(timeout=30) == -9
        assert after_upload.wait(timeout=30) == -9
        outcomes = [result[0] for _, result in honest]
        assert all(isinstance(o, Outcome) and o.result == "summed" for o in outcomes), outcomes
        status = admin.secagg.status(fid, 1)
        assert status.phase == "done"
        # the participant killed after its upload is in the sum, the one killed before is not
        assert status.survivors == sorted([pid for pid, _ in people[:3]] + [people[4][0]])
        admin.rounds.wait_for_next(fid, after=1, timeout=30)
        _check_model(admin, fid, _mean([0, 1, 2, 4]))


def _check_model(admin: Client, fid: str, mean: np.ndarray) -> None:
    base = {k: np.asarray(v, dtype=np.float64) for k, v in admin.models.weights(fid, 0).items()}
    new = {k: np.asarray(v, dtype=np.float64) for k, v in admin.models.weights(fid, 1).items()}
    # fixed point: each input is within 1 / (2 scale) per coordinate, and so is the mean
    bound = 1 / (2 * FixedPointCodec(clip=CLIP, max_participants=1000).scale) + 1e-6
    factors = mean[: NUM_ITEMS * DIM].reshape(NUM_ITEMS, DIM)
    np.testing.assert_allclose(
        new["item_factors"], base["item_factors"] + factors, rtol=0, atol=bound
    )
    np.testing.assert_allclose(
        new["item_bias"], base["item_bias"] + mean[NUM_ITEMS * DIM :], rtol=0, atol=bound
    )


@pytest.mark.slow
def test_below_the_threshold_the_round_aborts_and_publishes_nothing(server: ServerProcess) -> None:
    with Client(server.url, ADMIN_TOKEN) as admin:
        fid = _federation(admin, threshold=3, phase_seconds=2.0)
        people = _enrol(admin, fid, 3)
        honest = [
            _honest(server, fid, pid, token, seed) for seed, (pid, token) in enumerate(people[:2])
        ]
        doomed = _doomed(server, fid, *people[2], seed=2, stop="shares")
        for thread, _ in honest:
            thread.join(timeout=90)
        assert doomed.wait(timeout=30) == -9
        outcomes = [result[0] for _, result in honest]
        assert [o.result for o in outcomes] == ["aborted", "aborted"], outcomes
        assert "fewer than the threshold 3" in (outcomes[0].abort_reason or "")
        admin.rounds.wait_for_next(fid, after=1, timeout=30)
        first = admin.rounds.get(fid, 1)
        assert first.state == "failed"
        assert first.result_version is None
        assert admin.federations.get(fid).latest_version == 0


@pytest.mark.slow
def test_a_coordinator_killed_mid_protocol_resumes_it(server: ServerProcess) -> None:
    with Client(server.url, ADMIN_TOKEN) as admin:
        fid = _federation(admin, threshold=2, phase_seconds=60.0)
        people = _enrol(admin, fid, 3)
    clients = [Client(server.url, token) for _, token in people]
    try:
        codec = FixedPointCodec(clip=CLIP, max_participants=1000)
        machines = [
            SecAggClient(
                context=RoundContext(fid, 1),
                participant=pid,
                update=clip_to_norm(party_update(k, LENGTH), CLIP),
                codec=codec,
            )
            for k, (pid, _) in enumerate(people)
        ]
        for client, machine in zip(clients, machines, strict=True):
            client.secagg.send(fid, 1, "keys", machine.advertise().to_dict())
        for client, machine in zip(clients, machines, strict=True):
            roster = Roster.from_dict(client.secagg.status(fid, 1).roster or {})
            client.secagg.send(fid, 1, "shares", machine.share_keys(roster).to_dict())
        inbox = ShareInbox.from_dict(clients[0].secagg.status(fid, 1).inbox or {})
        clients[0].secagg.send(fid, 1, "masked-input", machines[0].masked_input(inbox).to_dict())
        server.kill()  # SIGKILL between two masked uploads
        server.start()
        for client, machine in zip(clients[1:], machines[1:], strict=True):
            inbox = ShareInbox.from_dict(client.secagg.status(fid, 1).inbox or {})
            client.secagg.send(fid, 1, "masked-input", machine.masked_input(inbox).to_dict())
        for client, machine in zip(clients, machines, strict=True):
            request = UnmaskRequest.from_dict(client.secagg.status(fid, 1).unmask_request or {})
            client.secagg.send(fid, 1, "unmask", machine.unmask(request).to_dict())
    finally:
        for client in clients:
            client.close()
    with Client(server.url, ADMIN_TOKEN) as admin:
        admin.rounds.wait_for_next(fid, after=1, timeout=30)
        _check_model(admin, fid, _mean([0, 1, 2]))


@pytest.mark.slow
def test_federated_recommenders_run_secure_rounds_transparently(server: ServerProcess) -> None:
    data = make_synthetic(num_users=45, num_items=NUM_ITEMS, seed=4)
    with Client(server.url, ADMIN_TOKEN) as admin:
        fid = admin.federations.create(
            "secure recommenders",
            {"kind": "mf", "num_items": NUM_ITEMS, "dim": DIM, "seed": 3},
            strategy=STRATEGY,
            rounds={"min_participants": 1, "max_rounds": 2, "final_evaluation_seconds": 30},
            privacy={"secure_aggregation": {"threshold": 2, "clip_norm": CLIP}},
            catalog=data.item_ids,
        ).id
        tokens = [admin.participants.enrol(fid, f"shop-{k}").token for k in range(3)]
        clients = [Client(server.url, token) for token in tokens]
        results: list[Any] = []
        try:
            recommenders = [
                FederatedRecommender(client, fid, local_view(data, np.arange(k, 45, 3)))
                for k, client in enumerate(clients)
            ]
            assert all(r.secure_aggregation for r in recommenders)

            def run(recommender: FederatedRecommender) -> None:
                try:
                    results.append(recommender.run(round_timeout=30, outage_timeout=30))
                except Exception as exc:  # reported by the assertion below
                    results.append(exc)

            threads = [threading.Thread(target=run, args=(r,), daemon=True) for r in recommenders]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=180)
        finally:
            for client in clients:
                client.close()
        assert len(results) == 3
        assert all(isinstance(r, dict) and "ndcg@10" in r for r in results), results
        assert admin.federations.get(fid).state == "completed"
        rounds = admin.rounds.list(fid)
        assert [(r.state, r.update_count) for r in rounds] == [("closed", 3), ("closed", 3)]
        # every version records its three contributors (lineage digests, not update blobs)
        assert [len(v.contributors) for v in admin.models.list(fid)] == [0, 3, 3]
        assert all(r.progress.last_round == 2 for r in recommenders)
