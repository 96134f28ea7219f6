"""Where the validation and the test figures of a model part ways: a diagnosis.

``nice python -m bench.split_gap --shape sparse --max-users 1000`` trains one candidate
of the recipe search (``--chosen``, the search is not rerun) as a federation of the given
partition (:class:`fedrec.short_federation.ShortFederation`) and the centralized baseline
with the same recipe, round for round, and at the rounds of ``--at`` prints for each side:

* ``val``: validation NDCG@10 with the users as trained (what the stop policy reads);
* ``test_raw``: test NDCG@10 with the same users, no fold-in (their history is ``Tr_u``);
* ``test_fold_tr``: after the protocol's fold-in on ``Tr_u`` only;
* ``test_fold``: after the protocol's fold-in on ``Tr_u ∪ {v_u}`` (what is reported);
* ``test_fold5``: after five such fold-in rounds;
* the mean norms of the user and the item factors, the spread of the item biases, and the
  user-only BPR loss of the fold-in on ``Tr_u`` (how well the item model fits training).

``--shifted`` moves the whole split one step back in time (train on ``Tr_u`` without its
latest item, validate on that item, test on ``v_u``): the same diagnosis without the test
split, so a remedy can be judged on it. ``--set FIELD=JSON`` overrides a
:class:`fedrec.options.SimulationOptions` field on both sides (as ``bench.cross_device``'s);
``--seed S`` re-seeds both sides' training (the data and the split stay the same).

Each side folds in as it does in the product: the federation's users on their own
devices (:func:`participant_sdk.recsys.trainers.fold_in` per participant), the centralized
users in one trainer. **It reads the test split at every listed round**: a diagnosis of
the evaluation, never a way to choose anything (choices are made on validation only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.cross_device import _override, load_data
from bench.generalisation import SHAPES
from fedrec.partition import local_view, partition_users
from fedrec.selection import candidates_for, has_timestamps
from fedrec.short_federation import ShortFederation
from participant_sdk.recsys import BPRConfig, BPRTrainer, Interactions, evaluate_loo, leave_one_out
from participant_sdk.recsys.model import init_item_tensors
from participant_sdk.recsys.splits import LeaveOneOutSplit, concat
from participant_sdk.recsys.trainers import fold_in

F32 = npt.NDArray[np.float32]
Tensors = dict[str, F32]


def ndcg(users: F32, tensors: Tensors, history: Interactions, targets: Interactions) -> float:
    """Full-ranking NDCG@10 of ``users`` (global rows) with these item tensors."""
    q, b = tensors["item_factors"], tensors["item_bias"]
    found = evaluate_loo(lambda u: users[u] @ q.T + b[None, :], history, targets)
    return float(found["ndcg@10"])


def folded(
    groups: list[npt.NDArray[np.int64]],
    config: BPRConfig,
    start: F32,
    tensors: Tensors,
    history: Interactions,
    rounds: int = 1,
) -> tuple[F32, float]:
    """The users after ``rounds`` fold-ins from ``start``, each group on its own trainer
    (one group = the centralized trainer), and the mean loss of the last fold-in."""
    users_factors = start.copy()
    losses: list[float] = []
    for k, users in enumerate(groups):
        trainer = BPRTrainer(
            num_users=users.size, num_items=tensors["item_bias"].size, config=config.replace(seed=k)
        )
        trainer.user_factors = start[users].copy()
        local = local_view(history, users)
        for _ in range(rounds):
            fold_in(trainer, tensors, local)
        users_factors[users] = trainer.user_factors
        if len(local):
            # the loss of the fitted users, measured by one more user-only epoch (whose
            # step is not kept)
            update = trainer.train_round(tensors, local, epochs=1, update_items=False)
            losses.append(update.loss * len(local))
    return users_factors, float(np.sum(losses) / max(len(history), 1))


def diagnose(
    name: str,
    groups: list[npt.NDArray[np.int64]],
    config: BPRConfig,
    users: F32,
    tensors: Tensors,
    split: LeaveOneOutSplit,
) -> dict[str, Any]:
    """The figures of one side at one round (see the module docstring)."""
    history = concat(split.train, split.valid)
    on_train, loss = folded(groups, config, users, tensors, split.train)
    return {
        "side": name,
        "val": ndcg(users, tensors, split.train, split.valid),
        "test_raw": ndcg(users, tensors, history, split.test),
        "test_fold_tr": ndcg(on_train, tensors, history, split.test),
        "test_fold": ndcg(
            folded(groups, config, users, tensors, history)[0], tensors, history, split.test
        ),
        "test_fold5": ndcg(
            folded(groups, config, users, tensors, history, rounds=5)[0],
            tensors,
            history,
            split.test,
        ),
        "norm_users": float(np.linalg.norm(users, axis=1).mean()),
        "norm_items": float(np.linalg.norm(tensors["item_factors"], axis=1).mean()),
        "bias_std": float(tensors["item_bias"].std()),
        "fold_loss_tr": loss,
    }


def one_step_back(split: LeaveOneOutSplit) -> LeaveOneOutSplit:
    """The leave-one-out split of ``Tr_u ∪ {v_u}``: train on ``Tr_u`` without its latest
    item, validate on that item, test on ``v_u`` (users with fewer than 3 interactions
    there are train-only). It holds no interaction of ``split.test``."""
    return leave_one_out(concat(split.train, split.valid))


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/ml-100k"))
    parser.add_argument("--shape", choices=sorted(SHAPES))
    parser.add_argument("--max-users", type=int)
    parser.add_argument("--partition", default="per-user", choices=["iid", "skewed", "per-user"])
    parser.add_argument("--participants", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chosen", default="bpr+fedavg", help="a BPR candidate of the search")
    parser.add_argument("--rounds", type=int, default=22)
    parser.add_argument("--at", default="4,8,12,16,17,20,22", help="rounds to diagnose")
    parser.add_argument(
        "--shifted",
        action="store_true",
        help="the split one step back (Tr_u minus its latest item / that item / v_u): the "
        "same diagnosis on validation data only",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="after the candidate, override one SimulationOptions field (both sides)",
    )
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedrec-split-gap-") as workdir:
        data, options = load_data(args, Path(workdir))
    split = leave_one_out(data)
    if args.shifted:
        split = one_step_back(split)
    groups = partition_users(data, args.partition, args.participants, seed=args.seed)
    candidates = candidates_for(
        options,
        timestamps=has_timestamps(split.train),
        users_per_participant=float(np.median([g.size for g in groups])),
        participants=len(groups),
    )
    (candidate,) = [c for c in candidates if c.name == args.chosen]
    options = dataclasses.replace(candidate.apply(options), **dict(map(_override, args.set)))
    config = options.trainer_config()
    if not isinstance(config, BPRConfig):
        raise SystemExit(f"{args.chosen} is not a BPR candidate")
    at = {int(x) for x in args.at.split(",")}
    everyone = [np.arange(data.num_users)]
    federation = ShortFederation(split.train, groups, config, options.strategy())
    # the centralized baseline's own loop (fedrec.simulation.centralized_baseline): no
    # user refresh there, the same local epochs a round
    central_config = config.replace(user_epochs=0)
    central = BPRTrainer(num_users=data.num_users, num_items=data.num_items, config=central_config)
    central_tensors = init_item_tensors(data.num_items, config.dim, seed=config.seed, scale=0.01)
    rows: list[dict[str, Any]] = []
    started = time.process_time()
    for number in range(1, args.rounds + 1):
        federation.advance()
        update = central.train_round(
            central_tensors, split.train, learning_rate=central_config.round_learning_rate(number)
        )
        central_tensors = {"item_factors": update.item_factors, "item_bias": update.item_bias}
        if number not in at:
            continue
        fed_users = np.zeros((data.num_users, config.dim), dtype=np.float32)
        for users, _local, trainer in federation.participants:
            fed_users[users] = trainer.user_factors
        for row in (
            diagnose("federated", groups, config, fed_users, federation.tensors, split),
            diagnose(
                "centralized",
                everyone,
                central_config,
                central.user_factors,
                central_tensors,
                split,
            ),
        ):
            row = {"round": number, **row, "cpu_s": round(time.process_time() - started, 1)}
            print(json.dumps(_rounded(row)), flush=True)
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
