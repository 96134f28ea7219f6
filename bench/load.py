"""Load: N concurrent simulated participants against a real coordinator on loopback.

``fedrec serve`` runs in its own process(es) (``--workers``), on SQLite in a temporary
folder or on ``--database-url`` (PostgreSQL). One federation gets ``--participants``
participants, each with its own token; every participant is an asyncio task of this
process (or of one of ``--bench-processes`` processes) that, each round, polls the
current round, downloads its base version's weights, and uploads a row-sparse update
(``participant_sdk.wire.encode_update``, random rows and deltas: no training, so the
coordinator's cost is what is measured), then
long-polls for the next round. A round closes when every participant uploaded.

Printed: p50/p99 latency per call kind, uploads/s, the coordinator's CPU time and peak
RSS (its whole process tree, sampled with psutil), errors, and back-pressure: a 429 or
503 with ``Retry-After`` is counted apart and retried after that many seconds. Any other
failure is an error, and the run exits 1 unless there are none.

The coordinator runs with its default admission control and rate limits (per token 50
requests/s, burst 500; 4 long-polls per token; anonymous limits unused: every request
carries a participant or the admin token). A participant sends ~3 requests per round,
far below its own bucket, so back-pressure here would mean overload, not a limit the
bench trips. Everything is bounded: ``--rounds`` rounds, ``--time-limit`` seconds in all,
long-polls of at most 60 s. The soft open-file limit is raised to the hard one: each
participant holds a connection, and the coordinator (a child) inherits the limit::

    python -m bench.load                          # 1,000 participants, 3 rounds, SQLite
    python -m bench.load --workers 2              # two coordinator processes
    python -m bench.load --participants 50 --rounds 2   # quick
    python -m bench.load --participants 10000 --sample 100 --rounds 4 \
        --first-polls-per-second 40 --bench-processes 3 --workers 2 \
        --database-url postgresql://.../empty --time-limit 1200   # cross-device scale

``--first-polls-per-second`` spreads the participants' first polls (participant ``i``
starts ``i / rate`` seconds in) as devices coming online would, instead of all at once;
it also spreads their long-poll renewals, which a waiting participant sends once per the
coordinator's advertised long-poll maximum (``max_wait_seconds``; 60 s where none is).
``--bench-processes`` splits the participants over several processes: on a loaded machine
one asyncio process cannot drive 10,000 of them, and it, not the coordinator, was the
bottleneck. Enrolments run 32 at a time before the load phase (and its time limit) starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import secrets
import signal
import statistics
import subprocess  # nosec B404 # py-spy, the bench's optional profiler of the coordinator
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from fedrec.local_server import SAFE_PATH, CoordinatorProcess
from participant_sdk.wire import encode_update

KINDS = ("poll", "download", "upload", "long-poll")
# what every coordinator allows; one that advertises a longer maximum (Round.max_wait_seconds)
# is asked for that, as the SDK does: a waiting participant renews its poll that often
LONG_POLL_SECONDS = 60
ADMIN_WAIT_SECONDS = 10  # the progress watcher's long-poll (within every coordinator's cap)
MAX_BACKPRESSURE_RETRIES = 500  # bounded in time too: --time-limit
MAX_STALE_RETRIES = 3
MAX_CONNECT_RETRIES = 5  # a connection not accepted in time: retried after 2, 4, 8, 16, 30 s
CONNECT_BACKOFF_SECONDS = 2.0
RETRY_JITTER = 0.25  # a back-pressure wait is Retry-After plus up to this fraction more
WAIT_JITTER = 0.1  # an in_cohort long-poll asks for up to this fraction less, as the SDK
LONG_POLL_READ_MARGIN = 60  # a long-poll's read timeout: its wait plus this
REASK_BACKOFF_SECONDS = 1.0  # a long-poll without an answer is asked again after 1, 2, 4… s
SERVER_START_SECONDS = 300
CROWD_REPORT_GRACE_SECONDS = 300  # for a crowd process past the time limit to report
ENROL_CONCURRENCY = 32  # enrolments in flight (each is one write transaction)
PER_CLIENT = 25  # participants sharing one httpx connection pool
# as the SDK: longer than a Retry-After wait (so a refused participant comes back on its
# connection, not with a new one to accept) and below `fedrec serve`'s 90 s keep-alive, so
# the client rarely reuses a connection the server is closing (it still happens: _call)
KEEPALIVE_EXPIRY_SECONDS = 80.0


@dataclass
class Stats:
    """What the participants saw, by call kind."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    backpressure: Counter[str] = field(default_factory=Counter)
    stale: Counter[str] = field(default_factory=Counter)  # closed keep-alive connections
    unreachable: Counter[str] = field(default_factory=Counter)  # connects not accepted in time
    # long-polls that got no answer (timed out: answered late; or the connection dropped)
    # and were asked again, as the SDK's wait loop does: never a reason to stop
    reasked: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    uploads: int = 0
    sat_out: int = 0  # rounds a participant learnt it was not sampled into
    cpu_seconds: float = 0.0  # of the process(es) that ran these participants

    def merge(self, other: Stats) -> None:
        """Add another process's participants' figures to these."""
        for kind in KINDS:
            self.latencies[kind].extend(other.latencies[kind])
        self.backpressure.update(other.backpressure)
        self.stale.update(other.stale)
        self.unreachable.update(other.unreachable)
        self.reasked.update(other.reasked)
        self.errors.extend(other.errors)
        self.uploads += other.uploads
        self.sat_out += other.sat_out
        self.cpu_seconds += other.cpu_seconds


