"""Server optimizers side by side on the validation split (EVALUATION.md v1, leave-one-out).

One small comparison, not a tuning run: `fedrec simulate`'s default local recipe
(SimulationOptions) on IID silos, with the server step swapped: FedAvg at simulate's
default server_lr, and FedAdam / FedYogi / FedAvgM (the coordinator's strategy code via
``fedrec.inprocess``) at a few step sizes. Trains on Tr_u and prints validation NDCG@10
every ``--every`` rounds; the test split is never touched. Run it with ``nice``:

    nice python -m bench.server_optimizers --data ../shared/datasets/ml-100k --rounds 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fedrec.inprocess import FedResult, simulate
from fedrec.options import SimulationOptions
from fedrec.partition import partition_users
from participant_sdk.recsys import evaluate_loo, leave_one_out, load_movielens_100k

# (label, server_optimizer settings); None = simulate's own FedAvg step
CANDIDATES: dict[str, dict[str, Any] | None] = {
    "fedavg lr=2 (simulate default)": None,
    "fedavgm lr=1 beta=0.9": {"name": "fedavgm", "server_lr": 1.0},
    "fedadam lr=0.01 (coordinator default)": {"name": "fedadam"},
    "fedadam lr=0.03": {"name": "fedadam", "server_lr": 0.03},
    "fedadam lr=0.1": {"name": "fedadam", "server_lr": 0.1},
    "fedyogi lr=0.03": {"name": "fedyogi", "server_lr": 0.03},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the ml-100k folder")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--every", type=int, default=5, help="validate every N rounds")
    parser.add_argument("--participants", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="substrings of the candidates to run")
    parser.add_argument("--json", type=Path, help="also write the histories here")
    args = parser.parse_args(argv)

    options = SimulationOptions(participants=args.participants)
    config = options.bpr_config()
    data, _ = load_movielens_100k(args.data / "u.data")
    split = leave_one_out(data)
    groups = partition_users(split.train, "iid", args.participants, seed=options.seed)

    def validate(result: FedResult) -> dict[str, float]:
        return {"ndcg@10": evaluate_loo(result.score, split.train, split.valid)["ndcg@10"]}

    out: dict[str, Any] = {}
    for label, optimizer in CANDIDATES.items():
        if args.only and not any(s in label for s in args.only):
            continue
        started = time.perf_counter()
        result = simulate(
            split.train,
            groups,
            config,
            rounds=args.rounds,
            server_lr=options.server_lr or 1.0,
            normalization=options.normalization,
            server_optimizer=optimizer,
            eval_every=args.every,
            eval_fn=validate,
        )
        curve = [(r, round(m["ndcg@10"], 4)) for r, m in result.history]
        best = max(curve, key=lambda rm: rm[1])
        out[label] = {"curve": curve, "best": best, "seconds": time.perf_counter() - started}
        shown = " ".join(f"{r}:{v:.4f}" for r, v in curve)
        sys.stdout.write(
            f"{label:40s} best valid NDCG@10 {best[1]:.4f} @ round {best[0]:3d}   [{shown}]"
            f"  ({out[label]['seconds']:.0f}s)\n"
        )
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
