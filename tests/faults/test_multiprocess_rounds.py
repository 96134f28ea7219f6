"""Several coordinator processes on one database, racing on the same round.

Two ``fedrec serve`` processes share the data folder (the SQLite file and the blobs) or
one PostgreSQL database, as ``fedrec serve --workers N`` and replicas do. Each test
makes them race where exactly-once could break:

* uploads to both while the admin asks both to aggregate, and rounds that complete with
  their last uploads on different processes: one version per round, every
  acknowledged upload counted exactly once, no refused upload counted;
* an upload or a JSON write retried with its Idempotency-Key on the other process;
* both deadline timers firing (every 50 ms) on the same rounds: one close each;
* a lease that expires while its holder still aggregates: the other process takes it
  over, and the first one's late commit is refused;
* ``fedrec serve --workers 2``: the same guarantees inside one command.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from coordinator.store.models import Federation as FederationRow
from coordinator.store.models import ModelVersion, Round, Update
from participant_sdk.wire import encode_update
from tests.e2e.server import ADMIN_TOKEN, ServerProcess
from tests.faults.conftest import (
    BACKENDS,
    Federation,
    check_blobs,
    db_session,
    new_postgres_database,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", BACKENDS)]

NUM_ITEMS, DIM = 200, 8
FAST_TIMER = {"FEDREC_TIMER_INTERVAL_SECONDS": "0.05"}


@contextmanager
def _database(backend: str) -> Iterator[str | None]:
    if backend == "sqlite":
        yield None  # the SQLite file in the shared data folder
    else:
        with new_postgres_database() as url:
            yield url


@contextmanager
def two_servers(
    backend: str, tmp_path: Path, envs: tuple[dict[str, str], dict[str, str]] = ({}, {})
) -> Iterator[list[ServerProcess]]:
    """Two coordinator processes on one database and one blob folder."""
    with _database(backend) as url:
        data_dir = tmp_path / "shared-data"
        servers = [ServerProcess(data_dir, url, **env) for env in envs]
        try:
            for server in servers:  # one after the other: the first migrates
                server.start()
            yield servers
        finally:
            for server in servers:
                server.stop()


def _headers(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def _body(fed: Federation, index: int, number: int, base_version: int) -> bytes:
    return encode_update(
        fed.deltas(index, number),
        round=number,
        base_version=base_version,
        num_examples=3 + index,
    )


def _upload(
    url: str, fed: Federation, index: int, number: int, base_version: int, key: str | None = None
) -> httpx.Response:
    headers = _headers(fed.tokens[index], **{"Content-Type": "application/octet-stream"})
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.put(
        f"{url}/v1/federations/{fed.id}/rounds/{number}/update",
        content=_body(fed, index, number, base_version),
        headers=headers,
        timeout=60,
    )


def _aggregated_lines(servers: list[ServerProcess]) -> int:
    return sum(s.log_path.read_text(errors="replace").count("aggregated ") for s in servers)


def _sample(metrics: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name)]
    assert len(values) == 1, (name, values)
    return values[0]


def _check_exactly_once(
    server: ServerProcess, fed: Federation, acked: dict[int, dict[str, str]]
) -> None:
    """One version per round; each version's contributors are exactly the round's
    acknowledged uploads, and the stored update rows are exactly those; the lineage and
    the audit log verify."""
    with db_session(server) as session:
        per_round = dict(
            session.execute(
                select(ModelVersion.round_number, func.count())
                .where(ModelVersion.federation_id == fed.id)
                .group_by(ModelVersion.round_number)
            ).all()
        )
        assert per_round == dict.fromkeys([None, *acked], 1)
        for number, receipts in acked.items():
            version = session.scalars(
                select(ModelVersion).where(
                    ModelVersion.federation_id == fed.id, ModelVersion.round_number == number
                )
            ).one()
            assert sorted(version.contributors) == sorted(receipts.values()), number
            round_row = session.scalars(
                select(Round).where(Round.federation_id == fed.id, Round.number == number)
            ).one()
            assert round_row.state == "closed"
            assert round_row.update_count == len(receipts)
            stored = dict(
                session.execute(
                    select(Update.id, Update.sha256).where(Update.round_id == round_row.id)
                ).all()
            )
            assert stored == receipts, number
    check_blobs(server, fed.id)
    # the hash chains that every process appends to stayed one chain
    lineage = server.cli("verify-lineage", fed.id)
    assert lineage.returncode == 0, lineage.stderr
    assert f"{len(acked) + 1} versions verified" in lineage.stdout
    audit = server.cli("audit", "verify")
    assert audit.returncode == 0, audit.stderr


def test_uploads_and_aggregate_calls_racing_on_both_make_one_version(
    backend: str, tmp_path: Path
) -> None:
    participants, rounds = 12, 4
    with two_servers(backend, tmp_path, (FAST_TIMER, FAST_TIMER)) as servers:
        fed = Federation(
            servers[0],
            participants=participants,
            num_items=NUM_ITEMS,
            dim=DIM,
            rounds={"min_participants": 1, "max_rounds": rounds, "final_evaluation_seconds": 0},
            urls=[s.url for s in servers],
        )
        with fed:
            acked: dict[int, dict[str, str]] = {}
            aggregate_statuses: list[int] = []
            for number in range(1, rounds + 1):
                base = fed.clients[0].rounds.current(fed.id).base_version
                acked[number] = {}
                first_acks = threading.Barrier(3)  # round 1: two admin calls after 4 acks
                lock = threading.Lock()

                def upload(
                    index: int,
                    number: int = number,
                    base: int = base,
                    lock: threading.Lock = lock,
                    first_acks: threading.Barrier = first_acks,
                ) -> int:
                    response = _upload(servers[index % 2].url, fed, index, number, base)
                    if response.status_code == 201:
                        with lock:
                            acked[number][response.json()["update_id"]] = response.json()["sha256"]
                    else:  # the admin closed the round first: refused, never counted
                        assert response.status_code == 409, response.text
                        assert response.json()["type"].endswith(":round-closed")
                    if number == 1 and index == 3:
                        first_acks.wait(timeout=30)
                    return response.status_code

                def aggregate(
                    server: ServerProcess,
                    number: int = number,
                    first_acks: threading.Barrier = first_acks,
                ) -> int:
                    first_acks.wait(timeout=30)
                    response = httpx.post(
                        f"{server.url}/v1/federations/{fed.id}/rounds/{number}/aggregate",
                        headers=_headers(ADMIN_TOKEN),
                        timeout=60,
                    )
                    assert response.status_code in (201, 409), response.text
                    return response.status_code

                with ThreadPoolExecutor(max_workers=participants + 2) as pool:
                    calls = [pool.submit(aggregate, s) for s in servers] if number == 1 else []
                    # participant 3 first (the barrier waits for its ack), then the rest
                    order = [3, *(i for i in range(participants) if i != 3)]
                    statuses = list(pool.map(upload, order))
                    aggregate_statuses = [c.result() for c in calls] or aggregate_statuses
                if number > 1:  # nobody closed it early: every upload was acknowledged
                    assert statuses == [201] * participants
                watcher = fed.clients[number % 2]
                if number < rounds:
                    assert watcher.rounds.wait_for_next(fed.id, after=number, timeout=60).number
                else:
                    wait_until(
                        lambda: fed.admin.federations.get(fed.id).state == "completed",
                        timeout=60,
                        what="the federation to complete",
                    )

            # at most one admin call aggregated round 1 (the completing upload may have won)
            assert aggregate_statuses.count(201) <= 1
            assert len(acked[1]) >= 4
            _check_exactly_once(servers[0], fed, acked)
            assert _aggregated_lines(servers) == rounds


def test_idempotent_retries_land_on_the_other_process(backend: str, tmp_path: Path) -> None:
    with two_servers(backend, tmp_path) as (first, second):
        fed = Federation(
            first,
            participants=3,
            num_items=NUM_ITEMS,
            dim=DIM,
            rounds={"min_participants": 1, "max_rounds": 1, "final_evaluation_seconds": 0},
        )
        with fed:
            # an upload whose response was lost, retried on the other process
            sent = _upload(first.url, fed, 0, 1, 0, key="upload-0")
            assert sent.status_code == 201, sent.text
            retried = _upload(second.url, fed, 0, 1, 0, key="upload-0")
            assert retried.status_code == 200, retried.text
            assert retried.json()["update_id"] == sent.json()["update_id"]
            # the same key with other bytes is refused there too
            other = httpx.put(
                f"{second.url}/v1/federations/{fed.id}/rounds/1/update",
                content=_body(fed, 1, 1, 0),
                headers=_headers(
                    fed.tokens[0],
                    **{"Content-Type": "application/octet-stream", "Idempotency-Key": "upload-0"},
                ),
                timeout=60,
            )
            assert other.status_code in (409, 422), other.text

            # one upload sent to both processes at the same moment: one row, one receipt
            start = threading.Barrier(2)

            def race(server: ServerProcess) -> httpx.Response:
                start.wait(timeout=30)
                return _upload(server.url, fed, 1, 1, 0, key="upload-1")

            with ThreadPoolExecutor(max_workers=2) as pool:
                answers = list(pool.map(race, [first, second]))
            assert sorted(a.status_code for a in answers) == [200, 201], [a.text for a in answers]
            assert len({a.json()["update_id"] for a in answers}) == 1

            # a JSON write (the admin creates a federation) retried on the other process
            spec = {
                "name": "created once",
                "model": {"kind": "mf", "num_items": 10, "dim": 2, "seed": 1},
            }
            headers = _headers(ADMIN_TOKEN, **{"Idempotency-Key": "create-once"})
            created = httpx.post(f"{first.url}/v1/federations", json=spec, headers=headers)
            assert created.status_code == 201, created.text
            replayed = httpx.post(f"{second.url}/v1/federations", json=spec, headers=headers)
            assert replayed.status_code == 201
            assert replayed.headers.get("idempotent-replayed") == "true"
            assert replayed.json()["id"] == created.json()["id"]

            # and sent to both at once: one federation, every answer names it (a 409
            # "still in progress" is retried after its Retry-After, as the SDK does)
            headers = _headers(ADMIN_TOKEN, **{"Idempotency-Key": "create-raced"})
            spec = {**spec, "name": "raced once"}
            start = threading.Barrier(2)

            def create(server: ServerProcess) -> str:
                start.wait(timeout=30)
                for _ in range(30):
                    response = httpx.post(
                        f"{server.url}/v1/federations", json=spec, headers=headers, timeout=60
                    )
                    if response.status_code != 409:
                        break
                    assert response.json()["type"].endswith(":request-in-progress"), response.text
                    threading.Event().wait(float(response.headers["retry-after"]))
                assert response.status_code == 201, response.text
                return str(response.json()["id"])

            with ThreadPoolExecutor(max_workers=2) as pool:
                ids = set(pool.map(create, [first, second]))
            assert len(ids) == 1

        with db_session(first) as session:
            names = list(session.scalars(select(FederationRow.name)))
            assert names.count("created once") == 1
            assert names.count("raced once") == 1
            keyed = list(session.scalars(select(Update.idempotency_key)))
            assert sorted(k or "" for k in keyed) == ["upload-0", "upload-1"]


def test_both_deadline_timers_close_each_round_once(backend: str, tmp_path: Path) -> None:
    participants, rounds = 6, 4
    with two_servers(backend, tmp_path, (FAST_TIMER, FAST_TIMER)) as servers:
        fed = Federation(
            servers[0],
            participants=participants,
            num_items=NUM_ITEMS,
            dim=DIM,
            rounds={
                "min_participants": 1,
                "max_rounds": rounds,
                "deadline_seconds": 2,
                "final_evaluation_seconds": 0,
            },
            urls=[s.url for s in servers],
        )
        with fed:
            acked: dict[int, dict[str, str]] = {}
            for number in range(1, rounds + 1):
                base = fed.clients[0].rounds.current(fed.id).base_version
                senders = [i for i in range(participants) if (i + number) % 3]  # 4 of 6
                acked[number] = {}
                for index in senders:
                    response = _upload(servers[index % 2].url, fed, index, number, base)
                    if response.status_code == 409:  # a slow upload missed the deadline
                        assert response.json()["type"].endswith(":round-closed"), response.text
                        continue
                    assert response.status_code == 201, response.text
                    acked[number][response.json()["update_id"]] = response.json()["sha256"]
                if number < rounds:
                    fed.clients[1].rounds.wait_for_next(fed.id, after=number, timeout=60)
            wait_until(
                lambda: fed.admin.federations.get(fed.id).state == "completed",
                timeout=60,
                what="the federation to complete",
            )
            _check_exactly_once(servers[0], fed, acked)
            assert _aggregated_lines(servers) == rounds


def test_a_lease_taken_over_mid_aggregation_commits_once(backend: str, tmp_path: Path) -> None:
    lease = {"FEDREC_AGGREGATION_LEASE_SECONDS": "1", **FAST_TIMER}
    slow = {**lease, "FEDREC_TEST_AGGREGATION_PAUSE_SECONDS": "3"}
    with two_servers(backend, tmp_path, (slow, lease)) as (first, second):
        fed = Federation(
            first,
            participants=4,
            num_items=NUM_ITEMS,
            dim=DIM,
            rounds={"min_participants": 1, "max_rounds": 2, "final_evaluation_seconds": 0},
        )
        with fed:
            acked: dict[int, dict[str, str]] = {1: {}}
            for index in range(3):  # 3 of 4: the round waits (no deadline) for the admin
                response = _upload((first, second)[index % 2].url, fed, index, 1, 0)
                assert response.status_code == 201, response.text
                acked[1][response.json()["update_id"]] = response.json()["sha256"]
            # the first process claims the round, then sleeps past its 1 s lease before
            # committing; the second one's timer takes the lease over and commits
            response = httpx.post(
                f"{first.url}/v1/federations/{fed.id}/rounds/1/aggregate",
                headers=_headers(ADMIN_TOKEN),
                timeout=60,
            )
            assert response.status_code == 409, response.text
            assert "taken over" in response.json()["detail"]
            assert fed.admin.rounds.get(fed.id, 1).state == "closed"
            _check_exactly_once(first, fed, acked)
            assert first.log_path.read_text(errors="replace").count("aggregated ") == 0
            assert second.log_path.read_text(errors="replace").count("aggregated ") == 1


def test_serve_workers_2_keeps_rounds_exactly_once(backend: str, tmp_path: Path) -> None:
    participants, rounds = 8, 3
    with _database(backend) as url:
        server = ServerProcess(tmp_path / "data", url, **FAST_TIMER)
        server.workers = 2  # fedrec serve --workers 2
        server.start()
        try:
            assert server.process is not None
            workers = psutil.Process(server.process.pid).children(recursive=True)
            assert len([w for w in workers if "python" in w.name().lower()]) >= 2
            fed = Federation(
                server,
                participants=participants,
                num_items=NUM_ITEMS,
                dim=DIM,
                rounds={
                    "min_participants": 1,
                    "max_rounds": rounds,
                    "deadline_seconds": 4,
                    "final_evaluation_seconds": 0,
                },
            )
            with fed:
                acked: dict[int, dict[str, str]] = {}
                for number in range(1, rounds + 1):
                    base = fed.clients[0].rounds.current(fed.id).base_version
                    # round 2 misses one upload (closed by a timer at the deadline); the
                    # others complete, racing on the kicks of both workers
                    senders = range(participants - (number == 2))
                    acked[number] = {}
                    with ThreadPoolExecutor(max_workers=participants) as pool:
                        answers = list(
                            pool.map(
                                partial(_upload, server.url, fed, number=number, base_version=base),
                                senders,
                            )
                        )
                    for response in answers:
                        if response.status_code == 409:  # a slow upload missed the deadline
                            assert response.json()["type"].endswith(":round-closed")
                            continue
                        assert response.status_code == 201, response.text
                        acked[number][response.json()["update_id"]] = response.json()["sha256"]
                    if number < rounds:
                        fed.clients[0].rounds.wait_for_next(fed.id, after=number, timeout=60)
                wait_until(
                    lambda: fed.admin.federations.get(fed.id).state == "completed",
                    timeout=60,
                    what="the federation to complete",
                )
                _check_exactly_once(server, fed, acked)
                # the workers' metrics are summed: each round closed once in all of them
                metrics = httpx.get(
                    f"{server.url}/metrics", headers=_headers(ADMIN_TOKEN), timeout=30
                ).text
                assert _sample(metrics, 'fedrec_rounds_total{event="closed"}') == rounds
                owners: Any = None
                with db_session(server) as session:
                    owners = set(
                        session.scalars(
                            select(Round.lease_owner).where(Round.federation_id == fed.id)
                        )
                    )
                assert owners
                assert None not in owners
        finally:
            server.stop()