@dataclass
class Usage:
    """The coordinator's process tree over the load phase."""

    cpu_seconds: float = 0.0
    # between the first round's close after every participant started (their first
    # requests, once each, are not a round's cost) and the last but one round's close
    # (the last close wakes every waiting poll at once, once each)
    later_rounds_cpu_seconds: float | None = None
    later_rounds: int = 0
    later_rounds_wall_seconds: float = 0.0
    # CLOCK_MONOTONIC at those two closes: to line up what the coordinator logs (a probe
    # of its garbage collections, say) with the window
    later_rounds_window: tuple[float, float] | None = None
    peak_rss_bytes: int = 0
    # the process tree's RSS when each round's close was seen: (version, bytes)
    rss_at_closes: list[tuple[int, int]] = field(default_factory=list)
    processes: int = 0


@dataclass
class Result:
    participants: int
    rounds: int
    workers: int
    backend: str
    wall_seconds: float
    stats: Stats
    usage: Usage
    bench_cpu_seconds: float
    sample: int | None = None  # participants drawn per round (rounds.sampling), None: all
    enrol_seconds: float = 0.0  # wall time of the enrolments (before the load phase)
    first_polls_per_second: float | None = None  # None: every participant starts at once
    bench_processes: int = 1

    @property
    def uploads_per_second(self) -> float:
        return self.stats.uploads / self.wall_seconds if self.wall_seconds else 0.0


class _Failed(Exception):
    """A call that failed for a reason other than back-pressure (already counted)."""


def _limits(connections: int) -> httpx.Limits:
    return httpx.Limits(
        max_connections=connections + 2,
        max_keepalive_connections=connections + 2,
        keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
    )


def raise_file_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


async def _call(
    client: httpx.AsyncClient,
    stats: Stats,
    kind: str,
    method: str,
    url: str,
    **kwargs: Any,
) -> httpx.Response:
    """One call, retried after ``Retry-After`` on 429/503; its latency recorded.

    Every call here may be repeated (GETs, and uploads carry an Idempotency-Key), so a
    kept-alive connection that the server closed as the request went out (it answers
    nothing: "Server disconnected", or a reset) is retried on a fresh one, at most
    ``MAX_STALE_RETRIES`` times, and counted apart. A connection the coordinator did not
    accept in time (its accept queue full: a connect timeout or refusal) is retried after a
    jittered exponential back-off, at most ``MAX_CONNECT_RETRIES`` times, as the SDK does
    (its retries, then ``run()``'s), and counted apart too; any other transport error, or
    one of these past its bound, is an error. A long-poll that gets no answer (it timed
    out or its connection dropped) is asked again after a jittered back-off, as the SDK's
    wait loop does, and counted apart: a waiting participant never stops on it.
    """
    stale = 0
    unreachable = 0
    reasked = 0
    for _ in range(MAX_BACKPRESSURE_RETRIES):
        started = time.perf_counter()
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            if kind == "long-poll":
                # a wait that got no answer (timed out: a loaded coordinator answers late;
                # or the connection dropped): asked again, as the SDK's wait loop does,
                # never a reason to stop; bounded by the time limit and the loop's count
                stats.reasked[kind] += 1
                backoff = min(REASK_BACKOFF_SECONDS * 2**reasked, 30.0)
                reasked += 1
                await asyncio.sleep(backoff * (0.5 + random.random()))  # nosec B311 # jitter
                continue
            if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
                if stale < MAX_STALE_RETRIES:
                    stale += 1
                    stats.stale[kind] += 1
                    continue
            elif isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
                if unreachable < MAX_CONNECT_RETRIES:
                    stats.unreachable[kind] += 1
                    backoff = min(CONNECT_BACKOFF_SECONDS * 2**unreachable, 30.0)
                    unreachable += 1
                    await asyncio.sleep(backoff * (0.5 + random.random()))  # nosec B311
                    continue
            stats.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            raise _Failed from exc
        except httpx.HTTPError as exc:
            stats.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            raise _Failed from exc
        elapsed = time.perf_counter() - started
        retry_after = response.headers.get("retry-after")
        if response.status_code in (429, 503) and retry_after is not None:
            stats.backpressure[kind] += 1
            await asyncio.sleep(_jittered(retry_after))
            continue
        if response.status_code >= 400:
            stats.errors.append(f"{kind}: {response.status_code} {response.text[:200]}")
            raise _Failed
        stats.latencies[kind].append(elapsed)
        return response
    stats.errors.append(f"{kind}: still refused after {MAX_BACKPRESSURE_RETRIES} retries")
    raise _Failed


