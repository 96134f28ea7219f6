"""What a held long-poll leaves on the coordinator's heap, and what a full collection costs.

Starts ``fedrec serve`` (SQLite in a temporary folder, or ``--database-url``) with a probe
on its path (a ``sitecustomize`` written to a temporary folder: on SIGUSR1 it times one
``gc.collect()``, then counts the tracked objects left by type), makes a federation that draws 10
participants per round out of ``--polls``, enrols them, and has every one send the
sampled-out wait (``rounds/current?after=0&in_cohort=true&wait=1700``): the 10 drawn are
answered, the rest are held. Census before the polls and with them held; printed: tracked
objects per held poll by type, the full collection's CPU before and with them, the frozen
count (``fedrec serve`` freezes its startup heap, and with coordinator/heap.py what
survives each full collection), RSS per held poll, and what the periodic thaw of
coordinator/heap.py costs (a third census: everything unfrozen, then one full collection)::

    python -m bench.held_polls_heap --polls 2000
    python -m bench.held_polls_heap --polls 2000 --coordinator-source /tmp/main   # before

Bounded: ``--polls`` participants, every wait below 300 s of the bench's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess  # nosec B404 # the coordinator's process, started by CoordinatorProcess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.load import _enrol, _wait_drawn, raise_file_limit
from coordinator.heap import THAW_SECONDS
from fedrec.local_server import SAFE_PATH, CoordinatorProcess

DRAWN = 10
WAIT_SECONDS = 1700  # the sampled-out wait the SDK asks for (FEDREC_MAX_COHORT_WAIT_SECONDS)
SETTLE_SECONDS = 20.0  # after the last poll is sent, before the census (bounded: one wait)
CENSUS_SECONDS = 120.0

PROBE = '''
"""bench.held_polls_heap's probe: a census of the tracked objects on SIGUSR1."""
import gc, json, os, signal, sys, time
from collections import Counter

def _name(t):
    module = t.__module__ if isinstance(t.__module__, str) else "builtins"
    return f"{module}.{t.__qualname__}"

def _census(*_):
    # the collection first: what is counted after it is alive (with coordinator/heap.py,
    # also frozen by it)
    started = time.thread_time()
    collected = gc.collect()
    cpu = time.thread_time() - started
    objects = gc.get_objects()
    types = Counter(_name(type(o)) for o in objects)
    generations = [len(gc.get_objects(g)) for g in range(3)]
    del objects
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    census = {"tracked": sum(types.values()), "generations": generations,
              "frozen": gc.get_freeze_count(), "full_collection_cpu": cpu,
              "collected": collected, "rss": rss, "types": dict(types)}
    path = os.environ["HELD_POLLS_CENSUS"]
    with open(path + ".tmp", "w") as out:
        json.dump(census, out)
    os.replace(path + ".tmp", path)

def _thawed_census(*_):
    # what coordinator/heap.py's thaw does every THAW_SECONDS: unfreeze everything (the
    # startup heap and every held poll), so the collection walks it all
    gc.unfreeze()
    _census()

if os.environ.get("HELD_POLLS_CENSUS") and "serve" in sys.argv:
    signal.signal(signal.SIGUSR1, _census)
    signal.signal(signal.SIGUSR2, _thawed_census)
