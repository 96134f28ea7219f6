"""Coordinator CPU per poll and per long-poll renewal of a waiting participant, over real HTTP.

A fresh ``fedrec serve`` (SQLite, one process, uvicorn as an operator runs it) gets one
sampled federation (``rounds.sampling: fixed, size 1``) and ``--participants`` enrolled
participants, each with its own token. Round 1 never closes, so all but one of them wait:

* **poll**: each participant reads ``GET …/rounds/current`` ``--repeats`` times (what a
  participant's first look costs);
* **renewal**: each participant holds ``GET …/rounds/current?after=1&wait=W&in_cohort=true``
  ``--repeats`` times; nothing changes, so each returns after ``W`` seconds
  (``--wait``, default 1) and is sent again: what a sampled-out participant's long-poll
  costs every time it runs out.

The coordinator's process CPU (psutil, user + system) over each phase, divided by the
requests answered, is printed, and with the long-poll maximum the coordinator advertises
(``Round.max_wait_seconds``; 60 s where it advertises none) what a population of 10,000
waiting participants costs in renewals alone. Bounded: every request times out after
``wait + 60`` s. Compare trees with ``--coordinator-source`` (run it from outside a checkout)::

    cd /tmp && python /path/to/fedrec/bench/poll_cpu.py
    cd /tmp && python /path/to/fedrec/bench/poll_cpu.py --coordinator-source /tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from fedrec.local_server import SAFE_PATH, CoordinatorProcess

ADMIN_TOKEN = "bench-admin-token-" + "x" * 32
SECRET_KEY = "bench-secret-key-" + "y" * 32
PER_POOL = 25  # participants per httpx pool (a pool scans its connections per request)
LEGACY_MAX_WAIT = 60


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _enrol(client: httpx.AsyncClient, admin: dict[str, str], fid: str, n: int) -> list[str]:
    gate = asyncio.Semaphore(16)

    async def one(index: int) -> str:
        async with gate:
            response = await client.post(
                f"/v1/federations/{fid}/participants", json={"name": f"p{index}"}, headers=admin
            )
            response.raise_for_status()
            return str(response.json()["token"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _wait_drawn(client: httpx.AsyncClient, admin: dict[str, str], fid: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/federations/{fid}/rounds/1", headers=admin)
        response.raise_for_status()
        if response.json().get("cohort_size") is not None:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("round 1's cohort was not drawn within 120 s")


async def _get(
    client: httpx.AsyncClient, path: str, params: dict[str, str | int], token: str
) -> httpx.Response:
    """A GET, repeated (at most 3 times) when a kept-alive connection that the server was
    closing carried it: a GET is safe to repeat, and the bench measures CPU, not this."""
    for attempt in range(3):
        try:
            return await client.get(
                path, params=params, headers={"Authorization": f"Bearer {token}"}
            )
        except (httpx.RemoteProtocolError, httpx.ReadError):
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _phase(
    clients: list[httpx.AsyncClient],
    tokens: list[str],
    path: str,
    params: dict[str, str | int],
    repeats: int,
    server: psutil.Process,
) -> tuple[float, int, int]:
    """(coordinator CPU seconds, requests answered 200, other answers) of one phase."""
    answered = refused = 0

    async def participant(index: int, token: str) -> None:
        nonlocal answered, refused
        client = clients[index // PER_POOL]
        for _ in range(repeats):
            response = await _get(client, path, params, token)
            if response.status_code == 200:
                answered += 1
            else:
                refused += 1

    before = _cpu(server)
    await asyncio.gather(*(participant(i, t) for i, t in enumerate(tokens)))
    return _cpu(server) - before, answered, refused


async def _measure(url: str, pid: int, args: argparse.Namespace) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    pools = -(-args.participants // PER_POOL)
    timeout = httpx.Timeout(args.wait + 60)
    limits = httpx.Limits(max_connections=PER_POOL, max_keepalive_connections=PER_POOL)
    clients = [
        httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) for _ in range(pools)
    ]
    try:
        client = clients[0]
        created = await client.post(
            "/v1/federations",
            json={
                "name": "poll cpu bench",
                "model": {"kind": "mf", "num_items": 50, "dim": 4, "seed": 7},
                "rounds": {
                    "min_participants": args.participants,
                    "max_rounds": 3,
                    "deadline_seconds": 3600,
                    "sampling": {"kind": "fixed", "size": 1},
                },
            },
            headers=admin,
        )
        created.raise_for_status()
        fid = str(created.json()["id"])
        tokens = await _enrol(client, admin, fid, args.participants)
        await _wait_drawn(client, admin, fid)
        path = f"/v1/federations/{fid}/rounds/current"
        first = (await client.get(path, headers=admin)).json()
        advertised = first.get("max_wait_seconds")
        server = psutil.Process(pid)
        await asyncio.sleep(1)  # let the draw's and the enrolments' work settle
        rows = []
        for name, params in (
            ("poll", {}),
            ("renewal", {"after": 1, "wait": args.wait, "in_cohort": "true"}),
        ):
            cpu, answered, refused = await _phase(
                clients, tokens, path, params, args.repeats, server
            )
            rows.append((name, cpu, answered, refused))
    finally:
        for pooled in clients:
            await pooled.aclose()
    print(
        f"participants={args.participants} repeats={args.repeats} wait={args.wait} "
        f"advertised max_wait_seconds={advertised}"
    )
    print("| request | answered | other | coordinator CPU s | CPU ms per request |")
    print("|---|---|---|---|---|")
    for name, cpu, answered, refused in rows:
        per = cpu / max(1, answered + refused) * 1000
        print(f"| {name} | {answered} | {refused} | {cpu:.2f} | {per:.2f} |")
    renewal = rows[1][1] / max(1, rows[1][2] + rows[1][3])
    max_wait = advertised or LEGACY_MAX_WAIT
    print(
        f"10,000 waiting participants renewing every {max_wait} s: "
        f"{10_000 / max_wait:.0f} renewals/s x {renewal * 1000:.2f} ms = "
        f"{10_000 / max_wait * renewal:.2f} cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wait", type=int, default=1, help="seconds each renewal is held")
    parser.add_argument("--coordinator-source", type=Path, help="serve from this tree")
    args = parser.parse_args()
    env = {"FEDREC_LOG_LEVEL": "warning"}
    if args.coordinator_source:
        env["PYTHONPATH"] = str(args.coordinator_source.resolve())
        env.update(SAFE_PATH)
    with tempfile.TemporaryDirectory() as tmp:
        server = CoordinatorProcess(
            Path(tmp) / "data",
            admin_token=ADMIN_TOKEN,
            secret_key=SECRET_KEY,
            log_level="warning",
            env=env,
        )
        server.start(timeout=300)
        try:
            assert server.process is not None
            print(f"coordinator pid {server.process.pid} (for py-spy)", flush=True)
            asyncio.run(_measure(server.url, server.process.pid, args))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
