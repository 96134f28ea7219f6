"""Implicit ALS against BPR-MF on the protocol's validation split, and federated iALS.

Prints, for ML-100K (EVALUATION.md leave-one-out, full ranking), the best validation
NDCG@10 over ``--sweeps`` centralized ALS sweeps for each ``dim,alpha,reg`` choice
(strength = the rating), the centralized BPR-MF of ``fedrec simulate``'s defaults with
the same early stopping, and then ``fedrec simulate --model ials`` (5 IID silos over
HTTP, the product path) for ``--rounds`` rounds: its best validation and its test.

    nice python -m bench.ials --data ../shared/datasets/ml-100k \
        --grid 64,3,0.01 64,10,0.01 --sweeps 6 --rounds 6
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from fedrec.options import IALS_SERVER_LR, SimulationOptions
from fedrec.simulation import run_simulation
from participant_sdk.recsys import (
    IALSConfig,
    Interactions,
    evaluate_loo,
    init_item_tensors,
    leave_one_out,
    load_movielens_100k,
)
from participant_sdk.recsys.splits import LeaveOneOutSplit
from participant_sdk.recsys.trainers import TrainerConfig, make_trainer, prepare_to_score


def best_validation(
    data: Interactions, split: LeaveOneOutSplit, config: TrainerConfig, rounds: int
) -> tuple[float, int, float]:
    """(best validation NDCG@10, its round, seconds) of a centralized run."""
    started = time.perf_counter()
    trainer = make_trainer(config, num_users=data.num_users, num_items=data.num_items)
    tensors = init_item_tensors(data.num_items, config.dim, seed=config.seed, scale=0.01)
    best, best_round = -1.0, 0
    for number in range(1, rounds + 1):
        update = trainer.train_round(tensors, split.train)
        tensors = {"item_factors": update.item_factors, "item_bias": update.item_bias}
        prepare_to_score(trainer, tensors, split.train)
        ndcg = evaluate_loo(
            lambda u, t=tensors: trainer.score(u, t),  # type: ignore[misc]
            split.train,
            split.valid,
        )
        if ndcg["ndcg@10"] > best:
            best, best_round = ndcg["ndcg@10"], number
    return best, best_round, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the ml-100k folder")
    parser.add_argument("--grid", nargs="+", default=["64,3,0.01", "64,10,0.01"])
    parser.add_argument("--sweeps", type=int, default=6, help="centralized ALS sweeps")
    parser.add_argument("--bpr-rounds", type=int, default=20, help="0 skips the BPR row")
    parser.add_argument("--rounds", type=int, default=6, help="federated rounds (0 skips)")
    parser.add_argument("--fed", default="64,3,0.01", help="dim,alpha,reg of the federation")
    args = parser.parse_args(argv)
    out = Console(file=sys.stdout, width=120)
    data, _ = load_movielens_100k(Path(args.data))
    split = leave_one_out(data)
    out.print("model               dim  alpha    reg  valid ndcg@10  best round  seconds")
    for choice in args.grid:
        dim, alpha, reg = choice.split(",")
        config = IALSConfig(dim=int(dim), alpha=float(alpha), reg=float(reg))
        ndcg, at, seconds = best_validation(data, split, config, args.sweeps)
        out.print(
            f"central iALS  {int(dim):9d} {float(alpha):6g} {float(reg):6g} "
            f"{ndcg:14.4f} {at:11d} {seconds:8.1f}"
        )
    if args.bpr_rounds:
        bpr = SimulationOptions().bpr_config()
        ndcg, at, seconds = best_validation(data, split, bpr, args.bpr_rounds)
        out.print(
            f"central BPR   {bpr.dim:9d} {'-':>6} {bpr.reg:6g} {ndcg:14.4f} {at:11d} {seconds:8.1f}"
        )
    if args.rounds:
        dim, alpha, reg = args.fed.split(",")
        with tempfile.TemporaryDirectory() as folder:
            options = SimulationOptions(
                dataset="ml-100k",
                data=Path(args.data),
                model="ials",
                dim=int(dim),
                alpha=float(alpha),
                reg=float(reg),
                rounds=args.rounds,
                server_lr=IALS_SERVER_LR,
                data_dir=Path(folder) / "coordinator",
            )
            with open(Path(folder) / "progress.txt", "w") as quiet:
                report = run_simulation(options, Console(file=quiet, width=120))
        curve = [e["validation_of_base"].get("ndcg@10", float("nan")) for e in report["history"]]
        final = report["final"]
        out.print(
            f"federated iALS, 5 IID silos, {args.rounds} rounds (dim {dim}, alpha {alpha}, "
            f"reg {reg}): validation NDCG@10 of each round's base "
            + " ".join(f"{v:.4f}" for v in curve)
        )
        fed, cen = final["federated"]["test"], final["centralized"]["test"]
        pop = final["popularity"]["test"]
        out.print(
            f"test NDCG@10: federated {fed['ndcg@10']:.4f} (deployed v{fed['deployed_version']}), "
            f"centralized {cen['ndcg@10']:.4f}, popularity {pop['ndcg@10']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
