"""CPU per participant-round of the request path alone, in one process, no aggregation.

The coordinator app (SQLite, migrated) runs in this process behind Starlette's TestClient;
``--participants`` participants each do one round's requests one after another: poll the
current round, download the base version (1,682 x 64 float32 factors, ML-100K's shape),
report validation figures, upload a row-sparse update of 60 rows. ``--report separate``
posts the report on its own with an ``Idempotency-Key`` (what the SDK does against a
coordinator without ``Round.upload_takes_evaluation``); ``--report combined`` sends it in the
upload's ``X-Base-Evaluation`` header. The round never closes (its quorum is one more than
the participants), so no aggregation runs: what is timed is the requests. Process CPU per
participant is printed; it includes the test client's side of each request (the same per
request in both modes). Nothing is asserted.

Compare trees by putting one first on the import path (PYTHONSAFEPATH: not the script's
folder)::

    PYTHONSAFEPATH=1 PYTHONPATH=/tmp/old-tree python bench/request_cpu.py --report separate
    python -m bench.request_cpu --report combined
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.config import Settings
from coordinator.migrate import upgrade
from participant_sdk.wire import encode_update

# throwaway secrets of an in-process coordinator on a temporary database
ADMIN_TOKEN = "fra_bench-admin-token-0123456789abcdef0123456789abcdef"  # nosec B105
SECRET_KEY = "bench-secret-key-0123456789abcdef"  # nosec B105
NUM_ITEMS, DIM, ROWS = 1682, 64, 60
REPORT = {"split": "validation", "metrics": {"ndcg@10": 0.1, "hr@10": 0.2}, "num_users": 1}


@dataclass(frozen=True)
class OpenRound:
    """Round 1 of a fresh federation that never closes, its participants and their updates."""

    client: TestClient
    federation_id: str
    tokens: list[str]
    bodies: list[bytes]


@contextmanager
def open_round(participants: int, name: str, *, dense: bool = False) -> Iterator[OpenRound]:
    """A migrated SQLite coordinator in this process with one federation whose round 1
    waits for one participant more than ``participants`` (so no aggregation runs), each
    participant's token, and a row-sparse update of ``ROWS`` rows for each (``dense``: of
    every row, as a small round's participants send)."""
    folder = Path(tempfile.mkdtemp(prefix=f"fedrec-{name}-"))
    url = f"sqlite:///{folder}/fedrec.sqlite"
    upgrade(url)
    settings = Settings(
        environment="test",
        data_dir=folder / "data",
        database_url=url,
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        max_upload_bytes=64 * 1024 * 1024,
        _env_file=None,
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(create_app(settings, run_timer=False)) as client:
        federation = {
            "name": name,
            "model": {"kind": "mf", "num_items": NUM_ITEMS, "dim": DIM, "seed": 0},
            "strategy": {"name": "fedavg"},
            "rounds": {"min_participants": participants + 1, "max_rounds": 3},
        }
        fid = client.post("/v1/federations", json=federation, headers=admin).json()["id"]
        tokens = [
            client.post(
                f"/v1/federations/{fid}/participants", json={"name": f"p{i}"}, headers=admin
            ).json()["token"]
            for i in range(participants)
        ]
        rng = np.random.default_rng(0)
        rows = None if dense else np.sort(rng.choice(NUM_ITEMS, ROWS, replace=False))
        count = NUM_ITEMS if dense else ROWS
        bodies = [
            encode_update(
                {
                    "item_factors": (rng.standard_normal((count, DIM)) * 0.01).astype(np.float32),
                    "item_bias": (rng.standard_normal(count) * 0.01).astype(np.float32),
                },
                round=1,
                base_version=0,
                num_examples=20,
                rows=rows,
            )
            for _ in range(participants)
        ]
        yield OpenRound(client, fid, tokens, bodies)


def run(participants: int, combined: bool) -> float:
    """Process CPU seconds per participant for one round of requests."""
    with open_round(participants, "request-cpu") as opened:
        client, fid = opened.client, opened.federation_id
        tokens, bodies = opened.tokens, opened.bodies
        started = time.process_time()
        for token, body in zip(tokens, bodies, strict=True):
            auth = {"Authorization": f"Bearer {token}"}
            client.get(f"/v1/federations/{fid}/rounds/current", headers=auth).raise_for_status()
            client.get(f"/v1/federations/{fid}/models/0/weights", headers=auth).raise_for_status()
            extra: dict[str, str] = {}
            if combined:
                extra["X-Base-Evaluation"] = json.dumps(REPORT)
            else:
                client.post(
                    f"/v1/federations/{fid}/models/0/evaluations",
                    json=REPORT,
                    headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
                ).raise_for_status()
            client.put(
                f"/v1/federations/{fid}/rounds/1/update",
                content=body,
                headers={
                    **auth,
                    **extra,
                    "Content-Type": "application/octet-stream",
                    "Idempotency-Key": uuid.uuid4().hex,
                },
            ).raise_for_status()
        return (time.process_time() - started) / participants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=150)
    parser.add_argument("--report", choices=["separate", "combined"], default="combined")
    args = parser.parse_args(argv)
    per_participant = run(args.participants, args.report == "combined")
    print(
        f"report {args.report}, {args.participants} participants: "
        f"{1000 * per_participant:.1f} ms CPU per participant-round"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
