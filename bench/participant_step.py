"""CPU of one participant's ``FederatedRecommender.step()``, split by what it does.

The coordinator is ``fedrec serve`` in its own process (as in ``bench.per_user_round``);
``--participants`` ML-100K users (one each, ``fedrec simulate``'s recipe) step round 1 to
warm up (first connection, signing-key pin), then round 2 is timed: every step one after
another on this thread, so thread CPU is the participant's own. Printed per step, in ms:
the whole step, training (``train_with_backoff``) and the rest by phase: the round poll,
the weights download (and inside it the signature check and decode), the validation
report, the upload (and inside it the encoding). Nothing is asserted.

Compare SDK trees by putting one first on the import path (PYTHONSAFEPATH: not the
script's folder); ``--coordinator-source`` keeps the coordinator the same::

    PYTHONSAFEPATH=1 PYTHONPATH=/tmp/old-tree python -m bench.participant_step \\
        --data ../shared/datasets/ml-100k --coordinator-source /tmp/old-tree
    python -m bench.participant_step --data ../shared/datasets/ml-100k \\
        --coordinator-source /tmp/old-tree
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import participant_sdk.participant as participant_module
import participant_sdk.resources.models as models_module
import participant_sdk.resources.rounds as rounds_module
import participant_sdk.resources.updates as updates_module
from bench.per_user_round import coordinator_process, per_user_federation
from fedrec.datasets import find_movielens_100k
from fedrec.options import SimulationOptions
from fedrec.partition import partition_users
from participant_sdk import (
    Client,
    NoUpdatesError,
    RoundNotOpenError,
)
from participant_sdk.recsys.data import load_movielens_100k
from participant_sdk.resources.rounds import Rounds

# (owner, attribute, label): the SDK functions a step's CPU is split by
PHASES: list[tuple[Any, str, str]] = [
    (participant_module, "train_with_backoff", "training"),
    (Rounds, "current_with_weights", "round with its weights (one request)"),
    (rounds_module, "weights_from_response", "  of which verify + decode"),
    # an older coordinator's two requests (the SDK falls back to them on a 404)
    (Rounds, "current", "round poll (older coordinator)"),
    (participant_module.FederatedRecommender, "_weights", "download (older coordinator)"),
    (models_module, "weights_from_response", "  of which verify + decode "),
    (participant_module.FederatedRecommender, "_validation_report", "validation report"),
    (updates_module.Updates, "submit", "upload"),
    (updates_module, "_submit_request", "  of which encode"),
]


@contextlib.contextmanager
def timed_phases(spent: dict[str, float]) -> Iterator[None]:
    """Add each phase's thread CPU seconds to ``spent`` while installed."""
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in PHASES]
    for (owner, name, original), (_, _, label) in zip(originals, PHASES, strict=True):
        setattr(owner, name, _timed(original, label, spent))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def _timed(original: Callable[..., Any], label: str, spent: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] += time.thread_time() - started

    return timed


def run(data_path: Path, count: int, source: Path | None) -> dict[str, float]:
    options = SimulationOptions(
        dataset="ml-100k", partition="per-user", recipe="fixed", rounds=3, patience=None
    )
    data, _ = load_movielens_100k(find_movielens_100k(data_path) / "u.data")
    groups = partition_users(data, "per-user", seed=0)[:count]
    server = coordinator_process(Path(tempfile.mkdtemp(prefix="fedrec-step-")) / "data", source)
    server.start(timeout=120)
    clients: list[Client] = []
    try:
        admin, fid, participants = per_user_federation(
            server, "participant-step", data, groups, options, clients
        )
        for participant in participants:  # round 1: connections, key pins
            participant.step()
        with contextlib.suppress(RoundNotOpenError, NoUpdatesError):
            if admin.rounds.get(fid, 1).state == "open":
                admin.rounds.aggregate(fid, 1)
        admin.rounds.wait_for_next(fid, after=1, timeout=600)
        spent: dict[str, float] = collections.defaultdict(float)
        with timed_phases(spent):
            started = time.thread_time()
            outcomes = [participant.step() for participant in participants]
            spent["whole step"] = time.thread_time() - started
        if outcomes.count("uploaded") != len(participants):
            print(f"# not every step uploaded: {collections.Counter(outcomes)}", file=sys.stderr)
        return {label: seconds / len(participants) * 1e3 for label, seconds in spent.items()}
    finally:
        for client in clients:
            client.close()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the ml-100k folder")
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument(
        "--coordinator-source",
        type=Path,
        default=None,
        help="run the coordinator from this source tree (e.g. an exported older commit)",
    )
    args = parser.parse_args(argv)
    per_step = run(args.data, args.participants, args.coordinator_source)
    whole, training = per_step["whole step"], per_step.get("training", 0.0)
    print("| CPU per step, ms | |\n|---|---|")
    print(f"| whole step | {whole:.2f} |")
    print(f"| not training | {whole - training:.2f} |")
    for _, _, label in PHASES:
        print(f"| {label} | {per_step.get(label, 0.0):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