'''


def _census(
    process: subprocess.Popen[bytes], path: Path, signal_number: int = signal.SIGUSR1
) -> dict[str, Any]:
    """The probe's census (SIGUSR1), or with SIGUSR2 the census of a thawing collection."""
    path.unlink(missing_ok=True)
    process.send_signal(signal_number)
    deadline = time.monotonic() + CENSUS_SECONDS
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        time.sleep(0.2)
    raise RuntimeError("the coordinator wrote no census")


async def _run(server: CoordinatorProcess, admin_token: str, polls: int, census: Path) -> dict:
    assert server.process is not None
    admin = {"Authorization": f"Bearer {admin_token}"}
    limits = httpx.Limits(max_connections=polls + 8, max_keepalive_connections=polls + 8)
    timeout = httpx.Timeout(WAIT_SECONDS + 60)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client:
        created = await client.post(
            "/v1/federations",
            json={
                "name": "held polls heap",
                "model": {"kind": "mf", "num_items": 1682, "dim": 16, "seed": 7},
                "rounds": {
                    "min_participants": polls,
                    "max_rounds": 3,
                    "deadline_seconds": 3600,
                    "final_evaluation_seconds": 0,
                    "sampling": {"kind": "fixed", "size": DRAWN},
                },
            },
            headers=admin,
        )
        created.raise_for_status()
        federation = created.json()["id"]
        tokens = await _enrol(client, admin, federation, polls)
        await _wait_drawn(client, admin, federation)
        before = _census(server.process, census)

        async def wait(token: str) -> int:
            response = await client.get(
                f"/v1/federations/{federation}/rounds/current",
                params={"after": 0, "in_cohort": "true", "wait": WAIT_SECONDS},
                headers={"Authorization": f"Bearer {token}"},
            )
            return response.status_code

        waits = []
        for token in tokens:
            waits.append(asyncio.create_task(wait(token)))
            await asyncio.sleep(0.002)  # not one burst: the long-poll starts are bounded
        await asyncio.sleep(SETTLE_SECONDS)
        answered = sum(task.done() for task in waits)
        held = _census(server.process, census)
        thawed = _census(server.process, census, signal.SIGUSR2)
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return {"before": before, "held": held, "thawed": thawed, "answered": answered}


def measure(
    polls: int, *, database_url: str | None = None, coordinator_source: Path | None = None
) -> dict[str, Any]:
    """The two censuses (``before``: no poll held; ``held``) and how many polls were held."""
    raise_file_limit(2 * polls + 1024)
    admin_token = "fra_" + secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="fedrec-heap-") as tmp:
        probe = Path(tmp) / "probe"
        probe.mkdir()
        (probe / "sitecustomize.py").write_text(PROBE)
        path = [str(probe)] + ([str(coordinator_source)] if coordinator_source else [])
        census = Path(tmp) / "census.json"
        server = CoordinatorProcess(
            Path(tmp) / "data",
            database_url,
            admin_token=admin_token,
            secret_key=secrets.token_urlsafe(32),
            log_level="warning",
            env={
                "PYTHONPATH": os.pathsep.join(path),
                "PYTHONDONTWRITEBYTECODE": "1",
                "HELD_POLLS_CENSUS": str(census),
                **SAFE_PATH,
            },
        )
        server.start(timeout=300)
        try:
            found = asyncio.run(_run(server, admin_token, polls, census))
        finally:
            server.stop()
    found["count"] = polls - found["answered"]
    before, held = found["before"], found["held"]
    # frozen or not: with coordinator/heap.py the held polls are frozen once a full
    # collection has seen them, and then only the frozen count shows them
    grown = held["tracked"] - before["tracked"] + held["frozen"] - before["frozen"]
    found["tracked_per_poll"] = grown / max(found["count"], 1)
    return found


def report(found: dict[str, Any], polls: int, top: int) -> str:
    before, held, count = found["before"], found["held"], found["count"]
    lines = [
        f"{polls} participants, {DRAWN} drawn; {count} polls held at the census",
        "",
        "| | tracked objects (not frozen) | generations 0/1/2 | frozen | full collection CPU ms "
        "| RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in (("no poll held", before), (f"{count} held", held)):
        generations = "/".join(str(n) for n in row["generations"])
        lines.append(
            f"| {name} | {row['tracked']:,} | {generations} | {row['frozen']:,} "
            f"| {row['full_collection_cpu'] * 1e3:.1f} | {row['rss'] / 1e6:.0f} |"
        )
    if count <= 0:
        return "\n".join(lines)
    cpu = (held["full_collection_cpu"] - before["full_collection_cpu"]) / count
    thaw = found["thawed"]["full_collection_cpu"]
    lines += [
        "",
        f"per held poll: {found['tracked_per_poll']:.1f} tracked objects (frozen or not), "
        f"{(held['rss'] - before['rss']) / count / 1e3:.1f} KB of RSS, "
        f"{cpu * 1e6:.1f} µs more per full collection",
        f"a thaw (everything unfrozen, then one full collection; at most every "
        f"{THAW_SECONDS:.0f} s): {thaw * 1e3:.1f} ms of CPU, "
        f"{found['thawed']['collected']} objects freed, "
        f"<= {100 * thaw / THAW_SECONDS:.3f} % of one core",
        "",
        "| type (not frozen: what a full collection walks), per held poll | count |",
        "|---|---|",
    ]
    grown = {name: (n - before["types"].get(name, 0)) / count for name, n in held["types"].items()}
    for name, per_poll in sorted(grown.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"| {name} | {per_poll:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=2000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--coordinator-source", type=Path, default=None)
    parser.add_argument("--top", type=int, default=25, help="object types listed")
    args = parser.parse_args(argv)
    if not DRAWN < args.polls <= 20_000:
        parser.error(f"--polls must be in ({DRAWN}, 20000]")
    found = measure(
        args.polls, database_url=args.database_url, coordinator_source=args.coordinator_source
    )
    print(report(found, args.polls, args.top))
    return 0 if found["count"] > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