def _jittered(retry_after: str) -> float:
    """``Retry-After`` plus up to a quarter more, as the SDK waits (never less)."""
    try:
        seconds = max(0.0, float(retry_after))
    except ValueError:
        seconds = 1.0
    return seconds * (1 + RETRY_JITTER * random.random())  # nosec B311 # jitter, not a secret


async def _admin(
    client: httpx.AsyncClient, backpressure: Counter[str], method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """An admin call (enrolment, progress reads) that waits out 429/503 back-pressure
    (counted under ``admin``) at most ``MAX_BACKPRESSURE_RETRIES`` times; other failures raise."""
    for _ in range(MAX_BACKPRESSURE_RETRIES):
        response = await client.request(method, url, **kwargs)
        retry_after = response.headers.get("retry-after")
        if response.status_code in (429, 503) and retry_after is not None:
            backpressure["admin"] += 1
            await asyncio.sleep(_jittered(retry_after))
            continue
        response.raise_for_status()
        return response
    raise RuntimeError(f"{method} {url}: still refused after {MAX_BACKPRESSURE_RETRIES} retries")


async def _participant(
    client: httpx.AsyncClient,
    stats: Stats,
    federation_id: str,
    token: str,
    *,
    index: int,
    rounds: int,
    num_items: int,
    dim: int,
    rows: int,
    sampled: bool,
    start_delay: float = 0.0,
    max_wait: int = LONG_POLL_SECONDS,
    max_cohort_wait: int | None = None,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    base = f"/v1/federations/{federation_id}"
    rng = np.random.default_rng(index)
    cohort = {"in_cohort": "true"} if sampled else {}
    # sampled: the first request is already the wait (after=0, in_cohort): answered at
    # once when drawn into the current round, else held until a round that draws it
    after: int | None = 0 if sampled else None
    await asyncio.sleep(start_delay)
    try:
        while True:
            if after is None:
                current = await _call(
                    client, stats, "poll", "GET", f"{base}/rounds/current", headers=headers
                )
            else:
                wait = _wait_for(max_wait, max_cohort_wait if sampled else None)
                current = await _call(
                    client,
                    stats,
                    "long-poll",
                    "GET",
                    f"{base}/rounds/current",
                    # sampled: sit out the rounds this participant is not drawn into
                    params={"wait": wait, "after": after, **cohort},
                    headers=headers,
                    timeout=wait + LONG_POLL_READ_MARGIN,
                )
            round_ = current.json()
            max_wait = int(round_.get("max_wait_seconds") or LONG_POLL_SECONDS)
            max_cohort_wait = round_.get("max_cohort_wait_seconds")
            number = int(round_["number"])
            if after is not None and number <= after:
                continue  # the wait ran out before the round closed: wait again
            if round_.get("in_cohort") is False or round_["state"] != "open":
                # not sampled into this round, or it is being aggregated: wait for the next
                stats.sat_out += round_.get("in_cohort") is False
                if number >= rounds:
                    return
                after = number
                continue
            await _call(
                client,
                stats,
                "download",
                "GET",
                f"{base}/models/{round_['base_version']}/weights",
                headers=headers,
            )
            touched = np.sort(rng.choice(num_items, size=rows, replace=False))
            body = encode_update(
                {
                    "item_factors": rng.normal(0, 0.01, (rows, dim)).astype(np.float32),
                    "item_bias": rng.normal(0, 0.01, rows).astype(np.float32),
                },
                round=number,
                base_version=int(round_["base_version"]),
                num_examples=rows,
                rows=touched,
            )
            await _call(
                client,
                stats,
                "upload",
                "PUT",
                f"{base}/rounds/{number}/update",
                content=body,
                headers={
                    **headers,
                    "Content-Type": "application/octet-stream",
                    "Idempotency-Key": f"load-{index}-{number}",
                },
            )
            stats.uploads += 1
            if number >= rounds:
                return
            after = number
    except _Failed:
        return  # counted; this participant stops


def _wait_for(max_wait: int, max_cohort_wait: int | None) -> int:
    """A long-poll's ``wait``: the coordinator's maximum; for an ``in_cohort`` poll its
    maximum for those, less up to ``WAIT_JITTER`` at random, as the SDK asks."""
    if max_cohort_wait is None:
        return max_wait
    jitter = 1.0 - WAIT_JITTER * random.random()  # nosec B311 # spread, not a secret
    return max(1, int(max(max_wait, max_cohort_wait) * jitter))


async def _enrol(
    client: httpx.AsyncClient, admin: dict[str, str], federation_id: str, count: int
) -> list[str]:
    gate = asyncio.Semaphore(ENROL_CONCURRENCY)

    async def one(index: int) -> str:
        async with gate:
            response = await client.post(
                f"/v1/federations/{federation_id}/participants",
                json={"name": f"load-{index:05d}"},
                headers=admin,
            )
            response.raise_for_status()
            return str(response.json()["token"])

    return list(await asyncio.gather(*(one(i) for i in range(count))))


class _Sampler:
    """CPU time and peak RSS of a process and its children, sampled in the background."""

    def __init__(
        self,
        pid: int,
        interval: float = 0.25,
        joined_after: float = 0.0,
        profile: tuple[Path, int] | None = None,
    ) -> None:
        self._root = psutil.Process(pid)
        # (where py-spy writes, the last version of the window): the later rounds only
        self._profile = profile
        self._spy: subprocess.Popen[bytes] | None = None
        # seconds after start() by which every participant has sent its first request
        self._joined_after = joined_after
        self._started = time.monotonic()
        self._interval = interval
        self._cpu: dict[int, float] = {}
        self._start: dict[int, float] = {}
        self.usage = Usage()
        self._task: asyncio.Task[None] | None = None
        self._closes: dict[int, tuple[float, float]] = {}  # version: (CPU, seconds in)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _sample(self) -> int:
        rss = 0
        for process in self._tree():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    rss += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            self._cpu[process.pid] = times.user + times.system
            self._start.setdefault(process.pid, self._cpu[process.pid])
        self.usage.peak_rss_bytes = max(self.usage.peak_rss_bytes, rss)
        return rss

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._sample()
        self._start = dict(self._cpu)
        self._started = time.monotonic()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> Usage:
        self._sample()
        self._stop_profile()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.usage.cpu_seconds = self.cpu_so_far()
        versions = sorted(v for v, (_, at) in self._closes.items() if at >= self._joined_after)
        if len(versions) >= 2:
            (first_cpu, first_at), (last_cpu, last_at) = (
                self._closes[versions[0]],
                self._closes[versions[-1]],
            )
            self.usage.later_rounds_cpu_seconds = last_cpu - first_cpu
            self.usage.later_rounds = versions[-1] - versions[0]
            self.usage.later_rounds_wall_seconds = last_at - first_at
            self.usage.later_rounds_window = (self._started + first_at, self._started + last_at)
        self.usage.processes = len(self._cpu)
        return self.usage

    def cpu_so_far(self) -> float:
        return sum(self._cpu[pid] - self._start[pid] for pid in self._cpu)

    def round_closed(self, version: int) -> None:
        """CPU so far when ``version`` (made by round ``version``) was first seen."""
        rss = self._sample()
        if version not in self._closes:
            self.usage.rss_at_closes.append((version, rss))
        self._closes.setdefault(version, (self.cpu_so_far(), time.monotonic() - self._started))
        if self._profile is not None:
            path, last = self._profile
            joined = self._closes[version][1] >= self._joined_after
            if self._spy is None and joined and version < last:
                self._start_profile(path)
            elif version >= last:
                self._stop_profile()

    def _start_profile(self, path: Path) -> None:
        """py-spy (the bench's interpreter's; ``pip install py-spy``) over the coordinator's
        process tree, from the first later round's close to the next-to-last one's."""
        spy = Path(sys.executable).parent / "py-spy"
        command = [str(spy), "record", "--pid", str(self._root.pid), "--subprocesses"]
        command += ["--nonblocking", "--gil", "-r", "100", "--format", "raw", "-o", str(path)]
        self._spy = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # nosec B603

    def _stop_profile(self) -> None:
        if self._spy is not None and self._spy.poll() is None:
            self._spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            self._spy.wait(timeout=60)
        self._profile = None


@dataclass(frozen=True)
class Crowd:
    """What a process running some of the participants needs to know (picklable)."""

    url: str
    federation_id: str
    rounds: int
    items: int
    dim: int
    rows: int
    sampled: bool
    first_polls_per_second: float | None
    time_limit: float
    epoch: float  # time.time() at the load phase's start: the first polls' schedule
    # the long-poll maxima the coordinator advertises (its first answer to the admin), so
    # that a sampled participant's first request, already a wait, asks for the full one
    max_wait: int = LONG_POLL_SECONDS
    max_cohort_wait: int | None = None


async def _run_crowd(
    crowd: Crowd,
    members: list[tuple[int, str]],
    clients: list[httpx.AsyncClient] | None = None,
) -> Stats:
    """Run ``members`` (index, token) to the end or the time limit; their figures."""
    cpu_started = time.process_time()
    stats = Stats()
    async with contextlib.AsyncExitStack() as stack:
        if clients is None:
            timeout = httpx.Timeout(LONG_POLL_SECONDS + 60)
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=crowd.url, limits=_limits(PER_CLIENT), timeout=timeout
                    )
                )
                for _ in range(-(-len(members) // PER_CLIENT))
            ]
        late = time.time() - crowd.epoch  # a child process starts a little after the epoch
        tasks = [
            asyncio.create_task(
                _participant(
                    clients[position // PER_CLIENT],
                    stats,
                    crowd.federation_id,
                    token,
                    index=index,
                    rounds=crowd.rounds,
                    num_items=crowd.items,
                    dim=crowd.dim,
                    rows=crowd.rows,
                    sampled=crowd.sampled,
                    max_wait=crowd.max_wait,
                    max_cohort_wait=crowd.max_cohort_wait,
                    start_delay=max(
                        0.0,
                        index / crowd.first_polls_per_second - late
                        if crowd.first_polls_per_second
                        else 0.0,
                    ),
                )
            )
            for position, (index, token) in enumerate(members)
        ]
        _, pending = await asyncio.wait(tasks, timeout=crowd.time_limit)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            stats.errors.append(
                f"time limit: {len(pending)} participants unfinished after {crowd.time_limit:g} s"
            )
    stats.cpu_seconds = time.process_time() - cpu_started
    return stats


def run_crowd(crowd: Crowd, members: list[tuple[int, str]]) -> Stats:
    """:func:`_run_crowd` in a process of its own (a ProcessPoolExecutor's worker)."""
    return asyncio.run(_run_crowd(crowd, members))


async def _load(
    server: CoordinatorProcess, admin_token: str, args: argparse.Namespace
) -> tuple[float, float, Stats, Usage]:
    admin = {"Authorization": f"Bearer {admin_token}"}
    timeout = httpx.Timeout(LONG_POLL_SECONDS + 60)
    # several small connection pools: httpx scans a pool's connections on every request,
    # so one pool of 1,000 made the bench itself the bottleneck; with several bench
    # processes each makes its own, and this one only enrols and watches
    pools = -(-args.participants // PER_CLIENT) if args.bench_processes == 1 else 1
    clients = [
        httpx.AsyncClient(base_url=server.url, limits=_limits(ENROL_CONCURRENCY), timeout=timeout)
        if args.bench_processes > 1
        else httpx.AsyncClient(base_url=server.url, limits=_limits(PER_CLIENT), timeout=timeout)
        for _ in range(pools)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for pooled in clients:
            await stack.enter_async_context(pooled)
        client = clients[0]
        created = await client.post(
            "/v1/federations",
            json={
                "name": "load bench",
                "model": {"kind": "mf", "num_items": args.items, "dim": args.dim, "seed": 7},
                "rounds": {
                    # sampled: round 1 draws once everyone enrolled, not from the first few
                    "min_participants": args.participants if args.sample else 1,
                    "max_rounds": args.rounds,
                    # a safety net only: every round closes when all its participants
                    # uploaded; round 1 opens before the (bounded) enrolments
                    "deadline_seconds": 3 * args.time_limit,
                    "final_evaluation_seconds": 0,
                    **({"sampling": {"kind": "fixed", "size": args.sample}} if args.sample else {}),
                },
            },
            headers=admin,
        )
        created.raise_for_status()
        federation_id = str(created.json()["id"])
        enrol_started = time.perf_counter()
        tokens = await asyncio.wait_for(
            _enrol(client, admin, federation_id, args.participants), args.time_limit
        )
        enrol_seconds = time.perf_counter() - enrol_started
        if args.sample:
            await _wait_drawn(client, admin, federation_id)
        advertised = (
            await _admin(
                client,
                Counter(),
                "GET",
                f"/v1/federations/{federation_id}/rounds/current",
                headers=admin,
            )
        ).json()

        assert server.process is not None
        rate = args.first_polls_per_second
        sampler = _Sampler(
            server.process.pid,
            joined_after=args.participants / rate if rate else 0.0,
            profile=(args.profile, args.rounds - 1) if args.profile else None,
        )
        sampler.start()
        started = time.perf_counter()
        crowd = Crowd(
            url=server.url,
            federation_id=federation_id,
            rounds=args.rounds,
            items=args.items,
            dim=args.dim,
            rows=args.rows,
            sampled=bool(args.sample),
            max_wait=int(advertised.get("max_wait_seconds") or LONG_POLL_SECONDS),
            max_cohort_wait=advertised.get("max_cohort_wait_seconds"),
            first_polls_per_second=args.first_polls_per_second,
            time_limit=args.time_limit,
            epoch=time.time(),
        )
        slices = [
            list(enumerate(tokens))[k :: args.bench_processes] for k in range(args.bench_processes)
        ]
        admin_backpressure: Counter[str] = Counter()  # the watcher's own 429/503
        # the last round's aggregation belongs to the run: wait for the federation to finish
        finished = asyncio.create_task(
            _wait_completed(client, admin, federation_id, args.rounds, sampler, admin_backpressure)
        )
        if args.bench_processes == 1:
            crowds = [asyncio.create_task(_run_crowd(crowd, slices[0], clients))]
        else:
            # several bench processes: one asyncio process cannot drive 10,000 participants
            # on a loaded machine (it, not the coordinator, was the bottleneck)
            loop = asyncio.get_running_loop()
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=args.bench_processes))
            crowds = [
                asyncio.ensure_future(loop.run_in_executor(pool, run_crowd, crowd, part))
                for part in slices
            ]
        done, pending = await asyncio.wait(
            [*crowds, finished], timeout=args.time_limit, return_when=asyncio.ALL_COMPLETED
        )
        wall = time.perf_counter() - started
        usage = await sampler.stop()
        # each crowd stops itself at the time limit; on a starved machine its report comes
        # late, and losing it would lose every participant's figures
        late = [part for part in crowds if part in pending]
        if late:
            reported, _ = await asyncio.wait(late, timeout=CROWD_REPORT_GRACE_SECONDS)
            done |= reported
            pending -= reported
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        stats = Stats()
        stats.backpressure.update(admin_backpressure)
        for part in crowds:
            if part in done and part.exception() is None:
                stats.merge(part.result())
            else:
                stats.errors.append("a crowd of participants did not report (time limit)")
        if finished not in done:
            stats.errors.append(
                f"time limit: the federation did not finish within {args.time_limit:g} s"
            )
        elif (failure := finished.exception()) is not None:
            stats.errors.append(f"federation: {type(failure).__name__}: {failure}")
        return enrol_seconds, wall, stats, usage


async def _wait_drawn(client: httpx.AsyncClient, admin: dict[str, str], federation_id: str) -> None:
    """Round 1 opened before anyone enrolled; its cohort is drawn on the coordinator's
    timer once participants are active. Start the participants after that draw."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/federations/{federation_id}/rounds/1", headers=admin)
        response.raise_for_status()
        if response.json().get("cohort_size") is not None:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("round 1's cohort was not drawn within 60 s")


async def _wait_completed(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    federation_id: str,
    rounds: int,
    sampler: _Sampler,
    backpressure: Counter[str],
) -> None:
    """Wait for the federation to end, seeing each round open as it happens: the admin
    long-polls the current round (a fixed-interval read missed rounds shorter than it, and
    a run with fewer than two seen closes has no later-round CPU)."""
    seen_round = 0
    while True:
        await _admin(
            client,
            backpressure,
            "GET",
            f"/v1/federations/{federation_id}/rounds/current",
            params={"after": seen_round, "wait": ADMIN_WAIT_SECONDS},
            headers=admin,
            timeout=ADMIN_WAIT_SECONDS + 30,
        )
        response = await _admin(
            client, backpressure, "GET", f"/v1/federations/{federation_id}", headers=admin
        )
        federation = response.json()
        if 1 <= federation["latest_version"] < rounds:  # not the last: everyone wakes then
            sampler.round_closed(federation["latest_version"])
        if federation["state"] not in ("active", "evaluating"):
            if federation["latest_version"] != rounds:
                raise RuntimeError(
                    f"federation {federation['state']} at version {federation['latest_version']}"
                )
            return
        if federation["state"] == "evaluating":  # the admin's poll returns at once then
            await asyncio.sleep(0.1)
        # round n opens when version n - 1 is made
        seen_round = max(seen_round, federation["latest_version"] + 1)


def run(args: argparse.Namespace) -> Result:
    raise_file_limit(4 * args.participants + 1024)
    admin_token = "fra_" + secrets.token_urlsafe(32)
    secret_key = secrets.token_urlsafe(32)
    bench_cpu = time.process_time()
    with tempfile.TemporaryDirectory(prefix="fedrec-load-") as tmp:
        server = CoordinatorProcess(
            Path(tmp) / "data",
            args.database_url,
            admin_token=admin_token,
            secret_key=secret_key,
            log_level="warning",
            workers=args.workers,
            env=(
                {
                    "PYTHONPATH": str(args.coordinator_source),
                    "PYTHONDONTWRITEBYTECODE": "1",
                    **SAFE_PATH,
                }
                if args.coordinator_source
                else {}
            ),
        )
        try:
            # generous: on the shared machine (load 30) a start took over a minute
            server.start(timeout=SERVER_START_SECONDS)
            enrol_seconds, wall, stats, usage = asyncio.run(_load(server, admin_token, args))
        finally:
            server.stop()
            logged = _log_errors(server.log_path)
            if logged:
                print(f"coordinator log errors:\n{logged}", file=sys.stderr)
    return Result(
        participants=args.participants,
        rounds=args.rounds,
        workers=args.workers,
        backend="PostgreSQL" if args.database_url else "SQLite",
        wall_seconds=wall,
        stats=stats,
        usage=usage,
        # the main process, plus the participants' own processes when there are several
        bench_cpu_seconds=time.process_time()
        - bench_cpu
        + (stats.cpu_seconds if args.bench_processes > 1 else 0.0),
        sample=args.sample,
        enrol_seconds=enrol_seconds,
        first_polls_per_second=args.first_polls_per_second,
        bench_processes=args.bench_processes,
    )


def _log_errors(log_path: Path) -> str:
    if not log_path.exists():
        return ""
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if "ERROR" in line]
    return "\n".join(lines[:20])


def _ms(values: Sequence[float], q: float) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] * 1000:.1f}"
    cut = statistics.quantiles(values, n=100, method="inclusive")
    return f"{cut[int(q) - 1] * 1000:.1f}"


def _per_later_round(result: Result) -> str:
    later = result.usage.later_rounds_cpu_seconds
    if later is None or not result.usage.later_rounds:
        return "-"
    return f"{later / result.usage.later_rounds:.2f}"


def report(result: Result) -> str:
    stats, usage = result.stats, result.usage
    sampled = f" ({result.sample} sampled per round)" if result.sample else ""
    staggered = (
        f", first polls {result.first_polls_per_second:g}/s"
        if result.first_polls_per_second
        else ", first polls at once"
    )
    lines = [
        f"{result.participants} participants{sampled}, {result.rounds} rounds, "
        f"{result.backend}, {result.workers} coordinator worker(s){staggered}, "
        f"{result.bench_processes} bench process(es); "
        f"enrolment {result.enrol_seconds:.1f} s",
        "",
        "| call | count | p50 ms | p99 ms | back-pressure (429/503) | stale connection retried "
        "| connect not accepted, retried | no answer (timed out, dropped), asked again |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        values = stats.latencies[kind]
        lines.append(
            f"| {kind} | {len(values)} | {_ms(values, 50)} | {_ms(values, 99)} | "
            f"{stats.backpressure[kind]} | {stats.stale[kind]} | {stats.unreachable[kind]} "
            f"| {stats.reasked[kind]} |"
        )
    refused = sum(stats.backpressure.values())
    lines += [
        "",
        f"back-pressure (429/503 with Retry-After, waited out and retried; not errors): "
        f"{refused} in all, {stats.backpressure['admin']} of them the bench's own admin reads",
    ]
    cores = usage.cpu_seconds / result.wall_seconds if result.wall_seconds else 0.0
    lines += [
        "",
        "| participants | workers | uploads | wall s | uploads/s | coordinator CPU s "
        "| CPU s per later round | coordinator cores | coordinator peak RSS MB | bench CPU s "
        "| back-pressure | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {result.participants}{sampled} | {result.workers} | {stats.uploads} "
        f"| {result.wall_seconds:.1f} | {result.uploads_per_second:.0f} "
        f"| {usage.cpu_seconds:.1f} | {_per_later_round(result)} | {cores:.2f} "
        f"| {usage.peak_rss_bytes / 1e6:.0f} "
        f"| {result.bench_cpu_seconds:.1f} | {refused} | {len(stats.errors)} |",
        "",
        "long-poll: the wait for the next round to open (it includes the round's other "
        "uploads and its aggregation; sampled: every participant's first request too, "
        "which waits for a round it is drawn into), not a service time; CPU per later "
        "round: from the first round's close after every participant started (the "
        "--first-polls-per-second schedule) to the next-to-last round's close: "
        f"{result.usage.later_rounds} round(s), {result.usage.later_rounds_wall_seconds:.1f} s "
        "of wall time (every participant has joined, and none has left yet)"
        + (
            " (CLOCK_MONOTONIC {:.1f}-{:.1f})".format(*usage.later_rounds_window)
            if usage.later_rounds_window
            else ""
        ),
        "coordinator RSS MB at each round's close (version: MB): "
        + ", ".join(f"{v}: {rss / 1e6:.0f}" for v, rss in usage.rss_at_closes),
    ]
    if stats.errors:
        kinds = Counter(":".join(error.split(":")[:2]) for error in stats.errors)
        lines.append("errors by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    for error in stats.errors[:10]:
        lines.append(f"error: {error}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="fedrec serve --workers")
    parser.add_argument("--items", type=int, default=1682, help="model rows (ML-100K's items)")
    parser.add_argument("--dim", type=int, default=16, help="factors per row")
    parser.add_argument("--rows", type=int, default=50, help="rows each update touches")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("FEDREC_BENCH_DATABASE_URL"),
        help="an empty PostgreSQL database (default: SQLite in a temporary folder)",
    )
    parser.add_argument(
        "--time-limit", type=float, default=600.0, help="seconds for the whole load phase"
    )
    parser.add_argument(
        "--sample",
        type=int,
        help="draw this many participants per round (rounds.sampling fixed); then run a "
        "federation of just that many, unsampled, on a fresh coordinator for comparison",
    )
    parser.add_argument(
        "--coordinator-source",
        type=Path,
        default=None,
        help="run the coordinator from this source tree (e.g. an exported older commit)",
    )
    parser.add_argument(
        "--first-polls-per-second",
        type=float,
        default=None,
        help="start the participants at this rate (participant i after i / rate s) "
        "instead of all at once",
    )
    parser.add_argument(
        "--bench-processes",
        type=int,
        default=1,
        help="run the participants in this many processes (a loaded machine: one asyncio "
        "process cannot drive 10,000)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record py-spy (collapsed stacks) over the coordinator during the later rounds "
        "into this file (the sampled run; its baseline writes <name>.baseline)",
    )
    args = parser.parse_args(argv)
    if args.bench_processes < 1:
        parser.error("--bench-processes must be >= 1")
    if args.first_polls_per_second is not None and args.first_polls_per_second <= 0:
        parser.error("--first-polls-per-second must be positive")
    if args.participants < 1 or args.rounds < 1 or not 1 <= args.rows <= args.items:
        parser.error("need participants >= 1, rounds >= 1 and 1 <= rows <= items")
    if args.sample is not None and not 1 <= args.sample <= args.participants:
        parser.error("--sample must be between 1 and --participants")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    # a SIGTERM (a time-out around the bench) still stops the coordinator it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args(argv)
    results = [run(args)]
    print(report(results[0]), flush=True)
    if args.sample:
        # the same rounds with only the sampled number of participants, none sampled out
        profile = args.profile.with_suffix(".baseline") if args.profile else None
        baseline = argparse.Namespace(
            **{**vars(args), "participants": args.sample, "sample": None, "profile": profile}
        )
        results.append(run(baseline))
        print()
        print(report(results[1]))
        ratio = results[0].usage.cpu_seconds / max(results[1].usage.cpu_seconds, 1e-9)
        print(
            f"\ncoordinator CPU: {args.participants} participants with {args.sample} sampled "
            f"per round cost {ratio:.2f} x a federation of {args.sample} over the whole run"
        )
        per_round = [_per_later_round(r) for r in results]
        if "-" not in per_round:
            print(
                f"coordinator CPU per later round: {float(per_round[0]) / float(per_round[1]):.2f}"
                f" x ({per_round[0]} s vs {per_round[1]} s)"
            )
    return 0 if not any(r.stats.errors for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
