"""CPU per participant request, the coordinator app driven in-process without HTTP.

The app (SQLite, migrated: ``bench.request_cpu.open_round``'s federation, whose round 1 waits
for one participant more than ``--participants``, so no aggregation runs) is called as an
ASGI application straight from an event loop: no sockets, no HTTP parsing, no test client.
What is timed is the coordinator's own work per request: middlewares, routing,
dependencies, the handler (its worker-thread hops and database work included: process CPU),
the response. Each participant's token is warmed by one untimed poll (the per-user round's
participants come back within the token cache's 300 s).

Kinds, each timed over every participant (``--repeat`` times for the read-only ones):

- ``poll``: ``GET …/rounds/current`` (the plain poll);
- ``renewal``: ``GET …/rounds/current?after=1&wait=0.01&in_cohort=true`` (a long-poll that
  runs out: the round stays at 1);
- ``download``: ``GET …/models/0/weights`` (cached bytes after the first);
- ``report``: ``POST …/models/0/evaluations`` with an ``Idempotency-Key``;
- ``upload``: ``PUT …/rounds/1/update`` of a 60-row update with ``X-Base-Evaluation``.

``--profile KIND`` runs that kind under cProfile and prints the top functions by cumulative
and internal time. Compare trees by putting one first on the import path (PYTHONSAFEPATH:
not the script's folder), alternating runs::

    PYTHONSAFEPATH=1 PYTHONPATH=/tmp/before python bench/asgi_probe.py
    python -m bench.asgi_probe

Nothing is asserted; the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from bench.request_cpu import REPORT, open_round

KINDS = ("poll", "renewal", "download", "report", "upload")
Call = Callable[[], Coroutine[Any, Any, int]]


def _scope(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def request(
    app: Any, method: str, path: str, headers: dict[str, str], body: bytes = b"", query: str = ""
) -> Call:
    """A coroutine factory: one ASGI request to ``app``, returning the status."""

    async def call() -> int:
        scope = _scope(method, path, query, headers, body)
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # a client that stays connected
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    return call


def _calls(app: Any, fid: str, tokens: list[str], bodies: list[bytes], kind: str) -> list[Call]:
    base = f"/v1/federations/{fid}"
    out: list[Call] = []
    for token, body in zip(tokens, bodies, strict=True):
        auth = {"authorization": f"Bearer {token}"}
        if kind == "poll":
            out.append(request(app, "GET", f"{base}/rounds/current", auth))
        elif kind == "renewal":
            query = "after=1&wait=0.01&in_cohort=true"
            out.append(request(app, "GET", f"{base}/rounds/current", auth, query=query))
        elif kind == "download":
            out.append(request(app, "GET", f"{base}/models/0/weights", auth))
        elif kind == "report":
            headers = {
                **auth,
                "content-type": "application/json",
                "idempotency-key": uuid.uuid4().hex,
            }
            report = json.dumps(REPORT).encode()
            out.append(request(app, "POST", f"{base}/models/0/evaluations", headers, report))
        else:
            headers = {
                **auth,
                "content-type": "application/octet-stream",
                "idempotency-key": uuid.uuid4().hex,
                "x-base-evaluation": json.dumps(REPORT),
            }
            out.append(request(app, "PUT", f"{base}/rounds/1/update", headers, body))
    return out


async def _run(calls: list[Call], expected: set[int]) -> None:
    for call in calls:
        status = await call()
        if status not in expected:
            raise SystemExit(f"unexpected status {status}")


_EXPECTED = {
    "poll": {200},
    "renewal": {200},
    "download": {200},
    "report": {201},
    "upload": {201},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="passes of the read-only kinds")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--profile", choices=KINDS, help="run this kind under cProfile")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    with open_round(args.participants, "asgi-probe") as opened:
        app, fid = opened.client.app, opened.federation_id
        tokens, bodies = opened.tokens, opened.bodies

        async def drive() -> dict[str, float]:
            await _run(_calls(app, fid, tokens, bodies, "poll"), {200})  # warm the tokens
            figures: dict[str, float] = {}
            for kind in kinds:
                passes = args.repeat if kind in ("poll", "renewal", "download") else 1
                batches = [_calls(app, fid, tokens, bodies, kind) for _ in range(passes)]
                profiler = cProfile.Profile() if kind == args.profile else None
                started = time.process_time()
                if profiler:
                    profiler.enable()
                for batch in batches:
                    await _run(batch, _EXPECTED[kind])
                if profiler:
                    profiler.disable()
                cpu = time.process_time() - started
                figures[kind] = cpu / (passes * len(tokens))
                if profiler:
                    stats = pstats.Stats(profiler)
                    stats.sort_stats("cumulative").print_stats(args.top)
                    stats.sort_stats("tottime").print_stats(args.top)
            return figures

        figures = asyncio.run(drive())
    load = os.getloadavg()[0]
    print(f"{args.participants} participants, load {load:.1f}: CPU µs per request")
    for kind, seconds in figures.items():
        print(f"  {kind:9s} {seconds * 1e6:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
