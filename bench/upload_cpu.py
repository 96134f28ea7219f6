"""CPU per upload (``PUT …/rounds/{n}/update``), and where it goes, in one process.

The same setup as :mod:`bench.request_cpu` (SQLite, migrated, Starlette's TestClient,
ML-100K's 1,682 x 64 factors, a row-sparse update of 60 rows, the validation report in
the upload's ``X-Base-Evaluation`` header, a round that never closes). Each participant
polls the current round (not timed: it warms the token cache as a real round does), then
uploads (timed). Printed per upload:

* ``request``: process CPU of the PUT, client side included; the worker's kick after the
  upload runs on its own thread and counts only as far as it overlaps the request;
* ``submit_update``: thread CPU of the domain call (reads, decode, the group commit);
* ``kick``: thread CPU of the worker's after-upload check (``RoundWorker._after_upload``),
  however it overlapped.

``--dense``: every participant uploads all 1,682 rows (~437 KB, the Flower bench's shape).

Nothing is asserted. Compare trees by putting one first on the import path::

    PYTHONSAFEPATH=1 PYTHONPATH=/tmp/old-tree python bench/upload_cpu.py
    python -m bench.upload_cpu
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import coordinator.domain.rounds as rounds
import coordinator.worker as worker
from bench.request_cpu import REPORT, open_round


def _thread_cpu(spent: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, adding the CPU seconds of its thread while it runs to ``spent[name]``."""

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.thread_time() - started

    return timed


def run(participants: int, *, dense: bool = False) -> dict[str, float]:
    """Milliseconds of CPU per upload: request, submit_update, kick."""
    spent: dict[str, float] = dict.fromkeys(("request", "submit_update", "kick"), 0.0)
    rounds.submit_update = _thread_cpu(spent, "submit_update", rounds.submit_update)
    worker.RoundWorker._after_upload = _thread_cpu(  # type: ignore[method-assign]
        spent, "kick", worker.RoundWorker._after_upload
    )
    with open_round(participants, "upload-cpu", dense=dense) as opened:
        client, fid = opened.client, opened.federation_id
        tokens, bodies = opened.tokens, opened.bodies
        spent.update(dict.fromkeys(spent, 0.0))
        for token, body in zip(tokens, bodies, strict=True):
            auth = {"Authorization": f"Bearer {token}"}
            client.get(f"/v1/federations/{fid}/rounds/current", headers=auth).raise_for_status()
            started = time.process_time()
            client.put(
                f"/v1/federations/{fid}/rounds/1/update",
                content=body,
                headers={
                    **auth,
                    "X-Base-Evaluation": json.dumps(REPORT),
                    "Content-Type": "application/octet-stream",
                    "Idempotency-Key": uuid.uuid4().hex,
                },
            ).raise_for_status()
            spent["request"] += time.process_time() - started
    return {
        name: 1000 * spent[name] / participants for name in ("request", "submit_update", "kick")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=150)
    parser.add_argument(
        "--dense",
        action="store_true",
        help="dense updates of all 1,682 rows (~437 KB, a small round's upload) instead of 60",
    )
    args = parser.parse_args(argv)
    figures = run(args.participants, dense=args.dense)
    print(
        f"{args.participants} uploads, CPU ms per upload: "
        + ", ".join(f"{name} {value:.2f}" for name, value in figures.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
