"""What pruning EASE's B to its top-k weights per column costs on validation.

    nice -n 10 python -m bench.ease_pruning [--shapes music-heavy,lastfm-like]
        [--top-k 128,512,2048] [--lambdas 340,1100]

For each shape of ``bench.generalisation`` (items re-indexed to those seen, as the CSV
path of ``fedrec simulate`` does; leave-one-out split of EVALUATION.md), each λ (default:
the data's grid of ``fedrec.ease_search``) is solved once on the training split and
scored on the validation split dense and pruned to each ``k``, the way participants
score (``x_u B``, float32). The test split is never read. Prints validation NDCG@10 and
the model's bytes per download.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.generalisation import SHAPES
from fedrec.ease_search import PooledEase, ease_lambda_grid, model_tensors
from participant_sdk.recsys import Interactions, evaluate_loo, leave_one_out
from participant_sdk.recsys.ease_trainer import EASEConfig, EASETrainer


def _seen_items_only(data: Interactions) -> Interactions:
    """Items re-indexed to those with an interaction (what a CSV gives)."""
    seen, items = np.unique(data.items, return_inverse=True)
    return Interactions(
        users=data.users,
        items=items.astype(np.int64),
        ratings=data.ratings,
        timestamps=data.timestamps,
        user_ids=data.user_ids,
        item_ids=[data.item_ids[i] for i in seen],
    )


def _validate(
    scorer: EASETrainer,
    tensors: dict[str, np.ndarray],
    train: Interactions,
    valid: Interactions,
) -> float:
    return float(evaluate_loo(lambda users: scorer.score(users, tensors), train, valid)["ndcg@10"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shapes", default="music-heavy,lastfm-like")
    parser.add_argument("--top-k", default="128,512,2048")
    parser.add_argument("--lambdas", default=None, help="comma-separated; default: the grid")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.top_k.split(",")]
    for name in args.shapes.split(","):
        built = SHAPES[name].build(False)
        assert built is not None
        data = _seen_items_only(built)
        split = leave_one_out(data)
        n = data.num_items
        started = time.process_time()
        solver = PooledEase(split.train)
        print(
            f"== {name}: {data.num_users} users, {n} items, {len(data)} interactions; "
            f"{solver.route} route ({time.process_time() - started:.0f} CPU s to factor)",
            flush=True,
        )
        scorer = EASETrainer(num_users=data.num_users, num_items=n, config=EASEConfig())
        scorer.fit_users({}, split.train)
        lambdas = (
            [float(x) for x in args.lambdas.split(",")]
            if args.lambdas
            else list(ease_lambda_grid(split.train))
        )
        for lam in lambdas:
            started = time.process_time()
            precision = solver.precision(lam)
            solve = time.process_time() - started
            # pruned first: the dense B is built from P in place
            for k in [*sorted(k for k in ks if k < n), None]:
                tensors = model_tensors(precision, k)
                ndcg = _validate(scorer, tensors, split.train, split.valid)
                size = sum(t.nbytes for t in tensors.values())
                print(
                    f"lambda {lam:g}  top_k {k or 'dense':>5}  validation NDCG@10 {ndcg:.4f}  "
                    f"B {size / 2**20:.0f} MB  (P: {solve:.0f} CPU s)",
                    flush=True,
                )
                del tensors
            del precision


if __name__ == "__main__":
    main()
