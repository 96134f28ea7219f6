"""The recipe search's candidates across data variants, on validation only.

``nice timeout 1800 python -m bench.defaults --data ../shared/datasets/ml-100k`` trains
every candidate of :func:`fedrec.selection.candidates_for` (the defaults of
``fedrec simulate``) as a short in-process federation of 5 IID silos for ``--rounds``
rounds (stopping at patience 5) and prints its best validation NDCG@10 per data variant:
ML-100K as is; ML-100K without timestamps (shuffled away, so the split and recency
treat it as undated data); ML-100K subsampled to a third of its users; the synthetic
generator with strengths, no timestamps and more items. The test split is never read.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from fedrec.options import SimulationOptions
from fedrec.partition import partition_users
from fedrec.selection import candidates_for, has_timestamps, successive_halving
from fedrec.short_federation import ShortFederation
from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import Interactions, leave_one_out, load_movielens_100k


def variants(folder: Path, seed: int) -> dict[str, Interactions]:
    ml, _ = load_movielens_100k(folder / "u.data")
    undated = dataclasses.replace(ml, timestamps=np.full(len(ml), np.nan))
    rng = np.random.default_rng(seed)
    keep = rng.choice(ml.num_users, size=ml.num_users // 3, replace=False)
    fewer = ml.subset(np.isin(ml.users, keep))
    synthetic = make_synthetic(
        num_users=600, num_items=3000, timestamps=False, strengths=True, seed=seed
    )
    return {
        "ml-100k": ml,
        "ml-100k undated": undated,
        "ml-100k 1/3 users": fewer,
        "synthetic 3k items, counts, undated": synthetic,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/ml-100k"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    options = SimulationOptions(seed=args.seed)
    table: dict[str, dict[str, float]] = {}
    for name, data in variants(args.data, args.seed).items():
        split = leave_one_out(data)
        groups = partition_users(data, "iid", 5, seed=args.seed)
        candidates = candidates_for(options, timestamps=has_timestamps(split.train))

        def arm(candidate, split=split, groups=groups):
            chosen = candidate.apply(options)
            run = ShortFederation(split.train, groups, chosen.trainer_config(), chosen.strategy())
            return run.advance, lambda: run.validate(split.valid)

        # one rung: every candidate to the full budget (no halving), to compare all
        selection = successive_halving(candidates, arm, (args.rounds,), patience=5)
        table[name] = {c: s[args.rounds] for c, s in selection.scores.items()}
        print(f"{name}: {table[name]}", flush=True)
    names = sorted({c for row in table.values() for c in row})
    print("\n| data variant | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for variant, row in table.items():
        cells = [f"{row[c]:.4f}" if c in row else "—" for c in names]
        print(f"| {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
